//! Node registration, node status and the heartbeat Lease.

use std::{sync::Arc, time::Duration};

use k8s_openapi::{
    api::{
        coordination::v1::{Lease, LeaseSpec},
        core::v1::Node,
    },
    apimachinery::pkg::apis::meta::v1::{MicroTime, Time},
    jiff::Timestamp,
};
use kube::{
    Api,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
};
use serde_json::json;
use tracing::warn;

use crate::Lab;

const LEASE_SECONDS: i32 = 40;
const RENEW_EVERY: Duration = Duration::from_secs(10);
const STATUS_EVERY: Duration = Duration::from_secs(60);
pub const KUBELET_VERSION: &str = "v1.34.4";

pub async fn register(lab: &Lab) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(lab.client.clone());
    if nodes.get_opt(&lab.node_name).await?.is_none() {
        let node: Node = serde_json::from_value(json!({
            "metadata": {
                "name": lab.node_name,
                "labels": {
                    "kubernetes.io/hostname": lab.node_name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
                    "kappa.dev/lab": "process-kubelet",
                }
            },
            "spec": {}
        }))?;
        nodes.create(&PostParams::default(), &node).await?;
    }
    patch_status(lab).await
}

/// Capacity is generous on purpose: pods are processes sharing the machine,
/// and the scheduler should never be what limits a lab test or benchmark.
async fn patch_status(lab: &Lab) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(lab.client.clone());
    let now = Time(Timestamp::now());
    let cond = |type_: &str, status: &str, reason: &str, message: &str| {
        json!({"type": type_, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    let existing = nodes.get(&lab.node_name).await?;
    // Keep lastTransitionTime of conditions that did not change.
    let prior = existing.status.and_then(|s| s.conditions).unwrap_or_default();
    let mut conditions = vec![
        cond("Ready", "True", "KubeletReady", "process kubelet is posting ready status"),
        cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
        cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
    ];
    for c in &mut conditions {
        if let Some(p) = prior.iter().find(|p| p.type_ == c["type"] && p.status == c["status"])
            && let Some(t) = &p.last_transition_time
        {
            c["lastTransitionTime"] = json!(t);
        }
    }
    let capacity = json!({"cpu": "32", "memory": "128Gi", "pods": "2000", "ephemeral-storage": "100Gi"});
    let status = json!({"status": {
        "capacity": capacity,
        "allocatable": capacity,
        "conditions": conditions,
        "addresses": [
            {"type": "InternalIP", "address": "127.0.0.1"},
            {"type": "Hostname", "address": lab.node_name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {
            "machineID": "kappa-lab", "systemUUID": "kappa-lab", "bootID": "kappa-lab",
            "kernelVersion": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
            "osImage": "kappa lab (pods are local processes)",
            "containerRuntimeVersion": "process://kappa-lab",
            "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
        }
    }});
    nodes.patch_status(&lab.node_name, &PatchParams::default(), &Patch::Merge(&status)).await?;
    Ok(())
}

/// Renews the node Lease every 10 s (what the node lifecycle controller reads
/// to decide the node is alive) and re-posts node status every minute.
pub async fn heartbeat(lab: Arc<Lab>) {
    let leases: Api<Lease> = Api::namespaced(lab.client.clone(), "kube-node-lease");
    let mut last_status = tokio::time::Instant::now();
    loop {
        if let Err(e) = renew(&leases, &lab.node_name).await {
            warn!(error = %e, "renewing the node lease failed");
        }
        if last_status.elapsed() >= STATUS_EVERY {
            match patch_status(&lab).await {
                Ok(()) => last_status = tokio::time::Instant::now(),
                Err(e) => warn!(error = %e, "posting node status failed"),
            }
        }
        tokio::time::sleep(RENEW_EVERY).await;
    }
}

async fn renew(leases: &Api<Lease>, node: &str) -> kube::Result<()> {
    let now = MicroTime(Timestamp::now());
    match leases.get_opt(node).await? {
        Some(_) => {
            let patch = json!({"spec": {"holderIdentity": node, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": now}});
            leases.patch(node, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        }
        None => {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(node.to_string()), ..Default::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(node.to_string()),
                    lease_duration_seconds: Some(LEASE_SECONDS),
                    renew_time: Some(now),
                    ..Default::default()
                }),
            };
            leases.create(&PostParams::default(), &lease).await?;
        }
    }
    Ok(())
}

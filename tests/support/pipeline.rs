//! A pipeline fixture shared by the processor and rollout tests: the lab's
//! KafkaCluster, an input Topic with a unique Kafka name, an operator, and a
//! Processor `totals` running the reference processor.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Event, Service};
use kappa_operator::{
    api::{KafkaCluster, Processor, Topic, ViewVersion},
    kafka::Kafka,
};
use kube::api::ListParams;
use serde_json::json;

use super::{Env, Operator, TestNs, create, processor, unique, wait_for};

pub const WAIT: Duration = Duration::from_secs(120);

/// Dropped in field order: the namespace goes while the operator still runs
/// to release its finalizers.
pub struct Pipeline {
    pub ns: TestNs,
    pub op: Operator,
    pub input: String,
}

/// A namespace with the lab's KafkaCluster, an input Topic (a unique Kafka
/// name) and an operator; the Processor is left to each test.
pub async fn pipeline(prefix: &str, operator_args: &[&str]) -> Pipeline {
    pipeline_with(prefix, operator_args, 1).await
}

/// The same, with the input replicated `replicas` times (and, replicated,
/// `min.insync.replicas` 2), for tests that take brokers away.
pub async fn pipeline_with(prefix: &str, operator_args: &[&str], replicas: i32) -> Pipeline {
    let env = Env::get().await;
    super::install_crds(&env.client).await;
    let ns = TestNs::new(&env, prefix).await;
    let input = unique(&format!("e2e-{prefix}-orders"));
    create::<KafkaCluster>(&ns, json!({"metadata": {"name": "default"}, "spec": {"bootstrapServers": env.kafka_bootstrap}})).await;
    let config = if replicas > 1 { json!({"min.insync.replicas": "2"}) } else { json!({}) };
    create::<Topic>(
        &ns,
        json!({"metadata": {"name": "orders"}, "spec": {
            "topicName": input, "partitions": 3, "replicationFactor": replicas, "config": config, "deletionPolicy": "Delete"
        }}),
    )
    .await;
    let mut args = vec!["--lag-poll-seconds", "1"];
    args.extend_from_slice(operator_args);
    let op = Operator::start(&ns.name, &args);
    Pipeline { ns, op, input }
}

pub fn processor_json(logic: &str, replicas: i32) -> serde_json::Value {
    json!({"metadata": {"name": "totals"}, "spec": {
        "inputs": ["orders"],
        "replicas": replicas,
        "template": {"image": "ghcr.io/kappa-dev/kappa-processor:0.1.0", "args": ["run", "--logic", logic]},
        "view": {"partitions": 3},
        "rollout": {"stableForSeconds": 2, "scaleDownDelaySeconds": 5},
        "serving": {"port": 8080}
    }})
}

pub async fn processor_state(ns: &TestNs) -> Result<Processor, String> {
    ns.api::<Processor>().get("totals").await.map_err(|e| e.to_string())
}

/// Waits until the active version has consumed everything in its inputs
/// now: its group's commits (read from Kafka, not from a status that may
/// predate the last produce) reach every input partition's end, the gate
/// says CaughtUp, the replay's progress is 1.0, and the Processor is Ready.
pub async fn caught_up(ns: &TestNs) -> (Processor, ViewVersion) {
    let kafka = super::kafka();
    wait_for("the active version to catch up (all input committed, CaughtUp, progress 1.0, Ready)", WAIT, || async {
        let p = processor_state(ns).await?;
        let st = p.status.clone().unwrap_or_default();
        let active = st.active_version.clone().ok_or("no active version yet")?;
        let vv = ns.api::<ViewVersion>().get(&format!("totals-{active}")).await.map_err(|e| e.to_string())?;
        let mut inputs = Vec::new();
        for name in &vv.spec.inputs {
            inputs.push(ns.api::<Topic>().get(name).await.map_err(|e| e.to_string())?.kafka_name().to_owned());
        }
        let ends = kafka.log_offsets(&inputs).await.map_err(|e| e.to_string())?;
        let group = std::slice::from_ref(&vv.spec.consumer_group);
        let committed = kafka.committed(group).await.map_err(|e| e.to_string())?.remove(&vv.spec.consumer_group);
        let committed = committed.ok_or("no answer for the group")?.map_err(|e| e.to_string())?;
        let behind: i64 = ends.iter().map(|(tp, (_, end))| end - committed.get(tp).copied().unwrap_or(0)).sum();
        let vs = vv.status.clone().unwrap_or_default();
        let gate = vs.catch_up.map(|c| c.state).unwrap_or_default();
        let ready = st.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
        if behind == 0 && gate == "CaughtUp" && vs.progress == Some(1.0) && ready {
            Ok((p, vv))
        } else {
            Err(format!("{behind} records not committed; phase {:?} gate {gate} progress {:?} ready {ready}", st.phase, vs.progress))
        }
    })
    .await
}

pub fn check(input: &str, vv: &ViewVersion, logic: &str) -> Result<String, String> {
    processor(&["check", "--input", input, "--view", &vv.spec.output_topic, "--logic", logic])
}

/// A plain HTTP GET to a pod (the lab routes pod addresses on loopback).
pub async fn http_get(ip: &str, port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect((ip, port)).await.expect("connect to the pod");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

pub fn logic_patch(logic: &str) -> serde_json::Value {
    json!({"spec": {"template": {"args": ["run", "--logic", logic]}}})
}

/// What readers are told: (ConfigMap version, Service's selected version).
pub async fn served(ns: &TestNs) -> (String, String) {
    let cm: ConfigMap = ns.api().get("totals-view").await.unwrap();
    let svc: Service = ns.api().get("totals").await.unwrap();
    (
        cm.data.unwrap_or_default().get("version").cloned().unwrap_or_default(),
        svc.spec.and_then(|s| s.selector).unwrap_or_default().get("kappa.dev/version").cloned().unwrap_or_default(),
    )
}

pub async fn phase_is(ns: &TestNs, want: &str) -> Processor {
    wait_for(&format!("the Processor phase {want}"), WAIT, || async {
        let p = processor_state(ns).await?;
        let st = p.status.clone().unwrap_or_default();
        if st.phase.as_deref() == Some(want) {
            Ok(p)
        } else {
            Err(format!("phase {:?} candidate {:?} active {:?}", st.phase, st.candidate_version, st.active_version))
        }
    })
    .await
}

pub async fn active_is(ns: &TestNs, version: &str) {
    wait_for(&format!("version {version} to be active and served"), WAIT, || async {
        let p = processor_state(ns).await?;
        let active = p.status.and_then(|s| s.active_version).unwrap_or_default();
        let (cm, svc) = served(ns).await;
        if active == version && cm == version && svc == version {
            Ok(())
        } else {
            Err(format!("active {active} configmap {cm} service {svc}"))
        }
    })
    .await
}

pub async fn versions(ns: &TestNs) -> Vec<ViewVersion> {
    ns.api::<ViewVersion>().list(&ListParams::default()).await.unwrap().items
}

/// Events of the Processor with this reason, counting repeats.
pub async fn events(ns: &TestNs, reason: &str) -> i32 {
    ns.api::<Event>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|e| e.involved_object.kind.as_deref() == Some("Processor") && e.reason.as_deref() == Some(reason))
        .map(|e| e.count.unwrap_or(1).max(1) + e.series.as_ref().map_or(0, |s| s.count.unwrap_or(0) - 1).max(0))
        .sum()
}

/// Events of the Processor with this reason, read once `n` are there (for
/// at most 30 s): the operator posts an event after the status write it
/// tells of, so a test that has just seen that status may read a moment
/// early. The count then, which a test compares with `n`.
pub async fn events_reaching(ns: &TestNs, reason: &str, n: i32) -> i32 {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let seen = events(ns, reason).await;
        if seen >= n || std::time::Instant::now() > deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn produce(input: &str, count: u64, seed: u64) {
    processor(&["produce", "--topic", input, "--count", &count.to_string(), "--seed", &seed.to_string(), "--keys", "500"]).unwrap();
}

/// Creates the Processor, writes `events` input events and waits until its
/// first version has caught up: that version and its ViewVersion.
pub async fn first_version_live(s: &Pipeline, processor: serde_json::Value, events: u64) -> (String, ViewVersion) {
    create::<Processor>(&s.ns, processor).await;
    produce(&s.input, events, 1);
    let (p, vv) = caught_up(&s.ns).await;
    (p.status.unwrap().active_version.unwrap(), vv)
}

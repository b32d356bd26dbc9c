//! The Helm chart against the lab: installed into a namespace that enforces
//! the `restricted` Pod Security Standard, the operator's pods run under
//! their ServiceAccount's token (so a missing RBAC rule fails this test),
//! leader election hands over when the leader's pod goes, upgrades roll the
//! operator, and uninstalling leaves CRDs, Topics and Kafka data in place.

mod support;

use std::{
    collections::BTreeSet,
    process::Command,
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::{apps::v1::Deployment, coordination::v1::Lease, core::v1::Pod},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kappa_operator::{
    api::{KafkaCluster, Processor, Topic},
    kafka::Kafka,
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};
use serde_json::json;
use support::{Env, TestNs, create, pipeline::processor_json, processor, unique, wait_for};

const WAIT: Duration = Duration::from_secs(120);

fn helm(args: &[&str]) -> Result<String, String> {
    let out = Command::new(support::lab_bin("helm")).args(args).output().expect("running helm");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() { Ok(text) } else { Err(text) }
}

fn chart() -> String {
    format!("{}/charts/kappa-operator", env!("CARGO_MANIFEST_DIR"))
}

async fn operator_pods(ns: &TestNs) -> Vec<Pod> {
    ns.api::<Pod>()
        .list(&ListParams::default().labels("app.kubernetes.io/name=kappa-operator"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

fn ready(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn ready_pods(ns: &TestNs, n: usize) -> Vec<Pod> {
    wait_for(&format!("{n} operator pods Running and Ready"), WAIT, || async {
        let pods = operator_pods(ns).await;
        let ready: Vec<Pod> = pods.iter().filter(|p| ready(p)).cloned().collect();
        if ready.len() == n && pods.len() == n { Ok(ready) } else { Err(format!("{} pods, {} ready", pods.len(), ready.len())) }
    })
    .await
}

async fn leader(ns: &TestNs) -> Result<String, String> {
    let lease: Lease = ns.api().get("kappa-operator").await.map_err(|e| e.to_string())?;
    lease.spec.and_then(|s| s.holder_identity).ok_or_else(|| "no holder".into())
}

async fn processor_ready(ns: &TestNs) -> Result<(), String> {
    let p: Processor = ns.api().get("totals").await.map_err(|e| e.to_string())?;
    let st = p.status.unwrap_or_default();
    let ready = st.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
    if ready { Ok(()) } else { Err(format!("phase {:?} lag {:?} ready {ready}", st.phase, st.lag)) }
}

#[tokio::test]
async fn the_chart_installs_a_restricted_highly_available_operator_and_uninstalls_without_losing_data() {
    let env = Env::get().await;
    support::install_crds(&env.client).await;
    let system = TestNs::new(&env, "chart").await;
    let apps = TestNs::new(&env, "chart-apps").await;
    // The release namespace enforces the restricted Pod Security Standard.
    Api::<k8s_openapi::api::core::v1::Namespace>::all(env.client.clone())
        .patch(
            &system.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}})),
        )
        .await
        .unwrap();

    // Values the schema refuses are refused, naming the value.
    let refused = helm(&["install", "bad", &chart(), "-n", &system.name, "--set", "replicas=0"]).unwrap_err();
    assert!(refused.contains("/replicas"), "{refused}");

    let release = unique("kappa");
    let installed = helm(&[
        "install",
        &release,
        &chart(),
        "-n",
        &system.name,
        "--wait",
        "--timeout",
        "3m",
        "--set",
        "image.tag=dev",
        "--set",
        "logFormat=human",
        "--set",
        &format!("watchNamespaces={{{}}}", apps.name),
    ]);
    if let Err(e) = &installed {
        panic!("helm install failed:\n{e}\n{}", system.diagnostics().await);
    }
    assert!(installed.unwrap().contains("KafkaCluster"), "NOTES.txt says what to apply next");
    let pods = ready_pods(&system, 2).await;
    let first_leader = wait_for("a leader", WAIT, || async { leader(&system).await }).await;
    assert!(pods.iter().any(|p| p.name_any() == first_leader), "the leader is one of the release's pods");

    // The example pipeline, reconciled by the chart's operator.
    let input = unique("e2e-chart-orders");
    create::<KafkaCluster>(&apps, json!({"metadata": {"name": "default"}, "spec": {"bootstrapServers": env.kafka_bootstrap}})).await;
    create::<Topic>(
        &apps,
        json!({"metadata": {"name": "orders"}, "spec": {"topicName": input, "partitions": 3, "deletionPolicy": "Retain"}}),
    )
    .await;
    create::<Processor>(&apps, processor_json("sum", 1)).await;
    processor(&["produce", "--topic", &input, "--count", "5000"]).unwrap();
    wait_for("the pipeline to be Ready", WAIT, || async { processor_ready(&apps).await }).await;

    // The leader's pod goes: another replica leads within 20 s. That may be
    // the other original pod or the ReplicaSet's replacement, whichever
    // takes the expired lease first; it must be a live pod of the release.
    let gone = Instant::now();
    system.api::<Pod>().delete(&first_leader, &DeleteParams::default().grace_period(0)).await.unwrap();
    let next = wait_for("another replica to lead", Duration::from_secs(20), || async {
        let l = leader(&system).await?;
        let live: BTreeSet<String> = operator_pods(&system).await.into_iter().map(|p| p.name_any()).collect();
        if l != first_leader && live.contains(&l) { Ok(l) } else { Err(format!("holder {l}")) }
    })
    .await;
    eprintln!("{next} took over {:.1} s after the leader's pod was deleted", gone.elapsed().as_secs_f64());
    // The new leader keeps the pipeline Ready and reconciling.
    processor(&["produce", "--topic", &input, "--count", "1000", "--seed", "2"]).unwrap();
    wait_for("the pipeline to catch up under the new leader", WAIT, || async {
        processor_ready(&apps).await?;
        let p: Processor = apps.api().get("totals").await.map_err(|e| e.to_string())?;
        let vv = p.status.and_then(|s| s.active_version).ok_or("no active version")?;
        let v: kappa_operator::api::ViewVersion = apps.api().get(&format!("totals-{vv}")).await.map_err(|e| e.to_string())?;
        if v.status.and_then(|s| s.replay_target).is_some() { Ok(()) } else { Err("no progress yet".into()) }
    })
    .await;
    ready_pods(&system, 2).await;

    // An upgrade with changed values rolls the operator.
    let before: BTreeSet<String> = operator_pods(&system).await.iter().map(|p| p.name_any()).collect();
    helm(&["upgrade", &release, &chart(), "-n", &system.name, "--reuse-values", "--set", "logLevel=debug", "--wait", "--timeout", "3m"])
        .unwrap();
    wait_for("the upgrade to replace every operator pod", WAIT, || async {
        let now: BTreeSet<String> = operator_pods(&system).await.iter().filter(|p| ready(p)).map(|p| p.name_any()).collect();
        if now.len() == 2 && now.is_disjoint(&before) { Ok(()) } else { Err(format!("{now:?}")) }
    })
    .await;
    // One of the new pods leads and reconciles: a spec change made now is
    // carried out, and every resource is Ready for its latest generation.
    let after: BTreeSet<String> = operator_pods(&system).await.iter().map(|p| p.name_any()).collect();
    wait_for("a new pod to lead after the upgrade", WAIT, || async {
        let l = leader(&system).await?;
        if after.contains(&l) { Ok(()) } else { Err(format!("holder {l}")) }
    })
    .await;
    apps.api::<Processor>().patch("totals", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 2}}))).await.unwrap();
    wait_for("the new leader to scale the processor and keep it Ready", WAIT, || async {
        processor_ready(&apps).await?;
        let p: Processor = apps.api().get("totals").await.map_err(|e| e.to_string())?;
        let vv = p.status.as_ref().and_then(|s| s.active_version.clone()).ok_or("no active version")?;
        let d: Deployment = apps.api().get(&format!("totals-{vv}")).await.map_err(|e| e.to_string())?;
        let ready = d.status.and_then(|s| s.ready_replicas).unwrap_or(0);
        if ready != 2 {
            return Err(format!("{ready} of 2 processor pods ready"));
        }
        for t in apps.api::<Topic>().list(&ListParams::default()).await.map_err(|e| e.to_string())?.items {
            let st = t.status.clone().unwrap_or_default();
            let ok = st.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
            if !ok || st.observed_generation != t.metadata.generation {
                return Err(format!("Topic {} not Ready: {:?}", t.name_any(), st.conditions));
            }
        }
        Ok(())
    })
    .await;

    // Uninstalling keeps the CRDs, the Topics and the Kafka data.
    helm(&["uninstall", &release, "-n", &system.name, "--wait"]).unwrap();
    wait_for("the operator pods to go", WAIT, || async {
        let n = operator_pods(&system).await.len();
        if n == 0 { Ok(()) } else { Err(format!("{n} pods")) }
    })
    .await;
    let crds: Api<CustomResourceDefinition> = Api::all(env.client.clone());
    for name in ["kafkaclusters.kappa.dev", "topics.kappa.dev", "processors.kappa.dev", "viewversions.kappa.dev"] {
        assert!(crds.get_opt(name).await.unwrap().is_some(), "CRD {name} must survive helm uninstall");
    }
    assert!(apps.api::<Topic>().get_opt("orders").await.unwrap().is_some(), "Topics survive helm uninstall");
    let kafka = support::kafka();
    assert_eq!(kafka.topics(std::slice::from_ref(&input)).await.unwrap().get(&input).map(|t| t.partitions), Some(3));
    // With no operator left, the finalizers stay: release them the documented way.
    for t in apps.api::<Topic>().list(&ListParams::default()).await.unwrap().items {
        apps.api::<Topic>()
            .patch(&t.name_any(), &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}})))
            .await
            .unwrap();
    }
    kafka.delete_topics(&[input]).await.unwrap();
}

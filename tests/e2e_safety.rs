//! The cutover's promise outside the happy path, against the lab: readers
//! only ever switch to a view that has consumed everything, and the log a
//! version depends on is never lost. Versions deleted, status lost, Kafka
//! away, inputs deleted, pinned versions, foreground deletion, rare commits,
//! and the operator killed at every phase boundary of a rollout.

mod support;

use std::{
    future::Future,
    sync::OnceLock,
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::api::{apps::v1::Deployment, core::v1::Event};
use kappa_operator::{
    api::{Processor, Topic, ViewVersion, conditions::Condition},
    controller::fault::POINTS,
    kafka::Kafka,
};
use kube::{
    ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};
use serde_json::json;
use support::{
    TestNs, create, kafka, patch,
    pipeline::{
        WAIT, active_is, caught_up, check, events, events_reaching, first_version_live, logic_patch, phase_is, pipeline, processor_json,
        processor_state, produce, served, versions,
    },
    processor, unique, wait_for,
};
use tokio::sync::RwLock;

/// The outage test stops the lab's Kafka, so it runs alone; the others
/// share the broker.
fn broker_lock() -> &'static RwLock<()> {
    static LOCK: OnceLock<RwLock<()>> = OnceLock::new();
    LOCK.get_or_init(|| RwLock::new(()))
}

fn run_args(args: &[&str]) -> serde_json::Value {
    json!({"spec": {"template": {"args": args}}})
}

fn condition(p: &Processor, type_: &str) -> Option<Condition> {
    p.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_).cloned()
}

/// The active version, as the Processor's status says.
async fn active(ns: &TestNs) -> Result<String, String> {
    processor_state(ns).await?.status.and_then(|s| s.active_version).ok_or_else(|| "no active version".into())
}

/// Checks `check` every 250 ms for `span`; panics the first time it fails.
async fn holds_for<F, Fut>(what: &str, span: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let start = Instant::now();
    while start.elapsed() < span {
        if let Err(seen) = check().await {
            panic!("{what} stopped holding after {:?}: {seen}", start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Readers on `v`, and `v` active.
async fn serving(ns: &TestNs, v: &str) -> Result<(), String> {
    let (cm, svc) = served(ns).await;
    let a = active(ns).await?;
    if cm == v && svc == v && a == v { Ok(()) } else { Err(format!("active {a}, configmap {cm}, service {svc}")) }
}

/// Waits until a version other than `old` is active and served: that version.
async fn replaced(ns: &TestNs, old: &str, what: &str, timeout: Duration) -> String {
    let new = wait_for(&format!("{what} to replace version {old}"), timeout, || async {
        let a = active(ns).await?;
        if a != old { Ok(a) } else { Err(format!("still {a}")) }
    })
    .await;
    active_is(ns, &new).await;
    new
}

/// Warning events of the Processor with this reason.
async fn warnings(ns: &TestNs, reason: &str) -> usize {
    let list = ns.api::<Event>().list(&ListParams::default()).await.unwrap().items;
    list.iter().filter(|e| e.type_.as_deref() == Some("Warning") && e.reason.as_deref() == Some(reason)).count()
}

#[tokio::test]
async fn deleting_the_active_view_version_mid_rollout_waits_and_never_cuts_over() {
    let _shared = broker_lock().read().await;
    let s = pipeline("delactive", &[]).await;
    let mut p = processor_json("sum", 1);
    p["spec"]["rollout"]["retainVersions"] = json!(0);
    let (v1, vv1) = first_version_live(&s, p, 20_000).await;
    // A candidate that never commits stays behind.
    patch::<Processor>(&s.ns, "totals", run_args(&["run", "--logic", "count", "--commit-every", "3600"])).await.unwrap();
    phase_is(&s.ns, "Replaying").await;
    s.ns.api::<ViewVersion>().delete(&vv1.name_any(), &DeleteParams::default()).await.unwrap();

    let held = wait_for("the Processor to say the active ViewVersion's deletion waits", WAIT, || async {
        match condition(&processor_state(&s.ns).await?, "DeletionBlocked") {
            Some(c) if c.status == "True" => Ok(c),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(held.message.contains(&format!("{v1} (active)")), "{}", held.message);
    holds_for("v1 active and served while its ViewVersion is being deleted", Duration::from_secs(8), || serving(&s.ns, &v1)).await;
    let kept: ViewVersion = s.ns.api().get(&vv1.name_any()).await.unwrap();
    assert!(kept.metadata.deletion_timestamp.is_some(), "the deletion was asked for, and waits");
    assert_eq!(events(&s.ns, "CutOver").await, 0);
    assert!(warnings(&s.ns, "DeletionBlocked").await >= 1, "a Warning event says why");

    // A version that catches up is promoted through the gate; then v1 is no
    // longer needed (retainVersions 0) and goes.
    patch::<Processor>(&s.ns, "totals", logic_patch("count")).await.unwrap();
    replaced(&s.ns, &v1, "a caught-up version", WAIT).await;
    wait_for("the deleted ViewVersion to go once not needed", WAIT, || async {
        match s.ns.api::<ViewVersion>().get_opt(&vv1.name_any()).await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(v) => Err(format!("still there: {:?}", v.status.and_then(|s| s.phase))),
        }
    })
    .await;
    let (_, vv3) = caught_up(&s.ns).await;
    check(&s.input, &vv3, "count").expect("the promoted view is exact");
    assert_eq!(events_reaching(&s.ns, "CutOver", 1).await, 1);
}

#[tokio::test]
async fn a_processor_whose_status_is_lost_mid_rollout_resumes_where_it_was() {
    let _shared = broker_lock().read().await;
    let s = pipeline("wiped", &[]).await;
    let (v1, _) = first_version_live(&s, processor_json("sum", 1), 20_000).await;
    // A candidate that commits every 15 s: the rollout takes a while.
    patch::<Processor>(&s.ns, "totals", run_args(&["run", "--logic", "count", "--commit-every", "15"])).await.unwrap();
    let v2 = phase_is(&s.ns, "Replaying").await.status.unwrap().candidate_version.unwrap();
    s.ns.api::<Processor>().patch_status("totals", &PatchParams::default(), &Patch::Merge(json!({"status": null}))).await.unwrap();

    let rebuilt = wait_for("the status to be rebuilt from the ViewVersions", WAIT, || async {
        let st = processor_state(&s.ns).await?.status.unwrap_or_default();
        match (&st.active_version, &st.candidate_version, st.phase.as_deref()) {
            (Some(_), Some(_), Some(_)) => Ok(st),
            _ => Err(format!("{st:?}")),
        }
    })
    .await;
    if rebuilt.active_version.as_deref() == Some(v1.as_str()) {
        assert_eq!(rebuilt.candidate_version.as_deref(), Some(v2.as_str()));
        assert_eq!(served(&s.ns).await, (v1.clone(), v1.clone()), "no first-version shortcut: readers stay on v1");
    }
    active_is(&s.ns, &v2).await;
    let (_, vv2) = caught_up(&s.ns).await;
    check(&s.input, &vv2, "count").expect("the promoted view is exact");
    assert_eq!(events_reaching(&s.ns, "CutOver", 1).await, 1);
    assert_eq!(events_reaching(&s.ns, "FirstVersion", 1).await, 1);
    assert_eq!(events_reaching(&s.ns, "VersionCreated", 1).await, 1, "v2's: v1's creation is told by its FirstVersion event");
}

#[tokio::test]
async fn kafka_away_longer_than_the_progress_deadline_fails_nothing() {
    let _alone = broker_lock().write().await;
    let s = pipeline("outage", &[]).await;
    let mut p = processor_json("sum", 1);
    p["spec"]["rollout"]["progressDeadlineSeconds"] = json!(20);
    let (_, _) = first_version_live(&s, p, 20_000).await;
    // The candidate commits every 10 s, so Kafka goes while it replays.
    patch::<Processor>(&s.ns, "totals", run_args(&["run", "--logic", "count", "--commit-every", "10"])).await.unwrap();
    let v2 = phase_is(&s.ns, "Replaying").await.status.unwrap().candidate_version.unwrap();

    support::lab(&["stop", "kafka"]);
    let away = std::panic::AssertUnwindSafe(holds_for("no version failed while Kafka is away", Duration::from_secs(45), || async {
        let p = processor_state(&s.ns).await?;
        let failed: Vec<String> = versions(&s.ns)
            .await
            .into_iter()
            .filter(|v| v.status.as_ref().and_then(|s| s.phase) == Some(kappa_operator::api::VersionPhase::Failed))
            .map(|v| v.name_any())
            .collect();
        let phase = p.status.and_then(|s| s.phase).unwrap_or_default();
        if failed.is_empty() && phase != "Failed" { Ok(()) } else { Err(format!("phase {phase}, failed {failed:?}")) }
    }));
    let outcome = futures::FutureExt::catch_unwind(away).await;
    support::lab(&["up"]);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    active_is(&s.ns, &v2).await;
    let (_, vv2) = caught_up(&s.ns).await;
    check(&s.input, &vv2, "count").expect("the view is exact after the outage");
    assert_eq!(events(&s.ns, "RolloutFailed").await, 0);
    assert_eq!(events_reaching(&s.ns, "CutOver", 1).await, 1);
}

#[tokio::test]
async fn an_input_topic_is_kept_while_a_standby_reads_it() {
    let _shared = broker_lock().read().await;
    let s = pipeline("heldinput", &[]).await;
    let other = unique("e2e-heldinput-b");
    create::<Topic>(
        &s.ns,
        json!({"metadata": {"name": "orders-b"}, "spec": {"topicName": other, "partitions": 3, "deletionPolicy": "Delete"}}),
    )
    .await;
    let (v1, _) = first_version_live(&s, processor_json("sum", 1), 5_000).await;
    produce(&other, 5_000, 3);
    patch::<Processor>(&s.ns, "totals", json!({"spec": {"inputs": ["orders-b"]}})).await.unwrap();
    replaced(&s.ns, &v1, "the version reading orders-b", WAIT).await;

    // v1 stands by, and still reads orders: deleting that Topic waits.
    s.ns.api::<Topic>().delete("orders", &DeleteParams::default()).await.unwrap();
    let blocked = wait_for("Topic orders to say who holds it", WAIT, || async {
        let t: Topic = s.ns.api().get("orders").await.map_err(|e| e.to_string())?;
        let ready = t.status.unwrap_or_default().conditions.into_iter().find(|c| c.type_ == "Ready");
        match ready {
            Some(c) if c.reason == "DeletionBlocked" => Ok(c),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(blocked.message.contains(&format!("ViewVersion totals-{v1} (Standby)")), "{}", blocked.message);
    let k = kafka();
    holds_for("the Kafka topic a standby reads to stay", Duration::from_secs(5), || async {
        let there = k.topics(std::slice::from_ref(&s.input)).await.map_err(|e| e.to_string())?;
        if there.contains_key(&s.input) { Ok(()) } else { Err("deleted".into()) }
    })
    .await;

    // Once the standby is retired, nothing reads it, and it goes.
    patch::<Processor>(&s.ns, "totals", json!({"spec": {"rollout": {"retainVersions": 0}}})).await.unwrap();
    wait_for("Topic orders and its Kafka topic to go", WAIT, || async {
        let resource = s.ns.api::<Topic>().get_opt("orders").await.map_err(|e| e.to_string())?;
        let kafka_topic = k.topics(std::slice::from_ref(&s.input)).await.map_err(|e| e.to_string())?;
        if resource.is_none() && kafka_topic.is_empty() { Ok(()) } else { Err("still there".into()) }
    })
    .await;
    // The retired version's metric series went with it; the live one's stay.
    let (ip, port) = s.op.metrics_addr.split_once(':').unwrap();
    let (old, live) = (format!("version=\"{v1}\""), "kappa_version_lag_records{");
    wait_for("the retired version's series to go", WAIT, || async {
        let scraped = support::pipeline::http_get(ip, port.parse().unwrap(), "/metrics").await;
        let series: Vec<&str> = scraped.lines().filter(|l| l.starts_with("kappa_version_")).collect();
        match (series.iter().any(|l| l.contains(&old)), series.iter().any(|l| l.starts_with(live))) {
            (false, true) => Ok(()),
            _ => Err(series.join("\n")),
        }
    })
    .await;
}

#[tokio::test]
async fn an_input_deleted_in_kafka_during_a_replay_blocks_promotion_and_is_named() {
    let _shared = broker_lock().read().await;
    // No resync: the Topic must not create the Kafka topic again during the test.
    let s = pipeline("lostinput", &["--resync-seconds", "3600"]).await;
    let (v1, _) = first_version_live(&s, processor_json("sum", 1), 5_000).await;
    patch::<Processor>(&s.ns, "totals", run_args(&["run", "--logic", "count", "--commit-every", "5"])).await.unwrap();
    phase_is(&s.ns, "Replaying").await;
    kafka().delete_topics(std::slice::from_ref(&s.input)).await.unwrap();

    let named = format!("input topic {} is not in Kafka's metadata", s.input);
    wait_for("the Processor to name the missing input", WAIT, || async {
        let p = processor_state(&s.ns).await?;
        let message = condition(&p, "Progressing").map(|c| c.message).unwrap_or_default();
        if message.contains(&named) { Ok(()) } else { Err(message) }
    })
    .await;
    holds_for("no promotion while the input is missing", Duration::from_secs(12), || serving(&s.ns, &v1)).await;
    assert_eq!(events(&s.ns, "CutOver").await, 0);
}

#[tokio::test]
async fn a_pinned_version_cannot_hide_a_code_change() {
    let _shared = broker_lock().read().await;
    let s = pipeline("pinned", &[]).await;
    let mut p = processor_json("sum", 1);
    p["spec"]["version"] = json!("v1");
    let (v1, _) = first_version_live(&s, p, 2_000).await;
    assert_eq!(v1, "v1");
    let refused = patch::<Processor>(&s.ns, "totals", logic_patch("count")).await.unwrap_err().to_string();
    assert!(refused.contains("spec.version is pinned and unchanged"), "{refused}");
    // What does not change the computation is fine; so is a new version id with new code.
    patch::<Processor>(&s.ns, "totals", json!({"spec": {"replicas": 2}})).await.unwrap();
    patch::<Processor>(&s.ns, "totals", json!({"spec": {"version": "v2", "template": {"args": ["run", "--logic", "count"]}}}))
        .await
        .unwrap();
    active_is(&s.ns, "v2").await;
}

#[tokio::test]
async fn deleting_a_processor_in_the_foreground_creates_nothing_again() {
    let _shared = broker_lock().read().await;
    let s = pipeline("foreground", &[]).await;
    let (v1, _) = first_version_live(&s, processor_json("sum", 1), 5_000).await;
    patch::<Processor>(&s.ns, "totals", logic_patch("count")).await.unwrap();
    replaced(&s.ns, &v1, "v2", WAIT).await;
    let views: Vec<String> = versions(&s.ns).await.iter().map(|v| v.spec.output_topic.clone()).collect();
    assert_eq!(views.len(), 2, "the active version and its standby");

    s.ns.api::<Processor>().delete("totals", &DeleteParams::foreground()).await.unwrap();
    wait_for("the Processor to be gone (dependents first)", WAIT, || async {
        match s.ns.api::<Processor>().get_opt("totals").await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(p) => Err(format!("finalizers {:?}", p.finalizers())),
        }
    })
    .await;
    let owned = ListParams::default().labels("kappa.dev/processor=totals");
    let left = || async {
        let topics = s.ns.api::<Topic>().list(&owned).await.map_err(|e| e.to_string())?.items.len();
        let vvs = s.ns.api::<ViewVersion>().list(&owned).await.map_err(|e| e.to_string())?.items.len();
        let deployments = s.ns.api::<Deployment>().list(&owned).await.map_err(|e| e.to_string())?.items.len();
        if topics + vvs + deployments == 0 {
            Ok(())
        } else {
            Err(format!("{topics} Topics, {vvs} ViewVersions, {deployments} Deployments"))
        }
    };
    wait_for("the garbage collector to delete what the Processor owned", WAIT, left).await;
    holds_for("nothing of the Processor to come back", Duration::from_secs(10), left).await;
    // The views of versions that were never retired keep their data (deletionPolicy Retain).
    let k = kafka();
    assert_eq!(k.topics(&views).await.unwrap().len(), 2, "no view's Kafka topic is deleted with its Processor");
    k.delete_topics(&views).await.unwrap();
}

#[tokio::test]
async fn a_processor_that_commits_every_30s_under_steady_input_is_promoted() {
    let _shared = broker_lock().read().await;
    let s = pipeline("rarecommits", &[]).await;
    let mut p = processor_json("sum", 1);
    p["spec"]["rollout"]["stableForSeconds"] = json!(10);
    p["spec"]["rollout"]["maxLag"] = json!(0);
    let (v1, _) = first_version_live(&s, p, 10_000).await;
    // 100 events a second for 60 s: lag never reads 0 between commits.
    let input = s.input.clone();
    let steady = std::thread::spawn(move || {
        processor(&["produce", "--topic", &input, "--count", "6000", "--rate", "100", "--seed", "5", "--keys", "500"])
    });
    patch::<Processor>(&s.ns, "totals", run_args(&["run", "--logic", "count", "--commit-every", "30"])).await.unwrap();
    let asked = Instant::now();
    // Two commit intervals, and the pod's start.
    replaced(&s.ns, &v1, "the candidate, within two commit intervals,", Duration::from_secs(70)).await;
    eprintln!("promoted {:?} after the change, under steady input", asked.elapsed());
    steady.join().unwrap().expect("steady input");
    let (_, vv2) = caught_up(&s.ns).await;
    check(&s.input, &vv2, "count").expect("the promoted view is exact");
}

/// A rollout with verification, manual promotion and retainVersions 0
/// passes every phase boundary; the operator is killed at `point`, then
/// started again, and the rollout completes once.
async fn killed_at(point: &'static str) {
    let mut s = pipeline(&format!("kill-{point}"), &[]).await;
    let mut p = processor_json("sum", 1);
    p["spec"]["rollout"] = json!({
        "stableForSeconds": 2, "scaleDownDelaySeconds": 2, "retainVersions": 0, "promotion": "Manual",
        "verify": {"image": "ghcr.io/kappa-dev/kappa-processor:0.1.0", "args": ["check", "--bootstrap", "$(KAPPA_BOOTSTRAP_SERVERS)",
            "--input", "$(KAPPA_INPUT_TOPICS)", "--view", "$(KAPPA_OUTPUT_TOPIC)", "--logic", "count"]}
    });
    let (v1, _) = first_version_live(&s, p, 20_000).await;
    s.op.env = vec![("KAPPA_FAULT_PAUSE_AT".into(), point.into()), ("KAPPA_FAULT_PAUSE_SECONDS".into(), "300".into())];
    s.op.restart();
    patch::<Processor>(&s.ns, "totals", logic_patch("count")).await.unwrap();
    let marker = format!("fault: pausing at {point}");
    wait_for(&format!("the operator to pause at {point}"), WAIT, || async {
        promote_when_asked(&s.ns).await;
        if s.op.logs().contains(&marker) { Ok(()) } else { Err("not yet".into()) }
    })
    .await;
    s.op.kill();
    s.op.env.clear();
    s.op.restart();

    let v2 = wait_for(&format!("the rollout to complete after a kill at {point}"), WAIT, || async {
        promote_when_asked(&s.ns).await;
        let a = active(&s.ns).await?;
        let left = versions(&s.ns).await;
        if a != v1 && serving(&s.ns, &a).await.is_ok() && left.len() == 1 {
            Ok(a)
        } else {
            Err(format!("active {a}, {} versions", left.len()))
        }
    })
    .await;
    let (_, vv2) = caught_up(&s.ns).await;
    assert_eq!(vv2.spec.version, v2);
    check(&s.input, &vv2, "count").unwrap_or_else(|e| panic!("killed at {point}: the view is not exact: {e}"));
    assert_eq!(events_reaching(&s.ns, "CutOver", 1).await, 1, "killed at {point}: one cutover");
    let created = s.op.logs().lines().filter(|l| l.contains("created version") && l.contains(&v2)).count();
    assert_eq!(created, 1, "killed at {point}: version {v2} created once");
}

/// With manual promotion: name the waiting version, as a GitOps commit would.
async fn promote_when_asked(ns: &TestNs) {
    let Ok(p) = processor_state(ns).await else { return };
    let st = p.status.unwrap_or_default();
    if st.phase.as_deref() == Some("AwaitingPromotion")
        && let Some(c) = st.candidate_version
        && p.spec.rollout.promote.as_deref() != Some(c.as_str())
    {
        let _ = patch::<Processor>(ns, "totals", json!({"spec": {"rollout": {"promote": c}}})).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_operator_killed_at_every_phase_boundary_completes_each_rollout_once() {
    let _shared = broker_lock().read().await;
    futures::stream::iter(POINTS).map(killed_at).buffer_unordered(4).collect::<Vec<()>>().await;
}

//! Production Kafka loses brokers: on the lab's three-broker cluster, the
//! leader of a replay's input stopped mid-replay, a rolling restart during
//! a rollout, the active controller stopped while 500 Topics are created,
//! and a broker down for longer than `progressDeadlineSeconds`. Each test
//! takes brokers away, so they run one at a time.

mod support;

use std::{
    collections::BTreeMap,
    sync::OnceLock,
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Event;
use kappa_operator::{
    api::{Processor, Topic, VersionPhase},
    kafka::Kafka,
};
use kube::{ResourceExt, api::ListParams};
use serde_json::json;
use support::{
    Env, Operator, TestNs, create, kafka, lab, patch,
    pipeline::{
        Pipeline, active_is, caught_up, check, first_version_live, phase_is, pipeline_with, processor_json, processor_state, versions,
    },
    unique, wait_for,
};
use tokio::sync::Mutex;

fn alone() -> &'static Mutex<()> {
    static LOCK: OnceLock<Mutex<()>> = OnceLock::new();
    LOCK.get_or_init(|| Mutex::new(()))
}

/// A pipeline whose input and views are replicated three times, with a
/// first version live over `events` events.
async fn replicated(prefix: &str, events: u64, rollout: serde_json::Value) -> (Pipeline, String) {
    let s = pipeline_with(prefix, &[], 3).await;
    let mut p = processor_json("sum", 1);
    p["spec"]["view"]["replicationFactor"] = json!(3);
    for (k, v) in rollout.as_object().into_iter().flatten() {
        p["spec"]["rollout"][k] = v.clone();
    }
    let (v1, _) = first_version_live(&s, p, events).await;
    (s, v1)
}

/// Runs `during` with a broker (or brokers) away, bringing every stopped
/// one back whatever happens.
async fn with_brokers_restored<F: Future<Output = ()>>(during: F) {
    let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(during)).await;
    lab(&["start", "kafka"]);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// The broker that leads partition 0 of `topic`.
async fn leader_of(topic: &str) -> i32 {
    let bootstrap = support::required("KAPPA_KAFKA_BOOTSTRAP");
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        use rdkafka::consumer::Consumer;
        let c: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new().set("bootstrap.servers", &bootstrap).create().unwrap();
        let meta = c.fetch_metadata(Some(&topic), Duration::from_secs(10)).unwrap();
        meta.topics()[0].partitions().iter().find(|p| p.id() == 0).unwrap().leader()
    })
    .await
    .unwrap()
}

/// No version of the namespace in phase Failed.
async fn none_failed(ns: &TestNs) -> Result<(), String> {
    let failed: Vec<String> = versions(ns)
        .await
        .into_iter()
        .filter(|v| v.status.as_ref().and_then(|s| s.phase) == Some(VersionPhase::Failed))
        .map(|v| v.name_any())
        .collect();
    if failed.is_empty() { Ok(()) } else { Err(format!("failed: {failed:?}")) }
}

/// Waits until the rollout to a new version completes; on the way, checks
/// that no version fails and that the promoted version had committed every
/// input record when it was promoted (no new input arrives meanwhile).
async fn completes_without_early_promotion(s: &Pipeline, v1: &str) -> String {
    let k = kafka();
    let v2 = wait_for("the new version to be promoted", Duration::from_secs(240), || async {
        none_failed(&s.ns).await.map_err(|e| panic!("{e}")).ok();
        let st = processor_state(&s.ns).await?.status.unwrap_or_default();
        match st.active_version {
            Some(a) if a != v1 => Ok(a),
            other => Err(format!("active {other:?}, phase {:?}", st.phase)),
        }
    })
    .await;
    let group = versions(&s.ns).await.into_iter().find(|v| v.spec.version == v2).unwrap().spec.consumer_group;
    let behind = k.group_lag(&group, &s.input).await.unwrap();
    assert_eq!(behind, Some(0), "version {v2} was promoted with records of its input not committed");
    active_is(&s.ns, &v2).await;
    v2
}

#[tokio::test]
async fn the_leader_of_a_replays_input_stopped_mid_replay() {
    let _alone = alone().lock().await;
    let (s, v1) = replicated("leaderloss", 100_000, json!({"stableForSeconds": 3})).await;
    // Commits every 5 s: the replay is still going when the leader goes.
    patch::<Processor>(&s.ns, "totals", json!({"spec": {"template": {"args": ["run", "--logic", "count", "--commit-every", "5"]}}}))
        .await
        .unwrap();
    phase_is(&s.ns, "Replaying").await;
    let leader = leader_of(&s.input).await;
    lab(&["stop", &format!("kafka-{leader}")]);
    with_brokers_restored(async {
        let v2 = completes_without_early_promotion(&s, &v1).await;
        let (_, vv2) = caught_up(&s.ns).await;
        assert_eq!(vv2.spec.version, v2);
        check(&s.input, &vv2, "count").expect("the view is exact though its input's leader went away");
    })
    .await;
}

#[tokio::test]
async fn a_rolling_restart_of_every_broker_during_a_rollout() {
    let _alone = alone().lock().await;
    let (s, v1) = replicated("rolling", 50_000, json!({"stableForSeconds": 3})).await;
    patch::<Processor>(&s.ns, "totals", json!({"spec": {"template": {"args": ["run", "--logic", "count", "--commit-every", "5"]}}}))
        .await
        .unwrap();
    phase_is(&s.ns, "Replaying").await;
    with_brokers_restored(async {
        for n in 1..=3 {
            lab(&["stop", &format!("kafka-{n}")]);
            none_failed(&s.ns).await.unwrap();
            lab(&["start", &format!("kafka-{n}")]);
        }
        let v2 = completes_without_early_promotion(&s, &v1).await;
        let (_, vv2) = caught_up(&s.ns).await;
        assert_eq!(vv2.spec.version, v2);
        check(&s.input, &vv2, "count").expect("the view is exact after a rolling restart");
    })
    .await;
}

#[tokio::test]
async fn a_broker_away_longer_than_the_progress_deadline_fails_nothing() {
    let _alone = alone().lock().await;
    let (s, v1) = replicated("brokeraway", 50_000, json!({"stableForSeconds": 3, "progressDeadlineSeconds": 20})).await;
    patch::<Processor>(&s.ns, "totals", json!({"spec": {"template": {"args": ["run", "--logic", "count", "--commit-every", "5"]}}}))
        .await
        .unwrap();
    phase_is(&s.ns, "Replaying").await;
    let away = if leader_of(&s.input).await == 3 { 2 } else { 3 };
    lab(&["stop", &format!("kafka-{away}")]);
    with_brokers_restored(async {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(40) {
            none_failed(&s.ns).await.unwrap();
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let v2 = completes_without_early_promotion(&s, &v1).await;
        let (_, vv2) = caught_up(&s.ns).await;
        assert_eq!(vv2.spec.version, v2);
        check(&s.input, &vv2, "count").expect("the view is exact");
    })
    .await;
}

#[tokio::test]
async fn the_active_controller_stopped_while_500_topics_are_created() {
    let _alone = alone().lock().await;
    let env = Env::get().await;
    support::install_crds(&env.client).await;
    let ns = TestNs::new(&env, "controller").await;
    create::<kappa_operator::api::KafkaCluster>(
        &ns,
        json!({"metadata": {"name": "default"}, "spec": {"bootstrapServers": env.kafka_bootstrap}}),
    )
    .await;
    let op = Operator::start(&ns.name, &[]);
    // Dropped in order: the namespace goes while the operator still runs.
    let setup = (ns, op);
    let ns = &setup.0;
    let prefix = unique("e2e-ctl");
    let names: Vec<String> = (0..500).map(|i| format!("{prefix}-{i:03}")).collect();
    let controller = lab(&["kafka-controller"]);
    let creates = futures::stream::iter(names.clone())
        .map(|n| {
            let ns = &ns;
            async move {
                create::<Topic>(
                    ns,
                    json!({"metadata": {"name": n}, "spec": {"partitions": 1, "replicationFactor": 3, "deletionPolicy": "Delete"}}),
                )
                .await;
            }
        })
        .buffer_unordered(16);
    let stop = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        tokio::task::spawn_blocking(move || lab(&["stop", &controller])).await.unwrap();
    };
    futures::join!(creates.collect::<Vec<()>>(), stop);
    with_brokers_restored(async {
        tokio::time::sleep(Duration::from_secs(10)).await;
    })
    .await;

    wait_for("all 500 Topics Ready", Duration::from_secs(300), || async {
        let topics = ns.api::<Topic>().list(&ListParams::default()).await.map_err(|e| e.to_string())?.items;
        let ready =
            topics.iter().filter(|t| t.status.iter().flat_map(|s| &s.conditions).any(|c| c.type_ == "Ready" && c.status == "True")).count();
        if ready == 500 { Ok(()) } else { Err(format!("{ready} of {} Ready", topics.len())) }
    })
    .await;
    // Each Topic names the one Kafka topic there is of its name.
    let k = kafka();
    let in_kafka = k.topics(&names).await.unwrap();
    assert_eq!(in_kafka.len(), 500);
    let topics = ns.api::<Topic>().list(&ListParams::default()).await.unwrap().items;
    for t in &topics {
        let id = t.status.as_ref().and_then(|s| s.topic_id.clone());
        assert_eq!(id.as_ref(), in_kafka.get(&t.name_any()).map(|i| &i.id), "Topic {}", t.name_any());
    }
    // None was created twice: at most one Created event per Topic.
    let events = ns.api::<Event>().list(&ListParams::default()).await.unwrap().items;
    let mut created: BTreeMap<String, usize> = BTreeMap::new();
    for e in events.iter().filter(|e| e.reason.as_deref() == Some("Created")) {
        *created.entry(e.involved_object.name.clone().unwrap_or_default()).or_default() += 1;
    }
    assert!(
        created.values().all(|n| *n == 1),
        "Topics created more than once: {:?}",
        created.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
    );
    // Leave Kafka as it was.
    k.delete_topics(&names).await.unwrap();
}

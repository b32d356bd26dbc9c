//! Topic and KafkaCluster reconciliation against the lab's real Kafka, with
//! the operator binary running as a local process.

mod support;

use std::{collections::BTreeMap, sync::OnceLock, time::Duration};

use k8s_openapi::api::core::v1::Secret;
use kappa_operator::{
    api::{KafkaCluster, Processor, Topic, conditions::Condition},
    kafka::{Kafka, NewTopic, client::WireKafka},
};
use kube::api::DeleteParams;
use serde_json::json;
use support::{Env, Operator, TestNs, create, kafka, patch, required, unique, wait_for};
use tokio::sync::RwLock;

const WAIT: Duration = Duration::from_secs(60);

/// Tests share the one broker; the outage test stops it, so it runs alone.
fn broker_lock() -> &'static RwLock<()> {
    static LOCK: OnceLock<RwLock<()>> = OnceLock::new();
    LOCK.get_or_init(|| RwLock::new(()))
}

struct Setup {
    ns: TestNs,
    _op: Operator,
}

/// A namespace with the lab's KafkaCluster and an operator watching it
/// (resync every 3 s so drift tests are quick).
async fn setup(prefix: &str) -> Setup {
    let env = Env::get().await;
    support::install_crds(&env.client).await;
    let ns = TestNs::new(&env, prefix).await;
    create::<KafkaCluster>(&ns, json!({"metadata": {"name": "default"}, "spec": {"bootstrapServers": env.kafka_bootstrap}})).await;
    let op = Operator::start(&ns.name, &["--resync-seconds", "3"]);
    Setup { ns, _op: op }
}

fn condition(conds: &[Condition], type_: &str) -> Option<Condition> {
    conds.iter().find(|c| c.type_ == type_).cloned()
}

/// Waits until the Topic's Ready condition has this status (and reason).
async fn topic_ready(ns: &TestNs, name: &str, status: &str, reason: Option<&str>) -> Topic {
    wait_for(&format!("Topic {name} Ready={status} {reason:?}"), WAIT, || async {
        let t: Topic = ns.api::<Topic>().get(name).await.map_err(|e| e.to_string())?;
        let st = t.status.clone().unwrap_or_default();
        let ready = condition(&st.conditions, "Ready");
        match &ready {
            Some(c) if c.status == status && reason.is_none_or(|r| c.reason == r) && st.observed_generation == t.metadata.generation => {
                Ok(t)
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

async fn kafka_partitions(k: &WireKafka, topic: &str) -> Option<i32> {
    k.topics(&[topic.to_string()]).await.unwrap().get(topic).map(|t| t.partitions)
}

async fn kafka_config(k: &WireKafka, topic: &str, key: &str) -> Option<String> {
    let keys: BTreeMap<String, Vec<String>> = [(topic.to_string(), vec![key.to_string()])].into();
    k.topic_configs(&keys).await.unwrap().remove(topic)?.ok()?.remove(key)
}

fn topic_json(name: &str, kafka_name: &str, partitions: i32, policy: &str, config: serde_json::Value) -> serde_json::Value {
    json!({"metadata": {"name": name}, "spec": {
        "topicName": kafka_name, "partitions": partitions, "deletionPolicy": policy, "config": config
    }})
}

#[tokio::test]
async fn create_update_drift_and_grow() {
    let _shared = broker_lock().read().await;
    let s = setup("topics").await;
    let k = kafka();
    let name = unique("e2e-orders");
    create::<Topic>(&s.ns, topic_json("orders", &name, 2, "Delete", json!({"retention.ms": "86400000"}))).await;
    let t = topic_ready(&s.ns, "orders", "True", Some("Ready")).await;
    let st = t.status.unwrap();
    assert_eq!(st.partitions, Some(2));
    assert!(st.topic_id.is_some());
    assert_eq!(st.replayable_from_zero, Some(true));
    assert_eq!(st.config.get("retention.ms").map(String::as_str), Some("86400000"));
    assert_eq!(kafka_partitions(&k, &name).await, Some(2));

    // A config update in the spec reaches Kafka.
    patch::<Topic>(&s.ns, "orders", json!({"spec": {"config": {"retention.ms": "3600000"}}})).await.unwrap();
    wait_for("retention.ms to change in Kafka", WAIT, || async {
        match kafka_config(&k, &name, "retention.ms").await.as_deref() {
            Some("3600000") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // Drift made behind the operator's back is corrected at the next resync.
    let drift: BTreeMap<String, BTreeMap<String, String>> =
        [(name.clone(), [("retention.ms".to_string(), "1000".to_string())].into())].into();
    assert!(k.alter_topic_configs(&drift).await.unwrap()[&name].is_ok());
    wait_for("the drifted retention.ms to be corrected", WAIT, || async {
        match kafka_config(&k, &name, "retention.ms").await.as_deref() {
            Some("3600000") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // Partitions grow.
    patch::<Topic>(&s.ns, "orders", json!({"spec": {"partitions": 5}})).await.unwrap();
    let t = topic_ready(&s.ns, "orders", "True", None).await;
    assert_eq!(t.status.unwrap().partitions, Some(5));
    assert_eq!(kafka_partitions(&k, &name).await, Some(5));

    // A decrease never reaches the operator: the API server refuses it.
    let refused = patch::<Topic>(&s.ns, "orders", json!({"spec": {"partitions": 3}})).await.unwrap_err();
    assert!(refused.to_string().contains("spec.partitions cannot be decreased"), "{refused}");

    s.ns.api::<Topic>().delete("orders", &DeleteParams::default()).await.unwrap();
    wait_for("the Kafka topic to be deleted (deletionPolicy Delete)", WAIT, || async {
        match kafka_partitions(&k, &name).await {
            None => Ok(()),
            Some(p) => Err(format!("still there with {p} partitions")),
        }
    })
    .await;
}

#[tokio::test]
async fn existing_topics_are_adopted_and_a_larger_partition_count_is_reported() {
    let _shared = broker_lock().read().await;
    let s = setup("adopt").await;
    let k = kafka();
    let name = unique("e2e-existing");
    k.create_topics(&[NewTopic { name: name.clone(), partitions: 6, replication_factor: 1, config: BTreeMap::new() }]).await.unwrap();
    create::<Topic>(&s.ns, topic_json("existing", &name, 3, "Delete", json!({}))).await;
    let t = topic_ready(&s.ns, "existing", "False", Some("PartitionDecreaseRefused")).await;
    let st = t.status.unwrap();
    let ready = condition(&st.conditions, "Ready").unwrap();
    assert!(ready.message.contains("has 6 partitions but spec.partitions is 3"), "{}", ready.message);
    assert_eq!(condition(&st.conditions, "Stalled").map(|c| c.status).as_deref(), Some("True"));
    assert_eq!(st.partitions, Some(6), "status reports what Kafka has");
    assert_eq!(kafka_partitions(&k, &name).await, Some(6), "nothing was changed in Kafka");
    // The events follow the status write that says what they tell.
    wait_for("an Adopted event naming the differences", WAIT, || async {
        let events = s.ns.diagnostics().await;
        if events.contains("Adopted") && events.contains("partitions 6 (declared 3)") { Ok(()) } else { Err(events) }
    })
    .await;

    // Declaring what Kafka has makes it Ready, with no recreation.
    patch::<Topic>(&s.ns, "existing", json!({"spec": {"partitions": 6}})).await.unwrap();
    let t = topic_ready(&s.ns, "existing", "True", None).await;
    assert_eq!(t.status.unwrap().topic_id, Some(k.topics(std::slice::from_ref(&name)).await.unwrap()[&name].id.clone()));
}

#[tokio::test]
async fn retain_keeps_the_kafka_topic_and_delete_removes_it_ten_times_over() {
    let _shared = broker_lock().read().await;
    let s = setup("retain").await;
    let k = kafka();
    let kept = unique("e2e-kept");
    create::<Topic>(&s.ns, topic_json("kept", &kept, 1, "Retain", json!({}))).await;
    let t = topic_ready(&s.ns, "kept", "True", None).await;
    assert!(t.metadata.finalizers.unwrap_or_default().is_empty(), "deleting a Retain Topic touches nothing in Kafka: no finalizer");
    // The finalizer follows the policy both ways.
    let finalizers = |want: bool| {
        let api = s.ns.api::<Topic>();
        async move {
            wait_for(&format!("the finalizer to be there: {want}"), WAIT, || async {
                let f = api.get("kept").await.map_err(|e| e.to_string())?.metadata.finalizers.unwrap_or_default();
                if f.contains(&"kappa.dev/topic".to_string()) == want { Ok(()) } else { Err(format!("{f:?}")) }
            })
            .await
        }
    };
    patch::<Topic>(&s.ns, "kept", json!({"spec": {"deletionPolicy": "Delete"}})).await.unwrap();
    finalizers(true).await;
    patch::<Topic>(&s.ns, "kept", json!({"spec": {"deletionPolicy": "Retain"}})).await.unwrap();
    finalizers(false).await;
    s.ns.api::<Topic>().delete("kept", &DeleteParams::default()).await.unwrap();
    wait_for("the Retain Topic resource to go", WAIT, || async {
        match s.ns.api::<Topic>().get_opt("kept").await {
            Ok(None) => Ok(()),
            other => Err(format!("{:?}", other.map(|t| t.map(|t| t.metadata.finalizers)))),
        }
    })
    .await;
    assert_eq!(kafka_partitions(&k, &kept).await, Some(1), "Retain keeps the Kafka topic");
    k.delete_topics(&[kept]).await.unwrap();

    let churn = unique("e2e-churn");
    for round in 0..10 {
        create::<Topic>(&s.ns, topic_json("churn", &churn, 1, "Delete", json!({}))).await;
        let ready = topic_ready(&s.ns, "churn", "True", None).await;
        // Ready names the topic Kafka has: the one created this round (its
        // id), though a broker's metadata may show it a moment later.
        let id = ready.status.and_then(|s| s.topic_id).expect("a Ready Topic reports Kafka's topic id");
        wait_for(&format!("round {round}: Kafka to show the topic the Topic reports"), WAIT, || async {
            let info = k.topics(std::slice::from_ref(&churn)).await.map_err(|e| e.to_string())?.remove(&churn);
            match info {
                Some(t) if t.id == id && t.partitions == 1 => Ok(()),
                other => Err(format!("{other:?}, the Topic reports id {id}")),
            }
        })
        .await;
        s.ns.api::<Topic>().delete("churn", &DeleteParams::default()).await.unwrap();
        wait_for(&format!("round {round}: the resource and the Kafka topic to go"), WAIT, || async {
            let resource = s.ns.api::<Topic>().get_opt("churn").await.map_err(|e| e.to_string())?;
            let topic = kafka_partitions(&k, &churn).await;
            if resource.is_none() && topic.is_none() { Ok(()) } else { Err(format!("resource {} topic {topic:?}", resource.is_some())) }
        })
        .await;
    }
}

#[tokio::test]
async fn a_topic_read_by_a_processor_is_not_deleted() {
    let _shared = broker_lock().read().await;
    let s = setup("readers").await;
    let k = kafka();
    let name = unique("e2e-read");
    create::<Topic>(&s.ns, topic_json("events", &name, 1, "Delete", json!({}))).await;
    topic_ready(&s.ns, "events", "True", None).await;
    create::<Processor>(
        &s.ns,
        json!({"metadata": {"name": "reader"}, "spec": {
            "inputs": ["events"], "replicas": 0, "template": {"image": "kappa-lab/testapp"}
        }}),
    )
    .await;
    s.ns.api::<Topic>().delete("events", &DeleteParams::default()).await.unwrap();
    let t = wait_for("the deletion to wait for the Processor", WAIT, || async {
        let t = s.ns.api::<Topic>().get("events").await.map_err(|e| e.to_string())?;
        let ready = condition(&t.status.clone().unwrap_or_default().conditions, "Ready");
        match ready {
            Some(c) if c.reason == "DeletionBlocked" => Ok(c),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(t.message.contains("is still read by Processor reader"), "{}", t.message);
    assert_eq!(kafka_partitions(&k, &name).await, Some(1));

    s.ns.api::<Processor>().delete("reader", &DeleteParams::default()).await.unwrap();
    wait_for("the Kafka topic to be deleted once nothing reads it", WAIT, || async {
        match kafka_partitions(&k, &name).await {
            None => Ok(()),
            Some(_) => Err("still there".into()),
        }
    })
    .await;
}

#[tokio::test]
async fn a_kafkacluster_is_kept_until_the_topics_that_delete_with_it_are_gone() {
    let _shared = broker_lock().read().await;
    let s = setup("keepcluster").await;
    let k = kafka();
    let name = unique("e2e-keep");
    let retained = unique("e2e-keep-retain");
    create::<Topic>(&s.ns, topic_json("events", &name, 1, "Delete", json!({}))).await;
    create::<Topic>(&s.ns, topic_json("kept", &retained, 1, "Retain", json!({}))).await;
    topic_ready(&s.ns, "kept", "True", None).await;
    topic_ready(&s.ns, "events", "True", None).await;
    let clusters = s.ns.api::<KafkaCluster>();
    wait_for("the KafkaCluster's finalizer", WAIT, || async {
        let f = clusters.get("default").await.map_err(|e| e.to_string())?.metadata.finalizers.unwrap_or_default();
        if f.contains(&"kappa.dev/kafkacluster".to_string()) { Ok(()) } else { Err(format!("{f:?}")) }
    })
    .await;
    // Deleted first, as a namespace's deletion may do: the Topic with
    // deletionPolicy Delete still needs it (the Retain one does not).
    clusters.delete("default", &DeleteParams::default()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let kc = clusters.get("default").await.expect("the KafkaCluster is kept while a Delete Topic uses it");
    assert!(kc.metadata.deletion_timestamp.is_some());
    s.ns.api::<Topic>().delete("events", &DeleteParams::default()).await.unwrap();
    wait_for("the Kafka topic, the Topic and then the KafkaCluster to go", WAIT, || async {
        let topic = kafka_partitions(&k, &name).await;
        let resource = s.ns.api::<Topic>().get_opt("events").await.map_err(|e| e.to_string())?;
        let cluster = clusters.get_opt("default").await.map_err(|e| e.to_string())?;
        if topic.is_none() && resource.is_none() && cluster.is_none() {
            Ok(())
        } else {
            Err(format!("Kafka topic {topic:?}, Topic there {}, KafkaCluster there {}", resource.is_some(), cluster.is_some()))
        }
    })
    .await;
    k.delete_topics(&[retained]).await.unwrap();
}

#[tokio::test]
async fn the_older_of_two_topics_wins_a_conflict() {
    let _shared = broker_lock().read().await;
    let s = setup("conflict").await;
    let name = unique("e2e-shared");
    create::<Topic>(&s.ns, topic_json("first", &name, 1, "Delete", json!({}))).await;
    topic_ready(&s.ns, "first", "True", None).await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // creation timestamps have second precision
    create::<Topic>(&s.ns, topic_json("second", &name, 1, "Delete", json!({}))).await;
    let t = topic_ready(&s.ns, "second", "False", Some("ResourceConflict")).await;
    let msg = condition(&t.status.unwrap().conditions, "Ready").unwrap().message;
    assert!(msg.contains(&format!("Topic {}/first", s.ns.name)), "{msg}");
    // Deleting the loser must not delete the winner's Kafka topic.
    s.ns.api::<Topic>().delete("second", &DeleteParams::default()).await.unwrap();
    wait_for("the conflicting Topic to go", WAIT, || async {
        match s.ns.api::<Topic>().get_opt("second").await {
            Ok(None) => Ok(()),
            other => Err(format!("{:?}", other.is_ok())),
        }
    })
    .await;
    assert_eq!(kafka_partitions(&kafka(), &name).await, Some(1));
    topic_ready(&s.ns, "first", "True", None).await;
}

#[tokio::test]
async fn an_unknown_config_key_is_reported_with_kafkas_message() {
    let _shared = broker_lock().read().await;
    let s = setup("badconfig").await;
    let k = kafka();
    let name = unique("e2e-badcfg");
    create::<Topic>(&s.ns, topic_json("t", &name, 1, "Delete", json!({"retention.ms": "5000"}))).await;
    topic_ready(&s.ns, "t", "True", None).await;
    patch::<Topic>(&s.ns, "t", json!({"spec": {"config": {"retention.ms": "7000", "no.such.setting": "1"}}})).await.unwrap();
    let t = topic_ready(&s.ns, "t", "False", Some("KafkaRejected")).await;
    let msg = condition(&t.status.unwrap().conditions, "Ready").unwrap().message;
    assert!(msg.contains("no.such.setting"), "Kafka's own message names the key: {msg}");
    assert_eq!(kafka_config(&k, &name, "retention.ms").await.as_deref(), Some("5000"), "nothing else changed");
}

#[tokio::test]
async fn a_paused_topic_is_left_alone_until_resumed() {
    let _shared = broker_lock().read().await;
    let s = setup("paused").await;
    let k = kafka();
    let name = unique("e2e-paused");
    create::<Topic>(&s.ns, topic_json("t", &name, 1, "Delete", json!({}))).await;
    topic_ready(&s.ns, "t", "True", None).await;
    patch::<Topic>(&s.ns, "t", json!({"metadata": {"annotations": {"kappa.dev/reconcile": "paused"}}, "spec": {"partitions": 2}}))
        .await
        .unwrap();
    wait_for("the Topic to say it is paused", WAIT, || async {
        let t = s.ns.api::<Topic>().get("t").await.map_err(|e| e.to_string())?;
        match condition(&t.status.unwrap_or_default().conditions, "Reconciling") {
            Some(c) if c.reason == "Paused" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await; // more than a resync
    assert_eq!(kafka_partitions(&k, &name).await, Some(1), "a paused Topic is not reconciled");
    patch::<Topic>(&s.ns, "t", json!({"metadata": {"annotations": {"kappa.dev/reconcile": null}}})).await.unwrap();
    topic_ready(&s.ns, "t", "True", None).await;
    assert_eq!(kafka_partitions(&k, &name).await, Some(2));
}

#[tokio::test]
async fn scram_credentials_right_and_wrong() {
    let _shared = broker_lock().read().await;
    let env = Env::get().await;
    support::install_crds(&env.client).await;
    let ns = TestNs::new(&env, "scram").await;
    let password = std::fs::read_to_string(required("KAPPA_KAFKA_SCRAM_PASSWORD_FILE")).unwrap();
    for (secret, pw) in [("right", password.trim().to_string()), ("wrong", "not-the-password".to_string())] {
        create::<Secret>(
            &ns,
            json!({"metadata": {"name": secret}, "stringData": {
                "username": required("KAPPA_KAFKA_SCRAM_USER"), "password": pw
            }}),
        )
        .await;
        create::<KafkaCluster>(
            &ns,
            json!({"metadata": {"name": secret}, "spec": {
                "bootstrapServers": required("KAPPA_KAFKA_SCRAM_BOOTSTRAP"),
                "sasl": {"mechanism": "SCRAM-SHA-512", "credentials": {"secretName": secret}}
            }}),
        )
        .await;
    }
    create::<KafkaCluster>(
        &ns,
        json!({"metadata": {"name": "missing-secret"}, "spec": {
            "bootstrapServers": required("KAPPA_KAFKA_SCRAM_BOOTSTRAP"),
            "sasl": {"mechanism": "SCRAM-SHA-512", "credentials": {"secretName": "nope"}}
        }}),
    )
    .await;
    let _op = Operator::start(&ns.name, &[]);
    for (name, status, reason) in
        [("right", "True", "Connected"), ("wrong", "False", "AuthenticationFailed"), ("missing-secret", "False", "SecretMissing")]
    {
        let kc = wait_for(&format!("KafkaCluster {name} Ready={status} {reason}"), WAIT, || async {
            let kc = ns.api::<KafkaCluster>().get(name).await.map_err(|e| e.to_string())?;
            match condition(&kc.status.clone().unwrap_or_default().conditions, "Ready") {
                Some(c) if c.status == status && c.reason == reason => Ok(kc),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        let st = kc.status.unwrap();
        if name == "right" {
            assert_eq!(st.brokers, Some(3));
            assert_eq!(st.broker_details.iter().filter(|b| b.reachable).count(), 3, "{:?}", st.broker_details);
            assert_eq!(st.kraft, Some(true));
            assert!(st.controller.is_some());
        }
        if name == "missing-secret" {
            let msg = condition(&st.conditions, "Ready").unwrap().message;
            assert!(msg.contains("Secret nope") && msg.contains("spec.sasl.credentials"), "{msg}");
        }
    }
    // Fixing the wrong Secret reconnects without touching the KafkaCluster.
    patch::<Secret>(&ns, "wrong", json!({"stringData": {"password": password.trim()}})).await.unwrap();
    wait_for("the corrected credentials to connect", WAIT, || async {
        let kc = ns.api::<KafkaCluster>().get("wrong").await.map_err(|e| e.to_string())?;
        match condition(&kc.status.unwrap_or_default().conditions, "Ready") {
            Some(c) if c.status == "True" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

/// Stops the lab's Kafka (so it needs the lab, and runs alone), then starts it again.
#[tokio::test]
async fn kafka_outage_turns_topics_not_ready_and_back_with_nothing_lost() {
    let _alone = broker_lock().write().await;
    let s = setup("outage").await;
    let k = kafka();
    let name = unique("e2e-outage");
    create::<Topic>(&s.ns, topic_json("t", &name, 2, "Delete", json!({"retention.ms": "-1"}))).await;
    topic_ready(&s.ns, "t", "True", None).await;
    support::lab(&["stop", "kafka"]);
    let result = std::panic::AssertUnwindSafe(async {
        let t = wait_for("the Topic to turn not Ready while Kafka is down", WAIT, || async {
            let t = s.ns.api::<Topic>().get("t").await.map_err(|e| e.to_string())?;
            match condition(&t.status.clone().unwrap_or_default().conditions, "Ready") {
                Some(c) if c.status == "False" => Ok(c),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        assert!(["KafkaClusterNotReady", "KafkaUnreachable"].contains(&t.reason.as_str()), "{t:?}");
        assert!(t.message.contains("127.0.0.1"), "the reason names what cannot be reached: {}", t.message);
    });
    let outcome = futures::FutureExt::catch_unwind(result).await;
    support::lab(&["up"]);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    topic_ready(&s.ns, "t", "True", None).await;
    assert_eq!(kafka_partitions(&k, &name).await, Some(2), "nothing lost");
    assert_eq!(kafka_config(&k, &name, "retention.ms").await.as_deref(), Some("-1"));
}

//! The operator's Kafka client against the lab's real broker: every admin
//! call the operator makes, batched, and authentication on both outcomes.

mod support;

use std::{collections::BTreeMap, time::Duration};

use kappa_operator::{
    api::SaslMechanism,
    kafka::{Kafka, KafkaError, NewTopic, Sasl, Settings, client::WireKafka},
};
use rdkafka::{
    ClientConfig,
    consumer::{BaseConsumer, CommitMode, Consumer},
    producer::{FutureProducer, FutureRecord},
};
use support::{required, unique};

fn plaintext() -> WireKafka {
    WireKafka::new(Settings { bootstrap: vec![required("KAPPA_KAFKA_BOOTSTRAP")], ..Default::default() })
}

fn scram(password: &str) -> WireKafka {
    WireKafka::new(Settings {
        bootstrap: vec![required("KAPPA_KAFKA_SCRAM_BOOTSTRAP")],
        tls: None,
        sasl: Some(Sasl {
            mechanism: SaslMechanism::ScramSha512,
            username: required("KAPPA_KAFKA_SCRAM_USER"),
            password: password.to_string(),
        }),
    })
}

#[tokio::test]
async fn topics_are_created_described_altered_grown_and_deleted_in_batches() {
    let k = plaintext();
    let names: Vec<String> = (0..5).map(|i| unique(&format!("e2e-kafka-{i}"))).collect();
    let new: Vec<NewTopic> = names
        .iter()
        .map(|n| NewTopic {
            name: n.clone(),
            partitions: 2,
            replication_factor: 1,
            config: [("retention.ms".to_string(), "3600000".to_string())].into(),
        })
        .collect();

    let before = k.requests_sent();
    let created = k.create_topics(&new).await.unwrap();
    assert_eq!(k.requests_sent() - before, 1, "five topics, one CreateTopics");
    assert!(created.values().all(|r| r.as_ref().is_ok_and(|t| t.partitions == 2)), "{created:?}");

    let again = k.create_topics(&new[..1]).await.unwrap();
    assert_eq!(again[&names[0]].as_ref().unwrap_err().code, "TopicAlreadyExists");

    // A broker's metadata shows a created topic a moment after CreateTopics answers.
    let described = support::wait_for("the five topics to be described", Duration::from_secs(30), || async {
        let d = k.topics(&names).await.map_err(|e| e.to_string())?;
        if d.len() == 5 { Ok(d) } else { Err(format!("{} of 5 visible", d.len())) }
    })
    .await;
    assert!(described.values().all(|t| t.partitions == 2 && t.replication_factor == 1 && !t.id.is_empty()), "{described:?}");
    let missing = k.topics(&[unique("e2e-kafka-missing")]).await.unwrap();
    assert!(missing.is_empty());

    let keys: BTreeMap<String, Vec<String>> =
        names.iter().map(|n| (n.clone(), vec!["retention.ms".to_string(), "cleanup.policy".to_string()])).collect();
    let configs = k.topic_configs(&keys).await.unwrap();
    assert_eq!(configs[&names[0]].as_ref().unwrap()["retention.ms"], "3600000");

    // Incremental: changing one key leaves the other declared one alone.
    let change: BTreeMap<String, BTreeMap<String, String>> =
        [(names[0].clone(), [("cleanup.policy".to_string(), "compact".to_string())].into())].into();
    let altered = k.alter_topic_configs(&change).await.unwrap();
    assert!(altered[&names[0]].is_ok(), "{altered:?}");
    // Brokers apply config changes from the metadata log shortly after.
    support::wait_for("the altered config to be visible", Duration::from_secs(30), || async {
        let configs = k.topic_configs(&keys).await.map_err(|e| e.to_string())?;
        let c0 = configs[&names[0]].clone().map_err(|e| e.to_string())?;
        let got = (c0["cleanup.policy"].clone(), c0["retention.ms"].clone());
        if got == ("compact".to_string(), "3600000".to_string()) { Ok(()) } else { Err(format!("{got:?}")) }
    })
    .await;

    let bad: BTreeMap<String, BTreeMap<String, String>> =
        [(names[1].clone(), [("no.such.config".to_string(), "1".to_string())].into())].into();
    let refused = k.alter_topic_configs(&bad).await.unwrap();
    let err = refused[&names[1]].as_ref().unwrap_err();
    assert!(err.message.contains("no.such.config"), "Kafka's own message names the key: {err}");

    let grown = k.create_partitions(&[(names[2].clone(), 4)].into()).await.unwrap();
    assert!(grown[&names[2]].is_ok(), "{grown:?}");
    support::wait_for("the new partitions to be described", Duration::from_secs(30), || async {
        let d = k.topics(&names[2..3]).await.map_err(|e| e.to_string())?;
        match d.get(&names[2]).map(|t| t.partitions) {
            Some(4) => Ok(()),
            other => Err(format!("partitions {other:?}")),
        }
    })
    .await;

    let deleted = k.delete_topics(&names).await.unwrap();
    assert!(deleted.values().all(|r| r.is_ok()), "{deleted:?}");
}

#[tokio::test]
async fn offsets_and_committed_offsets_of_many_groups_in_few_requests() {
    let k = plaintext();
    let bootstrap = required("KAPPA_KAFKA_BOOTSTRAP");
    let topic = unique("e2e-kafka-lag");
    k.create_topics(&[NewTopic { name: topic.clone(), partitions: 3, replication_factor: 1, config: BTreeMap::new() }]).await.unwrap();
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", &bootstrap).create().unwrap();
    for i in 0..30 {
        producer.send(FutureRecord::to(&topic).partition(i % 3).key("k").payload("v"), Duration::from_secs(10)).await.unwrap();
    }
    let groups: Vec<String> = (0..3).map(|i| unique(&format!("e2e-kafka-group-{i}"))).collect();
    // Group i commits offset 2*i+1 on partition 0 only.
    for (i, g) in groups.iter().enumerate() {
        let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &bootstrap).set("group.id", g).create().unwrap();
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset(&topic, 0, rdkafka::Offset::Offset(2 * i as i64 + 1)).unwrap();
        consumer.commit(&tpl, CommitMode::Sync).unwrap();
    }
    let tps: Vec<(String, i32)> = (0..3).map(|p| (topic.clone(), p)).collect();
    let before = k.requests_sent();
    let ends = k.offsets(&tps, false).await.unwrap();
    let starts = k.offsets(&tps, true).await.unwrap();
    let committed = k.committed(&groups).await.unwrap();
    let used = k.requests_sent() - before;
    assert_eq!(ends.values().sum::<i64>(), 30);
    assert!(starts.values().all(|o| *o == 0));
    for (i, g) in groups.iter().enumerate() {
        let c = committed[g].as_ref().unwrap();
        assert_eq!(c.get(&(topic.clone(), 0)), Some(&(2 * i as i64 + 1)), "group {g}");
        assert_eq!(c.get(&(topic.clone(), 1)), None);
    }
    // Metadata + ListOffsets twice, FindCoordinator + OffsetFetch once: on one broker, 6.
    assert_eq!(used, 6, "lag figures for 3 partitions and 3 groups must take a fixed number of requests");

    let deleted = k.delete_groups(&groups).await.unwrap();
    assert!(deleted.values().all(|r| r.is_ok()), "{deleted:?}");
    assert!(k.committed(&groups).await.unwrap().values().all(|c| c.as_ref().is_ok_and(|c| c.is_empty())));
    k.delete_topics(&[topic]).await.unwrap();
}

#[tokio::test]
async fn scram_credentials_are_checked() {
    let password = std::fs::read_to_string(required("KAPPA_KAFKA_SCRAM_PASSWORD_FILE")).unwrap();
    let info = scram(password.trim()).cluster().await.expect("the lab user authenticates");
    assert_eq!(info.brokers, 1);
    match scram("wrong").cluster().await {
        Err(KafkaError::Authentication(msg)) => assert!(!msg.is_empty()),
        other => panic!("a wrong password must be an authentication failure, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unreachable_cluster_says_so() {
    let k = WireKafka::new(Settings { bootstrap: vec!["127.0.0.1:1".into()], ..Default::default() });
    match k.cluster().await {
        Err(e @ KafkaError::Unreachable { .. }) => assert_eq!(e.reason(), "KafkaUnreachable"),
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

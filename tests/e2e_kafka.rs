//! The operator's Kafka client against the lab's real three-broker cluster:
//! every admin call the operator makes, batched; a lag poll in at most two
//! requests per broker; SCRAM, TLS and client certificates on both outcomes.

mod support;

use std::{collections::BTreeMap, time::Duration};

use kappa_operator::{
    api::SaslMechanism,
    kafka::{Kafka, KafkaError, NewTopic, ResponseError, Sasl, Settings, Tls, client::WireKafka, lag},
};
use rdkafka::{
    ClientConfig,
    consumer::{BaseConsumer, CommitMode, Consumer},
    producer::{FutureProducer, FutureRecord},
};
use support::{kafka, required, unique};

fn scram(password: &str) -> WireKafka {
    WireKafka::new(Settings {
        tls: None,
        sasl: Some(Sasl {
            mechanism: SaslMechanism::ScramSha512,
            username: required("KAPPA_KAFKA_SCRAM_USER"),
            password: password.to_string(),
        }),
        ..Settings::plaintext(&required("KAPPA_KAFKA_SCRAM_BOOTSTRAP"))
    })
}

/// A client of the TLS listeners, trusting `ca` (PEM), with a client
/// certificate if given.
fn tls(bootstrap_var: &str, ca: Vec<u8>, client: Option<(Vec<u8>, Vec<u8>)>) -> WireKafka {
    WireKafka::new(Settings {
        tls: Some(Tls { ca_pem: Some(ca), client_cert_pem: client }),
        ..Settings::plaintext(&required(bootstrap_var))
    })
}

fn read(var: &str) -> Vec<u8> {
    std::fs::read(required(var)).unwrap_or_else(|e| panic!("{var}: {e}"))
}

#[tokio::test]
async fn topics_are_created_described_altered_grown_and_deleted_in_batches() {
    let k = kafka();
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
    assert!(again[&names[0]].as_ref().unwrap_err().is(ResponseError::TopicAlreadyExists), "{again:?}");

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
async fn a_lag_poll_takes_at_most_two_requests_per_broker() {
    let k = kafka();
    let bootstrap = required("KAPPA_KAFKA_BOOTSTRAP");
    let topic = unique("e2e-kafka-lag");
    k.create_topics(&[NewTopic { name: topic.clone(), partitions: 6, replication_factor: 3, config: BTreeMap::new() }]).await.unwrap();
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", &bootstrap).create().unwrap();
    for i in 0..60 {
        producer.send(FutureRecord::to(&topic).partition(i % 6).key("k").payload("v"), Duration::from_secs(10)).await.unwrap();
    }
    let groups: Vec<String> = (0..10).map(|i| unique(&format!("e2e-kafka-group-{i}"))).collect();
    // Group i commits offset i+1 on partition 0 only.
    for (i, g) in groups.iter().enumerate() {
        let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &bootstrap).set("group.id", g).create().unwrap();
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset(&topic, 0, rdkafka::Offset::Offset(i as i64 + 1)).unwrap();
        consumer.commit(&tpl, CommitMode::Sync).unwrap();
    }
    // A poll as the progress monitor makes it: committed offsets, then the
    // offsets of every partition they and the input cover.
    let poll = || async {
        let committed = k.committed(&groups).await.unwrap();
        let offsets = k.partition_offsets(&lag::topics_to_read([&topic], &committed)).await.unwrap();
        (committed, offsets)
    };
    poll().await; // the first poll reads where partitions lead and groups are coordinated
    let before = k.requests_by_broker();
    let (committed, offsets) = poll().await;
    let after = k.requests_by_broker();
    let used: BTreeMap<&String, u64> =
        after.iter().map(|(b, n)| (b, n - before.get(b).copied().unwrap_or(0))).filter(|(_, n)| *n > 0).collect();
    assert!(used.values().all(|n| *n <= 2), "requests per broker in a steady poll: {used:?}");
    let ends: i64 = offsets.offsets.values().map(|o| o.as_ref().unwrap().1).sum();
    assert_eq!(ends, 60);
    assert!(offsets.offsets.values().all(|o| o.as_ref().unwrap().0 == 0));
    for (i, g) in groups.iter().enumerate() {
        let c = committed[g].as_ref().unwrap();
        assert_eq!(c.get(&(topic.clone(), 0)), Some(&(i as i64 + 1)), "group {g}");
        assert_eq!(c.get(&(topic.clone(), 1)), None);
    }

    let deleted = k.delete_groups(&groups).await.unwrap();
    assert!(deleted.values().all(|r| r.is_ok()), "{deleted:?}");
    assert!(k.committed(&groups).await.unwrap().values().all(|c| c.as_ref().is_ok_and(|c| c.is_empty())));
    k.delete_topics(&[topic]).await.unwrap();
}

#[tokio::test]
async fn scram_credentials_are_checked() {
    let password = std::fs::read_to_string(required("KAPPA_KAFKA_SCRAM_PASSWORD_FILE")).unwrap();
    let info = scram(password.trim()).cluster().await.expect("the lab user authenticates");
    assert_eq!(info.brokers.len(), 3, "{info:?}");
    assert!(info.unreachable.is_empty(), "{info:?}");
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

#[tokio::test]
async fn the_cluster_reports_its_brokers_controller_mode_and_api_versions() {
    let info = kafka().cluster().await.unwrap();
    assert_eq!(info.brokers.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3], "{info:?}");
    let active = support::lab(&["kafka-controller"]);
    assert_eq!(info.controller.map(|c| format!("kafka-{c}")), Some(active), "the quorum's leader: {info:?}");
    assert_eq!(info.kraft, Some(true));
    assert!(info.apis.values().all(|v| v.is_some()), "Apache Kafka offers every API the operator uses: {:?}", info.apis);
}

#[tokio::test]
async fn tls_needs_the_right_ca_and_the_client_certificate_where_asked() {
    let ca = read("KAPPA_KAFKA_CA_FILE");
    let info = tls("KAPPA_KAFKA_TLS_BOOTSTRAP", ca.clone(), None).cluster().await.expect("TLS with the lab's CA");
    assert_eq!(info.brokers.len(), 3);

    // spec.tls.ca replaces the trust roots: the system's CAs do not vouch for the lab's brokers.
    let other = std::fs::read("/etc/ssl/certs/ca-certificates.crt").expect("a system CA bundle");
    match tls("KAPPA_KAFKA_TLS_BOOTSTRAP", other, None).cluster().await {
        Err(e @ KafkaError::Tls { .. }) => {
            assert_eq!(e.reason(), "TlsFailed");
            assert!(e.to_string().contains("not trusted by spec.tls.ca"), "{e}");
        }
        other => panic!("a wrong CA must fail the handshake, got {other:?}"),
    }

    let client = (read("KAPPA_KAFKA_CLIENT_CERT_FILE"), read("KAPPA_KAFKA_CLIENT_KEY_FILE"));
    let info = tls("KAPPA_KAFKA_MTLS_BOOTSTRAP", ca.clone(), Some(client)).cluster().await.expect("mTLS with the client certificate");
    assert_eq!(info.brokers.len(), 3);
    match tls("KAPPA_KAFKA_MTLS_BOOTSTRAP", ca, None).cluster().await {
        Err(e) => assert!(matches!(e, KafkaError::Tls { .. } | KafkaError::Unreachable { .. }), "{e:?}"),
        Ok(info) => panic!("a listener that requires a client certificate must refuse none: {info:?}"),
    }
}

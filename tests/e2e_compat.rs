//! The operator against a Kafka-API broker, whichever it is: the lab's
//! Apache Kafka by default, or another implementation at
//! `KAPPA_COMPAT_BOOTSTRAP` (`hack/compat.sh tansu` builds and starts tansu
//! and runs this file against it). Each capability the operator uses is
//! tried; what the broker lacks must be named as unsupported (with what it
//! disables), never reported as "unreachable", and the rest must work.

mod support;

use std::collections::BTreeMap;

use kappa_operator::{
    api::{KafkaCluster, Topic},
    kafka::{Kafka, KafkaError, NewTopic, Settings, client::WireKafka, lag},
};
use serde_json::json;
use support::{Env, Operator, TestNs, create, unique, wait_for};

fn bootstrap() -> String {
    std::env::var("KAPPA_COMPAT_BOOTSTRAP").unwrap_or_else(|_| support::required("KAPPA_KAFKA_BOOTSTRAP"))
}

/// What one capability did: worked, or unsupported by the broker (named).
fn outcome<T>(what: &str, r: Result<T, KafkaError>, table: &mut BTreeMap<String, String>) -> Option<T> {
    match r {
        Ok(v) => {
            table.insert(what.into(), "works".into());
            Some(v)
        }
        Err(e @ KafkaError::Unsupported { .. }) => {
            table.insert(what.into(), format!("unsupported: {e}"));
            None
        }
        Err(e) => panic!("{what}: a broker that answers must not fail otherwise: {e:?}"),
    }
}

#[tokio::test]
async fn every_capability_works_or_is_named_unsupported() {
    let k = WireKafka::new(Settings::plaintext(&bootstrap()));
    let mut table = BTreeMap::new();
    let info = k.cluster().await.expect("the broker answers Metadata");
    assert!(!info.brokers.is_empty(), "{info:?}");
    let topic = unique("e2e-compat");
    let new = NewTopic { name: topic.clone(), partitions: 2, replication_factor: 1, config: [("retention.ms".into(), "-1".into())].into() };
    let created =
        outcome("CreateTopics", k.create_topics(&[new]).await, &mut table).expect("creating topics is the least the operator needs");
    assert!(created[&topic].is_ok(), "{created:?}");
    let shown = wait_for("the topic in the metadata", std::time::Duration::from_secs(30), || async {
        let t = k.topics(std::slice::from_ref(&topic)).await.map_err(|e| e.to_string())?;
        t.get(&topic).cloned().ok_or_else(|| "not yet".to_string())
    })
    .await;
    assert_eq!(shown.partitions, 2);
    let keys = [(topic.clone(), vec!["retention.ms".to_string()])].into();
    outcome("DescribeConfigs", k.topic_configs(&keys).await, &mut table);
    let change = [(topic.clone(), [("retention.ms".to_string(), "3600000".to_string())].into())].into();
    outcome("IncrementalAlterConfigs", k.alter_topic_configs(&change).await, &mut table);
    outcome("CreatePartitions", k.create_partitions(&[(topic.clone(), 3)].into()).await, &mut table);
    let group = unique("e2e-compat-group");
    let committed = outcome("OffsetFetch", k.committed(std::slice::from_ref(&group)).await, &mut table);
    let offsets = outcome("ListOffsets", k.partition_offsets(std::slice::from_ref(&topic)).await, &mut table);
    if let (Some(c), Some(o)) = (committed, offsets) {
        let (_, f) =
            lag::reading(k8s_openapi::jiff::Timestamp::now(), std::slice::from_ref(&topic), &group, &o, &c).expect("a complete reading");
        assert_eq!(f.lag, 0, "an empty topic has nothing to consume");
    }
    outcome("DeleteGroups", k.delete_groups(std::slice::from_ref(&group)).await, &mut table);
    outcome("DeleteTopics", k.delete_topics(std::slice::from_ref(&topic)).await, &mut table);
    eprintln!("capabilities of the broker at {}:", bootstrap());
    for (what, how) in &table {
        eprintln!("  {what}: {how}");
    }
}

#[tokio::test]
async fn a_topic_is_managed_and_the_cluster_names_what_it_lacks() {
    let env = Env::get().await;
    support::install_crds(&env.client).await;
    let ns = TestNs::new(&env, "compat").await;
    create::<KafkaCluster>(&ns, json!({"metadata": {"name": "default"}, "spec": {"bootstrapServers": bootstrap()}})).await;
    let op = Operator::start(&ns.name, &[]);
    // Dropped in order: the namespace goes while the operator still runs.
    let setup = (ns, op);
    let ns = &setup.0;
    let name = unique("e2e-compat-topic");
    create::<Topic>(ns, json!({"metadata": {"name": "t"}, "spec": {"topicName": name, "partitions": 1, "deletionPolicy": "Delete"}})).await;
    let kc = wait_for("the KafkaCluster to be Ready", support::pipeline::WAIT, || async {
        let kc: KafkaCluster = ns.api().get("default").await.map_err(|e| e.to_string())?;
        let st = kc.status.clone().unwrap_or_default();
        let ready = st.conditions.iter().find(|c| c.type_ == "Ready").cloned();
        match ready {
            Some(c) if c.status == "True" => Ok(kc),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let st = kc.status.unwrap_or_default();
    let unsupported: Vec<&String> = st.api_versions.iter().filter(|(_, v)| *v == "unsupported").map(|(api, _)| api).collect();
    let degraded = st.conditions.iter().find(|c| c.type_ == "Degraded").expect("a Degraded condition");
    for api in &unsupported {
        assert!(degraded.message.contains(&format!("{api} unsupported")), "{api} must be named: {}", degraded.message);
    }
    eprintln!("APIs: {:?}; Degraded: {}", st.api_versions, degraded.message);
    wait_for("the Topic to be Ready", support::pipeline::WAIT, || async {
        let t: Topic = ns.api().get("t").await.map_err(|e| e.to_string())?;
        let ready = t.status.unwrap_or_default().conditions.into_iter().find(|c| c.type_ == "Ready");
        match ready {
            Some(c) if c.status == "True" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

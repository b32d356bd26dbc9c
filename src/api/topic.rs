use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Condition, default_cluster_ref};

/// One Kafka topic, declared. The operator creates it, corrects drift of the
/// declared configs, increases partitions, and never deletes the topic unless
/// `deletionPolicy: Delete` says so and no Processor reads it.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "kappa.dev",
    version = "v1alpha1",
    kind = "Topic",
    namespaced,
    status = "TopicStatus",
    shortname = "kt",
    category = "kappa",
    printcolumn(name = "Topic", type_ = "string", json_path = ".status.topicName"),
    printcolumn(name = "Partitions", type_ = "integer", json_path = ".spec.partitions"),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicationFactor"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Replayable", type_ = "boolean", json_path = ".status.replayableFromZero", priority = 1),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("has(self.spec.topicName) || size(self.metadata.name) <= 249")
        .message("metadata.name is longer than Kafka's 249-character topic name limit: set spec.topicName")
)]
#[x_kube(
    validation = Rule::new("has(self.topicName) == has(oldSelf.topicName)")
        .message("spec.topicName is immutable: it can be neither added nor removed after creation")
        .field_path(".topicName")
)]
#[serde(rename_all = "camelCase")]
pub struct TopicSpec {
    /// Name of the KafkaCluster (in this namespace) that holds the topic.
    /// Default `default`.
    #[serde(default = "default_cluster_ref")]
    #[schemars(length(min = 1, max = 253))]
    pub cluster_ref: String,
    /// Kafka topic name. Default: the resource's name. Immutable. At most
    /// 249 characters of `[a-zA-Z0-9._-]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 249), pattern(r"^[a-zA-Z0-9._-]+$"))]
    #[x_kube(
        validation = Rule::new("self == oldSelf").message("spec.topicName is immutable"),
        validation = Rule::new("self != '.' && self != '..'").message("spec.topicName cannot be '.' or '..'")
    )]
    pub topic_name: Option<String>,
    /// Number of partitions, at least 1. Can be increased, never decreased
    /// (Kafka cannot remove partitions).
    #[schemars(range(min = 1, max = 100000))]
    #[x_kube(validation = Rule::new("self >= oldSelf").message("spec.partitions cannot be decreased: Kafka cannot remove partitions"))]
    pub partitions: i32,
    /// Replication factor, at least 1. Fixed once the topic exists.
    #[serde(default = "default_replication_factor")]
    #[schemars(range(min = 1, max = 32767))]
    pub replication_factor: i32,
    /// Topic configs (`retention.ms`, `cleanup.policy`, ...). Only these keys
    /// are managed: drift is corrected, other configs are left alone.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.all(k, k.matches('^[a-z0-9]+([.][a-z0-9]+)*$'))",
        "message": "spec.config keys are Kafka config names such as retention.ms (lowercase, dot-separated)"
    }]))]
    pub config: BTreeMap<String, String>,
    /// What deleting this resource does to the Kafka topic: `Retain` (the
    /// default) keeps it, `Delete` deletes it (never while a Processor reads it).
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

fn default_replication_factor() -> i32 {
    1
}

/// What deleting a Topic resource does to the Kafka topic.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// Keep the Kafka topic and its data.
    #[default]
    Retain,
    /// Delete the Kafka topic (and its data) with the resource.
    Delete,
}

/// What Kafka actually has for this topic.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopicStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Reconciling` and `Stalled` (kstatus). `Ready` is False with a
    /// reason when the declared topic cannot be reached or matched.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The Kafka topic name in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_name: Option<String>,
    /// Kafka's topic id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_id: Option<String>,
    /// Partitions Kafka has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<i32>,
    /// Replication factor Kafka has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_factor: Option<i32>,
    /// Effective values, in Kafka, of the declared config keys.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
    /// True when every partition still starts at offset 0 (or the topic is
    /// compacted), so a full replay sees all history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayable_from_zero: Option<bool>,
    /// Partitions whose log start offset is above zero (history deleted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub truncated_partitions: Vec<TruncatedPartition>,
}

/// A partition that lost its first records to retention or deletion.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TruncatedPartition {
    pub partition: i32,
    /// First offset still held.
    pub log_start_offset: i64,
}

impl Topic {
    /// The Kafka topic name: `spec.topicName`, else the resource name.
    pub fn kafka_name(&self) -> &str {
        self.spec.topic_name.as_deref().or(self.metadata.name.as_deref()).unwrap_or_default()
    }
}

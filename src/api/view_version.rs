use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Condition, ProcessorCode, ViewSettings};

/// One materialized version of a Processor's view, created and owned by the
/// operator: one per logic version. `kubectl get viewversions` is the rollout
/// history.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "kappa.dev",
    version = "v1alpha1",
    kind = "ViewVersion",
    namespaced,
    status = "ViewVersionStatus",
    shortname = "vv",
    category = "kappa",
    printcolumn(name = "Processor", type_ = "string", json_path = ".spec.processor"),
    printcolumn(name = "Version", type_ = "string", json_path = ".spec.version"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Lag", type_ = "integer", json_path = ".status.lag"),
    printcolumn(name = "Gate", type_ = "string", json_path = ".status.catchUp.state"),
    printcolumn(name = "Progress", type_ = "number", json_path = ".status.progress"),
    printcolumn(name = "Topic", type_ = "string", json_path = ".spec.outputTopic", priority = 1),
    printcolumn(name = "Promoted", type_ = "date", json_path = ".status.promotedAt", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("self == oldSelf").message("ViewVersion spec is immutable: the operator creates a new ViewVersion for every version"))]
#[serde(rename_all = "camelCase")]
pub struct ViewVersionSpec {
    /// The Processor this version belongs to.
    #[schemars(length(min = 1, max = 253))]
    pub processor: String,
    /// The version id.
    #[schemars(length(min = 1, max = 20))]
    pub version: String,
    /// The KafkaCluster it reads and writes.
    pub cluster_ref: String,
    /// The Processor's `spec.inputs` when it was made: Topic resources and
    /// `processor/NAME` upstreams.
    pub inputs: Vec<String>,
    /// Of each upstream Processor, the version whose view this version
    /// reads (its active version when this one was made).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub upstreams: BTreeMap<String, String>,
    /// Kafka names of the input topics.
    pub input_topics: Vec<String>,
    /// This version's view topic.
    pub output_topic: String,
    /// This version's consumer group.
    pub consumer_group: String,
    /// What the version computes (image, command, args, env), frozen when it
    /// was made.
    pub template: ProcessorCode,
    /// View topic settings of this version.
    pub view: ViewSettings,
    /// The Processor's `spec.reprocessNonce` when it was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reprocess_nonce: Option<String>,
}

/// The catch-up gate's answer for a version.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CatchUp {
    /// `CaughtUp`, `Behind`, `Stuck` (no progress within
    /// `progressDeadlineSeconds`) or `Unknown` (the last reading was partial,
    /// stale, or Kafka could not be reached: nothing is promoted or failed on it).
    pub state: String,
    /// Why, in words.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// Lifecycle phase of a ViewVersion.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum VersionPhase {
    /// Created; waiting for its inputs or its view topic.
    #[default]
    Pending,
    /// Reading the log from offset zero.
    Replaying,
    /// Lag has met the gate; ready to verify or promote.
    CaughtUp,
    /// The verification Job is running.
    Verifying,
    /// Serving readers.
    Active,
    /// Previously active, kept for rollback (view and offsets kept).
    Standby,
    /// Beyond `retainVersions`; its view topic and consumer group are deleted.
    Retired,
    /// Crash-looped, made no progress, or failed verification.
    Failed,
}

/// Progress and history of one version.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ViewVersionStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (view topic exists and inputs are there) and `CaughtUp`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Where this version is in its lifecycle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<VersionPhase>,
    /// Why the phase is what it is, when that needs saying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Records not yet consumed, summed over every partition the version
    /// consumes (its inputs, and any other topic its consumer group commits
    /// on, such as a framework's repartition topics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<i64>,
    /// Lag per topic.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub lag_by_topic: BTreeMap<String, i64>,
    /// Share (0 to 1) of the replay target consumed: records consumed since
    /// offset zero over the log end when the version started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<f64>,
    /// Log end, summed over input partitions, when the version started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_target: Option<i64>,
    /// Recent consumption rate estimate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records_per_second: Option<i64>,
    /// The catch-up gate's answer, as last projected (lag and progress are
    /// projected with it, throttled: live figures are in the operator's
    /// metrics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up: Option<CatchUp>,
    /// When the version started replaying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When it first met the catch-up gate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caught_up_at: Option<Time>,
    /// When it was last promoted to active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted_at: Option<Time>,
    /// When it last stopped being active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub demoted_at: Option<Time>,
    /// When it was retired or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
}

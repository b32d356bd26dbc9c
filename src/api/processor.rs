use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, LocalObjectReference, PodSecurityContext, Probe, ResourceRequirements, SecurityContext, Toleration, Volume,
    VolumeMount,
};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Condition, DeletionPolicy, default_cluster_ref};

/// One stream processor and the view it materializes. A change to what it
/// computes (image, command, args, env, inputs, view settings, or
/// `reprocessNonce`) starts a reprocessing rollout: the new version replays
/// the inputs from offset zero into a new view beside the live one, and
/// readers switch over once it has caught up.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "kappa.dev",
    version = "v1alpha1",
    kind = "Processor",
    namespaced,
    status = "ProcessorStatus",
    shortname = "kp",
    category = "kappa",
    printcolumn(name = "Active", type_ = "string", json_path = ".status.activeVersion"),
    printcolumn(name = "Candidate", type_ = "string", json_path = ".status.candidateVersion"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Lag", type_ = "integer", json_path = ".status.lag"),
    printcolumn(name = "Progress", type_ = "string", json_path = ".status.candidateProgress", priority = 1),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status", priority = 1),
    printcolumn(name = "Built-On", type_ = "string", json_path = ".status.builtOn"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new(PINNED_VERSION_RULE).message(
    "spec.version is pinned and unchanged, but what the processor computes changed (template image, command, args or env, \
     inputs, view, or reprocessNonce): a pinned version id names one computation; change spec.version as well, or remove it \
     to let the operator derive the version id"
))]
#[serde(rename_all = "camelCase")]
pub struct ProcessorSpec {
    /// Name of the KafkaCluster (in this namespace). Default `default`.
    #[serde(default = "default_cluster_ref")]
    #[schemars(length(min = 1, max = 253))]
    pub cluster_ref: String,
    /// What the processor reads, in this namespace: the name of a Topic
    /// resource, or `processor/NAME` for the view of Processor NAME's active
    /// version (a pipeline: when NAME cuts over to a new version, this
    /// Processor replays the new view into a new version of its own). At
    /// least one; no duplicates.
    #[schemars(length(min = 1, max = 64), inner(length(min = 1, max = 263), pattern(r"^[a-z0-9]([-a-z0-9./]*[a-z0-9])?$")))]
    #[x_kube(
        merge_strategy = ListMerge::Atomic,
        validation = Rule::new("self.all(i, self.exists_one(j, j == i))").message("spec.inputs must not list an input twice"),
        validation = Rule::new(INPUTS_RULE).message(
            "spec.inputs: an input is the name of a Topic, or processor/NAME for the view of Processor NAME in this namespace \
             (a Processor in another namespace cannot be an input)"
        )
    )]
    pub inputs: Vec<String>,
    /// Settings of the view topic each version writes.
    #[serde(default)]
    pub view: ViewSettings,
    /// The processor's container.
    pub template: ProcessorTemplate,
    /// Pods per version. Changing it scales the active version in place.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,
    /// Explicit version id. Default: a hash of everything that changes what
    /// the processor computes. Lowercase letters and digits, at most 20.
    /// While it stays the same, what the processor computes cannot change
    /// (admission refuses it): change both together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[a-z0-9]{1,20}$"))]
    pub version: Option<String>,
    /// Change this value to replay the log into a new version without
    /// changing the code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub reprocess_nonce: Option<String>,
    /// How new versions are caught up, verified, promoted and retired.
    #[serde(default)]
    pub rollout: RolloutPolicy,
    /// Expose the active version's pods through Service `<name>` (and the
    /// candidate's through `<name>-preview`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<Serving>,
    /// What deleting the Processor does to Kafka. `Retain` (default) keeps
    /// the view topic, consumer group and internal topics of every version
    /// not yet retired. `Delete` retires every version first: their pods
    /// stop, then their consumer groups, the topics named after the groups
    /// and their view topics are deleted.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// A Topic name has no `/`; `processor/NAME` names a Processor of the same
/// namespace, so NAME has none either.
const INPUTS_RULE: &str = "self.all(i, !i.contains('/') || (i.startsWith('processor/') && !i.substring(10).contains('/')))";

/// A pinned `spec.version` cannot hide a code change: while it stays the
/// same, every field that goes into a version id must too (inputs as a set:
/// their order does not change the id).
const PINNED_VERSION_RULE: &str = "!has(self.version) || !has(oldSelf.version) || self.version != oldSelf.version || (\
    self.template.image == oldSelf.template.image \
    && has(self.template.command) == has(oldSelf.template.command) && (!has(self.template.command) || self.template.command == oldSelf.template.command) \
    && has(self.template.args) == has(oldSelf.template.args) && (!has(self.template.args) || self.template.args == oldSelf.template.args) \
    && has(self.template.env) == has(oldSelf.template.env) && (!has(self.template.env) || self.template.env == oldSelf.template.env) \
    && self.inputs.all(i, i in oldSelf.inputs) && oldSelf.inputs.all(i, i in self.inputs) \
    && has(self.view) == has(oldSelf.view) && (!has(self.view) || self.view == oldSelf.view) \
    && has(self.reprocessNonce) == has(oldSelf.reprocessNonce) && (!has(self.reprocessNonce) || self.reprocessNonce == oldSelf.reprocessNonce))";

/// The prefix of an input that names a Processor (`processor/NAME`), as
/// kubectl names objects.
pub const PROCESSOR_INPUT: &str = "processor/";

/// One of `spec.inputs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Input<'a> {
    /// A Topic resource.
    Topic(&'a str),
    /// The view of this Processor's active version.
    Processor(&'a str),
}

impl<'a> Input<'a> {
    pub fn parse(input: &'a str) -> Input<'a> {
        match input.strip_prefix(PROCESSOR_INPUT) {
            Some(name) => Input::Processor(name),
            None => Input::Topic(input),
        }
    }
}

impl ProcessorSpec {
    /// The Topic resources among the inputs.
    pub fn topic_inputs(&self) -> impl Iterator<Item = &str> {
        self.inputs.iter().filter_map(|i| match Input::parse(i) {
            Input::Topic(t) => Some(t),
            Input::Processor(_) => None,
        })
    }

    /// The Processors whose views are among the inputs (its upstreams).
    pub fn upstreams(&self) -> impl Iterator<Item = &str> {
        self.inputs.iter().filter_map(|i| match Input::parse(i) {
            Input::Processor(p) => Some(p),
            Input::Topic(_) => None,
        })
    }
}

fn default_replicas() -> i32 {
    1
}

/// The view topic of each version.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ViewSettings {
    /// Partitions of each version's view topic. Default 1.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 100000))]
    pub partitions: i32,
    /// Replication factor of each version's view topic. Default 1.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 32767))]
    pub replication_factor: i32,
    /// Topic configs of the view topic. `cleanup.policy` defaults to
    /// `compact`: a view keeps each key's latest value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
}

impl Default for ViewSettings {
    fn default() -> Self {
        ViewSettings { partitions: 1, replication_factor: 1, config: BTreeMap::new() }
    }
}

fn one() -> i32 {
    1
}

/// The container that runs the processor. It receives the processor
/// contract's `KAPPA_*` environment variables.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessorTemplate {
    /// Container image.
    #[schemars(length(min = 1, max = 1024))]
    pub image: String,
    /// Entrypoint override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub command: Option<Vec<String>>,
    /// Arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub args: Option<Vec<String>>,
    /// Extra environment variables (names starting with `KAPPA_` are reserved).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.all(e, !e.name.startsWith('KAPPA_'))",
        "message": "spec.template.env: names starting with KAPPA_ are reserved for the processor contract"
    }]))]
    pub env: Vec<EnvVar>,
    /// Compute resources. Changing them restarts pods in place, with no replay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Labels added to the pods. Changing them does not start a replay.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations added to the pods. Changing them does not start a replay.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Service account of the pods. Default: the namespace's `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Volumes of the pods (emptyDir, persistentVolumeClaim, configMap,
    /// secret, ...). Names starting with `kappa-` are the operator's, except
    /// `kappa-state`: declare it (a PVC, say) to replace the emptyDir the
    /// operator mounts at `KAPPA_STATE_DIR`. Changes apply in place: a
    /// volume's content is not part of the version id (change
    /// `reprocessNonce` to replay with new content).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.all(v, !v.name.startsWith('kappa-') || v.name == 'kappa-state')",
        "message": "spec.template.volumes: names starting with kappa- are reserved for the operator (except kappa-state)"
    }]))]
    pub volumes: Vec<Volume>,
    /// Where the processor container mounts them. `/etc/kappa` and
    /// `KAPPA_STATE_DIR` (`/var/lib/kappa/state`) are the operator's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.all(m, !m.mountPath.startsWith('/etc/kappa') && !m.mountPath.startsWith('/var/lib/kappa/state'))",
        "message": "spec.template.volumeMounts: /etc/kappa and /var/lib/kappa/state are mounted by the operator"
    }]))]
    pub volume_mounts: Vec<VolumeMount>,
    /// The processor container's security context. In place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,
    /// The pods' security context. In place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_security_context: Option<PodSecurityContext>,
    /// Readiness probe of the processor container (HTTP, TCP or exec).
    /// Default with `serving`: a TCP probe on the serving port. A candidate
    /// is promoted only once its pods are Ready. In place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Probe>,
    /// Liveness probe of the processor container. In place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<Probe>,
    /// Secrets for pulling the image. In place.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// Node selector of the pods. In place.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of the pods. In place.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Affinity of the pods. In place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Priority class of the pods. In place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
}

impl ProcessorTemplate {
    /// What the processor computes, as a version freezes it.
    pub fn code(&self) -> ProcessorCode {
        ProcessorCode { image: self.image.clone(), command: self.command.clone(), args: self.args.clone(), env: self.env.clone() }
    }
}

/// The part of the template that says what a version computes: frozen in
/// its ViewVersion. Everything else in the template applies in place.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessorCode {
    /// Container image.
    #[schemars(length(min = 1, max = 1024))]
    pub image: String,
    /// Entrypoint override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub command: Option<Vec<String>>,
    /// Arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub args: Option<Vec<String>>,
    /// Extra environment variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub env: Vec<EnvVar>,
}

/// The rollout policy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutPolicy {
    /// The catch-up gate's tolerance, in records summed over every
    /// partition the version consumes (its inputs, and every other topic its
    /// consumer group commits on, such as a framework's repartition topics).
    /// Default 0. A new version has caught up when its committed offsets come
    /// within `maxLag` of a target: the log end offsets as of the lag poll
    /// before the target was set; each target met sets the next one, and a
    /// commit that falls short of its target restarts the stable window.
    /// Once a target is met after the window has lasted `stableForSeconds`,
    /// the version has caught up. So a processor that commits rarely under
    /// steady input (Kafka Streams commits every 30 s by default) is caught up
    /// at its first commit after the window, though its lag never reads 0.
    /// Its pods must also be Ready. A partial or stale reading of its offsets
    /// (older than three lag polls, 10 s at least) decides nothing.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub max_lag: i64,
    /// How long the stable window must last, without a commit falling short
    /// of its target, before the version counts as caught up. Default 10.
    #[serde(default = "default_stable_for")]
    #[schemars(range(min = 0, max = 86400))]
    pub stable_for_seconds: i32,
    /// `Auto` promotes a caught-up (and verified) version at once; `Manual`
    /// waits until `promote` names it.
    #[serde(default)]
    pub promotion: PromotionMode,
    /// With `Manual` promotion: the version id to promote. Writing it in Git
    /// is how a GitOps user promotes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[a-z0-9]{1,20}$"))]
    pub promote: Option<String>,
    /// Older versions kept as standbys (view topic and consumer group kept,
    /// scaled to zero) for instant rollback. 0 to 10, default 1.
    #[serde(default = "default_retain")]
    #[schemars(range(min = 0, max = 10))]
    pub retain_versions: i32,
    /// Seconds the previous version keeps running after a cutover before it
    /// scales to zero. Default 30.
    #[serde(default = "default_scale_down_delay")]
    #[schemars(range(min = 0, max = 86400))]
    pub scale_down_delay_seconds: i32,
    /// A new version that crash-loops, or makes no progress over this many
    /// seconds of complete readings of its offsets, is marked Failed; the
    /// active version stays. While its KafkaCluster cannot be reached (and
    /// for 30 s after it returns), neither crash loops nor the lack of
    /// progress count. Default 600.
    #[serde(default = "default_progress_deadline")]
    #[schemars(range(min = 10, max = 604800))]
    pub progress_deadline_seconds: i32,
    /// Replay even when an input has lost history (log start offset above
    /// zero). Default false: such a rollout is blocked.
    #[serde(default)]
    pub allow_truncated_history: bool,
    /// A verification Job run against the old and new views before promotion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifySpec>,
    /// How a new version of this Processor reaches the Processors that read
    /// its view (`processor/NAME` inputs). `Independent` (default): each
    /// stage cuts over as soon as it is ready, so for a while a downstream
    /// reader sees the new upstream combined with the old downstream.
    /// `Together`: this Processor's candidate is offered to the downstream
    /// stages before it cuts over; each builds a version on it, and once
    /// every stage has caught up (and this Processor's promotion policy
    /// allows), one commit record promotes the whole chain, the last stage
    /// first: no reader sees a new upstream with an old downstream.
    #[serde(default)]
    pub cascade: CascadeMode,
    /// Pods a new version replays with, from offset zero until it has caught
    /// up; it is then scaled to `replicas`, and holds at that size for
    /// `stableForSeconds` (and until its pods are Ready) before it may be
    /// promoted. Capped at the number of partitions of its inputs (a
    /// consumer beyond that would be idle). Default: `replicas`, with no
    /// change of size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub replay_replicas: Option<i32>,
    /// A replay budget, in bytes per second: while a new version replays
    /// from offset zero (until it has caught up), the operator sets a Kafka
    /// client quota (`consumer_byte_rate`) on its client id
    /// (`KAPPA_CLIENT_ID`), so the replay leaves the brokers to the live
    /// version; the quota is removed once it has caught up, and when it is
    /// promoted, fails or is retired. Kafka applies the rate on each broker.
    /// Needs a broker that offers AlterClientQuotas (Kafka 2.6 and later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1024))]
    pub replay_byte_rate: Option<i64>,
}

/// See `spec.rollout.cascade`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum CascadeMode {
    #[default]
    Independent,
    Together,
}

impl Default for RolloutPolicy {
    fn default() -> Self {
        RolloutPolicy {
            max_lag: 0,
            stable_for_seconds: default_stable_for(),
            promotion: PromotionMode::Auto,
            promote: None,
            retain_versions: default_retain(),
            scale_down_delay_seconds: default_scale_down_delay(),
            progress_deadline_seconds: default_progress_deadline(),
            allow_truncated_history: false,
            verify: None,
            cascade: CascadeMode::Independent,
            replay_replicas: None,
            replay_byte_rate: None,
        }
    }
}

fn default_stable_for() -> i32 {
    10
}
fn default_retain() -> i32 {
    1
}
fn default_scale_down_delay() -> i32 {
    30
}
fn default_progress_deadline() -> i32 {
    600
}

/// How a caught-up version is promoted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PromotionMode {
    /// Promote as soon as the version has caught up (and verified).
    #[default]
    Auto,
    /// Promote when `spec.rollout.promote` names the version.
    Manual,
}

/// The verification Job: a container run once per candidate with the
/// contract's variables for both versions (`KAPPA_OUTPUT_TOPIC` is the
/// candidate's view, `KAPPA_ACTIVE_OUTPUT_TOPIC` the active one's). Exit 0
/// passes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerifySpec {
    /// Container image.
    #[schemars(length(min = 1, max = 1024))]
    pub image: String,
    /// Entrypoint override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// Extra environment variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Seconds before the Job counts as failed. Default 600.
    #[serde(default = "default_progress_deadline")]
    #[schemars(range(min = 1, max = 86400))]
    pub timeout_seconds: i32,
}

/// Serving the view through a stable Service.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Serving {
    /// Port the processor's pods serve the view on; also the Services' port.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

/// Where the processor's rollout stands.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessorStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (the active version serves a caught-up view), `Progressing`
    /// (a rollout is under way), `Stalled` (it cannot proceed without a
    /// change), plus `ReprocessingBlocked` and `VerificationFailed` when they
    /// apply.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Live, Replaying, Verifying, AwaitingPromotion, CuttingOver, RollingBack,
    /// Failed, Blocked, or Pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The version id the spec asks for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_version: Option<String>,
    /// The version readers are served from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_version: Option<String>,
    /// The version being replayed or waiting for promotion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate_version: Option<String>,
    /// Lag of the active version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<i64>,
    /// Lag of the candidate version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate_lag: Option<i64>,
    /// Share of the replay the candidate has done, as a percentage string
    /// (for example `42.0%`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate_progress: Option<String>,
    /// The view topic readers should use (also in ConfigMap `<name>-view`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub view_topic: Option<String>,
    /// The Processors it reads (`processor/NAME` inputs): each one's active
    /// version, and the version of it this Processor's active version is
    /// built on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upstreams: Vec<UpstreamStatus>,
    /// The candidate offered to downstream Processors in a `Together`
    /// cascade: they build their versions on it before it cuts over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cascade_candidate: Option<String>,
    /// The Processors in this namespace that read this one's view.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub downstreams: Vec<String>,
    /// `NAME@VERSION` of each upstream version the active version is built
    /// on, comma-separated (for `kubectl get`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub built_on: Option<String>,
    /// The candidate's replay while it replays: its pods, rate, time left
    /// and whether a replay budget throttles it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<ReplayStatus>,
    /// The newest retained standby and the spec fields that select it:
    /// written into the spec, they return readers to it without a replay
    /// (what `kubectl kappa rollback` and the Argo CD action do).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackTarget>,
}

impl ProcessorStatus {
    /// The version a downstream Processor builds on: the candidate a
    /// Together cascade offers, else the active version.
    pub fn offered_version(&self) -> Option<&String> {
        self.cascade_candidate.as_ref().or(self.active_version.as_ref())
    }
}

/// A candidate's replay, as `status.replay` shows it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplayStatus {
    /// The version replaying.
    pub version: String,
    /// Pods it replays with.
    pub replicas: i32,
    /// Records consumed per second, recently.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records_per_second: Option<i64>,
    /// Seconds until it has consumed its lag at that rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<i64>,
    /// The replay budget in force on each broker (bytes per second), when a
    /// Kafka quota holds it to `spec.rollout.replayByteRate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub byte_rate: Option<i64>,
    /// A replay budget applies to it now.
    pub throttled: bool,
}

/// An upstream Processor, as a downstream sees it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamStatus {
    /// The upstream Processor.
    pub processor: String,
    /// Its active version (what a new version of this Processor builds on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_version: Option<String>,
    /// The version of it this Processor's active version reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub built_on: Option<String>,
}

/// A standby version and what the spec must say to make it active again.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollbackTarget {
    /// The standby's version id.
    pub version: String,
    /// Its image, command, args and env (`spec.template`).
    pub template: ProcessorCode,
    /// Its inputs (`spec.inputs`).
    pub inputs: Vec<String>,
    /// Its view settings (`spec.view`).
    pub view: ViewSettings,
    /// Its `spec.reprocessNonce`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reprocess_nonce: Option<String>,
}

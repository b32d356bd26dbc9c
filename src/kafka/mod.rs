//! Kafka access behind a small trait.
//!
//! The real implementation ([`client::WireKafka`]) speaks Kafka's protocol
//! directly (message types from the `kafka-protocol` crate), so every admin
//! operation is one request for many topics or groups: committed offsets of
//! all consumer groups come in one OffsetFetch per coordinator, log offsets of
//! all partitions in one ListOffsets per leader, configs are changed with
//! IncrementalAlterConfigs. librdkafka's admin API reads committed offsets one
//! group per call and the rdkafka crate has no incremental config changes,
//! which is why the operator does not use it here (the reference processor
//! and the tests do).

pub mod client;
pub mod lag;
mod retry;
mod scram;
pub mod topics;
mod wire;

use std::collections::BTreeMap;

use futures::future::BoxFuture;
pub use kafka_protocol::ResponseError;

/// How to reach and authenticate to a Kafka cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Settings {
    /// `host:port` addresses.
    pub bootstrap: Vec<String>,
    pub tls: Option<Tls>,
    pub sasl: Option<Sasl>,
}

impl Settings {
    /// Settings without TLS or SASL for a comma-separated bootstrap list.
    pub fn plaintext(bootstrap: &str) -> Settings {
        Settings {
            bootstrap: bootstrap.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect(),
            ..Default::default()
        }
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Tls {
    /// PEM CA bundle; None uses the system's trust store.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM client certificate and private key for mutual TLS.
    pub client_cert_pem: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("ca", &self.ca_pem.is_some()).field("client_certificate", &self.client_cert_pem.is_some()).finish()
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Sasl {
    pub mechanism: crate::api::SaslMechanism,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Sasl {
    // Never print the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sasl").field("mechanism", &self.mechanism).field("username", &self.username).finish()
    }
}

/// Why a Kafka call failed, in the terms a person can act on.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum KafkaError {
    #[error("cannot reach Kafka at {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    #[error("Kafka refused the credentials: {0}")]
    Authentication(String),
    #[error("TLS handshake with {addr} failed: {reason}")]
    Tls { addr: String, reason: String },
    #[error("Kafka answered {api} with {code}: {message}")]
    Api { api: &'static str, code: String, message: String },
    #[error("Kafka protocol error in {api}: {reason}")]
    Protocol { api: &'static str, reason: String },
    #[error("Kafka did not answer {api} within {seconds}s")]
    Timeout { api: &'static str, seconds: u64 },
    /// The broker closed the connection instead of answering (internal to
    /// the client: on a fresh connection it means the broker does not
    /// handle the request, see [`client`]).
    #[error("the broker closed the connection on {api} v{version}")]
    Closed { api: &'static str, version: i16 },
    /// The broker does not offer an API the operator uses, or only older
    /// versions of it than the operator speaks (`offered`).
    #[error("{api} unsupported by the broker at {addr}{}: {}", offered.map_or(String::new(), |v| format!(" (it offers up to version {v}, too old)")), feature(api))]
    Unsupported { api: &'static str, addr: String, offered: Option<i16> },
}

/// What the operator cannot do without an API, for people to read.
pub fn feature(api: &str) -> &'static str {
    match api {
        "CreatePartitions" => "partition growth disabled",
        "DescribeConfigs" => "topic config drift detection disabled",
        "IncrementalAlterConfigs" => "topic config changes disabled",
        "CreateTopics" => "topic creation disabled",
        "DeleteTopics" => "topic deletion disabled",
        "DeleteGroups" => "consumer groups of retired versions are left in Kafka",
        "DescribeGroups" | "LeaveGroup" => "members that did not leave are waited out, not removed",
        "ListOffsets" | "OffsetFetch" | "FindCoordinator" => "progress cannot be read: no version is promoted",
        "DescribeQuorum" => "the active KRaft controller is not named",
        "DescribeClientQuotas" | "AlterClientQuotas" => "spec.rollout.replayByteRate cannot be applied",
        _ => "the operator cannot use this broker",
    }
}

impl KafkaError {
    /// A short CamelCase reason for conditions and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            KafkaError::Unreachable { .. } | KafkaError::Timeout { .. } => "KafkaUnreachable",
            KafkaError::Authentication(_) => "AuthenticationFailed",
            KafkaError::Tls { .. } => "TlsFailed",
            KafkaError::Api { .. } => "KafkaError",
            KafkaError::Protocol { .. } => "KafkaProtocolError",
            KafkaError::Unsupported { .. } => "UnsupportedByBroker",
            KafkaError::Closed { .. } => "KafkaUnreachable",
        }
    }

    /// Worth another try on another broker or a fresh connection.
    pub fn transient(&self) -> bool {
        matches!(
            self,
            KafkaError::Unreachable { .. } | KafkaError::Timeout { .. } | KafkaError::Protocol { .. } | KafkaError::Closed { .. }
        )
    }
}

pub type Result<T, E = KafkaError> = std::result::Result<T, E>;

/// Why one item of a batched call was not done: Kafka's error code, typed
/// (None when the broker said nothing for the item: no answer, or its
/// request failed), and Kafka's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemError {
    pub code: Option<ResponseError>,
    pub message: String,
}

impl ItemError {
    pub fn kafka(code: ResponseError, message: impl Into<String>) -> ItemError {
        ItemError { code: Some(code), message: message.into() }
    }

    /// Nothing was said for the item.
    pub fn no_answer(message: impl Into<String>) -> ItemError {
        ItemError { code: None, message: message.into() }
    }

    /// From a response's error code and message; None for success.
    pub fn from_code(code: i16, message: Option<&str>) -> Option<ItemError> {
        ResponseError::try_from_code(code).map(|c| ItemError::kafka(c, message.unwrap_or_default()))
    }

    pub fn is(&self, code: ResponseError) -> bool {
        self.code == Some(code)
    }

    /// Worth asking again (after a metadata refresh): Kafka says the error
    /// is retriable, or nothing was said.
    pub fn retriable(&self) -> bool {
        self.code.is_none_or(|c| c.is_retriable())
    }

    /// The code's name (`UnknownTopicOrPartition`), or `NoAnswer`.
    pub fn name(&self) -> String {
        match self.code {
            Some(ResponseError::Unknown(n)) => format!("error code {n}"),
            Some(c) => c.to_string(),
            None => "NoAnswer".into(),
        }
    }
}

impl std::fmt::Display for ItemError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.message.is_empty() { write!(f, "{}", self.name()) } else { write!(f, "{}: {}", self.name(), self.message) }
    }
}

pub type ItemResult = std::result::Result<(), ItemError>;

/// One topic's values of the asked config keys, or why Kafka refused.
pub type ConfigResult = std::result::Result<BTreeMap<String, String>, ItemError>;

/// What the operator learns of a cluster when it checks it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterInfo {
    pub cluster_id: Option<String>,
    /// Every broker in the metadata: id -> address.
    pub brokers: BTreeMap<i32, String>,
    /// The controller the metadata names (on KRaft clusters, a broker that
    /// forwards to the controller quorum).
    pub controller: Option<i32>,
    /// Brokers that could not be reached, with why.
    pub unreachable: BTreeMap<i32, String>,
    /// KRaft (the brokers finalize `metadata.version`), ZooKeeper mode, or
    /// unknown when no broker answered.
    pub kraft: Option<bool>,
    /// The version of each API the operator uses that it will send; None
    /// for an API the brokers do not offer (in a range the operator speaks).
    pub apis: BTreeMap<&'static str, Option<i16>>,
}

/// A topic as Kafka has it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicInfo {
    pub id: String,
    pub partitions: i32,
    pub replication_factor: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i32,
    pub config: BTreeMap<String, String>,
}

/// A topic partition.
pub type Tp = (String, i32);

/// One consumer group's committed offsets, or why Kafka could not say.
pub type GroupOffsets = std::result::Result<BTreeMap<Tp, i64>, ItemError>;

/// The partitions of some topics and their first and next offsets, item by
/// item: a topic Kafka's metadata lacks, or a partition without a leader or
/// an answer right now, carries why instead.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionOffsets {
    pub topics: BTreeMap<String, std::result::Result<TopicInfo, ItemError>>,
    pub offsets: BTreeMap<Tp, std::result::Result<(i64, i64), ItemError>>,
}

/// A consumer group member: (member id, group instance id of a static member).
pub type Member = (String, Option<String>);

/// Which members of a group to remove.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Removal {
    /// Every member: the group's pods are gone.
    All,
    /// Static members whose instance id derives from none of these (the
    /// pods that run): left behind by pods that were replaced. An id derives
    /// from a pod's when it is the pod's, or it followed by `-` and a suffix
    /// (Kafka Streams adds `-<thread>`). Dynamic members leave on their own.
    StaticExcept(std::collections::BTreeSet<String>),
}

impl Removal {
    pub fn select(&self, members: Vec<Member>) -> Vec<Member> {
        match self {
            Removal::All => members,
            Removal::StaticExcept(live) => {
                let alive = |i: &str| live.iter().any(|p| i == p || i.strip_prefix(p.as_str()).is_some_and(|rest| rest.starts_with('-')));
                members.into_iter().filter(|(_, i)| i.as_deref().is_some_and(|i| !alive(i))).collect()
            }
        }
    }
}

/// The Kafka operations the operator needs. Every method takes many items
/// and costs a fixed, small number of requests.
pub trait Kafka: Send + Sync + 'static {
    /// Brokers, controller, cluster id and API versions (one Metadata, and
    /// one ApiVersions per broker, in parallel).
    fn cluster(&self) -> BoxFuture<'_, Result<ClusterInfo>>;
    /// Which of these topics exist, and their shape (one Metadata request).
    fn topics<'a>(&'a self, names: &'a [String]) -> BoxFuture<'a, Result<BTreeMap<String, TopicInfo>>>;
    /// Current values of the given config keys per topic (one DescribeConfigs).
    fn topic_configs<'a>(&'a self, keys: &'a BTreeMap<String, Vec<String>>) -> BoxFuture<'a, Result<BTreeMap<String, ConfigResult>>>;
    /// Creates topics (one CreateTopics); returns what Kafka created.
    fn create_topics<'a>(
        &'a self,
        topics: &'a [NewTopic],
    ) -> BoxFuture<'a, Result<BTreeMap<String, std::result::Result<TopicInfo, ItemError>>>>;
    /// Sets config keys, leaving every other config alone (one IncrementalAlterConfigs).
    fn alter_topic_configs<'a>(
        &'a self,
        changes: &'a BTreeMap<String, BTreeMap<String, String>>,
    ) -> BoxFuture<'a, Result<BTreeMap<String, ItemResult>>>;
    /// Raises partition counts (one CreatePartitions).
    fn create_partitions<'a>(&'a self, counts: &'a BTreeMap<String, i32>) -> BoxFuture<'a, Result<BTreeMap<String, ItemResult>>>;
    /// Deletes topics (one DeleteTopics).
    fn delete_topics<'a>(&'a self, names: &'a [String]) -> BoxFuture<'a, Result<BTreeMap<String, ItemResult>>>;
    /// First (`earliest`) or next (latest) offsets of partitions (one
    /// ListOffsets per partition leader). A partition Kafka cannot answer
    /// for right now (no leader yet, a leader moving) is left out.
    fn offsets<'a>(&'a self, partitions: &'a [Tp], earliest: bool) -> BoxFuture<'a, Result<BTreeMap<Tp, i64>>>;
    /// First and next offsets of every partition of these topics (one
    /// Metadata, then two ListOffsets per partition leader); an error if any
    /// topic or partition has no answer.
    fn log_offsets<'a>(&'a self, topics: &'a [String]) -> BoxFuture<'a, Result<BTreeMap<Tp, (i64, i64)>>>;
    /// The same requests as `log_offsets`, answered topic by topic and
    /// partition by partition.
    fn partition_offsets<'a>(&'a self, topics: &'a [String]) -> BoxFuture<'a, Result<PartitionOffsets>>;
    /// Committed offsets of consumer groups (one FindCoordinator, then one
    /// OffsetFetch per coordinator), group by group: a group without commits
    /// maps to empty, a group Kafka could not answer for to why.
    fn committed<'a>(&'a self, groups: &'a [String]) -> BoxFuture<'a, Result<BTreeMap<String, GroupOffsets>>>;
    /// Deletes consumer groups (one DeleteGroups per coordinator).
    fn delete_groups<'a>(&'a self, groups: &'a [String]) -> BoxFuture<'a, Result<BTreeMap<String, ItemResult>>>;
    /// The names of every topic (one Metadata request).
    fn list_topics(&self) -> BoxFuture<'_, Result<Vec<String>>>;
    /// Removes members of these (classic-protocol) consumer groups, as
    /// Kafka's admin client does for members that did not leave (one
    /// DescribeGroups per coordinator, one LeaveGroup per group with members
    /// to remove); how many were removed, or why not.
    fn remove_members<'a>(
        &'a self,
        groups: &'a [String],
        which: &'a Removal,
    ) -> BoxFuture<'a, Result<BTreeMap<String, std::result::Result<usize, ItemError>>>>;
    /// The consumer byte-rate quotas (`consumer_byte_rate`) set on client
    /// ids that start with `prefix` (one DescribeClientQuotas).
    fn consumer_quotas<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<BTreeMap<String, i64>>>;
    /// Sets (`Some`) or removes (`None`) the consumer byte-rate quota of
    /// client ids (one AlterClientQuotas); per client id, done or why not.
    fn set_consumer_quotas<'a>(&'a self, quotas: &'a BTreeMap<String, Option<i64>>) -> BoxFuture<'a, Result<BTreeMap<String, ItemResult>>>;
    /// Requests sent so far, for metrics and benchmarks.
    fn requests_sent(&self) -> u64;
    /// Requests sent so far by API, for metrics.
    fn requests_by_api(&self) -> std::collections::BTreeMap<&'static str, u64> {
        Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaced_pods_static_members_are_removed_never_a_live_or_dynamic_one() {
        let members: Vec<Member> = vec![
            ("m1".into(), Some("pod-a".into())),
            ("m2".into(), Some("pod-gone".into())),
            ("m3".into(), None),
            ("m4".into(), Some("pod-a-1".into())),
            ("m5".into(), Some("pod-gone-1".into())),
            ("m6".into(), Some("pod-ab".into())),
        ];
        assert_eq!(Removal::All.select(members.clone()).len(), 6);
        let live = Removal::StaticExcept(["pod-a".to_string()].into());
        let removed: Vec<String> = live.select(members).into_iter().map(|(m, _)| m).collect();
        assert_eq!(removed, ["m2", "m5", "m6"], "a live pod's own and per-thread ids stay");
    }
}

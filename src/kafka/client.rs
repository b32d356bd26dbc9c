//! [`Kafka`] over Kafka's own protocol, behaving as a good Kafka client:
//!
//! - one connection per broker, reused; opened with timeouts on connect and
//!   handshake; a pooled connection found dead is opened again and the
//!   request sent again, once;
//! - every request at the highest version both sides support, or an
//!   `Unsupported` error naming the API and what it disables;
//! - topic creation, deletion and partition growth sent to the controller
//!   the last Metadata named (ZooKeeper-mode clusters require it; a KRaft
//!   broker forwards to the quorum), falling back to any broker;
//! - per-item errors typed (`kafka-protocol`'s `ResponseError`); retriable
//!   ones sent again after a metadata refresh and a back-off
//!   ([`retry`](super::retry)), the rest reported item by item;
//! - requests to different brokers sent in parallel.

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    hash::Hash,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use futures::{FutureExt, future::BoxFuture};
use kafka_protocol::{
    messages::{
        ApiKey, BrokerId, CreatePartitionsRequest, CreateTopicsRequest, DeleteGroupsRequest, DeleteTopicsRequest, DescribeConfigsRequest,
        DescribeGroupsRequest, DescribeQuorumRequest, FindCoordinatorRequest, GroupId, IncrementalAlterConfigsRequest, LeaveGroupRequest,
        ListOffsetsRequest, MetadataRequest, MetadataResponse, OffsetFetchRequest, TopicName,
        create_partitions_request::CreatePartitionsTopic,
        create_topics_request::{CreatableTopic, CreatableTopicConfig},
        delete_topics_request::DeleteTopicState,
        describe_configs_request::DescribeConfigsResource,
        describe_groups_response::DescribedGroup,
        describe_quorum_request::{PartitionData, TopicData},
        incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig},
        leave_group_request::MemberIdentity,
        list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic},
        metadata_request::MetadataRequestTopic,
        offset_fetch_request::OffsetFetchRequestGroup,
        offset_fetch_response::OffsetFetchResponseGroup,
    },
    protocol::{Request, StrBytes},
};
use tokio::sync::Mutex as AsyncMutex;

use super::{
    ClusterInfo, ConfigResult, GroupOffsets, ItemError, ItemResult, Kafka, KafkaError, Member, NewTopic, PartitionOffsets, Removal,
    ResponseError, Result, Settings, TopicInfo, Tp, retry,
    wire::{Conn, api_key_name},
};

mod read;
pub use read::{LogRecord, TopicRead};

const TOPIC_RESOURCE: i8 = 2;
/// How long Kafka may take to finish a topic creation, deletion or
/// partition growth before it answers (within the request timeout).
const OPERATION_TIMEOUT_MS: i32 = 25_000;

/// The APIs the operator uses, with the versions it speaks (min, preferred).
const APIS: [(ApiKey, i16, i16); 13] = [
    (ApiKey::Metadata, 4, 12),
    (ApiKey::CreateTopics, 5, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::FindCoordinator, 4, 4),
    (ApiKey::OffsetFetch, 8, 8),
    (ApiKey::DeleteGroups, 0, 2),
    // Members of a retired or revived version's group that did not leave.
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::LeaveGroup, 3, 5),
    // Only to name the active controller of a KRaft cluster.
    (ApiKey::DescribeQuorum, 0, 1),
];

/// APIs only `kubectl kappa` uses (not part of what a cluster must offer
/// the operator): Fetch v4-v12 (v13 names topics by id).
const READ_APIS: [(ApiKey, i16, i16); 1] = [(ApiKey::Fetch, 4, 12)];

/// APIs used only for `spec.rollout.replayByteRate` (Kafka 2.6 and later):
/// a cluster without them runs everything else.
const QUOTA_APIS: [(ApiKey, i16, i16); 2] = [(ApiKey::DescribeClientQuotas, 0, 1), (ApiKey::AlterClientQuotas, 0, 1)];

/// The quota key Kafka throttles consumer fetches by.
const CONSUMER_BYTE_RATE: &str = "consumer_byte_rate";

fn versions(key: ApiKey) -> (i16, i16) {
    APIS.iter().chain(&READ_APIS).chain(&QUOTA_APIS).find(|(k, _, _)| *k == key).map_or((0, 0), |(_, min, preferred)| (*min, *preferred))
}

/// Brokers as the last Metadata answer named them.
#[derive(Default)]
struct Brokers {
    by_id: BTreeMap<i32, String>,
    controller: Option<i32>,
}

/// How long the offsets path trusts what it read of where partitions lead.
/// An error that says something moved forgets it at once.
const REMEMBER_FOR: Duration = Duration::from_secs(30);

/// How long it trusts where groups are coordinated and where logs start:
/// a coordinator that moves says so (NOT_COORDINATOR), and a log start
/// moves when retention deletes a segment, which Kafka checks every 5
/// minutes by default. Read again all together (see [`all_fresh`]), a
/// steady lag poll costs one ListOffsets per leader and one OffsetFetch per
/// coordinator, and once in this long a FindCoordinator and a ListOffsets
/// of the starts per leader.
const REMEMBER_STABLE_FOR: Duration = Duration::from_secs(300);

/// One topic as a Metadata answer had it: its shape, and each partition's
/// leader or why it has none.
#[derive(Clone)]
struct TopicLayout {
    info: std::result::Result<TopicInfo, ItemError>,
    leaders: Vec<(i32, std::result::Result<i32, ItemError>)>,
}

/// What the offsets path remembers between calls, with when it was read.
#[derive(Default)]
struct Remembered {
    layouts: HashMap<String, (Instant, TopicLayout)>,
    coordinators: HashMap<String, (Instant, String)>,
    starts: HashMap<Tp, (Instant, i64)>,
}

fn fresh<T: Clone>(entry: Option<&(Instant, T)>) -> Option<T> {
    entry.filter(|(at, _)| at.elapsed() < REMEMBER_FOR).map(|(_, v)| v.clone())
}

/// Drops what is older than `ttl`: read again if ever needed, and not kept
/// for topics and groups that are gone (a soak churning thousands of them
/// grew the operator's memory by megabytes).
fn forget_expired<K, T>(remembered: &mut HashMap<K, (Instant, T)>, ttl: Duration) {
    remembered.retain(|_, (at, _)| at.elapsed() < ttl);
}

/// The remembered values of all `keys`, or none when any one of them is
/// not remembered or older than `ttl`. Read again together, they expire
/// together: a steady poll reads them once per `ttl`, where entries
/// remembered one by one (read at different times) would each expire at
/// its own time, and some poll or other would read a few every time.
fn all_fresh<K: Clone + Ord + Hash, T: Clone>(remembered: &HashMap<K, (Instant, T)>, keys: &[K], ttl: Duration) -> BTreeMap<K, T> {
    let mut out = BTreeMap::new();
    for k in keys {
        match remembered.get(k).filter(|(at, _)| at.elapsed() < ttl) {
            Some((_, v)) => out.insert(k.clone(), v.clone()),
            None => return BTreeMap::new(),
        };
    }
    out
}

pub struct WireKafka {
    settings: Settings,
    /// One connection slot per broker address; a failed connection is
    /// dropped and opened again on next use.
    conns: Mutex<HashMap<String, Arc<AsyncMutex<Option<Conn>>>>>,
    brokers: Mutex<Brokers>,
    remembered: Mutex<Remembered>,
    requests: AtomicU64,
    by_broker: Mutex<BTreeMap<String, u64>>,
    by_api: Mutex<BTreeMap<&'static str, u64>>,
    /// APIs a broker advertised but hung up on: not sent again (by this
    /// client; a new one, after a settings change, tries again).
    refused: Mutex<std::collections::BTreeSet<&'static str>>,
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn item_error(code: i16, message: Option<&StrBytes>) -> Option<ItemError> {
    ItemError::from_code(code, message.map(|m| m.as_str()))
}

fn as_result(code: i16, message: Option<&StrBytes>) -> ItemResult {
    item_error(code, message).map_or(Ok(()), Err)
}

/// Topics as Kafka's metadata has them.
#[derive(Default)]
struct Layout {
    topics: BTreeMap<String, std::result::Result<TopicInfo, ItemError>>,
    by_leader: BTreeMap<i32, Vec<Tp>>,
    leaderless: BTreeMap<Tp, ItemError>,
}

/// One group's committed offsets from an OffsetFetch answer: every
/// partition it committed on, or why Kafka could not say (a group it does
/// not know has committed nothing).
fn group_offsets(g: OffsetFetchResponseGroup) -> GroupOffsets {
    if let Some(e) = item_error(g.error_code, None).filter(|e| !e.is(ResponseError::GroupIdNotFound)) {
        return Err(e);
    }
    let mut offsets = BTreeMap::new();
    for t in g.topics {
        for p in t.partitions {
            if let Some(e) = item_error(p.error_code, None) {
                return Err(ItemError { message: format!("{}/{}", t.name.as_str(), p.partition_index), ..e });
            }
            if p.committed_offset >= 0 {
                offsets.insert((t.name.to_string(), p.partition_index), p.committed_offset);
            }
        }
    }
    Ok(offsets)
}

/// One topic of a Metadata answer: its shape and each partition's leader,
/// or why there is none.
fn topic_layout(t: &kafka_protocol::messages::metadata_response::MetadataResponseTopic) -> TopicLayout {
    if let Some(e) = item_error(t.error_code, None) {
        return TopicLayout { info: Err(e), leaders: vec![] };
    }
    TopicLayout {
        info: Ok(TopicInfo {
            id: URL_SAFE_NO_PAD.encode(t.topic_id.as_bytes()),
            partitions: t.partitions.len() as i32,
            replication_factor: t.partitions.first().map(|p| p.replica_nodes.len() as i32).unwrap_or(0),
        }),
        leaders: t
            .partitions
            .iter()
            .map(|p| {
                let leader = if p.leader_id.0 >= 0 {
                    Ok(p.leader_id.0)
                } else {
                    Err(item_error(p.error_code, None).unwrap_or_else(|| ItemError::kafka(ResponseError::LeaderNotAvailable, "")))
                };
                (p.partition_index, leader)
            })
            .collect(),
    }
}

/// Where to send a request for the controller: the controller the metadata
/// names first, then every other known broker, then the bootstrap list.
fn controller_first(brokers: &Brokers, bootstrap: &[String]) -> Vec<String> {
    let mut addrs: Vec<String> = brokers.controller.and_then(|c| brokers.by_id.get(&c).cloned()).into_iter().collect();
    for a in brokers.by_id.values().chain(bootstrap) {
        if !addrs.contains(a) {
            addrs.push(a.clone());
        }
    }
    addrs
}

/// What an OffsetFetch or DeleteGroups answer for one group means, when the
/// request to its coordinator itself failed.
/// A group's members as (member id, group instance id), or why not; a group
/// that does not exist has none.
fn group_members(g: DescribedGroup) -> std::result::Result<Vec<Member>, ItemError> {
    match item_error(g.error_code, g.error_message.as_ref()) {
        Some(e) if e.is(ResponseError::GroupIdNotFound) => Ok(vec![]),
        Some(e) => Err(e),
        None => Ok(g.members.into_iter().map(|m| (m.member_id.to_string(), m.group_instance_id.map(|i| i.to_string()))).collect()),
    }
}

fn request_failed<T>(e: &KafkaError) -> std::result::Result<T, ItemError> {
    Err(ItemError::no_answer(e.to_string()))
}

impl WireKafka {
    pub fn new(settings: Settings) -> Self {
        WireKafka {
            settings,
            conns: Mutex::default(),
            brokers: Mutex::default(),
            remembered: Mutex::default(),
            requests: AtomicU64::new(0),
            by_api: Default::default(),
            by_broker: Mutex::default(),
            refused: Mutex::default(),
        }
    }

    /// Requests sent so far, by broker address (for tests and benchmarks).
    pub fn requests_by_broker(&self) -> BTreeMap<String, u64> {
        self.by_broker.lock().expect("by_broker lock").clone()
    }

    /// A consumer group's lag over `topic` (and every other partition it
    /// commits on), read as the progress monitor reads it; None while Kafka
    /// cannot answer for every partition. For tests and benchmarks.
    pub async fn group_lag(&self, group: &str, topic: &str) -> Result<Option<i64>> {
        let groups = [group.to_string()];
        let topics = [topic.to_string()];
        let committed = self.committed(&groups).await?;
        let offsets = self.partition_offsets(&super::lag::topics_to_read(&topics, &committed)).await?;
        Ok(super::lag::reading(k8s_openapi::jiff::Timestamp::now(), &topics, group, &offsets, &committed).ok().map(|(_, f)| f.lag))
    }

    fn count(&self, addr: &str, api: &'static str) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        *self.by_broker.lock().expect("by_broker lock").entry(addr.to_string()).or_default() += 1;
        *self.by_api.lock().expect("by_api lock").entry(api).or_default() += 1;
    }

    fn slot(&self, addr: &str) -> Arc<AsyncMutex<Option<Conn>>> {
        self.conns.lock().expect("conns lock").entry(addr.to_string()).or_default().clone()
    }

    /// Sends one request to the broker at `addr`, opening the connection if
    /// needed; `build` gets the negotiated version. A pooled connection
    /// that fails is opened again and the request sent again, once.
    async fn call<R: Request>(&self, addr: &str, key: ApiKey, build: impl Fn(i16) -> R) -> Result<R::Response> {
        let (min, preferred) = versions(key);
        if self.refused.lock().expect("refused lock").contains(api_key_name(key)) {
            return Err(KafkaError::Unsupported { api: api_key_name(key), addr: addr.to_string(), offered: None });
        }
        let slot = self.slot(addr);
        let mut guard = slot.lock().await;
        for attempt in 0..2 {
            let pooled = guard.is_some();
            if guard.is_none() {
                *guard = Some(Conn::open(addr, &self.settings).await?);
            }
            let conn = guard.as_mut().expect("connection just opened");
            let version = conn.version(key, min, preferred)?;
            self.count(addr, api_key_name(key));
            match conn.send(&build(version), version).await {
                Err(e) if e.transient() => {
                    *guard = None;
                    if !(pooled && attempt == 0) {
                        return Err(match e {
                            KafkaError::Unreachable { reason, .. } => KafkaError::Unreachable { addr: addr.to_string(), reason },
                            // A connection that just shook hands, hung up on
                            // this request: the broker answers others, not this.
                            KafkaError::Closed { api, .. } => {
                                self.refused.lock().expect("refused lock").insert(api);
                                KafkaError::Unsupported { api, addr: addr.to_string(), offered: None }
                            }
                            other => other,
                        });
                    }
                }
                other => return other,
            }
        }
        unreachable!("the second attempt returns")
    }

    /// Tries the addresses in order until one answers (a broker that cannot
    /// be reached, or times out, is passed over).
    async fn call_first<R: Request>(&self, addrs: Vec<String>, key: ApiKey, build: impl Fn(i16) -> R) -> Result<R::Response> {
        let mut last = None;
        for addr in addrs {
            match self.call(&addr, key, &build).await {
                Err(e) if e.transient() => last = Some(e),
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| KafkaError::Unreachable { addr: String::new(), reason: "no bootstrap servers".into() }))
    }

    /// Any broker: known brokers first (the controller among them), then
    /// the bootstrap list.
    async fn call_any<R: Request>(&self, key: ApiKey, build: impl Fn(i16) -> R) -> Result<R::Response> {
        self.call_controller(key, build).await
    }

    /// The controller the last Metadata named, then any other broker.
    async fn call_controller<R: Request>(&self, key: ApiKey, build: impl Fn(i16) -> R) -> Result<R::Response> {
        let addrs = controller_first(&self.brokers.lock().expect("brokers lock"), &self.settings.bootstrap);
        self.call_first(addrs, key, build).await
    }

    async fn metadata(&self, topics: Option<&[String]>) -> Result<MetadataResponse> {
        let resp = self
            .call_any(ApiKey::Metadata, |_| {
                MetadataRequest::default()
                    .with_topics(
                        topics.map(|t| t.iter().map(|n| MetadataRequestTopic::default().with_name(Some(TopicName(s(n))))).collect()),
                    )
                    .with_allow_auto_topic_creation(false)
            })
            .await?;
        let mut b = self.brokers.lock().expect("brokers lock");
        b.by_id = resp.brokers.iter().map(|b| (b.node_id.0, format!("{}:{}", b.host, b.port))).collect();
        b.controller = (resp.controller_id.0 >= 0).then_some(resp.controller_id.0);
        Ok(resp)
    }

    /// Sends `send` for the items still pending until none is left with a
    /// retriable error or the attempts run out, refreshing the metadata
    /// (where the controller and leaders are) and backing off in between.
    async fn with_retries<T, F, Fut>(
        &self,
        api: &str,
        items: Vec<String>,
        send: F,
    ) -> Result<BTreeMap<String, std::result::Result<T, ItemError>>>
    where
        F: Fn(Vec<String>, usize) -> Fut,
        Fut: Future<Output = Result<(BTreeMap<String, std::result::Result<T, ItemError>>, i32)>>,
    {
        let mut settled = BTreeMap::new();
        let mut pending = items;
        for attempt in 0..retry::ATTEMPTS {
            let (answers, throttle_ms) = send(pending.clone(), attempt).await?;
            let (done, again) = retry::split(&pending, answers, attempt + 1 == retry::ATTEMPTS, api);
            settled.extend(done);
            if again.is_empty() {
                break;
            }
            tokio::time::sleep(retry::backoff(attempt, throttle_ms)).await;
            let _ = self.metadata(Some(&[])).await;
            pending = again;
        }
        Ok(settled)
    }

    /// What Kafka's metadata says of these topics: each topic's shape or
    /// why it has none, and its partitions grouped by leader, or why a
    /// partition has no leader now. One Metadata for the topics not
    /// remembered (all of them when `fresh`).
    async fn layout(&self, topics: &[String], fresh_only: bool) -> Result<Layout> {
        let mut known: BTreeMap<String, TopicLayout> = BTreeMap::new();
        if !fresh_only {
            let r = self.remembered.lock().expect("remembered lock");
            known.extend(topics.iter().filter_map(|t| Some((t.clone(), fresh(r.layouts.get(t)).filter(|l| l.info.is_ok())?))));
        }
        let missing: Vec<String> = topics.iter().filter(|t| !known.contains_key(*t)).cloned().collect();
        if !missing.is_empty() {
            let meta = self.metadata(Some(&missing)).await?;
            let mut read = BTreeMap::new();
            for t in &meta.topics {
                let Some(name) = t.name.as_ref().map(|n| n.to_string()) else { continue };
                let layout = topic_layout(t);
                read.insert(name, layout);
            }
            let mut r = self.remembered.lock().expect("remembered lock");
            forget_expired(&mut r.layouts, REMEMBER_FOR);
            for (name, layout) in &read {
                r.layouts.insert(name.clone(), (Instant::now(), layout.clone()));
            }
            known.extend(read);
        }
        let mut out = Layout::default();
        for t in topics {
            let Some(layout) = known.remove(t) else {
                out.topics.insert(t.clone(), Err(ItemError::no_answer("Metadata did not answer for it")));
                continue;
            };
            for (p, leader) in layout.leaders {
                let tp = (t.clone(), p);
                match leader {
                    Ok(l) => out.by_leader.entry(l).or_default().push(tp),
                    Err(e) => {
                        out.leaderless.insert(tp, e);
                    }
                }
            }
            out.topics.insert(t.clone(), layout.info);
        }
        Ok(out)
    }

    /// Forgets where these topics' partitions lead and where these groups
    /// are coordinated: an answer said they moved.
    fn forget(&self, topics: &[String], groups: &[String]) {
        let mut r = self.remembered.lock().expect("remembered lock");
        topics.iter().for_each(|t| {
            r.layouts.remove(t);
        });
        groups.iter().for_each(|g| {
            r.coordinators.remove(g);
        });
    }

    /// The node that leads the KRaft controller quorum, if a broker says.
    async fn quorum_leader(&self) -> Option<i32> {
        let resp = self
            .call_any(ApiKey::DescribeQuorum, |_| {
                DescribeQuorumRequest::default().with_topics(vec![
                    TopicData::default()
                        .with_topic_name(TopicName(s("__cluster_metadata")))
                        .with_partitions(vec![PartitionData::default().with_partition_index(0)]),
                ])
            })
            .await
            .ok()?;
        let p = resp.topics.first()?.partitions.first()?;
        (resp.error_code == 0 && p.error_code == 0 && p.leader_id.0 >= 0).then_some(p.leader_id.0)
    }

    fn broker_addr(&self, id: i32) -> Option<String> {
        self.brokers.lock().expect("brokers lock").by_id.get(&id).cloned()
    }

    /// Earliest (-2) or latest (-1) offsets, one ListOffsets per leader, the
    /// leaders in parallel; each partition answered or why not.
    async fn list_offsets(&self, by_leader: &BTreeMap<i32, Vec<Tp>>, earliest: bool) -> BTreeMap<Tp, std::result::Result<i64, ItemError>> {
        let timestamp = if earliest { -2 } else { -1 };
        let per_leader = by_leader.iter().filter(|(_, tps)| !tps.is_empty()).map(|(leader, tps)| async move {
            let Some(addr) = self.broker_addr(*leader) else {
                let why = ItemError::kafka(ResponseError::LeaderNotAvailable, format!("no broker {leader} in the metadata"));
                return tps.iter().map(|tp| (tp.clone(), Err(why.clone()))).collect::<Vec<_>>();
            };
            let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
            for (t, p) in tps {
                topics.entry(t.as_str()).or_default().push(*p);
            }
            let resp = self
                .call(&addr, ApiKey::ListOffsets, |_| {
                    ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(
                        topics
                            .iter()
                            .map(|(t, ps)| {
                                ListOffsetsTopic::default().with_name(TopicName(s(t))).with_partitions(
                                    ps.iter()
                                        .map(|p| {
                                            ListOffsetsPartition::default()
                                                .with_partition_index(*p)
                                                .with_current_leader_epoch(-1)
                                                .with_timestamp(timestamp)
                                        })
                                        .collect(),
                                )
                            })
                            .collect(),
                    )
                })
                .await;
            let mut out: BTreeMap<Tp, std::result::Result<i64, ItemError>> =
                tps.iter().map(|tp| (tp.clone(), Err(ItemError::no_answer("ListOffsets did not answer for it")))).collect();
            match resp {
                Err(e) => out.values_mut().for_each(|v| *v = request_failed(&e)),
                Ok(resp) => {
                    for t in resp.topics {
                        for p in t.partitions {
                            let tp = (t.name.to_string(), p.partition_index);
                            out.insert(tp, item_error(p.error_code, None).map_or(Ok(p.offset), Err));
                        }
                    }
                }
            }
            out.into_iter().collect::<Vec<_>>()
        });
        futures::future::join_all(per_leader).await.into_iter().flatten().collect()
    }

    /// Coordinator address per group, or why Kafka could not name it: one
    /// FindCoordinator for the groups not remembered.
    async fn coordinators(&self, groups: &[String]) -> Result<BTreeMap<String, std::result::Result<String, ItemError>>> {
        let mut out: BTreeMap<String, std::result::Result<String, ItemError>> = BTreeMap::new();
        {
            let r = self.remembered.lock().expect("remembered lock");
            out.extend(all_fresh(&r.coordinators, groups, REMEMBER_STABLE_FOR).into_iter().map(|(g, c)| (g, Ok(c))));
        }
        let missing: Vec<String> = groups.iter().filter(|g| !out.contains_key(*g)).cloned().collect();
        if missing.is_empty() {
            return Ok(out);
        }
        let resp = self
            .call_any(ApiKey::FindCoordinator, |_| {
                FindCoordinatorRequest::default().with_key_type(0).with_coordinator_keys(missing.iter().map(|g| s(g)).collect())
            })
            .await?;
        out.extend(missing.iter().map(|g| (g.clone(), Err(ItemError::no_answer("FindCoordinator did not answer for it")))));
        let mut r = self.remembered.lock().expect("remembered lock");
        forget_expired(&mut r.coordinators, REMEMBER_STABLE_FOR);
        for c in resp.coordinators {
            let found = match item_error(c.error_code, c.error_message.as_ref()) {
                Some(e) => Err(e),
                None => {
                    let addr = format!("{}:{}", c.host, c.port);
                    r.coordinators.insert(c.key.to_string(), (Instant::now(), addr.clone()));
                    Ok(addr)
                }
            };
            out.insert(c.key.to_string(), found);
        }
        Ok(out)
    }

    /// [`Self::per_coordinator`] with retries: a group whose answer is
    /// retriable (its coordinator moved, is loading) is asked again, with
    /// where it is coordinated looked up afresh.
    async fn per_group_with_retries<T, R, B, A>(
        &self,
        groups: &[String],
        key: ApiKey,
        build: B,
        answer: A,
    ) -> Result<BTreeMap<String, std::result::Result<T, ItemError>>>
    where
        R: Request,
        B: Fn(&[String], i16) -> R,
        A: Fn(R::Response) -> Vec<(String, std::result::Result<T, ItemError>)>,
    {
        if groups.is_empty() {
            return Ok(BTreeMap::new());
        }
        let (build, answer) = (&build, &answer);
        self.with_retries(api_key_name(key), groups.to_vec(), |pending, attempt| async move {
            if attempt > 0 {
                self.forget(&[], &pending);
            }
            Ok((self.per_coordinator(&pending, key, build, answer).await?, 0))
        })
        .await
    }

    /// Sends one request per coordinator for its groups, the coordinators
    /// in parallel; `answer` reads each group's result from a response. A
    /// group whose coordinator could not be named, or whose request failed,
    /// gets why.
    async fn per_coordinator<T, R, B, A>(
        &self,
        groups: &[String],
        key: ApiKey,
        build: B,
        answer: A,
    ) -> Result<BTreeMap<String, std::result::Result<T, ItemError>>>
    where
        R: Request,
        B: Fn(&[String], i16) -> R,
        A: Fn(R::Response) -> Vec<(String, std::result::Result<T, ItemError>)>,
    {
        let mut out = BTreeMap::new();
        let mut by_addr: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (g, c) in self.coordinators(groups).await? {
            match c {
                Ok(addr) => by_addr.entry(addr).or_default().push(g),
                Err(e) => {
                    out.insert(g, Err(e));
                }
            }
        }
        let build = &build;
        let requests = by_addr.iter().map(|(addr, gs)| async move { (gs, self.call(addr, key, |v| build(gs, v)).await) });
        for (gs, resp) in futures::future::join_all(requests).await {
            match resp {
                Err(e) => out.extend(gs.iter().map(|g| (g.clone(), request_failed(&e)))),
                Ok(resp) => {
                    for g in gs {
                        out.insert(g.clone(), Err(ItemError::no_answer(format!("{} did not answer for it", api_key_name(key)))));
                    }
                    out.extend(answer(resp));
                }
            }
        }
        Ok(out)
    }
}

impl Kafka for WireKafka {
    fn cluster(&self) -> BoxFuture<'_, Result<ClusterInfo>> {
        async move {
            let resp = self.metadata(Some(&[])).await?;
            let brokers: BTreeMap<i32, String> = resp.brokers.iter().map(|b| (b.node_id.0, format!("{}:{}", b.host, b.port))).collect();
            // Each broker asked for its API versions, side by side: who
            // answers, and what they offer.
            let pings = brokers.iter().map(|(id, addr)| async move {
                let slot = self.slot(addr);
                let mut guard = slot.lock().await;
                let outcome = async {
                    if let Some(conn) = guard.as_mut()
                        && conn.ping().await.is_ok()
                    {
                        return Ok(());
                    }
                    *guard = Some(Conn::open(addr, &self.settings).await?);
                    Ok::<(), KafkaError>(())
                }
                .await;
                self.count(addr, api_key_name(ApiKey::ApiVersions));
                let seen = guard.as_ref().filter(|_| outcome.is_ok()).map(|conn| {
                    let apis = APIS.iter().map(|(k, min, preferred)| (api_key_name(*k), conn.version(*k, *min, *preferred).ok())).collect();
                    (conn.kraft, apis)
                });
                if outcome.is_err() {
                    *guard = None;
                }
                (*id, outcome.map_err(|e| e.to_string()), seen)
            });
            let mut info = ClusterInfo {
                cluster_id: resp.cluster_id.map(|c| c.to_string()),
                controller: (resp.controller_id.0 >= 0).then_some(resp.controller_id.0),
                ..Default::default()
            };
            for (id, outcome, seen) in futures::future::join_all(pings).await {
                if let Err(why) = outcome {
                    info.unreachable.insert(id, why);
                }
                if let (Some((kraft, apis)), None) = (seen, info.kraft) {
                    info.kraft = Some(kraft);
                    info.apis = apis;
                }
            }
            for api in self.refused.lock().expect("refused lock").iter() {
                info.apis.insert(api, None);
            }
            if info.kraft == Some(true) {
                // A KRaft broker names a random broker as the controller (any
                // forwards); the quorum knows its leader.
                info.controller = self.quorum_leader().await;
            } else {
                info.apis.remove("DescribeQuorum");
            }
            info.brokers = brokers;
            Ok(info)
        }
        .boxed()
    }

    fn topics<'a>(&'a self, names: &'a [String]) -> BoxFuture<'a, Result<BTreeMap<String, TopicInfo>>> {
        async move {
            if names.is_empty() {
                return Ok(BTreeMap::new());
            }
            let layout = self.layout(names, true).await?;
            let mut out = BTreeMap::new();
            for (name, t) in layout.topics {
                match t {
                    Ok(info) => {
                        out.insert(name, info);
                    }
                    Err(e) if e.is(ResponseError::UnknownTopicOrPartition) => {}
                    Err(e) => return Err(KafkaError::Api { api: "Metadata", code: e.name(), message: format!("topic {name}") }),
                }
            }
            Ok(out)
        }
        .boxed()
    }

    fn topic_configs<'a>(&'a self, keys: &'a BTreeMap<String, Vec<String>>) -> BoxFuture<'a, Result<BTreeMap<String, ConfigResult>>> {
        async move {
            if keys.is_empty() {
                return Ok(BTreeMap::new());
            }
            let topics: Vec<String> = keys.keys().cloned().collect();
            self.with_retries("DescribeConfigs", topics, |pending, _| async move {
                let resp = self
                    .call_any(ApiKey::DescribeConfigs, |_| {
                        DescribeConfigsRequest::default().with_resources(
                            pending
                                .iter()
                                .map(|topic| {
                                    DescribeConfigsResource::default()
                                        .with_resource_type(TOPIC_RESOURCE)
                                        .with_resource_name(s(topic))
                                        .with_configuration_keys(Some(keys[topic].iter().map(|k| s(k)).collect()))
                                })
                                .collect(),
                        )
                    })
                    .await?;
                let answers = resp
                    .results
                    .into_iter()
                    .map(|r| {
                        let v = match item_error(r.error_code, r.error_message.as_ref()) {
                            Some(e) => Err(e),
                            None => Ok(r.configs.into_iter().filter_map(|c| Some((c.name.to_string(), c.value?.to_string()))).collect()),
                        };
                        (r.resource_name.to_string(), v)
                    })
                    .collect();
                Ok((answers, resp.throttle_time_ms))
            })
            .await
        }
        .boxed()
    }

    fn create_topics<'a>(
        &'a self,
        topics: &'a [NewTopic],
    ) -> BoxFuture<'a, Result<BTreeMap<String, std::result::Result<TopicInfo, ItemError>>>> {
        async move {
            if topics.is_empty() {
                return Ok(BTreeMap::new());
            }
            let by_name: BTreeMap<&str, &NewTopic> = topics.iter().map(|t| (t.name.as_str(), t)).collect();
            self.with_retries("CreateTopics", by_name.keys().map(|n| n.to_string()).collect(), |pending, _| {
                let by_name = &by_name;
                async move {
                    let resp = self
                        .call_controller(ApiKey::CreateTopics, |_| {
                            CreateTopicsRequest::default().with_timeout_ms(OPERATION_TIMEOUT_MS).with_topics(
                                pending
                                    .iter()
                                    .map(|name| {
                                        let t = by_name[name.as_str()];
                                        CreatableTopic::default()
                                            .with_name(TopicName(s(&t.name)))
                                            .with_num_partitions(t.partitions)
                                            .with_replication_factor(t.replication_factor as i16)
                                            .with_configs(
                                                t.config
                                                    .iter()
                                                    .map(|(k, v)| CreatableTopicConfig::default().with_name(s(k)).with_value(Some(s(v))))
                                                    .collect(),
                                            )
                                    })
                                    .collect(),
                            )
                        })
                        .await?;
                    let answers = resp
                        .topics
                        .into_iter()
                        .map(|t| {
                            let v = match item_error(t.error_code, t.error_message.as_ref()) {
                                Some(e) => Err(e),
                                None => Ok(TopicInfo {
                                    id: URL_SAFE_NO_PAD.encode(t.topic_id.as_bytes()),
                                    partitions: t.num_partitions,
                                    replication_factor: t.replication_factor as i32,
                                }),
                            };
                            (t.name.to_string(), v)
                        })
                        .collect();
                    Ok((answers, resp.throttle_time_ms))
                }
            })
            .await
        }
        .boxed()
    }

    fn alter_topic_configs<'a>(
        &'a self,
        changes: &'a BTreeMap<String, BTreeMap<String, String>>,
    ) -> BoxFuture<'a, Result<BTreeMap<String, ItemResult>>> {
        async move {
            if changes.is_empty() {
                return Ok(BTreeMap::new());
            }
            self.with_retries("IncrementalAlterConfigs", changes.keys().cloned().collect(), |pending, _| async move {
                let resp = self
                    .call_any(ApiKey::IncrementalAlterConfigs, |_| {
                        IncrementalAlterConfigsRequest::default().with_resources(
                            pending
                                .iter()
                                .map(|topic| {
                                    AlterConfigsResource::default()
                                        .with_resource_type(TOPIC_RESOURCE)
                                        .with_resource_name(s(topic))
                                        .with_configs(
                                            changes[topic]
                                                .iter()
                                                // Operation 0 is SET: this key only, nothing else.
                                                .map(|(k, v)| {
                                                    AlterableConfig::default()
                                                        .with_name(s(k))
                                                        .with_config_operation(0)
                                                        .with_value(Some(s(v)))
                                                })
                                                .collect(),
                                        )
                                })
                                .collect(),
                        )
                    })
                    .await?;
                let answers = resp
                    .responses
                    .into_iter()
                    .map(|r| (r.resource_name.to_string(), as_result(r.error_code, r.error_message.as_ref())))
                    .collect();
                Ok((answers, resp.throttle_time_ms))
            })
            .await
        }
        .boxed()
    }

    fn create_partitions<'a>(&'a self, counts: &'a BTreeMap<String, i32>) -> BoxFuture<'a, Result<BTreeMap<String, ItemResult>>> {
        async move {
            if counts.is_empty() {
                return Ok(BTreeMap::new());
            }
            self.with_retries("CreatePartitions", counts.keys().cloned().collect(), |pending, _| async move {
                let resp = self
                    .call_controller(ApiKey::CreatePartitions, |_| {
                        CreatePartitionsRequest::default().with_timeout_ms(OPERATION_TIMEOUT_MS).with_topics(
                            pending
                                .iter()
                                .map(|t| {
                                    CreatePartitionsTopic::default().with_name(TopicName(s(t))).with_count(counts[t]).with_assignments(None)
                                })
                                .collect(),
                        )
                    })
                    .await?;
                let answers =
                    resp.results.into_iter().map(|r| (r.name.to_string(), as_result(r.error_code, r.error_message.as_ref()))).collect();
                Ok((answers, resp.throttle_time_ms))
            })
            .await
        }
        .boxed()
    }

    fn delete_topics<'a>(&'a self, names: &'a [String]) -> BoxFuture<'a, Result<BTreeMap<String, ItemResult>>> {
        async move {
            if names.is_empty() {
                return Ok(BTreeMap::new());
            }
            self.with_retries("DeleteTopics", names.to_vec(), |pending, _| async move {
                let resp = self
                    .call_controller(ApiKey::DeleteTopics, |v| {
                        let req = DeleteTopicsRequest::default().with_timeout_ms(OPERATION_TIMEOUT_MS);
                        if v >= 6 {
                            req.with_topics(pending.iter().map(|n| DeleteTopicState::default().with_name(Some(TopicName(s(n))))).collect())
                        } else {
                            req.with_topic_names(pending.iter().map(|n| TopicName(s(n))).collect())
                        }
                    })
                    .await?;
                let answers = resp
                    .responses
                    .into_iter()
                    .filter_map(|r| {
                        // Already gone is what was asked for.
                        let v = item_error(r.error_code, r.error_message.as_ref())
                            .filter(|e| !e.is(ResponseError::UnknownTopicOrPartition))
                            .map_or(Ok(()), Err);
                        Some((r.name?.to_string(), v))
                    })
                    .collect();
                Ok((answers, resp.throttle_time_ms))
            })
            .await
        }
        .boxed()
    }

    fn offsets<'a>(&'a self, partitions: &'a [Tp], earliest: bool) -> BoxFuture<'a, Result<BTreeMap<Tp, i64>>> {
        async move {
            if partitions.is_empty() {
                return Ok(BTreeMap::new());
            }
            let mut topics: Vec<String> = partitions.iter().map(|(t, _)| t.clone()).collect();
            topics.sort();
            topics.dedup();
            let layout = self.layout(&topics, false).await?;
            let wanted: std::collections::HashSet<&Tp> = partitions.iter().collect();
            let by_leader: BTreeMap<i32, Vec<Tp>> = layout
                .by_leader
                .into_iter()
                .map(|(leader, tps)| (leader, tps.into_iter().filter(|tp| wanted.contains(tp)).collect()))
                .collect();
            Ok(self.list_offsets(&by_leader, earliest).await.into_iter().filter_map(|(tp, o)| Some((tp, o.ok()?))).collect())
        }
        .boxed()
    }

    fn log_offsets<'a>(&'a self, topics: &'a [String]) -> BoxFuture<'a, Result<BTreeMap<Tp, (i64, i64)>>> {
        async move {
            // Lag from part of the partitions would be wrong: all or nothing.
            let report = self.partition_offsets(topics).await?;
            if let Some((t, Err(e))) = report.topics.iter().find(|(_, t)| t.is_err()) {
                return Err(KafkaError::Api { api: "Metadata", code: e.name(), message: format!("topic {t}") });
            }
            report
                .offsets
                .into_iter()
                .map(|((t, p), o)| match o {
                    Ok(o) => Ok(((t, p), o)),
                    Err(e) => Err(KafkaError::Api { api: "ListOffsets", code: e.name(), message: format!("{t}/{p}") }),
                })
                .collect()
        }
        .boxed()
    }

    fn partition_offsets<'a>(&'a self, topics: &'a [String]) -> BoxFuture<'a, Result<PartitionOffsets>> {
        async move {
            if topics.is_empty() {
                return Ok(PartitionOffsets::default());
            }
            let mut layout = self.layout(topics, false).await?;
            // Log starts move rarely (retention): read again only when not remembered.
            let mut starts: BTreeMap<Tp, std::result::Result<i64, ItemError>> = {
                let r = self.remembered.lock().expect("remembered lock");
                let all: Vec<Tp> = layout.by_leader.values().flatten().cloned().collect();
                all_fresh(&r.starts, &all, REMEMBER_STABLE_FOR).into_iter().map(|(tp, o)| (tp, Ok(o))).collect()
            };
            let unknown: BTreeMap<i32, Vec<Tp>> = layout
                .by_leader
                .iter()
                .map(|(l, tps)| (*l, tps.iter().filter(|tp| !starts.contains_key(*tp)).cloned().collect()))
                .collect();
            let (read, mut ends) = futures::join!(self.list_offsets(&unknown, true), self.list_offsets(&layout.by_leader, false));
            let mut just_read: Vec<Tp> = read.keys().cloned().collect();
            starts.extend(read);
            // A leader that moved since the metadata was read: once more,
            // with fresh metadata, for just those partitions.
            let mut moved: Vec<Tp> = starts
                .iter()
                .chain(ends.iter())
                .filter(|(_, o)| o.as_ref().is_err_and(|e| e.retriable()))
                .map(|(tp, _)| tp.clone())
                .collect();
            moved.extend(layout.leaderless.iter().filter(|(_, e)| e.retriable()).map(|(tp, _)| tp.clone()));
            moved.sort();
            moved.dedup();
            if !moved.is_empty() {
                let mut again: Vec<String> = moved.iter().map(|(t, _)| t.clone()).collect();
                again.dedup();
                self.forget(&again, &[]);
                let fresh_layout = self.layout(&again, true).await?;
                let by_leader: BTreeMap<i32, Vec<Tp>> = fresh_layout
                    .by_leader
                    .into_iter()
                    .map(|(l, tps)| (l, tps.into_iter().filter(|tp| moved.contains(tp)).collect()))
                    .collect();
                let (s2, e2) = futures::join!(self.list_offsets(&by_leader, true), self.list_offsets(&by_leader, false));
                layout.leaderless.retain(|tp, _| !e2.get(tp).is_some_and(|o| o.is_ok()));
                just_read.extend(s2.keys().cloned());
                starts.extend(s2);
                ends.extend(e2);
            }
            {
                // Remembered from when they were read (an expired one was
                // read again just now and is remembered anew).
                let mut r = self.remembered.lock().expect("remembered lock");
                if !just_read.is_empty() {
                    forget_expired(&mut r.starts, REMEMBER_STABLE_FOR);
                }
                for tp in just_read {
                    if let Some(Ok(o)) = starts.get(&tp) {
                        r.starts.insert(tp, (Instant::now(), *o));
                    }
                }
            }
            let mut offsets: BTreeMap<Tp, std::result::Result<(i64, i64), ItemError>> =
                layout.leaderless.into_iter().map(|(tp, e)| (tp, Err(e))).collect();
            for (tp, end) in ends {
                let both = match (starts.remove(&tp), end) {
                    (Some(Ok(s)), Ok(e)) => Ok((s, e)),
                    (Some(Err(e)), _) | (_, Err(e)) => Err(e),
                    (None, _) => Err(ItemError::no_answer("ListOffsets did not answer for it")),
                };
                offsets.insert(tp, both);
            }
            Ok(PartitionOffsets { topics: layout.topics, offsets })
        }
        .boxed()
    }

    fn committed<'a>(&'a self, groups: &'a [String]) -> BoxFuture<'a, Result<BTreeMap<String, GroupOffsets>>> {
        self.per_group_with_retries(
            groups,
            ApiKey::OffsetFetch,
            |gs, _| {
                OffsetFetchRequest::default().with_groups(
                    gs.iter()
                        // No topic list: every partition the group committed.
                        .map(|g| OffsetFetchRequestGroup::default().with_group_id(GroupId(s(g))).with_topics(None))
                        .collect(),
                )
            },
            |resp| resp.groups.into_iter().map(|g| (g.group_id.to_string(), group_offsets(g))).collect(),
        )
        .boxed()
    }

    fn delete_groups<'a>(&'a self, groups: &'a [String]) -> BoxFuture<'a, Result<BTreeMap<String, ItemResult>>> {
        self.per_group_with_retries(
            groups,
            ApiKey::DeleteGroups,
            |gs, _| DeleteGroupsRequest::default().with_groups_names(gs.iter().map(|g| GroupId(s(g))).collect()),
            |resp| {
                resp.results
                    .into_iter()
                    .map(|r| {
                        let v = item_error(r.error_code, None).filter(|e| !e.is(ResponseError::GroupIdNotFound)).map_or(Ok(()), Err);
                        (r.group_id.to_string(), v)
                    })
                    .collect()
            },
        )
        .boxed()
    }

    fn consumer_quotas<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<BTreeMap<String, i64>>> {
        use kafka_protocol::messages::{DescribeClientQuotasRequest, describe_client_quotas_request::ComponentData};
        async move {
            // Match type 2: every entity that names a client id.
            let component = ComponentData::default().with_entity_type(s("client-id")).with_match_type(2).with_match(None);
            let resp = self
                .call_any(ApiKey::DescribeClientQuotas, |_| {
                    DescribeClientQuotasRequest::default().with_components(vec![component.clone()]).with_strict(true)
                })
                .await?;
            if let Some(e) = item_error(resp.error_code, resp.error_message.as_ref()) {
                return Err(KafkaError::Api { api: "DescribeClientQuotas", code: format!("{:?}", e.code), message: e.to_string() });
            }
            let mut out = BTreeMap::new();
            for entry in resp.entries.unwrap_or_default() {
                let client = entry.entity.iter().find(|e| e.entity_type.as_str() == "client-id").and_then(|e| e.entity_name.clone());
                let rate = entry.values.iter().find(|v| v.key.as_str() == CONSUMER_BYTE_RATE).map(|v| v.value as i64);
                if let (Some(client), Some(rate)) = (client, rate)
                    && client.starts_with(prefix)
                {
                    out.insert(client.to_string(), rate);
                }
            }
            Ok(out)
        }
        .boxed()
    }

    fn set_consumer_quotas<'a>(&'a self, quotas: &'a BTreeMap<String, Option<i64>>) -> BoxFuture<'a, Result<BTreeMap<String, ItemResult>>> {
        use kafka_protocol::messages::{
            AlterClientQuotasRequest,
            alter_client_quotas_request::{EntityData, EntryData, OpData},
        };
        async move {
            if quotas.is_empty() {
                return Ok(BTreeMap::new());
            }
            let entries: Vec<EntryData> = quotas
                .iter()
                .map(|(client, rate)| {
                    let op = OpData::default().with_key(s(CONSUMER_BYTE_RATE));
                    let op = match rate {
                        Some(r) => op.with_value(*r as f64),
                        None => op.with_remove(true),
                    };
                    EntryData::default()
                        .with_entity(vec![EntityData::default().with_entity_type(s("client-id")).with_entity_name(Some(s(client)))])
                        .with_ops(vec![op])
                })
                .collect();
            let resp =
                self.call_any(ApiKey::AlterClientQuotas, |_| AlterClientQuotasRequest::default().with_entries(entries.clone())).await?;
            Ok(resp
                .entries
                .into_iter()
                .filter_map(|e| {
                    let client = e.entity.iter().find(|x| x.entity_type.as_str() == "client-id")?.entity_name.clone()?;
                    Some((client.to_string(), as_result(e.error_code, e.error_message.as_ref())))
                })
                .collect())
        }
        .boxed()
    }

    fn list_topics(&self) -> BoxFuture<'_, Result<Vec<String>>> {
        async move {
            let resp = self.metadata(None).await?;
            Ok(resp.topics.into_iter().filter(|t| t.error_code == 0).filter_map(|t| Some(t.name?.to_string())).collect())
        }
        .boxed()
    }

    fn remove_members<'a>(
        &'a self,
        groups: &'a [String],
        which: &'a Removal,
    ) -> BoxFuture<'a, Result<BTreeMap<String, std::result::Result<usize, ItemError>>>> {
        async move {
            if groups.is_empty() {
                return Ok(BTreeMap::new());
            }
            let described = self
                .per_group_with_retries(
                    groups,
                    ApiKey::DescribeGroups,
                    |gs, _| DescribeGroupsRequest::default().with_groups(gs.iter().map(|g| GroupId(s(g))).collect()),
                    |resp| resp.groups.into_iter().map(|g| (g.group_id.to_string(), group_members(g))).collect(),
                )
                .await?;
            // One LeaveGroup per group (the request names one), side by side.
            let leaves = described.into_iter().map(|(group, members)| async move {
                let members = match members.map(|m| which.select(m)) {
                    Ok(m) if m.is_empty() => return (group, Ok(0)),
                    Ok(m) => m,
                    Err(e) => return (group, Err(e)),
                };
                let n = members.len();
                let one = std::slice::from_ref(&group);
                let left = self
                    .per_coordinator(
                        one,
                        ApiKey::LeaveGroup,
                        |gs, _| {
                            LeaveGroupRequest::default().with_group_id(GroupId(s(&gs[0]))).with_members(
                                members
                                    .iter()
                                    .map(|(id, instance)| {
                                        MemberIdentity::default()
                                            .with_member_id(s(id))
                                            .with_group_instance_id(instance.as_deref().map(s))
                                            .with_reason(Some(s("removed by kappa-operator: left behind by a pod that is gone")))
                                    })
                                    .collect(),
                            )
                        },
                        |resp| {
                            // A member that is already gone is as good as removed.
                            let gone = |code| item_error(code, None).filter(|e| !e.is(ResponseError::UnknownMemberId));
                            let failed = gone(resp.error_code).or_else(|| resp.members.iter().find_map(|m| gone(m.error_code)));
                            vec![(group.clone(), failed.map_or(Ok(n), Err))]
                        },
                    )
                    .await;
                let result = match left {
                    Err(e) => request_failed(&e),
                    Ok(mut answers) => {
                        answers.remove(&group).unwrap_or_else(|| Err(ItemError::no_answer("LeaveGroup did not answer for it")))
                    }
                };
                (group, result)
            });
            Ok(futures::future::join_all(leaves).await.into_iter().collect())
        }
        .boxed()
    }

    fn requests_sent(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn requests_by_api(&self) -> BTreeMap<&'static str, u64> {
        self.by_api.lock().expect("by_api lock").clone()
    }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::{
        messages::{
            metadata_response::{MetadataResponsePartition, MetadataResponseTopic},
            offset_fetch_response::{OffsetFetchResponsePartitions, OffsetFetchResponseTopics},
        },
        protocol::{Decodable, Encodable},
    };

    use super::*;

    #[test]
    fn remembered_entries_are_read_again_all_together() {
        let now = Instant::now();
        let old = now - Duration::from_secs(40);
        let remembered: HashMap<String, (Instant, i64)> = [("a".to_string(), (now, 1)), ("b".to_string(), (old, 2))].into();
        let keys = |ks: &[&str]| ks.iter().map(|k| k.to_string()).collect::<Vec<_>>();
        let ttl = Duration::from_secs(30);
        assert_eq!(all_fresh(&remembered, &keys(&["a"]), ttl), [("a".to_string(), 1)].into());
        // One stale or unknown key, and none is taken: all are read in one go.
        assert!(all_fresh(&remembered, &keys(&["a", "b"]), ttl).is_empty());
        assert!(all_fresh(&remembered, &keys(&["a", "c"]), ttl).is_empty());
        assert_eq!(all_fresh(&remembered, &keys(&["a", "b"]), Duration::from_secs(60)).len(), 2);
        let mut remembered = remembered;
        forget_expired(&mut remembered, ttl);
        assert_eq!(remembered.keys().collect::<Vec<_>>(), ["a"], "what expired is not kept");
    }

    /// A response as it comes off the wire: encoded by Kafka's schema, decoded
    /// by the client's.
    fn wire<T: Encodable + Decodable>(msg: &T, version: i16) -> T {
        let mut buf = bytes::BytesMut::new();
        msg.encode(&mut buf, version).unwrap();
        T::decode(&mut buf.freeze(), version).unwrap()
    }

    #[test]
    fn a_partition_without_a_leader_says_why_and_the_others_name_theirs() {
        let topic = MetadataResponseTopic::default().with_name(Some(TopicName(s("orders")))).with_partitions(vec![
            MetadataResponsePartition::default()
                .with_partition_index(0)
                .with_leader_id(BrokerId(2))
                .with_replica_nodes(vec![BrokerId(2), BrokerId(3)]),
            MetadataResponsePartition::default().with_partition_index(1).with_leader_id(BrokerId(-1)).with_error_code(5),
        ]);
        let layout = topic_layout(&wire(&topic, 12));
        assert_eq!(layout.info.as_ref().unwrap().replication_factor, 2);
        assert_eq!(layout.leaders[0], (0, Ok(2)));
        assert!(layout.leaders[1].1.as_ref().unwrap_err().is(ResponseError::LeaderNotAvailable));
        let missing = topic_layout(&MetadataResponseTopic::default().with_name(Some(TopicName(s("gone")))).with_error_code(3));
        assert!(missing.info.unwrap_err().is(ResponseError::UnknownTopicOrPartition));
    }

    #[test]
    fn one_groups_error_is_that_groups_alone_and_an_unknown_group_has_committed_nothing() {
        let committed = OffsetFetchResponseGroup::default().with_group_id(GroupId(s("g"))).with_topics(vec![
            OffsetFetchResponseTopics::default().with_name(TopicName(s("orders"))).with_partitions(vec![
                OffsetFetchResponsePartitions::default().with_partition_index(0).with_committed_offset(42),
                OffsetFetchResponsePartitions::default().with_partition_index(1).with_committed_offset(-1),
            ]),
        ]);
        assert_eq!(group_offsets(wire(&committed, 8)).unwrap(), [(("orders".to_string(), 0), 42)].into(), "no commit (-1) is left out");
        let loading = OffsetFetchResponseGroup::default().with_group_id(GroupId(s("h"))).with_error_code(14);
        let e = group_offsets(wire(&loading, 8)).unwrap_err();
        assert!(e.is(ResponseError::CoordinatorLoadInProgress) && e.retriable());
        let unknown = OffsetFetchResponseGroup::default().with_group_id(GroupId(s("new"))).with_error_code(69);
        assert!(group_offsets(unknown).unwrap().is_empty());
    }

    #[test]
    fn admin_requests_go_to_the_controller_first_then_anyone() {
        let brokers = Brokers { by_id: [(1, "a:1".to_string()), (2, "b:1".into()), (3, "c:1".into())].into(), controller: Some(3) };
        assert_eq!(controller_first(&brokers, &["boot:1".into(), "a:1".into()]), vec!["c:1", "a:1", "b:1", "boot:1"]);
        assert_eq!(controller_first(&Brokers::default(), &["boot:1".into()]), vec!["boot:1"], "nothing known: the bootstrap list");
    }
}

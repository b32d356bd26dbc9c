//! [`Kafka`] over Kafka's own protocol: a connection per broker, reused,
//! re-opened after a failure.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use futures::{FutureExt, future::BoxFuture};
use kafka_protocol::{
    messages::{
        ApiKey, BrokerId, CreatePartitionsRequest, CreateTopicsRequest, DeleteGroupsRequest, DeleteTopicsRequest, DescribeConfigsRequest,
        FindCoordinatorRequest, GroupId, IncrementalAlterConfigsRequest, ListOffsetsRequest, MetadataRequest, MetadataResponse,
        OffsetFetchRequest, TopicName,
        create_partitions_request::CreatePartitionsTopic,
        create_topics_request::{CreatableTopic, CreatableTopicConfig},
        delete_topics_request::DeleteTopicState,
        describe_configs_request::DescribeConfigsResource,
        incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig},
        list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic},
        metadata_request::MetadataRequestTopic,
        offset_fetch_request::OffsetFetchRequestGroup,
    },
    protocol::{Request, StrBytes},
};
use tokio::sync::Mutex as AsyncMutex;

use super::{
    ClusterInfo, ConfigResult, GroupOffsets, ItemError, ItemResult, Kafka, KafkaError, NewTopic, PartitionOffsets, Result, Settings,
    TopicInfo, Tp,
    wire::{Conn, error_name},
};

const TOPIC_RESOURCE: i8 = 2;
const OPERATION_TIMEOUT_MS: i32 = 30_000;
const UNKNOWN_TOPIC: i16 = 3;
const GROUP_ID_NOT_FOUND: i16 = 69;

pub struct WireKafka {
    settings: Settings,
    /// One connection slot per broker address; a failed connection is
    /// dropped and re-opened on next use.
    conns: Mutex<HashMap<String, Arc<AsyncMutex<Option<Conn>>>>>,
    /// Broker id -> address, from the last Metadata answer.
    brokers: Mutex<BTreeMap<i32, String>>,
    requests: AtomicU64,
}

/// Topics as Kafka's metadata has them.
#[derive(Default)]
struct Layout {
    topics: BTreeMap<String, std::result::Result<TopicInfo, ItemError>>,
    by_leader: BTreeMap<i32, Vec<Tp>>,
    leaderless: BTreeMap<Tp, ItemError>,
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn item_error(code: i16, message: Option<&StrBytes>) -> Option<ItemError> {
    (code != 0).then(|| ItemError { code: error_name(code), message: message.map(|m| m.to_string()).unwrap_or_default() })
}

/// One group's committed offsets from an OffsetFetch answer: every
/// partition it committed on, or why Kafka could not say (a group it does
/// not know has committed nothing).
fn group_offsets(g: kafka_protocol::messages::offset_fetch_response::OffsetFetchResponseGroup) -> GroupOffsets {
    if let Some(e) = item_error(g.error_code, None).filter(|_| g.error_code != GROUP_ID_NOT_FOUND) {
        return Err(e);
    }
    let mut offsets = BTreeMap::new();
    for t in g.topics {
        for p in t.partitions {
            if let Some(e) = item_error(p.error_code, None) {
                return Err(ItemError { code: e.code, message: format!("{}/{}", t.name.as_str(), p.partition_index) });
            }
            if p.committed_offset >= 0 {
                offsets.insert((t.name.to_string(), p.partition_index), p.committed_offset);
            }
        }
    }
    Ok(offsets)
}

impl WireKafka {
    pub fn new(settings: Settings) -> Self {
        WireKafka { settings, conns: Mutex::default(), brokers: Mutex::default(), requests: AtomicU64::new(0) }
    }

    fn slot(&self, addr: &str) -> Arc<AsyncMutex<Option<Conn>>> {
        self.conns.lock().expect("conns lock").entry(addr.to_string()).or_default().clone()
    }

    /// Sends one request to the broker at `addr`, opening the connection if
    /// needed; `build` gets the negotiated version.
    async fn call<R: Request>(
        &self,
        addr: &str,
        key: ApiKey,
        min: i16,
        preferred: i16,
        build: impl FnOnce(i16) -> R,
    ) -> Result<R::Response> {
        let slot = self.slot(addr);
        let mut guard = slot.lock().await;
        if guard.is_none() {
            *guard = Some(Conn::open(addr, &self.settings).await?);
        }
        let conn = guard.as_mut().expect("connection just opened");
        let version = conn.version(key, min, preferred)?;
        self.requests.fetch_add(1, Ordering::Relaxed);
        let result = conn.send(&build(version), version).await;
        if matches!(result, Err(KafkaError::Unreachable { .. } | KafkaError::Timeout { .. } | KafkaError::Protocol { .. })) {
            *guard = None;
        }
        result.map_err(|e| match e {
            KafkaError::Unreachable { reason, .. } => KafkaError::Unreachable { addr: addr.to_string(), reason },
            other => other,
        })
    }

    /// Addresses to try for a request any broker can answer: known brokers
    /// first, then the bootstrap list.
    fn any_addrs(&self) -> Vec<String> {
        let mut addrs: Vec<String> = self.brokers.lock().expect("brokers lock").values().cloned().collect();
        addrs.extend(self.settings.bootstrap.iter().filter(|b| !addrs.contains(b)).cloned().collect::<Vec<_>>());
        addrs
    }

    async fn call_any<R: Request>(&self, key: ApiKey, min: i16, preferred: i16, build: impl Fn(i16) -> R) -> Result<R::Response> {
        let mut last = None;
        for addr in self.any_addrs() {
            match self.call(&addr, key, min, preferred, &build).await {
                Err(e @ (KafkaError::Unreachable { .. } | KafkaError::Timeout { .. })) => last = Some(e),
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| KafkaError::Unreachable { addr: String::new(), reason: "no bootstrap servers".into() }))
    }

    async fn metadata(&self, topics: Option<&[String]>) -> Result<MetadataResponse> {
        let resp = self
            .call_any(ApiKey::Metadata, 4, 12, |_| {
                MetadataRequest::default()
                    .with_topics(
                        topics.map(|t| t.iter().map(|n| MetadataRequestTopic::default().with_name(Some(TopicName(s(n))))).collect()),
                    )
                    .with_allow_auto_topic_creation(false)
            })
            .await?;
        let brokers = resp.brokers.iter().map(|b| (b.node_id.0, format!("{}:{}", b.host, b.port))).collect();
        *self.brokers.lock().expect("brokers lock") = brokers;
        Ok(resp)
    }

    fn broker_addr(&self, id: BrokerId) -> Option<String> {
        self.brokers.lock().expect("brokers lock").get(&id.0).cloned()
    }

    /// Coordinator address per group (one FindCoordinator for all groups),
    /// or why Kafka could not name it.
    async fn coordinators(&self, groups: &[String]) -> Result<BTreeMap<String, std::result::Result<String, ItemError>>> {
        let resp = self
            .call_any(ApiKey::FindCoordinator, 4, 4, |_| {
                FindCoordinatorRequest::default().with_key_type(0).with_coordinator_keys(groups.iter().map(|g| s(g)).collect())
            })
            .await?;
        let mut out: BTreeMap<String, std::result::Result<String, ItemError>> = groups
            .iter()
            .map(|g| (g.clone(), Err(ItemError { code: "NoAnswer".into(), message: "FindCoordinator did not answer for it".into() })))
            .collect();
        for c in resp.coordinators {
            let found = match item_error(c.error_code, c.error_message.as_ref()) {
                Some(e) => Err(e),
                None => Ok(format!("{}:{}", c.host, c.port)),
            };
            out.insert(c.key.to_string(), found);
        }
        Ok(out)
    }

    /// The groups whose coordinator is known, by coordinator; the others
    /// go into `failed` with why.
    fn by_coordinator<T>(
        coordinators: BTreeMap<String, std::result::Result<String, ItemError>>,
        failed: &mut BTreeMap<String, std::result::Result<T, ItemError>>,
    ) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (g, c) in coordinators {
            match c {
                Ok(addr) => out.entry(addr).or_default().push(g),
                Err(e) => {
                    failed.insert(g, Err(e));
                }
            }
        }
        out
    }

    /// What Kafka's metadata says of these topics (one Metadata): each
    /// topic's shape or why it has none, and its partitions grouped by
    /// leader, or why a partition has no leader now.
    async fn layout(&self, topics: &[String]) -> Result<Layout> {
        let meta = self.metadata(Some(topics)).await?;
        let mut out = Layout::default();
        for t in &meta.topics {
            let Some(name) = t.name.as_ref().map(|n| n.to_string()) else { continue };
            if let Some(e) = item_error(t.error_code, None) {
                out.topics.insert(name, Err(e));
                continue;
            }
            let rf = t.partitions.first().map(|p| p.replica_nodes.len() as i32).unwrap_or(0);
            let info = TopicInfo {
                id: URL_SAFE_NO_PAD.encode(t.topic_id.as_bytes()),
                partitions: t.partitions.len() as i32,
                replication_factor: rf,
            };
            out.topics.insert(name.clone(), Ok(info));
            for p in &t.partitions {
                let tp = (name.clone(), p.partition_index);
                match item_error(p.error_code, None) {
                    Some(e) if p.leader_id.0 < 0 => {
                        out.leaderless.insert(tp, e);
                    }
                    _ if p.leader_id.0 < 0 => {
                        out.leaderless.insert(tp, ItemError { code: "LeaderNotAvailable".into(), message: String::new() });
                    }
                    _ => out.by_leader.entry(p.leader_id.0).or_default().push(tp),
                }
            }
        }
        for t in topics {
            out.topics
                .entry(t.clone())
                .or_insert_with(|| Err(ItemError { code: "NoAnswer".into(), message: "Metadata did not answer for it".into() }));
        }
        Ok(out)
    }

    /// One ListOffsets per leader: earliest (-2) or latest (-1) offsets,
    /// and the partitions Kafka could not answer for (no leader yet, a
    /// leader moving) with why.
    async fn list_offsets(&self, by_leader: &BTreeMap<i32, Vec<Tp>>, earliest: bool) -> Result<(BTreeMap<Tp, i64>, Vec<(Tp, ItemError)>)> {
        let timestamp = if earliest { -2 } else { -1 };
        let mut out = BTreeMap::new();
        let mut failed = Vec::new();
        for (leader, tps) in by_leader.iter().filter(|(_, tps)| !tps.is_empty()) {
            let Some(addr) = self.broker_addr(BrokerId(*leader)) else {
                let why = ItemError { code: "LeaderNotAvailable".into(), message: format!("no broker {leader} leads it") };
                failed.extend(tps.iter().map(|tp| (tp.clone(), why.clone())));
                continue;
            };
            let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
            for (t, p) in tps {
                topics.entry(t.as_str()).or_default().push(*p);
            }
            let resp = self
                .call(&addr, ApiKey::ListOffsets, 1, 7, |_| {
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
                .await?;
            for t in resp.topics {
                for p in t.partitions {
                    let tp = (t.name.to_string(), p.partition_index);
                    match item_error(p.error_code, None) {
                        Some(e) => failed.push((tp, e)),
                        None => {
                            out.insert(tp, p.offset);
                        }
                    }
                }
            }
        }
        Ok((out, failed))
    }
}

impl Kafka for WireKafka {
    fn cluster(&self) -> BoxFuture<'_, Result<ClusterInfo>> {
        async move {
            let resp = self.metadata(Some(&[])).await?;
            Ok(ClusterInfo { brokers: resp.brokers.len(), cluster_id: resp.cluster_id.map(|c| c.to_string()) })
        }
        .boxed()
    }

    fn topics<'a>(&'a self, names: &'a [String]) -> BoxFuture<'a, Result<BTreeMap<String, TopicInfo>>> {
        async move {
            if names.is_empty() {
                return Ok(BTreeMap::new());
            }
            let layout = self.layout(names).await?;
            let mut out = BTreeMap::new();
            for (name, t) in layout.topics {
                match t {
                    Ok(info) => {
                        out.insert(name, info);
                    }
                    Err(e) if e.code == error_name(UNKNOWN_TOPIC) => {}
                    Err(e) => return Err(KafkaError::Api { api: "Metadata", code: e.code, message: format!("topic {name}") }),
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
            let resp = self
                .call_any(ApiKey::DescribeConfigs, 1, 4, |_| {
                    DescribeConfigsRequest::default().with_resources(
                        keys.iter()
                            .map(|(topic, ks)| {
                                DescribeConfigsResource::default()
                                    .with_resource_type(TOPIC_RESOURCE)
                                    .with_resource_name(s(topic))
                                    .with_configuration_keys(Some(ks.iter().map(|k| s(k)).collect()))
                            })
                            .collect(),
                    )
                })
                .await?;
            Ok(resp
                .results
                .into_iter()
                .map(|r| {
                    let v = match item_error(r.error_code, r.error_message.as_ref()) {
                        Some(e) => Err(e),
                        None => Ok(r.configs.into_iter().filter_map(|c| Some((c.name.to_string(), c.value?.to_string()))).collect()),
                    };
                    (r.resource_name.to_string(), v)
                })
                .collect())
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
            let resp = self
                .call_any(ApiKey::CreateTopics, 5, 7, |_| {
                    CreateTopicsRequest::default().with_timeout_ms(OPERATION_TIMEOUT_MS).with_topics(
                        topics
                            .iter()
                            .map(|t| {
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
            Ok(resp
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
                .collect())
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
            let resp = self
                .call_any(ApiKey::IncrementalAlterConfigs, 0, 1, |_| {
                    IncrementalAlterConfigsRequest::default().with_resources(
                        changes
                            .iter()
                            .map(|(topic, cfg)| {
                                AlterConfigsResource::default()
                                    .with_resource_type(TOPIC_RESOURCE)
                                    .with_resource_name(s(topic))
                                    .with_configs(
                                        cfg.iter()
                                            .map(|(k, v)| {
                                                // Operation 0 is SET: this key only, nothing else.
                                                AlterableConfig::default().with_name(s(k)).with_config_operation(0).with_value(Some(s(v)))
                                            })
                                            .collect(),
                                    )
                            })
                            .collect(),
                    )
                })
                .await?;
            Ok(resp
                .responses
                .into_iter()
                .map(|r| {
                    let v = item_error(r.error_code, r.error_message.as_ref()).map_or(Ok(()), Err);
                    (r.resource_name.to_string(), v)
                })
                .collect())
        }
        .boxed()
    }

    fn create_partitions<'a>(&'a self, counts: &'a BTreeMap<String, i32>) -> BoxFuture<'a, Result<BTreeMap<String, ItemResult>>> {
        async move {
            if counts.is_empty() {
                return Ok(BTreeMap::new());
            }
            let resp = self
                .call_any(ApiKey::CreatePartitions, 0, 3, |_| {
                    CreatePartitionsRequest::default().with_timeout_ms(OPERATION_TIMEOUT_MS).with_topics(
                        counts
                            .iter()
                            .map(|(t, n)| CreatePartitionsTopic::default().with_name(TopicName(s(t))).with_count(*n).with_assignments(None))
                            .collect(),
                    )
                })
                .await?;
            Ok(resp
                .results
                .into_iter()
                .map(|r| (r.name.to_string(), item_error(r.error_code, r.error_message.as_ref()).map_or(Ok(()), Err)))
                .collect())
        }
        .boxed()
    }

    fn delete_topics<'a>(&'a self, names: &'a [String]) -> BoxFuture<'a, Result<BTreeMap<String, ItemResult>>> {
        async move {
            if names.is_empty() {
                return Ok(BTreeMap::new());
            }
            let resp = self
                .call_any(ApiKey::DeleteTopics, 1, 6, |v| {
                    let req = DeleteTopicsRequest::default().with_timeout_ms(OPERATION_TIMEOUT_MS);
                    if v >= 6 {
                        req.with_topics(names.iter().map(|n| DeleteTopicState::default().with_name(Some(TopicName(s(n))))).collect())
                    } else {
                        req.with_topic_names(names.iter().map(|n| TopicName(s(n))).collect())
                    }
                })
                .await?;
            Ok(resp
                .responses
                .into_iter()
                .filter_map(|r| {
                    let name = r.name?.to_string();
                    // Already gone is what was asked for.
                    let code = if r.error_code == UNKNOWN_TOPIC { 0 } else { r.error_code };
                    Some((name, item_error(code, r.error_message.as_ref()).map_or(Ok(()), Err)))
                })
                .collect())
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
            let layout = self.layout(&topics).await?;
            let wanted: std::collections::HashSet<&Tp> = partitions.iter().collect();
            let by_leader: BTreeMap<i32, Vec<Tp>> = layout
                .by_leader
                .into_iter()
                .map(|(leader, tps)| (leader, tps.into_iter().filter(|tp| wanted.contains(tp)).collect()))
                .collect();
            Ok(self.list_offsets(&by_leader, earliest).await?.0)
        }
        .boxed()
    }

    fn log_offsets<'a>(&'a self, topics: &'a [String]) -> BoxFuture<'a, Result<BTreeMap<Tp, (i64, i64)>>> {
        async move {
            // Lag from part of the partitions would be wrong: all or nothing.
            let report = self.partition_offsets(topics).await?;
            if let Some((t, Err(e))) = report.topics.iter().find(|(_, t)| t.is_err()) {
                return Err(KafkaError::Api { api: "Metadata", code: e.code.clone(), message: format!("topic {t}") });
            }
            report
                .offsets
                .into_iter()
                .map(|((t, p), o)| match o {
                    Ok(o) => Ok(((t, p), o)),
                    Err(e) => Err(KafkaError::Api { api: "ListOffsets", code: e.code, message: format!("{t}/{p}") }),
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
            let layout = self.layout(topics).await?;
            let (starts, mut failed) = self.list_offsets(&layout.by_leader, true).await?;
            let (ends, failed_ends) = self.list_offsets(&layout.by_leader, false).await?;
            failed.extend(failed_ends);
            let mut offsets: BTreeMap<Tp, std::result::Result<(i64, i64), ItemError>> =
                layout.leaderless.into_iter().map(|(tp, e)| (tp, Err(e))).collect();
            for tp in layout.by_leader.into_values().flatten() {
                let answer = match (starts.get(&tp), ends.get(&tp)) {
                    (Some(s), Some(e)) => Ok((*s, *e)),
                    _ => Err(failed
                        .iter()
                        .find(|(f, _)| *f == tp)
                        .map(|(_, e)| e.clone())
                        .unwrap_or_else(|| ItemError { code: "NoAnswer".into(), message: "ListOffsets did not answer for it".into() })),
                };
                offsets.insert(tp, answer);
            }
            Ok(PartitionOffsets { topics: layout.topics, offsets })
        }
        .boxed()
    }

    fn committed<'a>(&'a self, groups: &'a [String]) -> BoxFuture<'a, Result<BTreeMap<String, GroupOffsets>>> {
        async move {
            if groups.is_empty() {
                return Ok(BTreeMap::new());
            }
            let mut out: BTreeMap<String, GroupOffsets> = BTreeMap::new();
            for (addr, gs) in Self::by_coordinator(self.coordinators(groups).await?, &mut out) {
                let resp = self
                    .call(&addr, ApiKey::OffsetFetch, 8, 8, |_| {
                        OffsetFetchRequest::default().with_groups(
                            gs.iter()
                                // No topic list: every partition the group committed.
                                .map(|g| OffsetFetchRequestGroup::default().with_group_id(GroupId(s(g))).with_topics(None))
                                .collect(),
                        )
                    })
                    .await;
                let resp = match resp {
                    Ok(r) => r,
                    // One coordinator away fails its groups, not the others'.
                    Err(e) => {
                        let why = ItemError { code: e.reason().into(), message: e.to_string() };
                        out.extend(gs.into_iter().map(|g| (g, Err(why.clone()))));
                        continue;
                    }
                };
                for g in gs {
                    out.insert(g, Err(ItemError { code: "NoAnswer".into(), message: "OffsetFetch did not answer for it".into() }));
                }
                for g in resp.groups {
                    out.insert(g.group_id.to_string(), group_offsets(g));
                }
            }
            Ok(out)
        }
        .boxed()
    }

    fn delete_groups<'a>(&'a self, groups: &'a [String]) -> BoxFuture<'a, Result<BTreeMap<String, ItemResult>>> {
        async move {
            if groups.is_empty() {
                return Ok(BTreeMap::new());
            }
            let mut out = BTreeMap::new();
            for (addr, gs) in Self::by_coordinator(self.coordinators(groups).await?, &mut out) {
                let resp = self
                    .call(&addr, ApiKey::DeleteGroups, 0, 2, |_| {
                        DeleteGroupsRequest::default().with_groups_names(gs.iter().map(|g| GroupId(s(g))).collect())
                    })
                    .await?;
                for r in resp.results {
                    let code = if r.error_code == GROUP_ID_NOT_FOUND { 0 } else { r.error_code };
                    out.insert(r.group_id.to_string(), item_error(code, None).map_or(Ok(()), Err));
                }
            }
            Ok(out)
        }
        .boxed()
    }

    fn requests_sent(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

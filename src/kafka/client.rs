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
    ClusterInfo, ConfigResult, ItemError, ItemResult, Kafka, KafkaError, NewTopic, Result, Settings, TopicInfo, Tp,
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

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn item_error(code: i16, message: Option<&StrBytes>) -> Option<ItemError> {
    (code != 0).then(|| ItemError { code: error_name(code), message: message.map(|m| m.to_string()).unwrap_or_default() })
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

    /// Coordinator address per group (one FindCoordinator for all groups).
    async fn coordinators(&self, groups: &[String]) -> Result<BTreeMap<String, String>> {
        let resp = self
            .call_any(ApiKey::FindCoordinator, 4, 4, |_| {
                FindCoordinatorRequest::default().with_key_type(0).with_coordinator_keys(groups.iter().map(|g| s(g)).collect())
            })
            .await?;
        let mut out = BTreeMap::new();
        for c in resp.coordinators {
            if let Some(e) = item_error(c.error_code, c.error_message.as_ref()) {
                return Err(KafkaError::Api { api: "FindCoordinator", code: e.code, message: e.message });
            }
            out.insert(c.key.to_string(), format!("{}:{}", c.host, c.port));
        }
        Ok(out)
    }

    fn by_coordinator(coordinators: &BTreeMap<String, String>) -> BTreeMap<&str, Vec<&str>> {
        let mut out: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (g, addr) in coordinators {
            out.entry(addr.as_str()).or_default().push(g.as_str());
        }
        out
    }

    /// Partitions of these topics grouped by their leader (one Metadata).
    async fn leaders(&self, topics: &[String]) -> Result<BTreeMap<i32, Vec<Tp>>> {
        let meta = self.metadata(Some(topics)).await?;
        let mut out: BTreeMap<i32, Vec<Tp>> = BTreeMap::new();
        for t in &meta.topics {
            let Some(name) = t.name.as_ref().map(|n| n.to_string()) else { continue };
            for p in &t.partitions {
                out.entry(p.leader_id.0).or_default().push((name.clone(), p.partition_index));
            }
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
            let resp = self.metadata(Some(names)).await?;
            let mut out = BTreeMap::new();
            for t in resp.topics {
                let Some(name) = t.name.map(|n| n.to_string()) else { continue };
                if t.error_code == UNKNOWN_TOPIC {
                    continue;
                }
                if let Some(e) = item_error(t.error_code, None) {
                    return Err(KafkaError::Api { api: "Metadata", code: e.code, message: format!("topic {name}") });
                }
                let rf = t.partitions.first().map(|p| p.replica_nodes.len() as i32).unwrap_or(0);
                out.insert(
                    name,
                    TopicInfo {
                        id: URL_SAFE_NO_PAD.encode(t.topic_id.as_bytes()),
                        partitions: t.partitions.len() as i32,
                        replication_factor: rf,
                    },
                );
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
            let leaders = self.leaders(&topics).await?;
            let wanted: std::collections::HashSet<&Tp> = partitions.iter().collect();
            let by_leader: BTreeMap<i32, Vec<Tp>> =
                leaders.into_iter().map(|(leader, tps)| (leader, tps.into_iter().filter(|tp| wanted.contains(tp)).collect())).collect();
            Ok(self.list_offsets(&by_leader, earliest).await?.0)
        }
        .boxed()
    }

    fn log_offsets<'a>(&'a self, topics: &'a [String]) -> BoxFuture<'a, Result<BTreeMap<Tp, (i64, i64)>>> {
        async move {
            if topics.is_empty() {
                return Ok(BTreeMap::new());
            }
            // Lag from part of the partitions would be wrong: all or nothing.
            let strict = |(offsets, failed): (BTreeMap<Tp, i64>, Vec<(Tp, ItemError)>)| match failed.into_iter().next() {
                None => Ok(offsets),
                Some(((t, p), e)) => Err(KafkaError::Api { api: "ListOffsets", code: e.code, message: format!("{t}/{p}") }),
            };
            let leaders = self.leaders(topics).await?;
            let starts = strict(self.list_offsets(&leaders, true).await?)?;
            let ends = strict(self.list_offsets(&leaders, false).await?)?;
            Ok(ends
                .into_iter()
                .map(|(tp, end)| {
                    let start = starts.get(&tp).copied().unwrap_or(0);
                    (tp, (start, end))
                })
                .collect())
        }
        .boxed()
    }

    fn committed<'a>(&'a self, groups: &'a [String]) -> BoxFuture<'a, Result<BTreeMap<String, BTreeMap<Tp, i64>>>> {
        async move {
            if groups.is_empty() {
                return Ok(BTreeMap::new());
            }
            let coordinators = self.coordinators(groups).await?;
            let mut out: BTreeMap<String, BTreeMap<Tp, i64>> = groups.iter().map(|g| (g.clone(), BTreeMap::new())).collect();
            for (addr, gs) in Self::by_coordinator(&coordinators) {
                let resp = self
                    .call(addr, ApiKey::OffsetFetch, 8, 8, |_| {
                        OffsetFetchRequest::default().with_groups(
                            gs.iter()
                                // No topic list: every partition the group committed.
                                .map(|g| OffsetFetchRequestGroup::default().with_group_id(GroupId(s(g))).with_topics(None))
                                .collect(),
                        )
                    })
                    .await?;
                for g in resp.groups {
                    if let Some(e) = item_error(g.error_code, None).filter(|_| g.error_code != GROUP_ID_NOT_FOUND) {
                        return Err(KafkaError::Api {
                            api: "OffsetFetch",
                            code: e.code,
                            message: format!("group {}", g.group_id.as_str()),
                        });
                    }
                    let entry = out.entry(g.group_id.to_string()).or_default();
                    for t in g.topics {
                        for p in t.partitions.into_iter().filter(|p| p.committed_offset >= 0) {
                            entry.insert((t.name.to_string(), p.partition_index), p.committed_offset);
                        }
                    }
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
            let coordinators = self.coordinators(groups).await?;
            let mut out = BTreeMap::new();
            for (addr, gs) in Self::by_coordinator(&coordinators) {
                let resp = self
                    .call(addr, ApiKey::DeleteGroups, 0, 2, |_| {
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

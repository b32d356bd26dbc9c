//! Topics against Kafka, batched: what each declared topic needs is decided
//! by a pure [`plan`], and [`Batcher`] turns the Topic reconciles that arrive
//! together into one request of each kind for all of them.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use tokio::sync::{mpsc, oneshot};

use super::{ItemError, ItemResult, Kafka, KafkaError, NewTopic, ResponseError, Result, TopicInfo};

/// A topic as its Topic resource declares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredTopic {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i32,
    pub config: BTreeMap<String, String>,
}

/// A change the operator refuses to make; nothing is changed for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    PartitionDecrease { declared: i32, actual: i32 },
    ReplicationFactorChange { declared: i32, actual: i32 },
}

/// What one topic needs, given what Kafka has.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub create: bool,
    /// Declared configs whose value in Kafka differs (or is unset).
    pub set_config: BTreeMap<String, String>,
    pub grow_to: Option<i32>,
    pub refusals: Vec<Refusal>,
}

/// Decides what to do for one topic. Undeclared configs are never touched;
/// partitions only grow; the replication factor is never changed.
pub fn plan(desired: &DesiredTopic, info: Option<&TopicInfo>, config: &BTreeMap<String, String>) -> Plan {
    let Some(info) = info else {
        return Plan { create: true, ..Plan::default() };
    };
    let mut p = Plan::default();
    for (k, v) in &desired.config {
        if config.get(k) != Some(v) {
            p.set_config.insert(k.clone(), v.clone());
        }
    }
    if desired.partitions > info.partitions {
        p.grow_to = Some(desired.partitions);
    } else if desired.partitions < info.partitions {
        p.refusals.push(Refusal::PartitionDecrease { declared: desired.partitions, actual: info.partitions });
    }
    if desired.replication_factor != info.replication_factor {
        p.refusals.push(Refusal::ReplicationFactorChange { declared: desired.replication_factor, actual: info.replication_factor });
    }
    p
}

/// What happened to one topic, and what Kafka has now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicReport {
    /// Kafka's view after this sync; None if the topic does not exist.
    pub info: Option<TopicInfo>,
    /// True when this sync created the topic.
    pub created: bool,
    /// Effective values of the declared config keys.
    pub config: BTreeMap<String, String>,
    /// Config keys this sync changed: key -> (old value, new value).
    pub changed: BTreeMap<String, (Option<String>, String)>,
    /// Partition count this sync raised: (from, to).
    pub grew: Option<(i32, i32)>,
    pub refusals: Vec<Refusal>,
    /// Kafka refused a create, config change or partition increase.
    pub error: Option<ItemError>,
    /// What this topic needed that the brokers do not offer (a Kafka-API
    /// broker that is not Apache Kafka), and what that disables.
    pub unsupported: Option<String>,
    /// Why the declared configs could not be compared with Kafka's.
    pub unchecked: Option<String>,
    /// First offset still held, per partition Kafka answered for.
    pub log_start: BTreeMap<i32, i64>,
}

impl TopicReport {
    /// Whether this report is complete: the topic is visible in Kafka's
    /// metadata with every partition's log start known, or Kafka refused
    /// something. Moments after a create neither may hold yet.
    pub fn settled(&self) -> bool {
        self.error.is_some()
            || self.unsupported.is_some()
            || self.info.as_ref().is_some_and(|i| self.log_start.len() == i.partitions as usize)
    }
}

/// A call's answers, or, when the brokers do not offer its API, none and
/// why (the feature degrades; the rest goes on).
fn or_unsupported<T: Default>(r: Result<T>) -> Result<(T, Option<String>)> {
    match r {
        Ok(v) => Ok((v, None)),
        Err(e @ KafkaError::Unsupported { .. }) => Ok((T::default(), Some(e.to_string()))),
        Err(e) => Err(e),
    }
}

/// What Kafka has for these topics, changing nothing: one Metadata, one
/// DescribeConfigs for the declared keys, and the log start offsets.
pub async fn observe(kafka: &dyn Kafka, desired: &[DesiredTopic]) -> Result<Vec<TopicReport>> {
    let mut reports = describe(kafka, desired).await?;
    for (d, r) in desired.iter().zip(reports.iter_mut()) {
        r.refusals = plan(d, r.info.as_ref(), &r.config).refusals;
    }
    log_starts(kafka, desired, &mut reports).await?;
    Ok(reports)
}

/// Brings many topics to their declared state with a fixed number of
/// requests: Metadata, DescribeConfigs, then only what is needed of
/// CreateTopics, IncrementalAlterConfigs and CreatePartitions, and one
/// ListOffsets per leader for the log start offsets.
pub async fn sync(kafka: &dyn Kafka, desired: &[DesiredTopic]) -> Result<Vec<TopicReport>> {
    let mut reports = describe(kafka, desired).await?;
    let mut plans: Vec<Plan> = desired.iter().zip(&reports).map(|(d, r)| plan(d, r.info.as_ref(), &r.config)).collect();
    for (r, p) in reports.iter_mut().zip(plans.iter_mut()) {
        r.refusals = p.refusals.clone();
        if r.unchecked.is_some() {
            // Configs Kafka could not be asked about are not changed blindly.
            p.set_config.clear();
        }
    }

    let to_create: Vec<NewTopic> = desired
        .iter()
        .zip(&plans)
        .filter(|(_, p)| p.create)
        .map(|(d, _)| NewTopic {
            name: d.name.clone(),
            partitions: d.partitions,
            replication_factor: d.replication_factor,
            config: d.config.clone(),
        })
        .collect();
    let (created, no_create) = or_unsupported(kafka.create_topics(&to_create).await)?;
    let changes: BTreeMap<String, BTreeMap<String, String>> =
        desired.iter().zip(&plans).filter(|(_, p)| !p.set_config.is_empty()).map(|(d, p)| (d.name.clone(), p.set_config.clone())).collect();
    let (altered, no_alter) = or_unsupported(kafka.alter_topic_configs(&changes).await)?;
    let growth: BTreeMap<String, i32> = desired.iter().zip(&plans).filter_map(|(d, p)| Some((d.name.clone(), p.grow_to?))).collect();
    let (grown, no_growth) = or_unsupported(kafka.create_partitions(&growth).await)?;

    for ((d, p), r) in desired.iter().zip(&plans).zip(reports.iter_mut()) {
        let needs = [(p.create, &no_create), (!p.set_config.is_empty(), &no_alter), (p.grow_to.is_some(), &no_growth)];
        r.unsupported = needs.into_iter().find_map(|(needed, why)| why.clone().filter(|_| needed));
        if let Some(result) = created.get(&d.name) {
            match result {
                Ok(info) => {
                    r.info = Some(info.clone());
                    r.created = true;
                    r.config = d.config.clone();
                }
                // Created a moment ago and not yet in the metadata this
                // broker answered with: the next sync will see it.
                Err(e) if e.is(ResponseError::TopicAlreadyExists) => {}
                Err(e) => r.error = Some(e.clone()),
            }
        }
        match altered.get(&d.name) {
            Some(Ok(())) => {
                for (k, v) in &p.set_config {
                    r.changed.insert(k.clone(), (r.config.get(k).cloned(), v.clone()));
                    r.config.insert(k.clone(), v.clone());
                }
            }
            Some(Err(e)) => r.error = Some(e.clone()),
            None => {}
        }
        match (grown.get(&d.name), r.info.as_mut()) {
            (Some(Ok(())), Some(info)) => {
                r.grew = Some((info.partitions, d.partitions));
                info.partitions = d.partitions;
            }
            (Some(Err(e)), _) => r.error = Some(e.clone()),
            _ => {}
        }
    }
    log_starts(kafka, desired, &mut reports).await?;
    Ok(reports)
}

/// Each topic's shape and declared configs as Kafka has them (two requests).
async fn describe(kafka: &dyn Kafka, desired: &[DesiredTopic]) -> Result<Vec<TopicReport>> {
    let names: Vec<String> = desired.iter().map(|d| d.name.clone()).collect();
    let infos = kafka.topics(&names).await?;
    let keys: BTreeMap<String, Vec<String>> = desired
        .iter()
        .filter(|d| infos.contains_key(&d.name) && !d.config.is_empty())
        .map(|d| (d.name.clone(), d.config.keys().cloned().collect()))
        .collect();
    let (configs, unchecked) = or_unsupported(kafka.topic_configs(&keys).await)?;
    Ok(desired
        .iter()
        .map(|d| {
            let (config, error) = match configs.get(&d.name) {
                Some(Ok(c)) => (c.clone(), None),
                Some(Err(e)) => (BTreeMap::new(), Some(e.clone())),
                None => (BTreeMap::new(), None),
            };
            let unchecked = unchecked.clone().filter(|_| keys.contains_key(&d.name));
            TopicReport { info: infos.get(&d.name).cloned(), config, error, unchecked, ..Default::default() }
        })
        .collect())
}

/// The first offset still held per partition. New topics start at 0; only
/// existing ones are asked (one ListOffsets per leader). A partition Kafka
/// could not answer for is left out: see [`TopicReport::settled`].
async fn log_starts(kafka: &dyn Kafka, desired: &[DesiredTopic], reports: &mut [TopicReport]) -> Result<()> {
    let partitions: Vec<(String, i32)> = reports
        .iter()
        .zip(desired)
        .filter(|(r, _)| !r.created)
        .filter_map(|(r, d)| Some((d.name.clone(), r.info.as_ref()?.partitions)))
        .flat_map(|(name, n)| (0..n).map(move |p| (name.clone(), p)))
        .collect();
    let starts = kafka.offsets(&partitions, true).await?;
    for (r, d) in reports.iter_mut().zip(desired) {
        if let Some(info) = &r.info {
            r.log_start = if r.created {
                (0..info.partitions).map(|p| (p, 0)).collect()
            } else {
                (0..info.partitions).filter_map(|p| Some((p, *starts.get(&(d.name.clone(), p))?))).collect()
            };
        }
    }
    Ok(())
}

enum Job {
    Sync(DesiredTopic, oneshot::Sender<Result<TopicReport>>),
    Observe(Vec<DesiredTopic>, oneshot::Sender<Result<Vec<TopicReport>>>),
    Delete(String, oneshot::Sender<Result<ItemResult>>),
}

/// Collects the topic work that arrives together (within a few
/// milliseconds, up to [`MAX_BATCH`]) and does it in one batch.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Job>,
    requests: Arc<std::sync::atomic::AtomicU64>,
}

const MAX_BATCH: usize = 1000;
const GATHER: Duration = Duration::from_millis(20);

impl Batcher {
    pub fn spawn(kafka: Arc<dyn Kafka>) -> Batcher {
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        let requests = Arc::new(std::sync::atomic::AtomicU64::new(0));
        tokio::spawn(run(kafka, rx, requests.clone()));
        Batcher { tx, requests }
    }

    /// Kafka requests this batcher has sent.
    pub fn requests_sent(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub async fn sync(&self, desired: DesiredTopic) -> Result<TopicReport> {
        let (tx, rx) = oneshot::channel();
        let _ = self.tx.send(Job::Sync(desired, tx)).await;
        rx.await.unwrap_or_else(|_| Err(gone()))
    }

    /// What Kafka has for many topics at once, changing nothing.
    pub async fn observe(&self, desired: Vec<DesiredTopic>) -> Result<Vec<TopicReport>> {
        let (tx, rx) = oneshot::channel();
        let _ = self.tx.send(Job::Observe(desired, tx)).await;
        rx.await.unwrap_or_else(|_| Err(gone()))
    }

    pub async fn delete(&self, name: String) -> Result<ItemResult> {
        let (tx, rx) = oneshot::channel();
        let _ = self.tx.send(Job::Delete(name, tx)).await;
        rx.await.unwrap_or_else(|_| Err(gone()))
    }
}

fn gone() -> super::KafkaError {
    super::KafkaError::Unreachable { addr: String::new(), reason: "the Kafka client was replaced; retrying".into() }
}

async fn run(kafka: Arc<dyn Kafka>, mut rx: mpsc::Receiver<Job>, requests: Arc<std::sync::atomic::AtomicU64>) {
    while let Some(first) = rx.recv().await {
        let before = kafka.requests_sent();
        let mut jobs = vec![first];
        let deadline = tokio::time::Instant::now() + GATHER;
        while jobs.len() < MAX_BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(j)) => jobs.push(j),
                _ => break,
            }
        }
        let (mut syncs, mut deletes) = (Vec::new(), Vec::new());
        for j in jobs {
            match j {
                Job::Sync(d, tx) => syncs.push((d, tx)),
                Job::Delete(n, tx) => deletes.push((n, tx)),
                Job::Observe(d, tx) => {
                    let _ = tx.send(observe(kafka.as_ref(), &d).await);
                }
            }
        }
        if !syncs.is_empty() {
            // One entry per topic name even if two reconciles asked for it.
            let mut index: BTreeMap<String, usize> = BTreeMap::new();
            let mut unique: Vec<DesiredTopic> = Vec::new();
            for (d, _) in &syncs {
                index.entry(d.name.clone()).or_insert_with(|| {
                    unique.push(d.clone());
                    unique.len() - 1
                });
            }
            let result = sync(kafka.as_ref(), &unique).await;
            for (d, tx) in syncs {
                let answer = match &result {
                    Ok(reports) => Ok(reports[index[&d.name]].clone()),
                    Err(e) => Err(e.clone()),
                };
                let _ = tx.send(answer);
            }
        }
        if !deletes.is_empty() {
            let names: Vec<String> = deletes.iter().map(|(n, _)| n.clone()).collect();
            let result = kafka.delete_topics(&names).await;
            for (n, tx) in deletes {
                let _ = tx.send(result.as_ref().map(|r| r.get(&n).cloned().unwrap_or(Ok(()))).map_err(Clone::clone));
            }
        }
        requests.fetch_add(kafka.requests_sent() - before, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desired(partitions: i32, rf: i32, config: &[(&str, &str)]) -> DesiredTopic {
        DesiredTopic {
            name: "t".into(),
            partitions,
            replication_factor: rf,
            config: config.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    fn info(partitions: i32, rf: i32) -> TopicInfo {
        TopicInfo { id: "x".into(), partitions, replication_factor: rf }
    }

    #[test]
    fn missing_topics_are_created() {
        assert!(plan(&desired(3, 1, &[]), None, &BTreeMap::new()).create);
    }

    #[test]
    fn matching_topics_need_nothing() {
        let current = [("retention.ms".to_string(), "10".to_string())].into();
        assert_eq!(plan(&desired(3, 1, &[("retention.ms", "10")]), Some(&info(3, 1)), &current), Plan::default());
    }

    #[test]
    fn only_drifted_declared_keys_are_set() {
        let current = [("retention.ms".to_string(), "99".to_string()), ("cleanup.policy".to_string(), "compact".to_string())].into();
        let p = plan(
            &desired(3, 1, &[("retention.ms", "10"), ("cleanup.policy", "compact"), ("segment.ms", "5")]),
            Some(&info(3, 1)),
            &current,
        );
        assert_eq!(p.set_config, [("retention.ms".to_string(), "10".to_string()), ("segment.ms".to_string(), "5".to_string())].into());
    }

    #[test]
    fn partitions_grow_but_never_shrink_and_replication_never_changes() {
        let empty = BTreeMap::new();
        assert_eq!(plan(&desired(5, 1, &[]), Some(&info(3, 1)), &empty).grow_to, Some(5));
        let p = plan(&desired(2, 3, &[]), Some(&info(3, 1)), &empty);
        assert_eq!(p.grow_to, None);
        assert_eq!(
            p.refusals,
            vec![Refusal::PartitionDecrease { declared: 2, actual: 3 }, Refusal::ReplicationFactorChange { declared: 3, actual: 1 }]
        );
    }
}

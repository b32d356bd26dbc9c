//! Topic: the Kafka topic as declared. Creates, adopts, corrects config
//! drift, grows partitions, refuses what Kafka cannot do, and deletes the
//! Kafka topic only when told to and nothing reads it.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use futures::{Stream, StreamExt};
use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, Client, ResourceExt,
    runtime::{Controller, controller::Action, reflector::ObjectRef, watcher},
};
use tracing::{info, instrument};

use super::{Context, apply_status, hold, kafka_cluster, measured, release_finalizer, watched_api};
use crate::{
    Error, Result,
    api::{
        Cond, DeletionPolicy, KafkaCluster, Processor, Topic, TopicStatus, TruncatedPartition, VersionPhase, ViewVersion, annotations,
        conditions::{self, types},
        finalizers::TOPIC as FINALIZER,
    },
    kafka::topics::{DesiredTopic, Refusal, TopicReport},
    resources,
};

const KIND: &str = "Topic";

pub fn run(
    ctrl: Controller<Topic>,
    client: &Client,
    ctx: &Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> impl Stream<Item = super::Reconciled<Topic>> {
    let topics = ctrl.store();
    let by_cluster = topics.clone();
    let ns = ctx.settings.namespace.clone();
    // Drift made behind the operator's back: every resync, what Kafka has
    // for all Topics is read in one batch per cluster, and only the Topics
    // it would change are reconciled.
    let drifted = futures::stream::unfold((ctx.clone(), topics.clone()), |(ctx, topics)| async move {
        tokio::time::sleep(ctx.settings.resync).await;
        ctx.metrics.topic_resyncs.inc();
        let found = drifted(&ctx, &topics.state()).await;
        Some((futures::stream::iter(found), (ctx, topics)))
    })
    .flatten();
    ctrl.watches(watched_api::<KafkaCluster>(client, ns.as_deref()), watcher::Config::default(), move |kc| {
        let (ns, name) = (kc.namespace(), kc.name_any());
        by_cluster
            .state()
            .into_iter()
            .filter(|t| super::in_ns(t.as_ref(), ns.as_deref()) && t.spec.cluster_ref == name)
            .map(|t| ObjectRef::from_obj(t.as_ref()))
            .collect::<Vec<_>>()
    })
    // A Topic whose deletion waits for a Processor or a version to stop reading it.
    .watches(watched_api::<Processor>(client, ns.as_deref()), watcher::Config::default(), {
        let topics = topics.clone();
        move |p| deleting_among(&topics, p.namespace(), &p.spec.inputs)
    })
    .watches(watched_api::<ViewVersion>(client, ns.as_deref()), watcher::Config::default(), move |v| {
        deleting_among(&topics, v.namespace(), &v.spec.inputs)
    })
    .reconcile_on(drifted)
    .graceful_shutdown_on(shutdown)
    .run(reconcile, super::error_policy::<Topic>(KIND), ctx.clone())
}

/// The Topics among `names` (in `ns`) that are being deleted.
fn deleting_among(topics: &kube::runtime::reflector::Store<Topic>, ns: Option<String>, names: &[String]) -> Vec<ObjectRef<Topic>> {
    // (looked up by name: an event of each of thousands of readers must not
    // go through every Topic)
    let Some(ns) = ns else { return Vec::new() };
    names
        .iter()
        .map(|n| ObjectRef::new(n).within(&ns))
        .filter(|r| topics.get(r).is_some_and(|t| t.metadata.deletion_timestamp.is_some()))
        .collect()
}

/// Topics compared with Kafka at once in a resync. What Kafka answers for a
/// topic and the report made of it take about 1.3 KB until compared: all
/// 10,000 Topics at once raised the operator's RSS by 12.5 MiB for each
/// resync; a thousand at a time by a tenth of that, for a few Kafka
/// requests per thousand (a Metadata request and a ListOffsets per leader).
const RESYNC_CHUNK: usize = 1000;

/// The Topics whose Kafka topic no longer matches their status (or whose
/// finalizer does not match their deletion policy), found with a few Kafka
/// requests per cluster and thousand Topics.
async fn drifted(ctx: &Context, topics: &[Arc<Topic>]) -> Vec<ObjectRef<Topic>> {
    let mut by_cluster: BTreeMap<(String, String), Vec<&Arc<Topic>>> = BTreeMap::new();
    for t in topics.iter().filter(|t| t.metadata.deletion_timestamp.is_none() && !paused(t)) {
        by_cluster.entry((t.namespace().unwrap_or_default(), t.spec.cluster_ref.clone())).or_default().push(t);
    }
    let mut out = Vec::new();
    for ((ns, cluster), all) in by_cluster {
        let handle = ctx.clusters.get(&ns, &cluster);
        for topics in all.chunks(RESYNC_CHUNK) {
            let observed = match &handle {
                Some(h) => h.topics.observe(topics.iter().map(|t| desired(t)).collect()).await.ok(),
                None => None,
            };
            let Some(reports) = observed else {
                // The reconciles will say what is wrong with the cluster.
                out.extend(topics.iter().map(|t| ObjectRef::from_obj(t.as_ref())));
                continue;
            };
            for (t, r) in topics.iter().zip(&reports) {
                let previous = t.status.clone().unwrap_or_default();
                let finalized = t.finalizers().iter().any(|f| f == FINALIZER);
                if finalized != needs_finalizer(t) || t.status.as_ref() != Some(&status_from(t, r, &previous).0) {
                    out.push(ObjectRef::from_obj(t.as_ref()));
                }
            }
        }
    }
    out
}

fn desired(topic: &Topic) -> DesiredTopic {
    DesiredTopic {
        name: topic.kafka_name().to_owned(),
        partitions: topic.spec.partitions,
        replication_factor: topic.spec.replication_factor,
        config: topic.spec.config.clone(),
    }
}

#[instrument(skip_all, fields(namespace = topic.namespace(), name = topic.name_any()))]
async fn reconcile(topic: Arc<Topic>, ctx: Arc<Context>) -> Result<Action> {
    let result = reconcile_inner(topic.clone(), ctx.clone()).await;
    if let Some(message) = result.as_ref().err().and_then(|e| e.forbidden()) {
        let message = format!("the operator lacks a permission: {message}; see the chart's RBAC");
        let _ = not_ready(&topic, &ctx, "PermissionDenied", message, true, Action::await_change()).await;
    }
    result
}

async fn reconcile_inner(topic: Arc<Topic>, ctx: Arc<Context>) -> Result<Action> {
    measured(&ctx, KIND, super::key(topic.as_ref()), async {
        if paused(&topic) {
            return pause(&topic, &ctx).await;
        }
        let api: Api<Topic> = Api::namespaced(ctx.client.clone(), &topic.namespace().unwrap_or_default());
        let ours = topic.finalizers().iter().any(|f| f == FINALIZER);
        if topic.metadata.deletion_timestamp.is_some() {
            if !ours {
                return Ok(Action::await_change());
            }
            if let Some(wait) = cleanup(topic.clone(), &ctx).await? {
                return Ok(wait);
            }
            release_finalizer(&api, &topic.name_any(), FINALIZER).await?;
            return Ok(Action::await_change());
        }
        if ours && !needs_finalizer(&topic) {
            // Switched to Retain (or made before this operator kept
            // finalizers for Delete only): nothing will be done at deletion.
            release_finalizer(&api, &topic.name_any(), FINALIZER).await?;
        } else if !ours && needs_finalizer(&topic) && !hold(&api, topic.as_ref(), FINALIZER).await? {
            // Gone since it was read: no Kafka topic is made for it.
            return Ok(Action::await_change());
        }
        apply(topic, &ctx).await
    })
    .await
}

/// Only a Topic whose deletion may delete the Kafka topic holds its
/// deletion for the operator: deleting a `Retain` Topic touches nothing in
/// Kafka, so it costs no finalizer write and no wait.
fn needs_finalizer(topic: &Topic) -> bool {
    topic.spec.deletion_policy == DeletionPolicy::Delete
}

fn paused(topic: &Topic) -> bool {
    topic.annotations().get(annotations::RECONCILE).is_some_and(|v| v == "paused")
}

async fn pause(topic: &Topic, ctx: &Context) -> Result<Action> {
    let mut status = topic.status.clone().unwrap_or_default();
    let mut conds: Vec<Cond> = status
        .conditions
        .iter()
        .filter(|c| c.type_ != types::RECONCILING)
        .filter_map(|c| {
            let t = [types::READY, types::STALLED].into_iter().find(|t| *t == c.type_)?;
            Some(Cond::new(t, c.status == "True", c.reason.clone(), c.message.clone()))
        })
        .collect();
    conds.push(Cond::new(
        types::RECONCILING,
        false,
        "Paused",
        format!("annotation {}: paused; remove it to resume", annotations::RECONCILE),
    ));
    status.conditions = conditions::merge(&status.conditions, &conds, topic.metadata.generation, Timestamp::now());
    write_status(topic, ctx, &status).await?;
    Ok(Action::await_change())
}

/// The older of two Topics naming the same Kafka topic on the same cluster
/// manages it; the other is told so.
fn conflicting_owner(topic: &Topic, ctx: &Context) -> Option<Arc<Topic>> {
    let bootstrap = |t: &Topic| {
        let cluster = ObjectRef::new(&t.spec.cluster_ref).within(t.metadata.namespace.as_deref().unwrap_or_default());
        ctx.stores.clusters.get(&cluster).map(|kc| kc.spec.bootstrap_servers.clone())
    };
    let mine = bootstrap(topic)?;
    let age = |t: &Topic| (t.metadata.creation_timestamp.clone().map(|t| t.0), t.namespace(), t.name_any());
    // (the name first: it rules out all but a few, without a copy)
    let older = |o: &Topic| {
        o.kafka_name() == topic.kafka_name()
            && o.metadata.uid != topic.metadata.uid
            && o.metadata.deletion_timestamp.is_none()
            && bootstrap(o).as_ref() == Some(&mine)
            && age(o) < age(topic)
    };
    // Almost always none: then the cache (10,000 Topics, say) is not copied
    // for each reconcile.
    ctx.stores.topics.find(|o| older(o))?;
    ctx.stores.topics.state().into_iter().filter(|o| older(o)).min_by_key(|o| age(o))
}

async fn apply(topic: Arc<Topic>, ctx: &Context) -> Result<Action> {
    let ns = topic.namespace().unwrap_or_default();
    let name = topic.kafka_name();
    let previous = topic.status.clone().unwrap_or_default();

    if let Some(owner) = conflicting_owner(&topic, ctx) {
        let message = format!(
            "Kafka topic {name} is already managed by Topic {}/{} (the older resource); delete this one or give it another spec.topicName",
            owner.namespace().unwrap_or_default(),
            owner.name_any()
        );
        return not_ready(&topic, ctx, "ResourceConflict", message, true, Action::await_change()).await;
    }

    let kafka_key = format!("{KIND}-kafka/{ns}/{}", topic.name_any());
    let cluster = match kafka_cluster::handle(ctx, &ns, &topic.spec.cluster_ref).await {
        Ok(c) => c,
        // Missing, or its Secrets are: a change to the KafkaCluster wakes this Topic.
        Err((reason, message)) => {
            let message = format!("KafkaCluster {} is not usable ({reason}): {message}", topic.spec.cluster_ref);
            return not_ready(&topic, ctx, "KafkaClusterNotReady", message, false, Action::await_change()).await;
        }
    };
    if let Some(Err((reason, message))) = cluster.health() {
        let message = format!("KafkaCluster {} is not Ready ({reason}): {message}", topic.spec.cluster_ref);
        return not_ready(&topic, ctx, "KafkaClusterNotReady", message, false, Action::await_change()).await;
    }

    let report = match cluster.topics.sync(desired(&topic)).await {
        Ok(r) => r,
        Err(e) => return not_ready(&topic, ctx, e.reason(), e.to_string(), false, Action::requeue(ctx.backoff(&kafka_key))).await,
    };
    ctx.succeeded(&kafka_key);

    let (status, ready) = status_from(&topic, &report, &previous);
    if write_status(&topic, ctx, &status).await? {
        announce(&topic, ctx, &report, &previous, &ready).await;
    }
    if !report.settled() {
        // Kafka has the topic but its metadata does not fully show it yet.
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    Ok(Action::await_change())
}

/// Events for what this reconcile did, and for a new reason not to be Ready.
async fn announce(topic: &Topic, ctx: &Context, r: &TopicReport, previous: &TopicStatus, ready: &Cond) {
    if r.created {
        info!(topic = %topic.kafka_name(), "created Kafka topic");
    }
    for e in events(topic, r, previous, ready) {
        ctx.event(topic, e.warning, &e.reason, e.action, e.note).await;
    }
}

#[derive(Debug, PartialEq)]
struct Told {
    warning: bool,
    reason: String,
    action: &'static str,
    note: String,
}

fn events(topic: &Topic, r: &TopicReport, previous: &TopicStatus, ready: &Cond) -> Vec<Told> {
    let name = topic.kafka_name();
    let normal = |reason: &str, action, note| Told { warning: false, reason: reason.into(), action, note };
    let mut out = Vec::new();
    if r.created {
        // A view's topic is told of by its Processor (the version's events
        // name it), as Kubernetes' controllers tell of what they make on
        // the owner: one Event less per version.
        if resources::version_of(topic).is_none() {
            out.push(normal("Created", "CreateTopic", format!("created Kafka topic {name} with {} partition(s)", topic.spec.partitions)));
        }
    } else if previous.topic_id.is_none()
        && let Some(info) = &r.info
    {
        let mut differences = Vec::new();
        if info.partitions != topic.spec.partitions {
            differences.push(format!("partitions {} (declared {})", info.partitions, topic.spec.partitions));
        }
        if info.replication_factor != topic.spec.replication_factor {
            differences.push(format!("replication factor {} (declared {})", info.replication_factor, topic.spec.replication_factor));
        }
        for (k, (old, new)) in &r.changed {
            differences.push(format!("{k}={} (declared {new})", old.as_deref().unwrap_or("<default>")));
        }
        let note = if differences.is_empty() {
            format!("adopted existing Kafka topic {name}; it matches the spec")
        } else {
            format!("adopted existing Kafka topic {name}; differences: {}", differences.join(", "))
        };
        out.push(normal("Adopted", "AdoptTopic", note));
    } else if !r.changed.is_empty() {
        let keys: Vec<String> =
            r.changed.iter().map(|(k, (old, new))| format!("{k}: {} -> {new}", old.as_deref().unwrap_or("<default>"))).collect();
        out.push(normal("ConfigUpdated", "AlterConfigs", format!("Kafka topic {name}: {}", keys.join(", "))));
    }
    if let Some((from, to)) = r.grew {
        out.push(normal("PartitionsIncreased", "CreatePartitions", format!("Kafka topic {name}: partitions {from} -> {to}")));
    }
    let was = conditions::find(&previous.conditions, types::READY);
    if !ready.status && was.is_none_or(|c| c.reason != ready.reason || c.message != ready.message) {
        out.push(Told { warning: true, reason: ready.reason.clone(), action: "Reconcile", note: ready.message.clone() });
    }
    out
}

/// The Ready reason of a Topic whose Kafka topic is being created (Kafka's
/// metadata does not show it yet).
pub const CREATING: &str = "TopicMissing";

/// Status from what Kafka reported. Pure.
pub fn status_from(topic: &Topic, r: &TopicReport, previous: &TopicStatus) -> (TopicStatus, Cond) {
    let name = topic.kafka_name();
    let problem = if let Some(e) = &r.error {
        Some(("KafkaRejected", format!("Kafka refused the change to topic {name}: {e}; fix spec.config or spec.partitions")))
    } else if let Some(why) = &r.unsupported {
        Some(("UnsupportedByBroker", format!("Kafka topic {name}: {why}; the rest of the topic is managed")))
    } else if let Some(refusal) = r.refusals.first() {
        Some(match refusal {
            Refusal::PartitionDecrease { declared, actual } => (
                "PartitionDecreaseRefused",
                format!(
                    "Kafka topic {name} has {actual} partitions but spec.partitions is {declared}: Kafka cannot remove \
                     partitions, so nothing was changed; set spec.partitions to {actual} or more"
                ),
            ),
            Refusal::ReplicationFactorChange { declared, actual } => (
                "ReplicationFactorChangeRefused",
                format!(
                    "Kafka topic {name} has replication factor {actual} but spec.replicationFactor is {declared}: the \
                     operator does not reassign replicas, so nothing was changed; reassign with Kafka's tools, or set \
                     spec.replicationFactor to {actual}"
                ),
            ),
        })
    } else if r.info.is_none() {
        Some((CREATING, format!("Kafka topic {name} is being created; waiting for Kafka's metadata to show it")))
    } else {
        None
    };
    let ready = match (&problem, &r.unchecked) {
        (None, None) => Cond::new(types::READY, true, "Ready", format!("Kafka topic {name} matches the spec")),
        (None, Some(why)) => {
            Cond::new(types::READY, true, "Ready", format!("Kafka topic {name} exists; its configs were not compared ({why})"))
        }
        (Some((reason, message)), _) => Cond::new(types::READY, false, *reason, message.clone()),
    };
    // Stalled: it will not get better without a change to the spec.
    let stalled = problem.as_ref().is_some_and(|(reason, _)| *reason != CREATING);
    let conds = [
        ready.clone(),
        match &problem {
            Some((CREATING, message)) => Cond::new(types::RECONCILING, true, "Creating", message.clone()),
            _ => Cond::new(types::RECONCILING, false, if stalled { "Stalled" } else { "Reconciled" }, ""),
        },
        Cond::new(
            types::STALLED,
            stalled,
            if stalled { ready.reason.clone() } else { "NotStalled".into() },
            if stalled { ready.message.clone() } else { String::new() },
        ),
    ];
    let truncated: Vec<TruncatedPartition> =
        r.log_start.iter().filter(|(_, o)| **o > 0).map(|(p, o)| TruncatedPartition { partition: *p, log_start_offset: *o }).collect();
    // Until Kafka answers for every partition, what was known stands.
    let (replayable, truncated) = match &r.info {
        Some(i) if r.log_start.len() < i.partitions as usize => (previous.replayable_from_zero, previous.truncated_partitions.clone()),
        Some(_) => (Some(truncated.is_empty()), truncated),
        None => (None, truncated),
    };
    let status = TopicStatus {
        observed_generation: topic.metadata.generation,
        conditions: conditions::merge(&previous.conditions, &conds, topic.metadata.generation, Timestamp::now()),
        topic_name: Some(name.to_owned()),
        topic_id: r.info.as_ref().map(|i| i.id.clone()),
        partitions: r.info.as_ref().map(|i| i.partitions),
        replication_factor: r.info.as_ref().map(|i| i.replication_factor),
        config: r.config.clone(),
        replayable_from_zero: replayable,
        truncated_partitions: truncated,
    };
    (status, ready)
}

/// Writes the Topic's status if it changed, unless its namespace is being
/// deleted: there the Topic goes too, and a thousand Topics would each say
/// that their KafkaCluster went first. Whether it was written.
async fn write_status(topic: &Topic, ctx: &Context, status: &TopicStatus) -> Result<bool> {
    if topic.status.as_ref() == Some(status) || ctx.namespace_going(&topic.namespace().unwrap_or_default()).await {
        return Ok(false);
    }
    Ok(apply_status(&ctx.client, topic, topic.status.as_ref(), status).await?.is_some())
}

/// Ready=False for a reason outside Kafka's answer; keeps what is known of
/// the topic.
async fn not_ready(topic: &Topic, ctx: &Context, reason: &str, message: String, stalled: bool, then: Action) -> Result<Action> {
    let mut status = topic.status.clone().unwrap_or_default();
    let ready = Cond::new(types::READY, false, reason, message.clone());
    let conds = [
        ready.clone(),
        Cond::new(
            types::RECONCILING,
            !stalled,
            if stalled { "Stalled" } else { "Waiting" },
            if stalled { String::new() } else { message.clone() },
        ),
        Cond::new(
            types::STALLED,
            stalled,
            if stalled { reason } else { "NotStalled" },
            if stalled { message.clone() } else { String::new() },
        ),
    ];
    let was = conditions::find(&status.conditions, types::READY).cloned();
    status.observed_generation = topic.metadata.generation;
    status.topic_name = Some(topic.kafka_name().to_owned());
    status.conditions = conditions::merge(&status.conditions, &conds, topic.metadata.generation, Timestamp::now());
    if write_status(topic, ctx, &status).await? && was.is_none_or(|c| c.reason != reason) {
        ctx.event(topic, true, reason, "Reconcile", message).await;
    }
    Ok(then)
}

/// Who reads the Topic `name` in `ns`: Processors that list it, and every
/// version that is not retired (active, candidate, standby, failed), since
/// a standby's rollback replays from its own offsets in it.
fn readers(ctx: &Context, ns: &str, name: &str) -> Vec<String> {
    let in_ns = |o: Option<String>| o.as_deref() == Some(ns);
    let processors = ctx
        .stores
        .processors
        .state()
        .into_iter()
        .filter(|p| in_ns(p.namespace()) && p.spec.inputs.iter().any(|i| i == name))
        .map(|p| format!("Processor {}", p.name_any()));
    let versions =
        ctx.stores.versions.state().into_iter().filter(|v| in_ns(v.namespace()) && v.spec.inputs.iter().any(|i| i == name)).filter_map(
            |v| {
                let phase = v.status.as_ref().and_then(|s| s.phase).unwrap_or_default();
                (phase != VersionPhase::Retired).then(|| format!("ViewVersion {} ({phase:?})", v.name_any()))
            },
        );
    let mut out: Vec<String> = processors.chain(versions).collect();
    out.sort();
    out
}

/// How long a deletion in a namespace being deleted may wait before its
/// Topic says why.
const TEARDOWN_QUIET: Duration = Duration::from_secs(30);

/// Whether what holds a Topic's deletion is worth a status write. In a
/// namespace being deleted everything goes at once, and its readers or its
/// KafkaCluster going first is a passing state: said only once the
/// deletion has waited [`TEARDOWN_QUIET`], which is when someone looks at
/// a namespace stuck in Terminating.
async fn worth_saying(topic: &Topic, ctx: &Context) -> bool {
    let waited = topic.metadata.deletion_timestamp.as_ref().map_or(0, |t| Timestamp::now().as_second() - t.0.as_second());
    waited >= TEARDOWN_QUIET.as_secs() as i64 || !ctx.namespace_going(&topic.namespace().unwrap_or_default()).await
}

/// What deletion does in Kafka: None once the finalizer may go; a wait
/// while readers hold the Kafka topic.
async fn cleanup(topic: Arc<Topic>, ctx: &Context) -> Result<Option<Action>> {
    let ns = topic.namespace().unwrap_or_default();
    let name = topic.kafka_name();
    if topic.annotations().get(annotations::FORCE_RELEASE).is_some_and(|v| v == "true") {
        info!(topic = %name, "finalizer released by annotation; Kafka not touched");
        return Ok(None);
    }
    if topic.spec.deletion_policy == DeletionPolicy::Retain || conflicting_owner(&topic, ctx).is_some() {
        // Nothing to do in Kafka: the data stays (or belongs to the other Topic).
        return Ok(None);
    }
    let readers = readers(ctx, &ns, &topic.name_any());
    if !readers.is_empty() {
        let message = format!(
            "deletionPolicy is Delete, but Kafka topic {name} is still read by {}: it is deleted once none of them reads it \
             (a Processor drops it from spec.inputs, and its versions that read it are retired)",
            readers.join(", ")
        );
        // Waiting, not failing: the readers' going wakes this, and a look
        // every few seconds covers a cache that lags the event (a failure's
        // back-off would grow to minutes with every event while they read).
        if worth_saying(&topic, ctx).await {
            not_ready(&topic, ctx, "DeletionBlocked", message, false, Action::await_change()).await?;
        }
        return Ok(Some(Action::requeue(Duration::from_secs(5))));
    }
    let Ok(cluster) = kafka_cluster::handle(ctx, &ns, &topic.spec.cluster_ref).await else {
        let message = format!(
            "deletionPolicy is Delete, but KafkaCluster {} is not usable; annotate with {}=true to release without deleting",
            topic.spec.cluster_ref,
            annotations::FORCE_RELEASE
        );
        if worth_saying(&topic, ctx).await {
            not_ready(&topic, ctx, "DeletionWaiting", message.clone(), false, Action::await_change()).await?;
        }
        return Err(Error::Finalizer(message));
    };
    match cluster.topics.delete(name.to_owned()).await? {
        Ok(()) => {
            info!(topic = %name, "deleted Kafka topic");
            ctx.event(topic.as_ref(), false, "Deleted", "DeleteTopic", format!("deleted Kafka topic {name} (deletionPolicy: Delete)"))
                .await;
            Ok(None)
        }
        Err(e) => {
            let message = format!("Kafka refused to delete topic {name}: {e}");
            not_ready(&topic, ctx, "DeletionFailed", message.clone(), false, Action::await_change()).await?;
            Err(Error::Finalizer(message))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{api::TopicSpec, kafka::TopicInfo};

    fn topic(partitions: i32) -> Topic {
        let mut t = Topic::new(
            "orders",
            TopicSpec {
                cluster_ref: "default".into(),
                topic_name: None,
                partitions,
                replication_factor: 1,
                config: Default::default(),
                deletion_policy: DeletionPolicy::Retain,
            },
        );
        t.metadata.generation = Some(3);
        t
    }

    fn report(partitions: i32) -> TopicReport {
        TopicReport {
            info: Some(TopicInfo { id: "abc".into(), partitions, replication_factor: 1 }),
            log_start: (0..partitions).map(|p| (p, 0)).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_matching_topic_is_ready_and_replayable() {
        let (s, ready) = status_from(&topic(3), &report(3), &TopicStatus::default());
        assert!(ready.status);
        assert_eq!(s.partitions, Some(3));
        assert_eq!(s.replayable_from_zero, Some(true));
        assert_eq!(s.observed_generation, Some(3));
        assert!(conditions::is_true(&s.conditions, types::READY));
        assert!(!conditions::is_true(&s.conditions, types::STALLED));
    }

    #[test]
    fn a_created_topic_is_told_on_itself_unless_a_version_made_it() {
        let created = TopicReport { created: true, ..report(3) };
        let (_, ready) = status_from(&topic(3), &created, &TopicStatus::default());
        let told = events(&topic(3), &created, &TopicStatus::default(), &ready);
        assert_eq!(told.iter().map(|e| e.reason.as_str()).collect::<Vec<_>>(), ["Created"]);
        assert_eq!(told[0].note, "created Kafka topic orders with 3 partition(s)");

        let p = resources::fixtures::processor();
        let view = resources::view_topic(&resources::fixtures::version(&p, "v1", "i:1"), DeletionPolicy::Retain);
        assert_eq!(events(&view, &created, &TopicStatus::default(), &ready), []);
        // What goes wrong with it is told on it all the same.
        let not_ready = Cond::new(types::READY, false, "KafkaRejected", "Kafka refused");
        assert_eq!(events(&view, &created, &TopicStatus::default(), &not_ready).len(), 1);
    }

    #[test]
    fn truncated_partitions_are_named() {
        let mut r = report(2);
        r.log_start.insert(1, 40);
        let (s, _) = status_from(&topic(2), &r, &TopicStatus::default());
        assert_eq!(s.replayable_from_zero, Some(false));
        assert_eq!(s.truncated_partitions, vec![TruncatedPartition { partition: 1, log_start_offset: 40 }]);
    }

    #[test]
    fn unanswered_log_starts_keep_what_was_known() {
        let mut r = report(2);
        r.log_start.insert(1, 40);
        let (known, _) = status_from(&topic(2), &r, &TopicStatus::default());
        r.log_start.remove(&0);
        let (s, ready) = status_from(&topic(2), &r, &known);
        assert!(ready.status, "a partition without a leader for a moment is no reason to be not Ready");
        assert!(!r.settled());
        assert_eq!(s.replayable_from_zero, Some(false));
        assert_eq!(s.truncated_partitions, known.truncated_partitions);
    }

    #[test]
    fn a_refused_decrease_stalls_with_what_to_do() {
        let mut r = report(6);
        r.refusals.push(Refusal::PartitionDecrease { declared: 3, actual: 6 });
        let (s, ready) = status_from(&topic(3), &r, &TopicStatus::default());
        assert!(!ready.status);
        assert_eq!(ready.reason, "PartitionDecreaseRefused");
        assert!(ready.message.contains("set spec.partitions to 6 or more"), "{}", ready.message);
        assert!(conditions::is_true(&s.conditions, types::STALLED));
    }

    #[test]
    fn a_kafka_rejection_quotes_kafka() {
        let mut r = report(3);
        r.error = Some(crate::kafka::ItemError::kafka(crate::kafka::ResponseError::InvalidConfig, "Unknown topic config name: x.y"));
        let (_, ready) = status_from(&topic(3), &r, &TopicStatus::default());
        assert_eq!(ready.reason, "KafkaRejected");
        assert!(ready.message.contains("Unknown topic config name: x.y"));
    }

    #[test]
    fn a_topic_not_yet_in_kafkas_metadata_is_reconciling_not_stalled() {
        let r = TopicReport::default();
        let (s, ready) = status_from(&topic(3), &r, &TopicStatus::default());
        assert_eq!(ready.reason, "TopicMissing");
        assert!(conditions::is_true(&s.conditions, types::RECONCILING));
        assert!(!conditions::is_true(&s.conditions, types::STALLED));
    }

    #[test]
    fn an_unchanged_report_gives_an_identical_status() {
        let (first, _) = status_from(&topic(3), &report(3), &TopicStatus::default());
        let (second, _) = status_from(&topic(3), &report(3), &first);
        assert_eq!(first, second, "an idle reconcile must not write");
    }

    #[test]
    fn a_readers_event_wakes_only_its_inputs_being_deleted_in_its_namespace() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        use kube::runtime::watcher::Event;
        let (store, mut writer) = kube::runtime::reflector::store::<Topic>();
        let mut put = |name: &str, ns: &str, deleting: bool| {
            let mut t = topic(1);
            t.metadata.name = Some(name.into());
            t.metadata.namespace = Some(ns.into());
            t.metadata.deletion_timestamp = deleting.then_some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
            writer.apply_watcher_event(&Event::Apply(t));
        };
        put("orders", "shop", true);
        put("payments", "shop", false);
        put("refunds", "other", true);
        let inputs = ["orders", "payments", "refunds", "missing"].map(String::from);
        let woken = deleting_among(&store, Some("shop".into()), &inputs);
        assert_eq!(woken, [ObjectRef::new("orders").within("shop")]);
        assert!(deleting_among(&store, None, &inputs).is_empty());
    }
}

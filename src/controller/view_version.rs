//! ViewVersion: a version's view Topic and its input checks; and the lag
//! poller, which reads every version's progress from Kafka in a few batched
//! requests per cluster.
//!
//! Three writers share a ViewVersion's status, each with its own field
//! manager: this controller (conditions), the Processor's rollout (phase and
//! timestamps) and the lag poller (lag and progress).

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Instant,
};

use futures::Stream;
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{Controller, controller::Action, reflector::ObjectRef, watcher},
};
use serde_json::json;
use tracing::{instrument, warn};

use super::{Context, apply_status_fields, measured, watched_api};
use crate::{
    Result,
    api::{Cond, DeletionPolicy, MANAGER, Topic, ViewVersion, conditions, conditions::types},
    kafka::lag,
    metrics::VersionLabels,
    resources,
};

const KIND: &str = "ViewVersion";
const CONDITIONS_MANAGER: &str = "kappa-operator-viewversion";
const LAG_MANAGER: &str = "kappa-operator-lag";

pub fn run(
    ctrl: Controller<ViewVersion>,
    client: &Client,
    ctx: &Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> impl Stream<Item = super::Reconciled<ViewVersion>> {
    let versions = ctrl.store();
    let ns = ctx.settings.namespace.clone();
    // An input Topic appearing or turning Ready wakes the versions that read it.
    ctrl.owns(watched_api::<Topic>(client, ns.as_deref()), watcher::Config::default())
        .watches(watched_api::<Topic>(client, ns.as_deref()), watcher::Config::default(), move |t| {
            let (ns, name) = (t.namespace(), t.name_any());
            versions
                .state()
                .into_iter()
                .filter(|v| v.namespace() == ns && v.spec.inputs.contains(&name))
                .map(|v| ObjectRef::from_obj(v.as_ref()))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, super::error_policy::<ViewVersion>(KIND), ctx.clone())
}

/// The input Topics, read from the API server rather than a cache: the
/// watch that woke this reconcile may be ahead of another controller's cache.
pub async fn input_topics(ctx: &Context, ns: &str, inputs: &[String]) -> Result<Vec<(String, Option<Topic>)>> {
    let api: Api<Topic> = Api::namespaced(ctx.client.clone(), ns);
    let mut out = Vec::with_capacity(inputs.len());
    for name in inputs {
        out.push((name.clone(), api.get_opt(name).await?));
    }
    Ok(out)
}

/// Why the inputs are not usable yet, naming the Topic; None when all are Ready.
pub fn inputs_problem(ns: &str, topics: &[(String, Option<Topic>)], reader: &str) -> Option<(&'static str, String)> {
    for (name, topic) in topics {
        match topic {
            None => return Some(("InputMissing", format!("Topic {name} (an input of {reader}) does not exist in namespace {ns}"))),
            Some(t) => {
                let ready = t.status.as_ref().and_then(|s| conditions::find(&s.conditions, types::READY).cloned());
                match ready {
                    Some(c) if c.status == "True" => {}
                    Some(c) => {
                        return Some((
                            "InputNotReady",
                            format!("Topic {name} (an input of {reader}) is not Ready: {}: {}", c.reason, c.message),
                        ));
                    }
                    None => return Some(("InputNotReady", format!("Topic {name} (an input of {reader}) is not Ready yet"))),
                }
            }
        }
    }
    None
}

#[instrument(skip_all, fields(namespace = vv.namespace(), name = vv.name_any()))]
async fn reconcile(vv: Arc<ViewVersion>, ctx: Arc<Context>) -> Result<Action> {
    measured(&ctx, KIND, super::key(vv.as_ref()), async {
        let ns = vv.namespace().unwrap_or_default();
        let reader = format!("ViewVersion {}", vv.name_any());
        let inputs = input_topics(&ctx, &ns, &vv.spec.inputs).await?;
        let ready = match inputs_problem(&ns, &inputs, &reader) {
            // Nothing is created until the inputs are there.
            Some((reason, message)) => Cond::new(types::READY, false, reason, message),
            None => {
                let topics: Api<Topic> = Api::namespaced(ctx.client.clone(), &ns);
                let existing = topics.get_opt(&vv.name_any()).await?;
                // Retiring switches the policy to Delete; never switch it back.
                let policy = existing.as_ref().map_or(DeletionPolicy::Retain, |t| t.spec.deletion_policy);
                let desired = resources::view_topic(&vv, policy);
                if existing.as_ref().is_none_or(|t| t.spec != desired.spec) {
                    topics.patch(&vv.name_any(), &PatchParams::apply(MANAGER).force(), &Patch::Apply(&desired)).await?;
                }
                let view_ready =
                    existing.and_then(|t| t.status.clone()).and_then(|s| conditions::find(&s.conditions, types::READY).cloned());
                match view_ready {
                    Some(c) if c.status == "True" => {
                        Cond::new(types::READY, true, "Ready", format!("view topic {} is Ready", vv.spec.output_topic))
                    }
                    Some(c) => Cond::new(
                        types::READY,
                        false,
                        "ViewTopicNotReady",
                        format!("view topic {}: {}: {}", vv.spec.output_topic, c.reason, c.message),
                    ),
                    None => Cond::new(types::READY, false, "ViewTopicNotReady", format!("creating view topic {}", vv.spec.output_topic)),
                }
            }
        };
        let current = vv.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
        let merged = conditions::merge(&current, &[ready], vv.metadata.generation, Timestamp::now());
        let observed = vv.status.as_ref().and_then(|s| s.observed_generation);
        if merged != current || observed != vv.metadata.generation {
            apply_status_fields(
                &ctx.client,
                vv.as_ref(),
                CONDITIONS_MANAGER,
                json!({
                    "observedGeneration": vv.metadata.generation,
                    "conditions": merged,
                }),
            )
            .await?;
        }
        Ok(Action::await_change())
    })
    .await
}

/// The last consumption sample of a version, for the rate estimate.
struct Sample {
    at: Instant,
    consumed: i64,
}

/// Every `lagPollInterval`: per KafkaCluster, the log offsets of all input
/// partitions and the committed offsets of all versions' groups, then the
/// lag figures of each version, written only when they change.
pub async fn poll_lag(ctx: Arc<Context>, shutdown: impl Future<Output = ()>) {
    let mut samples: HashMap<String, Sample> = HashMap::new();
    let poll = async {
        ctx.stores.listed().await;
        loop {
            tokio::time::sleep(poll_interval(&ctx)).await;
            let mut by_cluster: BTreeMap<(String, String), Vec<Arc<ViewVersion>>> = BTreeMap::new();
            for vv in ctx.stores.versions.state() {
                if vv.metadata.deletion_timestamp.is_none() {
                    by_cluster.entry((vv.namespace().unwrap_or_default(), vv.spec.cluster_ref.clone())).or_default().push(vv);
                }
            }
            for ((ns, cluster), versions) in by_cluster {
                if let Err(e) = poll_cluster(&ctx, &ns, &cluster, &versions, &mut samples).await {
                    warn!(namespace = %ns, cluster = %cluster, error = %e, "reading lag failed");
                }
            }
            samples.retain(|uid, _| ctx.stores.versions.state().iter().any(|v| v.metadata.uid.as_deref() == Some(uid)));
        }
    };
    tokio::select! {
        _ = poll => {},
        _ = shutdown => {},
    }
}

/// `lagPollInterval` when all is quiet; at most a second while a version is
/// on its way to a cutover, so the catch-up gate is judged promptly.
fn poll_interval(ctx: &Context) -> std::time::Duration {
    use crate::api::VersionPhase::*;
    let rolling = ctx
        .stores
        .versions
        .state()
        .iter()
        .any(|v| matches!(v.status.as_ref().and_then(|s| s.phase), Some(Pending | Replaying | CaughtUp | Verifying)));
    if rolling { ctx.settings.lag_poll_interval.min(std::time::Duration::from_secs(1)) } else { ctx.settings.lag_poll_interval }
}

async fn poll_cluster(
    ctx: &Context,
    ns: &str,
    cluster: &str,
    versions: &[Arc<ViewVersion>],
    samples: &mut HashMap<String, Sample>,
) -> Result<()> {
    let Some(handle) = ctx.clusters.get(ns, cluster) else { return Ok(()) };
    let mut topics: Vec<String> = versions.iter().flat_map(|v| v.spec.input_topics.iter().cloned()).collect();
    topics.sort();
    topics.dedup();
    let groups: Vec<String> = versions.iter().map(|v| v.spec.consumer_group.clone()).collect();
    let offsets = handle.kafka.log_offsets(&topics).await?;
    let committed = handle.kafka.committed(&groups).await?;
    let now = Timestamp::now();
    for vv in versions {
        let f = lag::figures(&vv.spec.input_topics, &offsets, committed.get(&vv.spec.consumer_group).unwrap_or(&BTreeMap::new()));
        let status = vv.status.clone().unwrap_or_default();
        let max_lag = ctx.stores.processors.get(&ObjectRef::new(&vv.spec.processor).within(ns)).map_or(0, |p| p.spec.rollout.max_lag);
        let target = status.replay_target.unwrap_or(f.available);
        let uid = vv.metadata.uid.clone().unwrap_or_default();
        let previous = samples.get(&uid);
        let rate = previous
            .map(|s| ((f.consumed - s.consumed).max(0) as f64 / s.at.elapsed().as_secs_f64().max(0.001)).round() as i64)
            .unwrap_or(0);
        let progressed = previous.is_some_and(|s| f.consumed > s.consumed);
        samples.insert(uid, Sample { at: Instant::now(), consumed: f.consumed });
        let within_since = if f.lag <= max_lag { status.lag_within_max_since.clone().or(Some(Time(now))) } else { None };
        let progressed_at = if progressed { Some(Time(now)) } else { status.progressed_at.clone() };
        let labels = VersionLabels { namespace: ns.to_string(), processor: vv.spec.processor.clone(), version: vv.spec.version.clone() };
        ctx.metrics.version_lag.get_or_create(&labels).set(f.lag);
        ctx.metrics.version_progress_permille.get_or_create(&labels).set((lag::progress(f.consumed, target) * 1000.0) as i64);

        let unchanged = status.lag == Some(f.lag)
            && status.lag_by_topic == f.lag_by_topic
            && status.replay_target == Some(target)
            && status.progress == Some(lag::progress(f.consumed, target))
            && status.records_per_second == Some(rate)
            && status.lag_within_max_since == within_since
            && status.progressed_at == progressed_at;
        if unchanged {
            continue;
        }
        let fields = json!({
            "lag": f.lag,
            "lagByTopic": f.lag_by_topic,
            "replayTarget": target,
            "progress": lag::progress(f.consumed, target),
            "recordsPerSecond": rate,
            "lagWithinMaxSince": within_since,
            "progressedAt": progressed_at,
        });
        if let Err(e) = apply_status_fields(&ctx.client, vv.as_ref(), LAG_MANAGER, fields).await {
            warn!(version = %vv.name_any(), error = %e, "writing lag failed");
        }
    }
    Ok(())
}

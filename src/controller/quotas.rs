//! Replay budgets (`spec.rollout.replayByteRate`): a Kafka consumer
//! byte-rate quota on the client id of each candidate replaying from offset
//! zero, and none on any other version.
//!
//! Level-triggered: what Kafka should have is computed from the caches
//! ([`desired`], pure), what it has is remembered from the last
//! DescribeClientQuotas or AlterClientQuotas, and only the difference is
//! sent. A Processor's reconcile syncs its cluster from memory (no Kafka
//! request unless something changed); the periodic sweep reads Kafka again,
//! so a quota left behind by a crash, or by a version deleted while the
//! operator was away, is removed.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use kube::ResourceExt;
use tracing::warn;

use super::Context;
use crate::{
    api::{Processor, VersionPhase, ViewVersion},
    resources::client_id,
};

/// (namespace, KafkaCluster name).
type ClusterKey = (String, String);

/// Client id -> bytes per second.
pub type Budgets = BTreeMap<String, i64>;

/// What the operator last saw Kafka hold, per cluster, for the client ids it
/// manages.
#[derive(Default)]
pub struct Quotas {
    known: Mutex<HashMap<ClusterKey, Budgets>>,
}

/// The client ids the operator manages in a namespace start with this (they
/// are its versions' consumer group names).
fn prefix(ns: &str) -> String {
    format!("kappa.{ns}.")
}

/// Whether a version replays from offset zero as a candidate: not yet
/// caught up, never served, not going.
fn replaying_from_zero(vv: &ViewVersion) -> bool {
    let st = vv.status.clone().unwrap_or_default();
    vv.metadata.deletion_timestamp.is_none()
        && matches!(st.phase, None | Some(VersionPhase::Pending | VersionPhase::Replaying))
        && st.caught_up_at.is_none()
        && st.promoted_at.is_none()
        && st.demoted_at.is_none()
}

/// The budgets Kafka should hold for the versions of KafkaCluster `cluster`
/// in `ns`. Pure.
pub fn desired(ns: &str, cluster: &str, processors: &[Arc<Processor>], versions: &[Arc<ViewVersion>]) -> Budgets {
    // (one pass over each: a namespace of thousands of Processors stays linear)
    let rates: HashMap<String, i64> = processors
        .iter()
        .filter(|p| super::in_ns(p.as_ref(), Some(ns)))
        .filter_map(|p| Some((p.name_any(), p.spec.rollout.replay_byte_rate?)))
        .collect();
    if rates.is_empty() {
        return Budgets::new();
    }
    versions
        .iter()
        .filter(|v| super::in_ns(v.as_ref(), Some(ns)) && v.spec.cluster_ref == cluster && replaying_from_zero(v))
        .filter_map(|v| Some((client_id(v).to_string(), *rates.get(&v.spec.processor)?)))
        .collect()
}

/// What to send so that Kafka holds `want`, given it holds `have`: a rate
/// to set, or `None` to remove. A client id of another KafkaCluster's
/// version (`elsewhere`) is not this sync's to remove. Pure.
pub fn changes(want: &Budgets, have: &Budgets, elsewhere: impl Fn(&str) -> bool) -> BTreeMap<String, Option<i64>> {
    let set = want.iter().filter(|(c, r)| have.get(*c) != Some(r)).map(|(c, r)| (c.clone(), Some(*r)));
    let remove = have.keys().filter(|c| !want.contains_key(*c) && !elsewhere(c)).map(|c| (c.clone(), None));
    set.chain(remove).collect()
}

impl Quotas {
    /// The budget Kafka holds for `client` as last seen.
    pub fn held(&self, ns: &str, cluster: &str, client: &str) -> Option<i64> {
        self.known.lock().expect("quotas lock").get(&(ns.to_string(), cluster.to_string()))?.get(client).copied()
    }

    /// Whether this cluster needs a look: a Processor asks for a budget, or
    /// one is known to be held, or Kafka was never read since the start.
    fn concerned(&self, ctx: &Context, ns: &str, cluster: &str) -> bool {
        let known = self.known.lock().expect("quotas lock").get(&(ns.to_string(), cluster.to_string())).map(|b| !b.is_empty());
        // (a look through the cache in place: most reconciles ask, and most
        // Processors have no budget)
        known != Some(false)
            || ctx
                .stores
                .processors
                .find(|p| p.spec.rollout.replay_byte_rate.is_some() && p.spec.cluster_ref == cluster && super::in_ns(p, Some(ns)))
                .is_some()
    }
}

/// Brings the quotas of one cluster to what the caches ask for. With
/// `reread`, reads what Kafka holds first; otherwise trusts memory (and
/// reads only when it has none). Nothing is decided on a failed read.
pub async fn sync(ctx: &Context, ns: &str, cluster: &str, reread: bool) {
    if !ctx.quotas.concerned(ctx, ns, cluster) {
        return;
    }
    let Some(handle) = ctx.clusters.get(ns, cluster) else { return };
    let key = (ns.to_string(), cluster.to_string());
    let versions = ctx.stores.versions.state();
    let want = desired(ns, cluster, &ctx.stores.processors.state(), &versions);
    let remembered = ctx.quotas.known.lock().expect("quotas lock").get(&key).cloned();
    let have = match remembered.filter(|_| !reread) {
        Some(h) => h,
        None => match handle.kafka.consumer_quotas(&prefix(ns)).await {
            Ok(h) => h,
            Err(e) => {
                warn!(namespace = ns, cluster, error = %e, "reading client quotas failed; replay budgets unchanged");
                return;
            }
        },
    };
    let elsewhere = |client: &str| {
        versions.iter().any(|v| super::in_ns(v.as_ref(), Some(ns)) && v.spec.cluster_ref != cluster && client_id(v) == client)
    };
    let changes = changes(&want, &have, elsewhere);
    let mut now = have;
    if !changes.is_empty() {
        match handle.kafka.set_consumer_quotas(&changes).await {
            Ok(results) => {
                for (client, change) in &changes {
                    match results.get(client) {
                        Some(Ok(())) => match change {
                            Some(rate) => now.insert(client.clone(), *rate),
                            None => now.remove(client),
                        },
                        Some(Err(e)) => {
                            warn!(namespace = ns, cluster, client, error = %e, "Kafka refused a replay budget");
                            continue;
                        }
                        None => continue,
                    };
                }
            }
            Err(e) => {
                warn!(namespace = ns, cluster, error = %e, "setting client quotas failed; read again at the next sweep");
                ctx.quotas.known.lock().expect("quotas lock").remove(&key);
                return;
            }
        }
    }
    ctx.quotas.known.lock().expect("quotas lock").insert(key, now);
}

/// The periodic sweep: every cluster with a client, read from Kafka again.
pub async fn sweep(ctx: &Context) {
    for (ns, cluster) in ctx.clusters.keys() {
        sync(ctx, &ns, &cluster, true).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ViewVersionStatus;

    fn processor(name: &str, rate: Option<i64>) -> Arc<Processor> {
        let mut p: Processor = serde_json::from_value(serde_json::json!({
            "apiVersion": "kappa.dev/v1alpha1", "kind": "Processor",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"inputs": ["orders"], "template": {"image": "i"}}
        }))
        .unwrap();
        p.spec.rollout.replay_byte_rate = rate;
        Arc::new(p)
    }

    fn version(processor: &str, id: &str, cluster: &str, status: ViewVersionStatus) -> Arc<ViewVersion> {
        use crate::resources::fixtures;
        let mut vv = fixtures::version(&fixtures::processor(), id, "img:1");
        vv.spec.processor = processor.into();
        vv.spec.cluster_ref = cluster.into();
        vv.spec.consumer_group = format!("kappa.ns.{processor}.{id}.x");
        vv.metadata.namespace = Some("ns".into());
        vv.status = Some(status);
        Arc::new(vv)
    }

    fn phase(p: VersionPhase) -> ViewVersionStatus {
        ViewVersionStatus { phase: Some(p), ..Default::default() }
    }

    #[test]
    fn only_candidates_replaying_from_zero_under_a_budget_are_throttled() {
        let at = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        let processors = [processor("a", Some(1_000_000)), processor("b", None)];
        let versions = [
            version("a", "v1", "default", phase(VersionPhase::Active)),
            version("a", "v2", "default", phase(VersionPhase::Replaying)),
            // Caught up, scaled to its final size: no budget any more.
            version("a", "v3", "default", ViewVersionStatus { caught_up_at: at.clone(), ..phase(VersionPhase::Replaying) }),
            // A standby revived for a rollback catches up unthrottled.
            version("a", "v4", "default", ViewVersionStatus { demoted_at: at, ..phase(VersionPhase::Replaying) }),
            version("a", "v5", "default", phase(VersionPhase::Failed)),
            version("a", "v6", "other", phase(VersionPhase::Replaying)),
            version("b", "v1", "default", phase(VersionPhase::Replaying)),
        ];
        let want = desired("ns", "default", &processors, &versions);
        assert_eq!(want, Budgets::from([("kappa.ns.a.v2.x".to_string(), 1_000_000)]));
    }

    #[test]
    fn only_the_difference_is_sent_and_another_clusters_budget_is_left_alone() {
        let want = Budgets::from([("c1".to_string(), 10), ("c2".to_string(), 20)]);
        let have = Budgets::from([("c1".to_string(), 10), ("c2".to_string(), 5), ("old".to_string(), 7), ("theirs".to_string(), 9)]);
        let changes = changes(&want, &have, |c| c == "theirs");
        assert_eq!(changes, BTreeMap::from([("c2".to_string(), Some(20)), ("old".to_string(), None)]));
        assert!(super::changes(&want, &want, |_| false).is_empty(), "nothing to send when Kafka holds what is wanted");
    }
}

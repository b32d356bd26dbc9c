//! ViewVersion: a version's view Topic and its input checks, its
//! finalizer, and nothing created once it or its Processor is going.
//!
//! Three writers share a ViewVersion's status, each with its own field
//! manager: this controller (conditions), the Processor's rollout (phase and
//! timestamps) and the progress monitor (lag, progress, the gate's answer).

use std::sync::Arc;

use futures::Stream;
use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{Controller, controller::Action, reflector::ObjectRef, watcher},
};
use serde_json::json;
use tracing::instrument;

use super::{Context, apply_status_fields, measured, release_finalizer, topic, watched_api};
use crate::{
    Result,
    api::{
        Cond, DeletionPolicy, Input, MANAGER, Processor, Topic, VersionPhase, ViewVersion, ViewVersionStatus, conditions,
        conditions::types, finalizers,
    },
    resources,
};

const KIND: &str = "ViewVersion";
const CONDITIONS_MANAGER: &str = "kappa-operator-viewversion";

pub fn run(
    ctrl: Controller<ViewVersion>,
    client: &Client,
    ctx: &Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> impl Stream<Item = super::Reconciled<ViewVersion>> {
    let versions = ctrl.store();
    let by_owner = versions.clone();
    let ns = ctx.settings.namespace.clone();
    ctrl.watches(watched_api::<Topic>(client, ns.as_deref()), watcher::Config::default(), move |t| woken_by(&t, &versions.state()))
        // A Processor deleted or being deleted lets its versions go.
        .watches(watched_api::<Processor>(client, ns.as_deref()), watcher::Config::default(), move |p| {
            let (ns, name) = (p.namespace(), p.name_any());
            by_owner
                .state()
                .into_iter()
                .filter(|v| super::in_ns(v.as_ref(), ns.as_deref()) && v.spec.processor == name && v.metadata.deletion_timestamp.is_some())
                .map(|v| ObjectRef::from_obj(v.as_ref()))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, super::error_policy::<ViewVersion>(KIND), ctx.clone())
}

/// The versions a Topic's change wakes, from one watch of Topics: the
/// version whose view it is, and the versions that read it (an input
/// appearing or turning Ready). Pure.
fn woken_by(t: &Topic, versions: &[Arc<ViewVersion>]) -> Vec<ObjectRef<ViewVersion>> {
    let (ns, name) = (t.metadata.namespace.as_deref(), t.name_any());
    let owners = resources::version_of(t).map(|v| ObjectRef::new(v).within(ns.unwrap_or_default()));
    let readers =
        versions.iter().filter(|v| super::in_ns(v.as_ref(), ns) && v.spec.inputs.contains(&name)).map(|v| ObjectRef::from_obj(v.as_ref()));
    owners.into_iter().chain(readers).collect()
}

/// The input Topics: from the Topic cache when it shows them all usable
/// (a steady reconcile reads nothing), otherwise from the API server, since
/// the watch that woke this reconcile may be ahead of that cache, and
/// waiting on a cache that lags would wait for an event already past.
pub async fn input_topics(ctx: &Context, ns: &str, inputs: &[String]) -> Result<Vec<(String, Option<Topic>)>> {
    let cached: Vec<(String, Option<Topic>)> =
        inputs.iter().map(|name| (name.clone(), ctx.stores.topics.get(&ObjectRef::new(name).within(ns)).map(|t| (*t).clone()))).collect();
    if inputs_problem(ns, &cached, "").is_none() {
        return Ok(cached);
    }
    let api: Api<Topic> = Api::namespaced(ctx.client.clone(), ns);
    let mut out = Vec::with_capacity(inputs.len());
    for name in inputs {
        out.push((name.clone(), api.get_opt(name).await?));
    }
    Ok(out)
}

/// Why the inputs are not usable yet, naming the Topic; None when all are
/// Ready. A Topic's reason, not its message: every reader of a shared input
/// says this, and a message that moves (the readers a deletion waits for,
/// a broker's error) would cost a status write per reader at each move.
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
                            format!("Topic {name} (an input of {reader}) is not Ready: {} (its status says why)", c.reason),
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
    // (from its own last status write while the cache is behind it)
    let vv = ctx.written.versions.newest(vv);
    measured(&ctx, KIND, super::key(vv.as_ref()), async {
        let ns = vv.namespace().unwrap_or_default();
        let api: Api<ViewVersion> = Api::namespaced(ctx.client.clone(), &ns);
        // A version being deleted asks the API server: a cache that has not
        // seen its Processor go would keep it waiting for an event already
        // past (the namespace controller deletes both at once).
        let owner = owner(&ctx, &vv, vv.metadata.deletion_timestamp.is_some()).await?;
        let owner_going = owner.as_ref().is_none_or(|p| p.metadata.deletion_timestamp.is_some());
        // A Processor deleted with deletionPolicy Delete retires its versions itself.
        let owner_retires = owner.as_ref().is_some_and(|p| p.finalizers().iter().any(|f| f == finalizers::PROCESSOR));
        if vv.metadata.deletion_timestamp.is_some() {
            // Its Processor decides while it lives (an active or retained
            // version is kept); once the Processor is gone or going, nothing
            // needs it.
            if owner_going && !owner_retires {
                release_finalizer(&api, &vv.name_any(), finalizers::VIEW_VERSION).await?;
            }
            return Ok(Action::await_change());
        }
        if owner_going {
            // Nothing is created for an object whose owner is being deleted.
            return Ok(Action::await_change());
        }
        // Versions made before the finalizer existed get it (one gone since
        // it was read gets nothing made for it).
        if !vv.finalizers().iter().any(|f| f == finalizers::VIEW_VERSION)
            && !super::hold(&api, vv.as_ref(), finalizers::VIEW_VERSION).await?
        {
            return Ok(Action::await_change());
        }
        let reader = format!("ViewVersion {}", vv.name_any());
        let inputs = input_topics(&ctx, &ns, &topic_inputs(&vv)).await?;
        let (ready, creating) = match inputs_problem(&ns, &inputs, &reader) {
            // Nothing is created until the inputs are there.
            Some((reason, message)) => (Cond::new(VIEW_READY, false, reason, message), false),
            None => view_topic(&ctx, &vv).await?,
        };
        let current: Vec<_> = vv.status.iter().flat_map(|s| s.conditions.iter()).filter(|c| c.type_ == VIEW_READY).cloned().collect();
        let merged = conditions::merge(&current, std::slice::from_ref(&ready), vv.metadata.generation, Timestamp::now());
        // (nothing is said in a namespace being deleted: its versions go)
        if merged != current
            && says_it(&ready, creating, !current.is_empty(), vv.status.as_ref().and_then(|s| s.phase))
            && !ctx.namespace_going(&ns).await
            && let Some(written) = apply_status_fields(&ctx.client, vv.as_ref(), CONDITIONS_MANAGER, json!({"conditions": merged})).await?
        {
            ctx.written.versions.record(written);
        }
        Ok(Action::await_change())
    })
    .await
}

/// Whether this controller says a version's ViewReady verdict, when it
/// differs from what its status says. (observedGeneration is the rollout's
/// to write, with the phase: until a version has one, it is not observed.)
/// A version that has said nothing yet is not told that its view topic is
/// being created: the Topic's verdict, a moment later, wakes it, and one
/// write tells the outcome. Nor, if it has no phase yet either, that its
/// view is Ready: its Processor, woken by the same verdict, says that with
/// the version's first phase (see [`unsaid_view_ready`]), one write, not
/// two. What stops it is said at once. Pure.
fn says_it(verdict: &Cond, creating: bool, said_before: bool, phase: Option<VersionPhase>) -> bool {
    said_before || !(creating || verdict.status && phase.is_none())
}

/// A version's conditions from its phase (which the Processor's rollout
/// sets, and writes with them): Ready once its view has caught up
/// (CaughtUp, Active, Standby), Reconciling while it gets there, Stalled
/// once Failed. Whether its view topic and inputs are there is ViewReady,
/// this controller's own. Pure.
pub(super) fn version_conditions(status: &ViewVersionStatus) -> Vec<Cond> {
    let phase = status.phase.unwrap_or_default();
    let lag = status.lag.map_or(String::new(), |l| format!(" (lag {l})"));
    let name = format!("{phase:?}");
    let (ready, reconciling, stalled) = match phase {
        // The first version is active from the start, while it replays.
        VersionPhase::Active if status.caught_up_at.is_none() => {
            (Cond::new(types::READY, false, "Replaying", format!("active from the start; replaying from offset zero{lag}")), true, false)
        }
        VersionPhase::Pending => (Cond::new(types::READY, false, name.clone(), "waiting for its view topic and inputs"), true, false),
        VersionPhase::Replaying => {
            let message = status.message.clone().unwrap_or_else(|| format!("replaying from offset zero{lag}"));
            (Cond::new(types::READY, false, name.clone(), message), true, false)
        }
        VersionPhase::Verifying => (Cond::new(types::READY, false, name.clone(), "the verification Job compares its view"), true, false),
        VersionPhase::CaughtUp => (Cond::new(types::READY, true, name.clone(), "its view has caught up with the inputs"), false, false),
        VersionPhase::Active => (Cond::new(types::READY, true, name.clone(), "serves readers"), false, false),
        VersionPhase::Standby => (Cond::new(types::READY, true, name.clone(), "kept for rollback (view and offsets kept)"), false, false),
        VersionPhase::Retired => (Cond::new(types::READY, false, name.clone(), "being retired"), true, false),
        VersionPhase::Failed => {
            (Cond::new(types::READY, false, name.clone(), status.message.clone().unwrap_or_else(|| "failed".into())), false, true)
        }
    };
    let reconciling = if reconciling {
        Cond::new(types::RECONCILING, true, ready.reason.clone(), ready.message.clone())
    } else {
        Cond::new(types::RECONCILING, false, name.clone(), "")
    };
    let stalled = if stalled {
        Cond::new(types::STALLED, true, name, ready.message.clone())
    } else {
        Cond::new(types::STALLED, false, "NotStalled", "")
    };
    vec![ready, reconciling, stalled]
}

/// The view topic exists and the inputs are Ready.
pub const VIEW_READY: &str = "ViewReady";

/// The version's conditions for a phase, written with the phase itself so
/// that no reader sees a phase with the conditions of the one before.
/// With them, a ViewReady the status does not say yet (see
/// [`unsaid_view_ready`]), else the one it says: an apply that once said
/// ViewReady keeps saying it, as server-side apply would otherwise remove
/// the fields of it that only this apply owned (its status, reason and
/// transition time, where this controller's own verdict differed), leaving
/// a condition the API server refuses, and every later write with it.
pub(super) fn conditions_for(vv: &ViewVersion, status: &ViewVersionStatus, unsaid: Option<&Cond>) -> Vec<conditions::Condition> {
    let current = vv.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    let said =
        || conditions::find(&current, VIEW_READY).map(|c| Cond::new(VIEW_READY, c.status == "True", c.reason.clone(), c.message.clone()));
    let mut conds = version_conditions(status);
    conds.extend(unsaid.cloned().or_else(said));
    conditions::merge(&current, &conds, vv.metadata.generation, Timestamp::now())
}

/// The Processor that owns the version, if it exists: from the cache, and
/// when the cache does not have it (or `fresh` asks), from the API server
/// (a cache that lags must not let a version go, nor keep one waiting).
async fn owner(ctx: &Context, vv: &ViewVersion, fresh: bool) -> Result<Option<Arc<Processor>>> {
    let ns = vv.namespace().unwrap_or_default();
    let uid = vv.owner_references().iter().find(|o| o.kind == "Processor").map(|o| o.uid.clone());
    let ours = |p: &Processor| p.metadata.uid == uid;
    if !fresh && let Some(p) = ctx.stores.processors.get(&ObjectRef::new(&vv.spec.processor).within(&ns)).filter(|p| ours(p)) {
        return Ok(Some(p));
    }
    let read = Api::<Processor>::namespaced(ctx.client.clone(), &ns).get_opt(&vv.spec.processor).await?;
    Ok(read.filter(ours).map(Arc::new))
}

/// Applies the version's view Topic (unless it is what we would apply) and
/// says whether it is Ready, and whether it is being created (just now, or
/// its Topic has no verdict from Kafka yet). A view Topic still being
/// deleted (a version of the same id was retired) is waited for, not
/// written to.
async fn view_topic(ctx: &Context, vv: &ViewVersion) -> Result<(Cond, bool)> {
    let ns = vv.namespace().unwrap_or_default();
    let topics: Api<Topic> = Api::namespaced(ctx.client.clone(), &ns);
    let existing = topics.get_opt(&vv.name_any()).await?;
    if existing.as_ref().is_some_and(|t| t.metadata.deletion_timestamp.is_some()) {
        let message = format!("view topic {} of an earlier incarnation is still being deleted", vv.spec.output_topic);
        return Ok((Cond::new(VIEW_READY, false, "ViewTopicNotReady", message), false));
    }
    // Retiring switches the policy to Delete; never switch it back.
    let policy = existing.as_ref().map_or(DeletionPolicy::Retain, |t| t.spec.deletion_policy);
    let desired = resources::view_topic(vv, policy);
    if existing.is_none() && super::namespace_terminating(&ctx.client, &ns).await {
        // (its Topics are going with it; a create would be refused)
        return Ok((Cond::new(VIEW_READY, false, "NamespaceTerminating", format!("namespace {ns} is being deleted")), false));
    }
    if existing.as_ref().is_none_or(|t| t.spec != desired.spec) {
        topics.patch(&vv.name_any(), &PatchParams::apply(MANAGER).force(), &Patch::Apply(&desired)).await?;
    }
    Ok(view_verdict(existing.as_ref(), &vv.spec.output_topic))
}

/// A version's inputs that are Topics (an upstream's view is its version's
/// own topic: it exists).
fn topic_inputs(vv: &ViewVersion) -> Vec<String> {
    vv.spec.inputs.iter().filter(|i| matches!(Input::parse(i), Input::Topic(_))).cloned().collect()
}

/// A version's ViewReady when its status does not say it yet and it holds
/// (its inputs and its view topic are Ready): the Processor's rollout says
/// it with the version's first phase, in one write (this controller leaves
/// it unsaid, see [`reconcile`]). None when the status says it, or when it
/// does not hold (then this controller says why). The view Topic comes from
/// its cache, or from the API server when that cache may lag the event that
/// woke the reconcile (the Processor's own view Topic wakes it).
pub async fn unsaid_view_ready(ctx: &Context, vv: &ViewVersion) -> Result<Option<Cond>> {
    let said = vv.status.as_ref().is_some_and(|s| conditions::find(&s.conditions, VIEW_READY).is_some());
    if said || vv.metadata.deletion_timestamp.is_some() {
        return Ok(None);
    }
    let ns = vv.namespace().unwrap_or_default();
    if inputs_problem(&ns, &input_topics(ctx, &ns, &topic_inputs(vv)).await?, "").is_some() {
        return Ok(None);
    }
    let verdict = |t: Option<&Topic>| {
        let (ready, _) = view_verdict(t.filter(|t| t.metadata.deletion_timestamp.is_none()), &vv.spec.output_topic);
        ready.status.then_some(ready)
    };
    let cached = ctx.stores.topics.get(&ObjectRef::new(&vv.name_any()).within(&ns));
    if let Some(ready) = verdict(cached.as_deref()) {
        return Ok(Some(ready));
    }
    if ctx.stores.seen.caught_up_with_wakes(&Topic::kind(&())) {
        return Ok(None);
    }
    let fresh = Api::<Topic>::namespaced(ctx.client.clone(), &ns).get_opt(&vv.name_any()).await?;
    Ok(verdict(fresh.as_ref()))
}

/// ViewReady from the view Topic's own Ready, and whether the topic is
/// being created: not there yet, or no verdict from Kafka yet (one message
/// for both, so that a version that said it once need not say it again).
/// Pure.
fn view_verdict(topic: Option<&Topic>, view: &str) -> (Cond, bool) {
    match topic.and_then(|t| conditions::find(&t.status.as_ref()?.conditions, types::READY)) {
        Some(c) if c.status == "True" => (Cond::new(VIEW_READY, true, "Ready", format!("view topic {view} is Ready")), false),
        Some(c) if c.reason != topic::CREATING => {
            (Cond::new(VIEW_READY, false, "ViewTopicNotReady", format!("view topic {view}: {}: {}", c.reason, c.message)), false)
        }
        _ => (Cond::new(VIEW_READY, false, "ViewTopicNotReady", format!("creating view topic {view}")), true),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;

    fn read(phase: VersionPhase, caught_up: bool) -> (bool, bool, bool, String) {
        let status = ViewVersionStatus {
            phase: Some(phase),
            caught_up_at: caught_up.then_some(Time(Timestamp::UNIX_EPOCH)),
            lag: Some(7),
            ..Default::default()
        };
        let conds = version_conditions(&status);
        let get = |t: &str| conds.iter().find(|c| c.type_ == t).unwrap().clone();
        let ready = get(types::READY);
        (ready.status, get(types::RECONCILING).status, get(types::STALLED).status, ready.reason)
    }

    #[test]
    fn a_new_versions_ready_view_is_said_with_its_first_phase_and_a_problem_at_once() {
        let ready = Cond::new(VIEW_READY, true, "Ready", "view topic t is Ready");
        let missing = Cond::new(VIEW_READY, false, "InputMissing", "Topic i does not exist");
        let creating = Cond::new(VIEW_READY, false, "ViewTopicNotReady", "creating view topic t");
        // Nothing said yet, no phase: Ready waits for the phase, creating for Kafka.
        assert!(!says_it(&ready, false, false, None));
        assert!(!says_it(&creating, true, false, None));
        assert!(says_it(&missing, false, false, None));
        // With a phase (written before this rule, or a phase without it), or said before: any change.
        assert!(says_it(&ready, false, false, Some(VersionPhase::Replaying)));
        assert!(says_it(&ready, false, true, None));
        assert!(says_it(&creating, true, true, Some(VersionPhase::Active)));
    }

    #[test]
    fn a_phase_write_keeps_saying_the_view_ready_it_said() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let said = conditions::merge(&[], &[Cond::new(VIEW_READY, true, "Ready", "view topic t is Ready")], Some(1), t0);
        let spec = json!({"processor": "p", "version": "v1", "clusterRef": "default", "inputs": ["i"], "inputTopics": ["i"],
            "outputTopic": "t", "consumerGroup": "g", "template": {"image": "img"}, "view": {}});
        let mut vv = ViewVersion::new("p-v1", serde_json::from_value(spec).unwrap());
        vv.metadata.generation = Some(1);
        vv.status = Some(ViewVersionStatus { phase: Some(VersionPhase::Active), conditions: said.clone(), ..Default::default() });
        let next = ViewVersionStatus { phase: Some(VersionPhase::Standby), ..Default::default() };
        // Nothing unsaid: the ViewReady the status says goes with the phase, as it is.
        let conds = conditions_for(&vv, &next, None);
        assert_eq!(conditions::find(&conds, VIEW_READY), said.first());
        assert!(conditions::find(&conds, types::READY).is_some_and(|c| c.reason == "Standby"));
        // An unsaid verdict replaces it.
        let unsaid = Cond::new(VIEW_READY, false, "ViewTopicNotReady", "creating view topic t");
        let conds = conditions_for(&vv, &next, Some(&unsaid));
        assert!(conditions::find(&conds, VIEW_READY).is_some_and(|c| c.status == "False" && c.reason == "ViewTopicNotReady"));
    }

    #[test]
    fn a_view_topic_being_created_is_one_state_until_kafka_answers() {
        let bare = || -> Topic {
            serde_json::from_value(
                json!({"metadata": {"name": "v"}, "spec": {"clusterRef": "default", "partitions": 1, "replicationFactor": 1}}),
            )
            .unwrap()
        };
        let with_ready = |status: &str, reason: &str| {
            let mut t = bare();
            let cond = conditions::Condition {
                type_: types::READY.into(),
                status: status.into(),
                reason: reason.into(),
                message: "m".into(),
                last_transition_time: Time(Timestamp::UNIX_EPOCH),
                observed_generation: None,
            };
            t.status = Some(crate::api::TopicStatus { conditions: vec![cond], ..Default::default() });
            t
        };
        let (missing, creating) = view_verdict(None, "ns.p.v1");
        assert!(creating && !missing.status);
        let (no_verdict, creating) = view_verdict(Some(&bare()), "ns.p.v1");
        assert!(creating);
        let (metadata_behind, creating) = view_verdict(Some(&with_ready("False", topic::CREATING)), "ns.p.v1");
        assert!(creating);
        assert_eq!((&missing, &no_verdict), (&metadata_behind, &metadata_behind), "one message while it is created");
        let (refused, creating) = view_verdict(Some(&with_ready("False", "KafkaRejected")), "ns.p.v1");
        assert!(!creating && !refused.status && refused.message.contains("KafkaRejected"), "{refused:?}");
        let (ready, creating) = view_verdict(Some(&with_ready("True", "Ready")), "ns.p.v1");
        assert!(!creating && ready.status);
    }

    #[test]
    fn ready_means_a_caught_up_view_and_failed_is_stalled() {
        use VersionPhase::*;
        assert_eq!(read(Pending, false), (false, true, false, "Pending".into()));
        assert_eq!(read(Replaying, false), (false, true, false, "Replaying".into()));
        assert_eq!(read(Active, false), (false, true, false, "Replaying".into()), "the first version while it replays");
        assert_eq!(read(Verifying, true), (false, true, false, "Verifying".into()));
        assert_eq!(read(CaughtUp, true), (true, false, false, "CaughtUp".into()));
        assert_eq!(read(Active, true), (true, false, false, "Active".into()));
        assert_eq!(read(Standby, true), (true, false, false, "Standby".into()));
        assert_eq!(read(Retired, true), (false, true, false, "Retired".into()));
        assert_eq!(read(Failed, false), (false, false, true, "Failed".into()));
    }

    #[test]
    fn a_topic_wakes_the_version_it_is_the_view_of_and_the_versions_reading_it() {
        use crate::resources::fixtures;
        let p = fixtures::processor();
        let (v1, mut v2, mut elsewhere) =
            (fixtures::version(&p, "v1", "i:1"), fixtures::version(&p, "v2", "i:2"), fixtures::version(&p, "v3", "i:3"));
        v2.spec.inputs = vec![v1.name_any()];
        elsewhere.spec.inputs = v2.spec.inputs.clone();
        elsewhere.metadata.namespace = Some("other".into());
        let versions = [v1.clone(), v2.clone(), elsewhere].map(Arc::new);
        let view = resources::view_topic(&v1, DeletionPolicy::Retain);
        assert_eq!(
            woken_by(&view, &versions),
            [ObjectRef::from_obj(&v1), ObjectRef::from_obj(&v2)],
            "its owner, then its reader in its namespace"
        );
        let mut not_ours = view.clone();
        not_ours.metadata.owner_references.as_mut().unwrap()[0].api_version = "other.dev/v1".into();
        assert_eq!(woken_by(&not_ours, &versions), [ObjectRef::from_obj(&v2)], "an owner of another group's kind is not a version");
    }
}

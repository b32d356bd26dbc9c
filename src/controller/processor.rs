//! Processor: observe, plan (the pure rollout planner), act, write status.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use futures::Stream;
use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        batch::v1::Job,
        core::v1::{ConfigMap, Pod, Secret, Service},
    },
    jiff::Timestamp,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
    runtime::{Controller, WatchStreamExt, controller::Action as Requeue, reflector::ObjectRef, reflector::Store, watcher},
};
use serde_json::json;
use tracing::{info, instrument};

use super::{
    Context, apply_status, apply_status_fields,
    clusters::ClusterHandle,
    fault, kafka_cluster, measured,
    owned::{self, waking, wrote},
    progress, quotas, release_finalizer,
    view_version::{self, input_topics, inputs_problem},
    watched_api,
};
use crate::{
    Result,
    api::{
        CascadeMode, Cond, DeletionPolicy, KafkaCluster, MANAGER, Processor, ProcessorStatus, ReplayStatus, RollbackTarget, Topic,
        UpstreamStatus, VersionPhase, ViewVersion, ViewVersionSpec, ViewVersionStatus, annotations, conditions, finalizers, labels,
    },
    kafka::{KafkaError, Removal, ResponseError, lag},
    naming, pipeline, resources,
    rollout::{self, Action, Broken, Gate, Inputs, Observation, Truncation, Verification},
};

const KIND: &str = "Processor";
const SPEC_HASH: &str = "kappa.dev/spec-hash";

/// Processors whose `kappa.dev/processor` label value is `label`.
fn by_label(store: &Store<Processor>, ns: Option<String>, label: Option<&String>) -> Vec<ObjectRef<Processor>> {
    let (Some(ns), Some(label)) = (ns, label) else { return vec![] };
    // Every owned object's event lands here: a look-up, not a scan of
    // every Processor, unless the label may be a shortened long name.
    if let Some(name) = naming::name_labelled(label) {
        return store.get(&ObjectRef::new(name).within(&ns)).map(|p| ObjectRef::from_obj(p.as_ref())).into_iter().collect();
    }
    store
        .state()
        .into_iter()
        .filter(|p| super::in_ns(p.as_ref(), Some(&ns)) && naming::label_value(&p.name_any()) == *label)
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}

pub fn run(
    ctrl: Controller<Processor>,
    client: &Client,
    ctx: &Arc<Context>,
    owned: super::owned::Streams,
    woken: impl Stream<Item = ObjectRef<Processor>> + Send + 'static,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> impl Stream<Item = super::Reconciled<Processor>> {
    let ns = ctx.settings.namespace.clone();
    let store = ctrl.store();
    let (s1, s2, s3, s4, s5, s6, s7, s8, s9) =
        (store.clone(), store.clone(), store.clone(), store.clone(), store.clone(), store.clone(), store.clone(), store.clone(), store);
    // What the operator made for a Processor, from the caches the
    // reconciles read (a change to one, by anyone, wakes its Processor).
    // (the ViewVersion watches record what they deliver: a reconcile reads
    // versions from the cache once it holds every event that woke one)
    let seen = &ctx.stores.seen;
    let vv_kind = ViewVersion::kind(&()).into_owned();
    let metadata = watched_api::<kube::core::PartialObjectMeta<ViewVersion>>(client, ns.as_deref());
    let owned_versions = waking(watcher(metadata, watcher::Config::default()).default_backoff(), &vv_kind, seen);
    let versions = watched_api::<ViewVersion>(client, ns.as_deref());
    let all_versions = waking(watcher(versions, watcher::Config::default()).default_backoff(), &vv_kind, seen);
    // (and so does the Topic watch: see [`view_version::unsaid_view_ready`])
    let topics =
        waking(watcher(watched_api::<Topic>(client, ns.as_deref()), watcher::Config::default()).default_backoff(), &Topic::kind(&()), seen);
    ctrl.owns_stream(owned_versions.touched_objects())
        .watches_stream(owned.deployments, move |d| by_label(&s1, d.namespace(), d.labels().get(labels::PROCESSOR)))
        .watches_stream(owned.pods, move |p| by_label(&s2, p.namespace(), p.labels().get(labels::PROCESSOR)))
        .watches_stream(owned.jobs, move |j| by_label(&s3, j.namespace(), j.labels().get(labels::PROCESSOR)))
        .watches_stream(owned.config_maps, move |c| by_label(&s7, c.namespace(), c.labels().get(labels::PROCESSOR)))
        .watches_stream(owned.services, move |v| by_label(&s8, v.namespace(), v.labels().get(labels::PROCESSOR)))
        .watches_stream(topics.touched_objects(), move |t| {
            let (ns, name) = (t.namespace(), t.name_any());
            // (a version's view Topic is an input of the Processors downstream)
            let viewed = t.labels().get(labels::PROCESSOR).cloned();
            let readers = s4.state().into_iter().filter(|p| {
                (p.spec.inputs.contains(&name) || p.spec.upstreams().any(|u| Some(naming::label_value(u)) == viewed))
                    && super::in_ns(p.as_ref(), ns.as_deref())
            });
            // ... and of its own Processor, which says that it is Ready with
            // the version's first phase.
            let own = if resources::version_of(&t).is_some() { by_label(&s9, ns.clone(), viewed.as_ref()) } else { vec![] };
            readers.map(|p| ObjectRef::from_obj(p.as_ref())).chain(own).collect::<Vec<_>>()
        })
        .watches(watched_api::<KafkaCluster>(client, ns.as_deref()), watcher::Config::default(), move |kc| {
            let (ns, name) = (kc.namespace(), kc.name_any());
            s5.state()
                .into_iter()
                .filter(|p| super::in_ns(p.as_ref(), ns.as_deref()) && p.spec.cluster_ref == name)
                .map(|p| ObjectRef::from_obj(p.as_ref()))
                .collect::<Vec<_>>()
        })
        // Pipelines: an upstream's active version changed (a downstream
        // builds a version on it), or exists now.
        .watches(watched_api::<Processor>(client, ns.as_deref()), watcher::Config::default(), move |up| {
            let (ns, name) = (up.namespace(), up.name_any());
            s6.state()
                .into_iter()
                .filter(|p| super::in_ns(p.as_ref(), ns.as_deref()) && p.spec.upstreams().any(|u| u == name))
                .map(|p| ObjectRef::from_obj(p.as_ref()))
                .collect::<Vec<_>>()
        })
        // ... and a downstream version that read an upstream's view went:
        // the upstream may retire that version now.
        .watches_stream(all_versions.touched_objects(), |v| {
            let ns = v.namespace().unwrap_or_default();
            v.spec.upstreams.keys().map(|up| ObjectRef::new(up).within(&ns)).collect::<Vec<_>>()
        })
        // The progress monitor: a version's catch-up gate changed its answer.
        .reconcile_on(woken)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, super::error_policy::<Processor>(KIND), ctx.clone())
}

#[instrument(skip_all, fields(namespace = p.namespace(), name = p.name_any()))]
async fn reconcile(p: Arc<Processor>, ctx: Arc<Context>) -> Result<Requeue> {
    // (from its own last status write while the cache is behind it)
    let p = ctx.written.processors.newest(p);
    let result = measured(&ctx, KIND, super::key(p.as_ref()), apply(p.clone(), ctx.clone())).await;
    if let Some(message) = result.as_ref().err().and_then(|e| e.forbidden()) {
        // Say which permission is missing where the user looks.
        let message = format!("the operator lacks a permission: {message}; see the chart's RBAC");
        let _ = write_status(&p, &ctx, status_without_plan(&p, "PermissionDenied", &message)).await;
    }
    result
}

/// Everything observed about one Processor in the cluster.
struct World {
    /// Its ViewVersions, including those being deleted (a finalizer holds
    /// the ones still needed).
    versions: Vec<Arc<ViewVersion>>,
    deployments: BTreeMap<String, Deployment>,
    pods: Vec<Pod>,
    jobs: BTreeMap<String, Job>,
    /// By version: a ViewReady its status does not say yet (see
    /// [`view_version::unsaid_view_ready`]), said with its next phase.
    unsaid: BTreeMap<String, Cond>,
}

async fn observe(p: &Processor, ctx: &Context) -> Result<World> {
    let ns = p.namespace().unwrap_or_default();
    let lp = ListParams::default().labels(&format!("{}={}", labels::PROCESSOR, naming::label_value(&p.name_any())));
    let name = p.name_any();
    let ours = |v: &ViewVersion| v.spec.processor == name && v.owner_references().iter().any(|o| Some(&o.uid) == p.metadata.uid.as_ref());
    // The ViewVersions come from their cache once it holds every event that
    // woke a reconcile (they come from other watches: a stale phase or lag
    // mirrored into the status would wait for an event already past) and
    // this Processor's own last writes; else from the API server.
    let kind = ViewVersion::kind(&());
    let met = ctx.expectations.met(&owned::key(&ns, &name), &ctx.stores.seen);
    let versions: Vec<Arc<ViewVersion>> = if met && ctx.stores.seen.caught_up_with_wakes(&kind) {
        // (its own name first: it tells most versions apart without comparing the namespace)
        ctx.stores.versions.state().into_iter().filter(|v| ours(v) && super::in_ns(v.as_ref(), Some(&ns))).collect()
    } else {
        let fresh = Api::<ViewVersion>::namespaced(ctx.client.clone(), &ns).list(&lp).await?.items;
        fresh.into_iter().filter(|v| ours(v)).map(Arc::new).collect()
    };
    let mut unsaid = BTreeMap::new();
    for vv in &versions {
        if let Some(ready) = view_version::unsaid_view_ready(ctx, vv).await? {
            unsaid.insert(vv.spec.version.clone(), ready);
        }
    }
    let by_version = |l: &BTreeMap<String, String>| l.get(labels::VERSION).cloned().unwrap_or_default();
    if met {
        // What it made: from the caches whose watches wake it (see [`owned`]).
        let label = naming::label_value(&p.name_any());
        let owned = &ctx.stores.owned;
        return Ok(World {
            versions,
            deployments: owned::of(&owned.deployments, &ns, &label).into_iter().map(|d| (by_version(d.labels()), (*d).clone())).collect(),
            pods: owned::of(&owned.pods, &ns, &label).into_iter().map(|p| (*p).clone()).collect(),
            jobs: owned::of(&owned.jobs, &ns, &label).into_iter().map(|j| (by_version(j.labels()), (*j).clone())).collect(),
            unsaid,
        });
    }
    // The caches have not shown this Processor's last writes yet: a create
    // (or a scale) decided on them could be done twice.
    let deployments = Api::<Deployment>::namespaced(ctx.client.clone(), &ns)
        .list(&lp)
        .await?
        .items
        .into_iter()
        .map(|d| (by_version(d.labels()), d))
        .collect();
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), &ns).list(&lp).await?.items;
    let jobs =
        Api::<Job>::namespaced(ctx.client.clone(), &ns).list(&lp).await?.items.into_iter().map(|j| (by_version(j.labels()), j)).collect();
    Ok(World { versions, deployments, pods, jobs, unsaid })
}

const IMAGE_ERRORS: [&str; 7] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// Why a version's pods cannot run, if they cannot, and when a crash-looping
/// container last stopped.
fn broken(pods: &[&Pod]) -> Option<Broken> {
    for pod in pods {
        for cs in pod.status.iter().flat_map(|s| s.container_statuses.iter().flatten()) {
            let waiting = cs.state.as_ref().and_then(|s| s.waiting.as_ref());
            let reason = waiting.and_then(|w| w.reason.clone()).unwrap_or_default();
            let message = waiting.and_then(|w| w.message.clone()).unwrap_or_default();
            if IMAGE_ERRORS.contains(&reason.as_str()) {
                let why = format!("pod {}: container {} cannot start: {reason}: {message}", pod.name_any(), cs.name);
                return Some(Broken { why, at: None });
            }
            if cs.restart_count >= 3 && (reason == "CrashLoopBackOff" || cs.state.as_ref().is_some_and(|s| s.terminated.is_some())) {
                let last = cs.last_state.as_ref().and_then(|s| s.terminated.as_ref());
                let stopped = cs.state.as_ref().and_then(|s| s.terminated.as_ref()).or(last);
                return Some(Broken {
                    why: format!(
                        "pod {}: container {} is crash-looping ({} restarts, last exit code {})",
                        pod.name_any(),
                        cs.name,
                        cs.restart_count,
                        last.map_or("unknown".into(), |t| t.exit_code.to_string())
                    ),
                    at: Some(stopped.and_then(|t| t.finished_at.clone()).map_or_else(Timestamp::now, |t| t.0)),
                });
            }
        }
    }
    None
}

fn verification(job: &Job) -> Verification {
    let st = job.status.clone().unwrap_or_default();
    if st.succeeded.unwrap_or(0) > 0 {
        return Verification::Succeeded;
    }
    let failed = st.conditions.iter().flatten().find(|c| c.type_ == "Failed" && c.status == "True");
    match failed {
        Some(c) => Verification::Failed(format!(
            "Job {}: {}",
            job.name_any(),
            c.message.clone().unwrap_or_else(|| c.reason.clone().unwrap_or_default())
        )),
        None if st.failed.unwrap_or(0) > 0 => Verification::Failed(format!("Job {} failed", job.name_any())),
        None => Verification::Running,
    }
}

/// The promotion that made a ViewVersion active (its commit record).
fn promotion(vv: &ViewVersion) -> Option<u64> {
    vv.annotations().get(annotations::PROMOTION).and_then(|p| p.parse().ok())
}

fn observe_version(vv: &ViewVersion, w: &World, gate: Gate) -> rollout::Version {
    let st = vv.status.clone().unwrap_or_default();
    let id = &vv.spec.version;
    let d = w.deployments.get(id);
    let pods: Vec<&Pod> = w.pods.iter().filter(|p| p.labels().get(labels::VERSION) == Some(id)).collect();
    rollout::Version {
        id: id.clone(),
        phase: st.phase.unwrap_or_default(),
        // (a version written before ViewReady existed said it with Ready)
        view_ready: match conditions::find(&st.conditions, super::view_version::VIEW_READY) {
            Some(c) => c.status == "True",
            None => w.unsaid.contains_key(id) || conditions::is_true(&st.conditions, conditions::types::READY),
        },
        promotion: promotion(vv),
        deleting: vv.metadata.deletion_timestamp.is_some(),
        gate,
        caught_up_at: st.caught_up_at.map(|t| t.0),
        started_at: st.started_at.map(|t| t.0).or(vv.metadata.creation_timestamp.clone().map(|t| t.0)),
        promoted_at: st.promoted_at.map(|t| t.0),
        demoted_at: st.demoted_at.map(|t| t.0),
        replicas: d.and_then(|d| d.spec.as_ref()?.replicas),
        ready_replicas: d.and_then(|d| d.status.as_ref()?.ready_replicas).unwrap_or(0),
        broken: broken(&pods),
        failure: (st.phase == Some(VersionPhase::Failed)).then(|| st.message.clone()).flatten(),
        verification: w.jobs.get(id).map(verification),
    }
}

/// Inputs as the planner needs them: waiting, or ready with the partitions
/// that lost history (compacted topics are fine: compaction keeps every key).
fn inputs(p: &Processor, topics: &[(String, Option<Topic>)]) -> Inputs {
    let ns = p.namespace().unwrap_or_default();
    if let Some((_, message)) = inputs_problem(&ns, topics, &format!("Processor {}", p.name_any())) {
        return Inputs::Waiting(message);
    }
    let mut truncated = Vec::new();
    for t in topics.iter().filter_map(|(_, t)| t.as_ref()) {
        let st = t.status.clone().unwrap_or_default();
        let compacted = st.config.get("cleanup.policy").or(t.spec.config.get("cleanup.policy")).is_some_and(|c| c.contains("compact"));
        if !compacted {
            truncated.extend(st.truncated_partitions.iter().map(|tp| Truncation {
                topic: t.kafka_name().to_owned(),
                partition: tp.partition,
                first_offset: tp.log_start_offset,
            }));
        }
    }
    Inputs::Ready { truncated }
}

/// Kafka for the planner: down while the KafkaCluster is not Ready or the
/// progress monitor cannot read it; up since the later of the two said so.
fn kafka_state(kc: &KafkaCluster, monitor: Option<rollout::Kafka>) -> rollout::Kafka {
    let ready = kc.status.as_ref().and_then(|s| conditions::find(&s.conditions, conditions::types::READY).cloned());
    match (ready, monitor) {
        (Some(c), _) if c.status != "True" => rollout::Kafka::Down(format!("KafkaCluster {}: {}: {}", kc.name_any(), c.reason, c.message)),
        (_, Some(down @ rollout::Kafka::Down(_))) => down,
        (c, Some(rollout::Kafka::Up { since })) => rollout::Kafka::Up { since: c.map_or(since, |c| since.max(c.last_transition_time.0)) },
        (Some(c), None) => rollout::Kafka::Up { since: c.last_transition_time.0 },
        (None, None) => rollout::Kafka::Down(format!("KafkaCluster {} has not been checked yet", kc.name_any())),
    }
}

/// Why the existing ViewVersion of a pinned `spec.version` is not what the
/// spec computes, if it is not (admission refuses such a change; this
/// catches what admission could not see).
fn pinned_conflict(p: &Processor, existing: Option<&ViewVersion>, upstreams: &BTreeMap<String, String>) -> Option<String> {
    let pinned = p.spec.version.as_ref()?;
    let vv = existing?;
    let s = &vv.spec;
    if &s.upstreams != upstreams {
        let moved: Vec<String> =
            upstreams.iter().filter(|(up, v)| s.upstreams.get(*up) != Some(*v)).map(|(up, v)| format!("{up} is at version {v}")).collect();
        return Some(format!(
            "spec.version is pinned to \"{pinned}\", but ViewVersion {} of that version reads other upstream versions ({}): \
             give spec.version a new value to replay on them, or remove it",
            vv.name_any(),
            moved.join(", ")
        ));
    }
    let same_code = s.template == p.spec.template.code();
    let mut inputs = p.spec.inputs.clone();
    let mut theirs = s.inputs.clone();
    inputs.sort();
    theirs.sort();
    (!(same_code && inputs == theirs && s.view == p.spec.view)).then(|| {
        format!(
            "spec.version is pinned to \"{pinned}\", but ViewVersion {} of that version computes something else (template, \
             inputs or view differ): give spec.version a new value, or remove it",
            vv.name_any()
        )
    })
}

async fn apply(p: Arc<Processor>, ctx: Arc<Context>) -> Result<Requeue> {
    let ns = p.namespace().unwrap_or_default();
    let name = p.name_any();
    if p.metadata.deletion_timestamp.is_some() {
        // Nothing is created for a Processor being deleted; its versions
        // are let go (their Kafka data stays), or retired first with
        // deletionPolicy Delete.
        if !p.finalizers().iter().any(|f| f == finalizers::PROCESSOR) {
            return let_go(&p, &ctx).await;
        }
        // deletionPolicy Delete deletes the views: not one a downstream reads.
        let readers = read_by(&ctx, &ns, &name);
        if !readers.is_empty() {
            let held: Vec<String> = readers.iter().map(|(v, r)| format!("version {v} (read by {})", r.who)).collect();
            let message = format!(
                "deletion waits: downstream Processors read its views: {}; remove processor/{name} from their spec.inputs first",
                held.join(", ")
            );
            write_status(&p, &ctx, status_without_plan(&p, "DownstreamReaders", &message)).await?;
            return Ok(Requeue::requeue(Duration::from_secs(30)));
        }
        return retire_all(&p, &ctx).await;
    }
    if !hold_for_deletion_policy(&p, &ctx).await? {
        // Nothing is made for a Processor gone since it was read.
        return Ok(Requeue::await_change());
    }
    let Some(kc) = ctx.stores.clusters.get(&ObjectRef::new(&p.spec.cluster_ref).within(&ns)) else {
        let message = format!("KafkaCluster {} (spec.clusterRef) does not exist in namespace {ns}", p.spec.cluster_ref);
        write_status(&p, &ctx, status_without_plan(&p, "KafkaClusterMissing", &message)).await?;
        return Ok(Requeue::await_change());
    };
    let graph = pipeline_graph(&ctx, &ns, &name);
    if let Some((reason, message)) = pipeline::problem(&name, &graph) {
        // Nothing is created for a Processor whose upstreams cannot be read.
        write_status(&p, &ctx, status_without_plan(&p, reason, &message)).await?;
        return Ok(Requeue::await_change());
    }
    let ups = upstreams(&p, &ctx);
    let desired = naming::version_id(&p.spec, &ups.versions);
    let world = observe(&p, &ctx).await?;
    let topic_inputs: Vec<String> = p.spec.topic_inputs().map(str::to_string).chain(ups.topics.iter().cloned()).collect();
    let input_topics = input_topics(&ctx, &ns, &topic_inputs).await?;
    let planner_inputs = match &ups.waiting {
        Some(why) => Inputs::Waiting(why.clone()),
        None => inputs(&p, &input_topics),
    };
    let gate_policy = progress::gate_policy(&p.spec.rollout, ctx.settings.lag_poll_interval);
    let find = |id: &str| world.versions.iter().find(|v| v.spec.version == id).cloned();
    let recorded_active = p.status.as_ref().and_then(|s| s.active_version.clone());
    let versions: Vec<rollout::Version> =
        world.versions.iter().map(|v| observe_version(v, &world, ctx.monitor.gate(v, &gate_policy).0)).collect();
    let active = rollout::committed_active(&versions, recorded_active.as_deref());
    let cascade = cascade_state(&p, &ctx, &graph, &world, &desired, active.as_deref()).await?;
    let obs = Observation {
        now: Timestamp::now(),
        desired: desired.clone(),
        replicas: p.spec.replicas,
        policy: p.spec.rollout.clone(),
        recorded_active,
        versions,
        inputs: planner_inputs,
        kafka: kafka_state(&kc, ctx.monitor.kafka(&ns, &p.spec.cluster_ref)),
        conflict: pinned_conflict(&p, find(&desired).as_deref(), &ups.versions),
        read_by: read_by(&ctx, &ns, &name),
        cascade: cascade.as_ref().map(|c| c.state.clone()),
        input_partitions: input_topics.iter().map(|(_, t)| t.as_ref()?.status.as_ref()?.partitions).sum(),
    };
    let plan = rollout::plan(&obs);
    ctx.metrics.phase(&ns, &name, &rollout::Phase::names(), Some(plan.phase.as_str()));
    // Replay budgets follow the versions as cached (a version created or
    // caught up in this reconcile is seen at the next one, before its pods run).
    quotas::sync(&ctx, &ns, &p.spec.cluster_ref, false).await;
    let budget = |vv: &ViewVersion| ctx.quotas.held(&ns, &p.spec.cluster_ref, resources::client_id(vv));
    let mut status = processor_status(&p, &plan, &world, &desired, budget);
    pipeline_status(&mut status, &p, &ctx, &graph, &world);
    // Offered to the stages downstream while it is a candidate of a cascade.
    status.cascade_candidate = (cascade.is_some() && plan.candidate.as_deref() == Some(desired.as_str())).then(|| desired.clone());
    let mut events: Vec<(bool, &'static str, String)> = plan
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Event { warning, reason, message } => Some((*warning, *reason, message.clone())),
            _ => None,
        })
        .collect();
    fault_points_before(&plan, &obs).await;
    let mut wait = None;
    let mut promoted = false;
    let create = async |id: &str, promotion: Option<u64>| {
        let topics = input_topics.iter().map(|(name, t)| t.as_ref().map_or_else(|| name.clone(), |t| t.kafka_name().to_owned())).collect();
        let cascade = started_by(&p, &ctx, &world, &ups.versions);
        create_version(&p, &ctx, id, topics, &ups.versions, cascade, promotion).await
    };
    for action in &plan.actions {
        match action {
            Action::CreateVersion(id) => create(id, None).await?,
            Action::CreateActive { version, promotion } => create(version, Some(*promotion)).await?,
            Action::Scale { version, replicas } => {
                if let Some(vv) = find(version) {
                    scale(&p, &ctx, &vv, *replicas, &kc.spec, world.deployments.get(version)).await?;
                }
            }
            Action::SetPhase { version, phase, message } => {
                if let Some(vv) = find(version) {
                    let caught_up = plan.actions.contains(&Action::RecordCaughtUp(version.clone()));
                    let entering = vv.status.as_ref().and_then(|s| s.phase) != Some(*phase);
                    set_phase(&ctx, &vv, &world, *phase, message.clone(), caught_up).await?;
                    if entering && *phase == VersionPhase::Failed {
                        ctx.metrics.rollout(&ns, &name, "failed");
                    }
                    match phase {
                        VersionPhase::Replaying => fault::point("replaying").await,
                        VersionPhase::CaughtUp => fault::point("awaiting-promotion").await,
                        _ => {}
                    }
                }
            }
            // Recorded with the phase when the plan sets one (one write, not two).
            Action::RecordCaughtUp(version) if !sets_phase(&plan, version) => {
                if let Some(vv) = find(version) {
                    // Through set_phase: one apply of all this manager's fields
                    // (an apply without them would drop them).
                    let st = vv.status.clone().unwrap_or_default();
                    set_phase(&ctx, &vv, &world, st.phase.unwrap_or_default(), st.message, true).await?;
                }
            }
            Action::StartVerification { candidate, active } => {
                if let (Some(c), Some(a), Some(spec)) = (find(candidate), find(active), p.spec.rollout.verify.as_ref()) {
                    let job = resources::verification_job(spec, &c, &a, &kc.spec);
                    match Api::<Job>::namespaced(ctx.client.clone(), &ns).create(&PostParams::default(), &job).await {
                        Ok(created) => wrote(&ctx.expectations, &ns, &name, &created),
                        Err(kube::Error::Api(s)) if s.code == 409 => {}
                        Err(e) => return Err(e.into()),
                    }
                    fault::point("verification-started").await;
                }
            }
            Action::Promote { from, to, promotion, reason, message } => {
                let Some(vv) = find(to) else { continue };
                // The commit point: the new active version carries the next
                // promotion number. Its event is told once (a deterministic
                // name), then the Processor's status mirrors it, then readers
                // follow (below).
                commit(&ctx, &vv, *promotion).await?;
                fault::point("committed").await;
                announce_promotion(&p, &ctx, &vv, *promotion, reason, message.clone()).await;
                write_status(&p, &ctx, status.clone()).await?;
                if from.is_some() {
                    ctx.metrics.cutover(&ns, &name, reason);
                    ctx.metrics.rollout(&ns, &name, "promoted");
                }
                info!(from = ?from, to = %to, promotion, "promoted");
                promoted = true;
            }
            Action::Retire(id) => {
                if let Some(vv) = find(id)
                    && let Some(d) = retire(&ctx, &vv, &world).await?
                {
                    wait = Some(d);
                }
            }
            Action::CommitCascade(version) => {
                if let (Some(vv), Some(c)) = (find(version), cascade.as_ref()) {
                    commit_cascade(&p, &ctx, &vv, &c.members).await?;
                }
            }
            Action::RecordCaughtUp(_) => {}
            Action::Event { .. } => {} // published with the status change, below
        }
    }
    reap_replaced_members(&ctx, &world).await;
    let active = plan.active.as_deref().and_then(find);
    let settling = first_status_waits(&p, active.as_deref(), obs.now);
    if let Some(active) = active {
        if settling.is_none() && !promoted && obs.recorded_active.as_deref() != Some(active.spec.version.as_str()) {
            // A first version created committed, or a restart after a
            // commit whose event may not have been told.
            retell_promotion(&p, &ctx, &active, &world).await;
        }
        publish(&p, &ctx, &active, plan.candidate.as_deref(), &kc.spec.bootstrap_servers).await?;
        if promoted {
            fault::point("readers-switched").await;
        }
    }
    // A promotion has written the status already (right after its commit).
    // A version created now wakes this Processor again once its cache shows
    // it: the status is written then, once (not "being created", then what
    // it is), with the events that go with it.
    let created = plan.actions.iter().any(|a| matches!(a, Action::CreateVersion(_) | Action::CreateActive { .. }));
    if promoted || (!created && settling.is_none() && write_status(&p, &ctx, status).await?) {
        announce(&p, &ctx, &mut events).await;
    }
    let requeue = [plan.requeue_after, wait, settling].into_iter().flatten().min();
    Ok(requeue.map_or_else(Requeue::await_change, Requeue::requeue))
}

/// At most this long after its first version's creation, a Processor's
/// first status waits for that version's setup.
const FIRST_STATUS_WAIT: Duration = Duration::from_secs(10);

/// How much longer a Processor's first status (and its first version's
/// event) waits for that version's setup: the view topic's verdict and the
/// first reading of the version's progress, each about a second away and
/// each written on the version, which wakes the Processor. Then one status
/// write says what the version is, with its lag, not three (waiting for its
/// view topic, then replaying, then its lag). Until then the Processor
/// reads as not yet observed (`status.observedGeneration` 0, the CRD's
/// default: kstatus and Argo CD say InProgress and Progressing). None once
/// both came, once the Processor records an active version, for one whose
/// status says Stalled (a cause gone, such as a missing KafkaCluster, is
/// not left said), or after [`FIRST_STATUS_WAIT`]: a setup that takes
/// longer is said as it is. Pure.
fn first_status_waits(p: &Processor, active: Option<&ViewVersion>, now: Timestamp) -> Option<Duration> {
    let said = |s: &ProcessorStatus| {
        s.active_version.is_some() || conditions::find(&s.conditions, conditions::types::STALLED).is_some_and(|c| c.status == "True")
    };
    if p.status.as_ref().is_some_and(said) {
        return None;
    }
    let vv = active?;
    let st = vv.status.as_ref();
    let verdict = st.is_some_and(|s| conditions::find(&s.conditions, view_version::VIEW_READY).is_some());
    let read = st.is_some_and(|s| s.catch_up.is_some());
    if verdict && read {
        return None;
    }
    let created = vv.metadata.creation_timestamp.as_ref().map_or(now, |t| t.0);
    let waited = Duration::try_from(now.duration_since(created)).unwrap_or_default();
    FIRST_STATUS_WAIT.checked_sub(waited).filter(|left| !left.is_zero())
}

fn sets_phase(plan: &rollout::Plan, id: &str) -> bool {
    plan.actions.iter().any(|a| matches!(a, Action::SetPhase { version, .. } if version == id))
}

/// The pipelines of the namespace as far as Processor `name` needs them,
/// from the cache (a refusal it shows that is already fixed is undone by
/// the fix's own event): every Processor that reads others, with what it
/// reads, and every existing Processor read by one (or `name` itself). A
/// Processor in no pipeline changes no answer of [`pipeline`], so it is
/// left out: a reconcile among thousands of them copies no names.
fn pipeline_graph(ctx: &Context, ns: &str, name: &str) -> pipeline::Graph {
    let processors = &ctx.stores.processors;
    let mut graph: pipeline::Graph = processors
        .state()
        .iter()
        .filter(|p| p.spec.upstreams().next().is_some() && super::in_ns(p.as_ref(), Some(ns)))
        .map(|p| (p.name_any(), p.spec.upstreams().map(str::to_string).collect()))
        .collect();
    let read: BTreeSet<String> = graph.values().flatten().cloned().chain([name.to_string()]).collect();
    for n in read {
        if !graph.contains_key(&n) && processors.get(&ObjectRef::new(&n).within(ns)).is_some() {
            graph.insert(n, vec![]);
        }
    }
    graph
}

/// The status of Processor `name` of namespace `ns`, from the cache.
fn status_of(ctx: &Context, ns: &str, name: &str) -> Option<ProcessorStatus> {
    ctx.stores.processors.get(&ObjectRef::new(name).within(ns))?.status.clone()
}

/// What a Processor's upstreams offer now: each one's active version (or
/// the candidate a Together cascade offers) and the Topic resource of its
/// view, or why a version cannot be built on them yet.
struct Upstreams {
    versions: BTreeMap<String, String>,
    /// View Topics (`NAME-VERSION`): read like the Topic inputs, so the same
    /// readiness and retention checks apply (a compacted view passes).
    topics: Vec<String>,
    waiting: Option<String>,
}

fn upstreams(p: &Processor, ctx: &Context) -> Upstreams {
    let ns = p.namespace().unwrap_or_default();
    let mut out = Upstreams { versions: BTreeMap::new(), topics: Vec::new(), waiting: None };
    for up in p.spec.upstreams() {
        let offered = status_of(ctx, &ns, up).and_then(|s| s.offered_version().cloned());
        let Some(v) = offered else {
            out.waiting = Some(format!("waiting for Processor {up} (processor/{up} in spec.inputs) to have an active version"));
            continue;
        };
        out.topics.push(naming::version_object(up, &v));
        out.versions.insert(up.to_string(), v);
    }
    out
}

/// This Processor's versions whose views versions of other Processors
/// read, who reads each, and whether a running version does.
fn read_by(ctx: &Context, ns: &str, name: &str) -> BTreeMap<String, rollout::Reader> {
    let mut out: BTreeMap<String, rollout::Reader> = BTreeMap::new();
    // (what it reads first: most versions read no upstream, and need no
    // comparison of their namespace)
    let versions = ctx.stores.versions.state();
    for (v, read) in
        versions.iter().filter_map(|v| Some((v, v.spec.upstreams.get(name)?))).filter(|(v, _)| super::in_ns(v.as_ref(), Some(ns)))
    {
        let who = format!("Processor {} version {}", v.spec.processor, v.spec.version);
        let phase = v.status.as_ref().and_then(|s| s.phase).unwrap_or_default();
        let live = !matches!(phase, VersionPhase::Standby | VersionPhase::Retired | VersionPhase::Failed);
        out.entry(read.clone())
            .and_modify(|r| {
                r.who = format!("{}, {who}", r.who);
                r.live |= live;
            })
            .or_insert(rollout::Reader { who: who.clone(), live });
    }
    out
}

/// The pipeline part of the status: upstreams and the versions the active
/// version is built on, and the Processors that read this one.
fn pipeline_status(st: &mut ProcessorStatus, p: &Processor, ctx: &Context, graph: &pipeline::Graph, w: &World) {
    let ns = p.namespace().unwrap_or_default();
    let active = st.active_version.as_ref().and_then(|id| w.versions.iter().find(|v| &v.spec.version == id));
    st.upstreams = p
        .spec
        .upstreams()
        .map(|up| UpstreamStatus {
            processor: up.to_string(),
            active_version: status_of(ctx, &ns, up).and_then(|s| s.active_version),
            built_on: active.and_then(|a| a.spec.upstreams.get(up).cloned()),
        })
        .collect();
    st.downstreams = pipeline::downstreams(&p.name_any(), graph);
    let built_on: Vec<String> = active.iter().flat_map(|a| a.spec.upstreams.iter().map(|(up, v)| format!("{up}@{v}"))).collect();
    st.built_on = (!built_on.is_empty()).then(|| built_on.join(","));
}

/// Where this Processor's candidate stands in a `Together` cascade, and
/// (for the root, before its commit) the stages' versions the commit
/// record will name.
struct CascadeInfo {
    state: rollout::Cascade,
    members: Vec<(String, String)>,
}

/// The stages' versions a cascade's commit record names.
fn cascade_record(vv: &ViewVersion) -> Option<BTreeMap<String, String>> {
    let text = vv.annotations().get(annotations::CASCADE)?;
    Some(text.split(',').filter_map(|m| m.split_once('=')).map(|(p, v)| (p.to_string(), v.to_string())).collect())
}

async fn cascade_state(
    p: &Processor,
    ctx: &Context,
    graph: &pipeline::Graph,
    w: &World,
    desired: &str,
    active: Option<&str>,
) -> Result<Option<CascadeInfo>> {
    let (ns, name) = (p.namespace().unwrap_or_default(), p.name_any());
    if active == Some(desired) {
        return Ok(None);
    }
    let Some(candidate) = w.versions.iter().find(|v| v.spec.version == desired && v.metadata.deletion_timestamp.is_none()) else {
        return Ok(None);
    };
    let upstream_active = |u: &str| status_of(ctx, &ns, u).and_then(|s| s.active_version);
    let root = p.spec.rollout.cascade == CascadeMode::Together && !pipeline::downstreams(&name, graph).is_empty();
    // A stage built on an upstream's offered candidate, not its active version.
    let member = candidate.spec.upstreams.iter().any(|(u, v)| upstream_active(u).as_deref() != Some(v.as_str()));
    if !root && !member {
        return Ok(None);
    }
    let mine = format!("{name}={desired}");
    let record = if root {
        cascade_record(candidate)
    } else {
        ctx.stores
            .versions
            .state()
            .into_iter()
            .filter(|v| super::in_ns(v.as_ref(), Some(&ns)))
            .find(|v| v.annotations().get(annotations::CASCADE).is_some_and(|r| r.split(',').any(|m| m == mine)))
            .and_then(|v| cascade_record(&v))
    };
    let closure = pipeline::downstream_closure(&name, graph);
    let mut waiting_for = Vec::new();
    let mut members = Vec::new();
    match &record {
        // Committed: the stages downstream of this one switch their readers first.
        Some(record) => {
            let maps = Api::<ConfigMap>::namespaced(ctx.client.clone(), &ns);
            for d in closure.iter().filter(|d| record.contains_key(*d)) {
                let served = maps.get_opt(&naming::processor_names(d).config_map).await?.and_then(|cm| cm.data?.get("version").cloned());
                if served.as_ref() != record.get(d) {
                    waiting_for.push(format!("Processor {d}"));
                }
            }
        }
        None if root => {
            // The version each stage of the chain offers (read fresh: the
            // commit is decided on them).
            let versions = Api::<ViewVersion>::namespaced(ctx.client.clone(), &ns);
            let mut chain: BTreeMap<String, String> = BTreeMap::from([(name.clone(), desired.to_string())]);
            let mut stages = Vec::new();
            for d in &closure {
                let st = status_of(ctx, &ns, d).unwrap_or_default();
                let get = |v: Option<String>| {
                    let versions = versions.clone();
                    let object = v.map(|v| naming::version_object(d, &v));
                    async move {
                        match object {
                            Some(o) => versions.get_opt(&o).await,
                            None => Ok(None),
                        }
                    }
                };
                let (offered, active) = (get(st.cascade_candidate.clone()).await?, get(st.active_version.clone()).await?);
                if let Some(c) = &st.cascade_candidate {
                    chain.insert(d.clone(), c.clone());
                }
                stages.push((d, offered, active));
            }
            let on_chain = |v: &ViewVersion| v.spec.upstreams.iter().all(|(u, uv)| chain.get(u).is_none_or(|c| c == uv));
            for (d, offered, active) in stages {
                match (offered, active) {
                    // Its active version is already built on the chain (made during it).
                    (None, Some(a)) if on_chain(&a) => {}
                    (None, _) => waiting_for.push(format!("Processor {d} (no version on this cascade yet)")),
                    (Some(v), _) if !on_chain(&v) => {
                        waiting_for.push(format!("Processor {d} (version {} is built on other upstream versions)", v.spec.version))
                    }
                    (Some(v), _) => match v.status.as_ref().and_then(|s| s.phase).unwrap_or_default() {
                        VersionPhase::CaughtUp => members.push((d.clone(), v.spec.version.clone())),
                        phase => waiting_for.push(format!("Processor {d} (version {} is {phase:?})", v.spec.version)),
                    },
                }
            }
        }
        None => {}
    }
    Ok(Some(CascadeInfo { state: rollout::Cascade { root, committed: record.is_some(), waiting_for }, members }))
}

/// Writes the commit record of a cascade on the root's candidate: the one
/// write after which every stage cuts over (idempotent).
async fn commit_cascade(p: &Processor, ctx: &Context, vv: &ViewVersion, members: &[(String, String)]) -> Result<()> {
    if cascade_record(vv).is_some() {
        return Ok(());
    }
    let record: Vec<String> = members.iter().map(|(d, v)| format!("{d}={v}")).collect();
    let patch = json!({"metadata": {"annotations": {annotations::CASCADE: record.join(",")}}});
    let ns = vv.namespace().unwrap_or_default();
    let written = Api::<ViewVersion>::namespaced(ctx.client.clone(), &ns)
        .patch(&vv.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    wrote(&ctx.expectations, &ns, &p.name_any(), &written);
    let stages: Vec<String> = members.iter().map(|(d, v)| format!("Processor {d} version {v}")).collect();
    let message =
        format!("the cascade from version {} commits: {} cut over with it, the last stage first", vv.spec.version, stages.join(", "));
    ctx.event_named(p, &format!("{}.cascade", vv.name_any()), false, "CascadeCommitted", "Cascade", message).await;
    fault::point("cascade-committed").await;
    Ok(())
}

/// For the event of a new version: which upstream cutover started it.
fn started_by(p: &Processor, ctx: &Context, w: &World, upstreams: &BTreeMap<String, String>) -> Option<String> {
    let ns = p.namespace().unwrap_or_default();
    let active = p.status.as_ref()?.active_version.as_ref()?;
    let was = &w.versions.iter().find(|v| &v.spec.version == active)?.spec.upstreams;
    let moved: Vec<String> = upstreams
        .iter()
        .filter(|(up, v)| was.get(*up).is_some_and(|old| old != *v))
        .map(|(up, v)| {
            let up_active = status_of(ctx, &ns, up).and_then(|s| s.active_version);
            if up_active.as_ref() == Some(v) {
                format!("Processor {up} cut over to version {v}")
            } else {
                format!("Processor {up} offers version {v} to cut over together")
            }
        })
        .collect();
    (!moved.is_empty()).then(|| format!(" (a cascade: {})", moved.join(", ")))
}

/// Fault points that are about what a plan is about to act on.
async fn fault_points_before(plan: &rollout::Plan, obs: &Observation) {
    let candidate = obs.versions.iter().find(|v| Some(&v.id) != plan.active.as_ref() && v.id == obs.desired);
    let promotes = plan.actions.iter().any(|a| matches!(a, Action::Promote { from: Some(_), .. }));
    if candidate.is_some_and(|c| c.gate == Gate::CaughtUp) || promotes {
        fault::point("caught-up").await;
    }
    let decided = |v: &rollout::Version| matches!(v.verification, Some(Verification::Succeeded | Verification::Failed(_)));
    if obs.versions.iter().any(|v| v.id == obs.desired && decided(v)) {
        fault::point("verification-ended").await;
    }
}

/// A Processor being deleted lets its ViewVersions go: their finalizers are
/// released, and nothing is created or retired.
async fn let_go(p: &Processor, ctx: &Context) -> Result<Requeue> {
    let world = observe(p, ctx).await?;
    let api: Api<ViewVersion> = Api::namespaced(ctx.client.clone(), &p.namespace().unwrap_or_default());
    for vv in world.versions.iter().filter(|v| v.finalizers().iter().any(|f| f == finalizers::VIEW_VERSION)) {
        if vv.metadata.deletion_timestamp.is_some() {
            release_finalizer(&api, &vv.name_any(), finalizers::VIEW_VERSION).await?;
        }
    }
    Ok(Requeue::await_change())
}

/// A Processor with `deletionPolicy: Delete` carries a finalizer, so its
/// versions can be retired before it goes; one with `Retain` does not.
/// False when it is gone since it was read.
async fn hold_for_deletion_policy(p: &Processor, ctx: &Context) -> Result<bool> {
    let api: Api<Processor> = Api::namespaced(ctx.client.clone(), &p.namespace().unwrap_or_default());
    let held = p.finalizers().iter().any(|f| f == finalizers::PROCESSOR);
    match p.spec.deletion_policy {
        DeletionPolicy::Delete if !held => super::hold(&api, p, finalizers::PROCESSOR).await,
        DeletionPolicy::Retain if held => release_finalizer(&api, &p.name_any(), finalizers::PROCESSOR).await.map(|()| true),
        _ => Ok(true),
    }
}

/// A Processor deleted with `deletionPolicy: Delete`: every version is
/// retired (pods stopped, group emptied and deleted, the topics named after
/// it and the view topic deleted), then the Processor goes.
async fn retire_all(p: &Processor, ctx: &Context) -> Result<Requeue> {
    let world = observe(p, ctx).await?;
    let mut wait = None;
    for vv in &world.versions {
        if let Some(d) = retire(ctx, vv, &world).await? {
            wait = Some(wait.map_or(d, |w: Duration| w.min(d)));
        }
    }
    match wait {
        Some(d) => Ok(Requeue::requeue(d)),
        None if world.versions.is_empty() => {
            let api: Api<Processor> = Api::namespaced(ctx.client.clone(), &p.namespace().unwrap_or_default());
            release_finalizer(&api, &p.name_any(), finalizers::PROCESSOR).await?;
            info!("every version retired; the Processor goes");
            Ok(Requeue::await_change())
        }
        // Retired versions on their way out: their deletion wakes this.
        None => Ok(Requeue::requeue(Duration::from_secs(2))),
    }
}

/// Stamps the commit record on the promoted version (idempotent: a
/// restart that finds it stamped does nothing).
async fn commit(ctx: &Context, vv: &ViewVersion, promotion: u64) -> Result<()> {
    if self::promotion(vv) == Some(promotion) {
        return Ok(());
    }
    let patch = json!({"metadata": {"annotations": {annotations::PROMOTION: promotion.to_string()}}});
    let ns = vv.namespace().unwrap_or_default();
    let written = Api::<ViewVersion>::namespaced(ctx.client.clone(), &ns)
        .patch(&vv.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    wrote(&ctx.expectations, &ns, &vv.spec.processor, &written);
    Ok(())
}

/// The promotion's event, under a name of its own: told again after a
/// restart, the API server refuses the duplicate, so there is exactly one.
async fn announce_promotion(p: &Processor, ctx: &Context, vv: &ViewVersion, promotion: u64, reason: &str, message: String) {
    let name = format!("{}.promotion-{promotion}", vv.name_any());
    // (the only event of a first version's creation: it names the view)
    let message = if reason == rollout::FIRST_VERSION { format!("{message} into {}", vv.spec.output_topic) } else { message };
    ctx.event_named(p, &name, false, reason, "Promote", message).await;
}

/// The event of the promotion that made `active` active, rebuilt from the
/// versions (for a first version, created committed, and for a restart
/// between a commit and its event).
async fn retell_promotion(p: &Processor, ctx: &Context, active: &ViewVersion, w: &World) {
    let Some(n) = promotion(active) else { return };
    let from = w.versions.iter().filter(|v| promotion(v).is_some_and(|m| m < n)).max_by_key(|v| promotion(v));
    let to = &active.spec.version;
    let (reason, message) = match from {
        None => (rollout::FIRST_VERSION, format!("version {to} is the first: active from the start, replaying from offset zero")),
        Some(f) => {
            let rolled_back = active.status.as_ref().and_then(|s| s.demoted_at.as_ref()).is_some();
            let from = &f.spec.version;
            (if rolled_back { "RolledBack" } else { "CutOver" }, format!("readers switched from version {from} to version {to}"))
        }
    };
    announce_promotion(p, ctx, active, n, reason, message).await;
}

/// Publishes the plan's events (only when the plan changed the status, so an
/// idle reconcile repeats nothing).
async fn announce(p: &Processor, ctx: &Context, events: &mut Vec<(bool, &'static str, String)>) {
    for (warning, reason, message) in events.drain(..) {
        ctx.event(p, warning, reason, "Rollout", message).await;
    }
}

/// Writes the Processor's status if it changed, unless its namespace is
/// being deleted: there the Processor goes too, and 1,000 Processors would
/// each say that their KafkaCluster and versions went first.
async fn write_status(p: &Processor, ctx: &Context, status: ProcessorStatus) -> Result<bool> {
    if p.status.as_ref() == Some(&status) || ctx.namespace_going(&p.namespace().unwrap_or_default()).await {
        return Ok(false);
    }
    let written = apply_status(&ctx.client, p, p.status.as_ref(), &status).await?;
    let told = written.is_some();
    if let Some(w) = written {
        ctx.written.processors.record(w);
    }
    Ok(told)
}

fn status_without_plan(p: &Processor, reason: &str, message: &str) -> ProcessorStatus {
    let mut st = p.status.clone().unwrap_or_default();
    st.observed_generation = p.metadata.generation;
    st.phase = Some(if st.active_version.is_some() { st.phase.clone().unwrap_or_default() } else { "Pending".into() });
    st.conditions = conditions::merge(
        &st.conditions,
        &[
            Cond::new(conditions::types::READY, false, reason, message),
            Cond::new(conditions::types::RECONCILING, false, reason, ""),
            Cond::new(conditions::types::STALLED, true, reason, message),
            Cond::new(conditions::types::PROGRESSING, false, reason, message),
        ],
        p.metadata.generation,
        Timestamp::now(),
    );
    st
}

fn processor_status(
    p: &Processor,
    plan: &rollout::Plan,
    w: &World,
    desired: &str,
    budget: impl Fn(&ViewVersion) -> Option<i64>,
) -> ProcessorStatus {
    let find = |id: &Option<String>| id.as_ref().and_then(|id| w.versions.iter().find(|v| &v.spec.version == id));
    let active = find(&plan.active);
    let candidate = find(&plan.candidate);
    let previous = p.status.clone().unwrap_or_default();
    // While the candidate replays (until it has caught up).
    let replay = candidate.filter(|_| plan.phase == rollout::Phase::Replaying).map(|c| {
        let st = c.status.clone().unwrap_or_default();
        let replicas = plan
            .actions
            .iter()
            .find_map(|a| match a {
                Action::Scale { version, replicas } if *version == c.spec.version => Some(*replicas),
                _ => None,
            })
            .unwrap_or(0);
        let rate = st.records_per_second.filter(|r| *r > 0);
        ReplayStatus {
            version: c.spec.version.clone(),
            replicas,
            records_per_second: st.records_per_second,
            eta_seconds: st.lag.zip(rate).map(|(lag, r)| (lag + r - 1) / r),
            byte_rate: budget(c),
            throttled: budget(c).is_some(),
        }
    });
    ProcessorStatus {
        observed_generation: p.metadata.generation,
        conditions: conditions::merge(&previous.conditions, &plan.conditions, p.metadata.generation, Timestamp::now()),
        phase: Some(plan.phase.as_str().into()),
        desired_version: Some(desired.into()),
        active_version: plan.active.clone(),
        candidate_version: plan.candidate.clone(),
        lag: active.and_then(|v| v.status.as_ref()?.lag),
        candidate_lag: candidate.and_then(|v| v.status.as_ref()?.lag),
        candidate_progress: candidate
            .and_then(|v| v.status.as_ref()?.progress)
            .map(|f| format!("{:.1}%", lag::progress((f * 1000.0) as i64, 1000) * 100.0)),
        view_topic: active.map(|v| v.spec.output_topic.clone()),
        rollback: rollback_target(w),
        // (see pipeline_status)
        upstreams: vec![],
        downstreams: vec![],
        built_on: None,
        cascade_candidate: None,
        replay,
    }
}

/// The most recently demoted standby, as a spec can name it again.
fn rollback_target(w: &World) -> Option<RollbackTarget> {
    let standby = w
        .versions
        .iter()
        .filter(|v| v.metadata.deletion_timestamp.is_none())
        .filter(|v| v.status.as_ref().is_some_and(|s| s.phase == Some(VersionPhase::Standby)))
        .max_by_key(|v| v.status.as_ref().and_then(|s| s.demoted_at.as_ref()).map(|t| t.0))?;
    Some(RollbackTarget {
        version: standby.spec.version.clone(),
        template: standby.spec.template.clone(),
        inputs: standby.spec.inputs.clone(),
        view: standby.spec.view.clone(),
        reprocess_nonce: standby.spec.reprocess_nonce.clone(),
    })
}

async fn create_version(
    p: &Processor,
    ctx: &Context,
    id: &str,
    input_topics: Vec<String>,
    upstreams: &BTreeMap<String, String>,
    cascade: Option<String>,
    promotion: Option<u64>,
) -> Result<()> {
    let ns = p.namespace().unwrap_or_default();
    // A new incarnation each time: a version id that comes back after it was
    // retired inherits no group, internal topic or view of the one before.
    let names = naming::version_names(&ns, &p.name_any(), id, &naming::incarnation(Timestamp::now()));
    let mut vv = ViewVersion::new(
        &names.object,
        ViewVersionSpec {
            processor: p.name_any(),
            version: id.into(),
            cluster_ref: p.spec.cluster_ref.clone(),
            inputs: p.spec.inputs.clone(),
            upstreams: upstreams.clone(),
            input_topics,
            output_topic: names.view_topic,
            consumer_group: names.consumer_group,
            template: p.spec.template.code(),
            view: p.spec.view.clone(),
            reprocess_nonce: p.spec.reprocess_nonce.clone(),
        },
    );
    vv.metadata.namespace = Some(ns.clone());
    vv.metadata.labels = Some(resources::selector(&p.name_any(), id));
    vv.metadata.owner_references = p.controller_owner_ref(&()).map(|r| vec![r]);
    // Held while it is active or a retained standby; released when retired
    // or when its Processor goes.
    vv.metadata.finalizers = Some(vec![finalizers::VIEW_VERSION.into()]);
    // A first version is created committed (see [`Action::CreateActive`]).
    vv.metadata.annotations = promotion.map(|n| [(annotations::PROMOTION.to_string(), n.to_string())].into());
    match Api::<ViewVersion>::namespaced(ctx.client.clone(), &ns).create(&PostParams::default(), &vv).await {
        Ok(created) => {
            wrote(&ctx.expectations, &ns, &p.name_any(), &created);
            info!(version = %id, "created version");
            if p.status.as_ref().and_then(|s| s.active_version.as_ref()).is_some() {
                ctx.metrics.rollout(&ns, &p.name_any(), "started");
            }
            // (a first version is told by its promotion's event, once seen)
            if promotion.is_none() {
                let message = format!(
                    "version {id} replays the inputs from offset zero into {}{}",
                    vv.spec.output_topic,
                    cascade.unwrap_or_default()
                );
                ctx.event(p, false, "VersionCreated", "CreateVersion", message).await;
            }
            fault::point("version-created").await;
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Applies the version's Deployment unless it already is what we would
/// apply. A version being deleted, or in a namespace being deleted, gets no
/// new Deployment.
async fn scale(
    p: &Processor,
    ctx: &Context,
    vv: &ViewVersion,
    replicas: i32,
    kafka: &crate::api::KafkaClusterSpec,
    existing: Option<&Deployment>,
) -> Result<()> {
    let ns = vv.namespace().unwrap_or_default();
    if existing.is_none() && (vv.metadata.deletion_timestamp.is_some() || super::namespace_terminating(&ctx.client, &ns).await) {
        return Ok(());
    }
    let settings = match kafka_cluster::handle(ctx, &ns, &vv.spec.cluster_ref).await {
        Ok(h) => h.settings.clone(),
        // The Processor's conditions say why the cluster is not usable.
        Err((reason, message)) => {
            info!(version = %vv.spec.version, reason, message, "not scaled: its KafkaCluster is not usable");
            return Ok(());
        }
    };
    let properties = resources::client_properties(vv, kafka, &settings);
    // (the digest of the properties the Deployment mounts from a Secret)
    let mounted = existing
        .and_then(|e| e.spec.as_ref()?.template.metadata.as_ref()?.annotations.as_ref()?.get(resources::PROPERTIES_DIGEST).cloned());
    let file = resources::properties_file(&properties, resources::holds_secret(&settings), mounted.as_deref());
    let mut d = resources::deployment(p, vv, replicas, kafka, &file);
    let hash = resources::digest(&serde_json::to_vec(&d.spec).unwrap_or_default());
    if existing.and_then(|e| e.annotations().get(SPEC_HASH)) == Some(&hash) {
        return Ok(());
    }
    // A standby revived for a rollback: members its pods left behind would
    // hold up the new members' first rebalance until their session expired.
    let reviving = replicas > 0 && existing.is_some_and(|e| e.spec.as_ref().and_then(|s| s.replicas) == Some(0));
    if reviving && let Some(cluster) = ctx.clusters.get(&ns, &vv.spec.cluster_ref) {
        empty_group(&cluster, &vv.spec.consumer_group).await;
    }
    // Properties that hold a secret go in a Secret first (the pods mount
    // it), when the Deployment does not have them yet.
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), &ns);
    let secret_name = naming::client_secret(&vv.name_any());
    if let resources::PropertiesFile::Secret { digest } = &file
        && mounted.as_ref() != Some(digest)
    {
        let secret = resources::client_secret(vv, &properties);
        secrets.patch(&secret_name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&secret)).await?;
    }
    d.metadata.annotations = Some([(SPEC_HASH.to_string(), hash)].into());
    let written = Api::<Deployment>::namespaced(ctx.client.clone(), &ns)
        .patch(&vv.name_any(), &PatchParams::apply(MANAGER).force(), &Patch::Apply(&d))
        .await?;
    wrote(&ctx.expectations, &ns, &vv.spec.processor, &written);
    // Credentials no longer needed are not left in the Secret: it is emptied
    // once the Deployment no longer mounts it (the pods that did, which read
    // it when they started, are being replaced; the Secret goes with its
    // version).
    if mounted.is_some() && matches!(file, resources::PropertiesFile::Inline(_)) {
        let emptied = Secret { data: None, ..resources::client_secret(vv, "") };
        secrets.patch(&secret_name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&emptied)).await?;
    }
    if replicas == 0 {
        fault::point("scaling-down").await;
    } else if existing.is_none() {
        fault::point("deployment-applied").await;
    }
    Ok(())
}

/// Records a version's phase with the timestamps of the transition (and
/// that it has caught up, when the plan says so), and a ViewReady its
/// status does not say yet.
async fn set_phase(
    ctx: &Context,
    vv: &ViewVersion,
    w: &World,
    phase: VersionPhase,
    message: Option<String>,
    caught_up: bool,
) -> Result<()> {
    let st = vv.status.clone().unwrap_or_default();
    let now = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now()));
    let entering = st.phase != Some(phase);
    let mut started_at = st.started_at.clone();
    let mut caught_up_at = st.caught_up_at.clone();
    let mut promoted_at = st.promoted_at.clone();
    let mut demoted_at = st.demoted_at.clone();
    let mut finished_at = st.finished_at.clone();
    if caught_up {
        caught_up_at = caught_up_at.or(now.clone());
    }
    match phase {
        // A standby revived for a rollback starts a new attempt.
        VersionPhase::Replaying if st.phase == Some(VersionPhase::Standby) => started_at = now.clone(),
        VersionPhase::Replaying => started_at = started_at.or(now.clone()),
        VersionPhase::CaughtUp | VersionPhase::Verifying => caught_up_at = caught_up_at.or(now.clone()),
        VersionPhase::Active if entering => {
            started_at = started_at.or(now.clone());
            promoted_at = now.clone();
        }
        VersionPhase::Standby if entering => demoted_at = now.clone(),
        VersionPhase::Failed | VersionPhase::Retired if entering => finished_at = now.clone(),
        _ => {}
    }
    let next = ViewVersionStatus { phase: Some(phase), message: message.clone(), caught_up_at: caught_up_at.clone(), ..st };
    let written = apply_status_fields(
        &ctx.client,
        vv,
        MANAGER,
        json!({
            "observedGeneration": vv.metadata.generation,
            "conditions": view_version::conditions_for(vv, &next, w.unsaid.get(&vv.spec.version)),
            "phase": phase,
            "message": message,
            "startedAt": started_at,
            "caughtUpAt": caught_up_at,
            "promotedAt": promoted_at,
            "demotedAt": demoted_at,
            "finishedAt": finished_at,
        }),
    )
    .await?;
    if let Some(written) = written {
        wrote(&ctx.expectations, &vv.namespace().unwrap_or_default(), &vv.spec.processor, &written);
    }
    Ok(())
}

/// Retires a version in order: pods gone, consumer group deleted, view topic
/// switched to Delete, then the ViewVersion's finalizer released and the
/// ViewVersion (and with it the Deployment and the view Topic) deleted.
/// Returns how long to wait when a step must settle.
async fn retire(ctx: &Context, vv: &ViewVersion, w: &World) -> Result<Option<Duration>> {
    let ns = vv.namespace().unwrap_or_default();
    let id = &vv.spec.version;
    if vv.status.as_ref().and_then(|s| s.phase) != Some(VersionPhase::Retired) {
        set_phase(ctx, vv, w, VersionPhase::Retired, Some("beyond retainVersions, superseded, or deleted".into()), false).await?;
    }
    if w.deployments.get(id).and_then(|d| d.spec.as_ref()?.replicas).unwrap_or(0) > 0 {
        let written = Api::<Deployment>::namespaced(ctx.client.clone(), &ns)
            .patch(&vv.name_any(), &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 0}})))
            .await?;
        wrote(&ctx.expectations, &ns, &vv.spec.processor, &written);
        fault::point("scaling-down").await;
        return Ok(Some(Duration::from_secs(2)));
    }
    if w.pods.iter().any(|p| p.labels().get(labels::VERSION) == Some(id)) {
        return Ok(Some(Duration::from_secs(2)));
    }
    let Some(cluster) = ctx.clusters.get(&ns, &vv.spec.cluster_ref) else {
        return Ok(Some(Duration::from_secs(10)));
    };
    let group = &vv.spec.consumer_group;
    empty_group(&cluster, group).await;
    let result = cluster.kafka.delete_groups(std::slice::from_ref(group)).await?;
    if let Some(Err(e)) = result.get(group) {
        info!(group = %group, error = %e, "consumer group not deleted yet");
        return Ok(Some(Duration::from_secs(5)));
    }
    fault::point("retiring").await;
    let internal = delete_internal_topics(ctx, &cluster, vv).await?;
    if !internal.is_empty() {
        info!(version = %id, topics = ?internal, "internal topics not deleted yet");
        return Ok(Some(Duration::from_secs(5)));
    }
    let topics: Api<Topic> = Api::namespaced(ctx.client.clone(), &ns);
    if let Some(t) = topics.get_opt(&vv.name_any()).await? {
        if t.spec.deletion_policy != DeletionPolicy::Delete {
            topics.patch(&vv.name_any(), &PatchParams::default(), &Patch::Merge(json!({"spec": {"deletionPolicy": "Delete"}}))).await?;
        }
        // Held before the ViewVersion goes, or the garbage collector could
        // delete the view Topic before it holds its Kafka topic's deletion.
        if !t.finalizers().iter().any(|f| f == finalizers::TOPIC) {
            super::hold(&topics, &t, finalizers::TOPIC).await?;
        }
    }
    // Deleted first, released after: in between, the version shows a
    // deletionTimestamp, so its own controller sees it going rather than a
    // version that lacks its finalizer (which it would add back).
    let versions: Api<ViewVersion> = Api::namespaced(ctx.client.clone(), &ns);
    match versions.delete(&vv.name_any(), &DeleteParams::background()).await {
        // Held by its finalizer: the deletion is a change the caches must show.
        Ok(deleted) => {
            if let Some(going) = deleted.left() {
                wrote(&ctx.expectations, &ns, &vv.spec.processor, &going);
            }
        }
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    release_finalizer(&versions, &vv.name_any(), finalizers::VIEW_VERSION).await?;
    info!(version = %id, "retired version");
    ctx.event(
        vv,
        false,
        "Retired",
        "Retire",
        format!(
            "version {id} retired: view topic {}, consumer group {} and the topics named after it deleted",
            vv.spec.output_topic, vv.spec.consumer_group
        ),
    )
    .await;
    Ok(None)
}

/// Removes the members of a version's group that did not leave it (Kafka
/// Streams does not leave on close; a static member never does), so the
/// group can be deleted, or taken up again by a revived standby, at once
/// rather than after the members' session timeout. Best effort: without it
/// Kafka still expires them.
async fn empty_group(cluster: &ClusterHandle, group: &str) {
    remove_members(cluster, group, &Removal::All).await
}

/// When a pod of a running version is gone (replaced by an in-place
/// change, rescheduled), static members whose instance id
/// (`KAPPA_INSTANCE_ID`, the pod's name) names no pod of the version any
/// more are removed: a static member does not leave, so its partitions would
/// otherwise wait for its session timeout. (A pod created since the pods
/// were listed and already a member would be asked to rejoin: a rebalance,
/// nothing lost.)
async fn reap_replaced_members(ctx: &Context, w: &World) {
    for vv in &w.versions {
        let uid = vv.metadata.uid.clone().unwrap_or_default();
        if vv.metadata.deletion_timestamp.is_some() {
            ctx.pods_seen.forget(&uid);
            continue;
        }
        let id = &vv.spec.version;
        let live: BTreeSet<String> = w.pods.iter().filter(|p| p.labels().get(labels::VERSION) == Some(id)).map(|p| p.name_any()).collect();
        let running = w.deployments.get(id).and_then(|d| d.spec.as_ref()?.replicas).unwrap_or(0) > 0;
        if ctx.pods_seen.any_gone(&uid, &live)
            && running
            && let Some(cluster) = ctx.clusters.get(&vv.namespace().unwrap_or_default(), &vv.spec.cluster_ref)
        {
            remove_members(&cluster, &vv.spec.consumer_group, &Removal::StaticExcept(live)).await;
        }
    }
}

async fn remove_members(cluster: &ClusterHandle, group: &str, which: &Removal) {
    match cluster.kafka.remove_members(std::slice::from_ref(&group.to_string()), which).await {
        Ok(r) => match r.get(group) {
            Some(Ok(0)) | None => {}
            Some(Ok(n)) => info!(group, removed = n, "removed the members that had not left the group"),
            Some(Err(e)) => info!(group, error = %e, "could not remove the group's members; Kafka expires them"),
        },
        Err(e) => info!(group, error = %e, "could not remove the group's members; Kafka expires them"),
    }
}

/// Deletes the Kafka topics a retiring version owns besides its view topic
/// (those named after its group: a framework's repartition and changelog
/// topics), never one a Topic resource or another version declares. Returns
/// those Kafka has not deleted yet.
async fn delete_internal_topics(ctx: &Context, cluster: &ClusterHandle, vv: &ViewVersion) -> Result<Vec<String>> {
    let existing = match cluster.kafka.list_topics().await {
        Ok(t) => t,
        Err(e @ KafkaError::Unsupported { .. }) => {
            info!(error = %e, "internal topics cannot be listed on this broker; left in Kafka");
            return Ok(vec![]);
        }
        Err(e) => return Err(e.into()),
    };
    let mut keep: BTreeSet<String> = ctx.stores.topics.state().iter().map(|t| t.kafka_name().to_owned()).collect();
    let others: Vec<Arc<ViewVersion>> = ctx.stores.versions.state().into_iter().filter(|o| o.metadata.uid != vv.metadata.uid).collect();
    keep.extend(others.iter().map(|o| o.spec.output_topic.clone()));
    let other_groups: Vec<&str> = others.iter().map(|o| o.spec.consumer_group.as_str()).collect();
    let owned = naming::owned_topics(&vv.spec.consumer_group, &existing, &keep, &other_groups);
    if owned.is_empty() {
        return Ok(vec![]);
    }
    let result = cluster.kafka.delete_topics(&owned).await?;
    info!(version = %vv.spec.version, topics = ?owned, "deleting the topics named after the version's group");
    Ok(owned.into_iter().filter(|t| matches!(result.get(t), Some(Err(e)) if !e.is(ResponseError::UnknownTopicOrPartition))).collect())
}

/// What readers see follows the recorded active version: Service `P`,
/// Service `P-preview` (the candidate), ConfigMap `P-view`.
async fn publish(p: &Processor, ctx: &Context, active: &ViewVersion, candidate: Option<&str>, bootstrap: &str) -> Result<()> {
    let ns = p.namespace().unwrap_or_default();
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
    let names = naming::processor_names(&p.name_any());
    let owned = &ctx.stores.owned;
    if let Some(svc) = resources::service(p, &active.spec.version) {
        apply_if_changed(ctx, &services, &owned.services, &names.service, &svc, same_service).await?;
    }
    match candidate.and_then(|c| resources::preview_service(p, c)) {
        Some(svc) => apply_if_changed(ctx, &services, &owned.services, &names.preview_service, &svc, same_service).await?,
        None => {
            if owned.services.get(&ObjectRef::new(&names.preview_service).within(&ns)).is_some() {
                match services.delete(&names.preview_service, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    let cm = resources::view_config_map(p, active, bootstrap);
    let maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    apply_if_changed(ctx, &maps, &owned.config_maps, &names.config_map, &cm, |a, b| a.data == b.data).await
}

/// Whether a Service already is what we apply: its selector and ports as we
/// set them (the API server fills in a port's protocol and more, so whole
/// ports never compare equal).
fn same_service(a: &Service, b: &Service) -> bool {
    let ours = |s: &Service| {
        s.spec.as_ref().map(|s| {
            let ports: Vec<_> = s.ports.iter().flatten().map(|p| (p.name.clone(), p.port, p.target_port.clone())).collect();
            (s.selector.clone(), ports)
        })
    };
    ours(a) == ours(b)
}

/// Applies `desired` unless the cache shows it as it is (a cache behind the
/// last apply costs an apply that changes nothing). Nothing is created in a
/// namespace being deleted.
async fn apply_if_changed<K>(
    ctx: &Context,
    api: &Api<K>,
    cache: &Store<K>,
    name: &str,
    desired: &K,
    same: impl Fn(&K, &K) -> bool,
) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let ns = desired.meta().namespace.clone().unwrap_or_default();
    let cached = cache.get(&ObjectRef::new(name).within(&ns));
    if cached.as_ref().is_some_and(|e| same(e, desired)) {
        return Ok(());
    }
    // (a steady reconcile stops above: only a change is serialized)
    let (kind, object) = (K::kind(&()), format!("{ns}/{name}"));
    let digest = owned::hash64(serde_json::to_vec(desired).unwrap_or_default());
    if ctx.applied.in_flight(&kind, &object, digest, &ctx.stores.seen)
        || (cached.is_none() && super::namespace_terminating(&ctx.client, &ns).await)
    {
        return Ok(());
    }
    let written = api.patch(name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(desired)).await?;
    ctx.applied.record(&kind, &object, digest, written.meta().resource_version.as_deref());
    Ok(())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::api::{Condition, KafkaClusterSpec, KafkaClusterStatus, ProcessorSpec, ProcessorTemplate};

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn cluster(ready: Option<(bool, i64)>) -> KafkaCluster {
        let mut kc = KafkaCluster::new("default", KafkaClusterSpec { bootstrap_servers: "k:9092".into(), tls: None, sasl: None });
        kc.status = ready.map(|(ok, since)| KafkaClusterStatus {
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: if ok { "True" } else { "False" }.into(),
                reason: if ok { "Connected" } else { "KafkaUnreachable" }.into(),
                message: "m".into(),
                last_transition_time: Time(t(since)),
                observed_generation: None,
            }],
            ..Default::default()
        });
        kc
    }

    #[test]
    fn kafka_is_down_if_either_the_cluster_check_or_the_monitor_says_so_and_up_since_the_later() {
        let up = |s| Some(rollout::Kafka::Up { since: t(s) });
        assert!(matches!(kafka_state(&cluster(Some((false, 10))), up(0)), rollout::Kafka::Down(why) if why.contains("KafkaUnreachable")));
        assert!(matches!(kafka_state(&cluster(Some((true, 10))), Some(rollout::Kafka::Down("x".into()))), rollout::Kafka::Down(_)));
        assert_eq!(kafka_state(&cluster(Some((true, 10))), up(20)), rollout::Kafka::Up { since: t(20) });
        assert_eq!(kafka_state(&cluster(Some((true, 30))), up(20)), rollout::Kafka::Up { since: t(30) });
        assert!(matches!(kafka_state(&cluster(None), None), rollout::Kafka::Down(_)), "never checked is not up");
    }

    fn processor(version: Option<&str>, args: &[&str], inputs: &[&str]) -> Processor {
        let mut p = Processor::new(
            "totals",
            ProcessorSpec {
                cluster_ref: "default".into(),
                inputs: inputs.iter().map(|s| s.to_string()).collect(),
                view: Default::default(),
                template: ProcessorTemplate {
                    image: "img".into(),
                    args: Some(args.iter().map(|s| s.to_string()).collect()),
                    ..Default::default()
                },
                replicas: 1,
                version: version.map(Into::into),
                reprocess_nonce: None,
                rollout: Default::default(),
                serving: None,
                deletion_policy: Default::default(),
            },
        );
        p.metadata.namespace = Some("shop".into());
        p
    }

    fn view_version_of(p: &Processor, id: &str) -> ViewVersion {
        let names = naming::version_names("shop", "totals", id, "i1");
        ViewVersion::new(
            &names.object,
            ViewVersionSpec {
                processor: "totals".into(),
                version: id.into(),
                upstreams: Default::default(),
                cluster_ref: "default".into(),
                inputs: p.spec.inputs.clone(),
                input_topics: p.spec.inputs.clone(),
                output_topic: names.view_topic,
                consumer_group: names.consumer_group,
                template: p.spec.template.code(),
                view: p.spec.view.clone(),
                reprocess_nonce: None,
            },
        )
    }

    #[test]
    fn a_pinned_version_whose_view_version_computes_something_else_is_a_conflict() {
        let old = processor(Some("v1"), &["run", "--logic", "sum"], &["a", "b"]);
        let vv = view_version_of(&old, "v1");
        assert_eq!(pinned_conflict(&old, Some(&vv), &BTreeMap::new()), None);
        let reordered = processor(Some("v1"), &["run", "--logic", "sum"], &["b", "a"]);
        assert_eq!(pinned_conflict(&reordered, Some(&vv), &BTreeMap::new()), None, "the order of inputs changes nothing");
        let changed = processor(Some("v1"), &["run", "--logic", "count"], &["a", "b"]);
        let conflict = pinned_conflict(&changed, Some(&vv), &BTreeMap::new()).expect("a conflict");
        assert!(conflict.contains("spec.version is pinned to \"v1\"") && conflict.contains(&vv.name_any()), "{conflict}");
        assert_eq!(pinned_conflict(&processor(None, &["x"], &["a"]), Some(&vv), &BTreeMap::new()), None, "a derived id never conflicts");
        assert_eq!(pinned_conflict(&changed, None, &BTreeMap::new()), None, "nothing to conflict with yet");
    }

    #[test]
    fn a_first_status_waits_for_its_versions_view_verdict_and_first_reading_ten_seconds_at_most() {
        let cond = |type_: &str, status: &str| Condition {
            type_: type_.into(),
            status: status.into(),
            reason: "Why".into(),
            message: String::new(),
            last_transition_time: Time(t(1)),
            observed_generation: None,
        };
        let mut p = processor(None, &["run"], &["a"]);
        // (as the API server defaults it)
        p.status = Some(ProcessorStatus { observed_generation: Some(0), ..Default::default() });
        let mut vv = view_version_of(&p, "v1");
        vv.metadata.creation_timestamp = Some(Time(t(0)));
        let waits = |p: &Processor, vv: &ViewVersion, s| first_status_waits(p, Some(vv), t(s));
        assert_eq!(waits(&p, &vv, 1), Some(Duration::from_secs(9)), "neither yet");
        assert_eq!(first_status_waits(&p, None, t(1)), None, "no version to wait for");
        vv.status.get_or_insert_default().conditions.push(cond(view_version::VIEW_READY, "True"));
        assert_eq!(waits(&p, &vv, 2), Some(Duration::from_secs(8)), "the view's verdict, but no reading yet");
        assert_eq!(waits(&p, &vv, 10), None, "a setup longer than ten seconds is said as it is");
        vv.status.as_mut().unwrap().catch_up = Some(Default::default());
        assert_eq!(waits(&p, &vv, 2), None, "both came: written at once");
        vv.status.as_mut().unwrap().conditions.clear();
        assert_eq!(waits(&p, &vv, 2), Some(Duration::from_secs(8)), "a reading, but no verdict yet");
        let mut stalled = p.clone();
        stalled.status.as_mut().unwrap().conditions.push(cond(conditions::types::STALLED, "True"));
        assert_eq!(waits(&stalled, &vv, 2), None, "a Processor that says it is stuck does not keep saying it");
        p.status.as_mut().unwrap().active_version = Some("v1".into());
        assert_eq!(waits(&p, &vv, 2), None, "nor waits one that says it has an active version");
    }
}

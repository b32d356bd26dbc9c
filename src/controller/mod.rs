//! The reconcilers, one per kind, over one shared [`Context`].

pub mod clusters;
pub mod events;
pub mod fault;
pub mod kafka_cluster;
pub mod owned;
pub mod processor;
pub mod progress;
pub mod quotas;
pub mod topic;
pub mod view_version;

use std::{
    collections::HashMap,
    fmt::Debug,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::StreamExt;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ListParams, Patch, PatchParams},
    runtime::{
        controller::Action,
        reflector::{ObjectRef, Store},
    },
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::json;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::{
    Error, Result,
    api::{KafkaCluster, MANAGER, Processor, Topic, ViewVersion},
    metrics::Metrics,
};

/// Operator-wide settings from the command line.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Watch only this namespace; None watches all.
    pub namespace: Option<String>,
    /// How often every Topic is compared with Kafka to catch drift.
    pub resync: Duration,
    /// How often consumer lag is read from Kafka.
    pub lag_poll_interval: Duration,
    /// How often a Ready KafkaCluster's connection is checked.
    pub cluster_check_interval: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            namespace: None,
            resync: Duration::from_secs(300),
            lag_poll_interval: Duration::from_secs(5),
            cluster_check_interval: Duration::from_secs(15),
        }
    }
}

/// Read-only caches of every kind, kept by the controllers' watches.
#[derive(Clone)]
pub struct Stores {
    pub clusters: Store<KafkaCluster>,
    pub topics: Store<Topic>,
    pub processors: Store<Processor>,
    pub versions: Store<ViewVersion>,
    /// What the operator made for Processors.
    pub owned: owned::Owned,
    /// The highest resourceVersion each watch has delivered.
    pub seen: Arc<owned::Seen>,
    listed: Listed,
}

/// How many of the caches have had their first full list. Until all have,
/// an object missing from a cache may well exist: right after a start, a
/// Processor reconcile once found its KafkaCluster "missing" in a cache
/// still filling, waited for a change that had already happened, and sat
/// for two minutes; a Topic being deleted could likewise have found no
/// reader. A watch channel, because it wakes every waiter (a reflector's
/// own readiness signal wakes only one, and the controller is that one).
pub type Listed = Arc<watch::Sender<usize>>;
const CACHES: usize = 4 + owned::CACHES;

impl Stores {
    /// Returns once every cache has had its first full list.
    pub async fn listed(&self) {
        let _ = self.listed.subscribe().wait_for(|n| *n >= CACHES).await;
    }
}

/// What every reconciler shares.
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    pub events: events::Events,
    pub clusters: clusters::Clusters,
    pub stores: Stores,
    pub monitor: progress::Monitor,
    /// Per ViewVersion uid, the names of its pods at the last reconcile.
    pub pods_seen: PodsSeen,
    /// Replay budgets Kafka holds, as last seen.
    pub quotas: quotas::Quotas,
    /// Writes of each Processor's reconcile its caches must show.
    pub expectations: owned::Expectations,
    /// Applies of objects no decision reads, until their caches show them.
    pub applied: owned::Applied,
    /// Processors and ViewVersions as the operator's last status writes
    /// left them, until their caches show them (read-your-writes).
    pub written: Written,
    failures: Failures,
    /// Per namespace, whether it was terminating when last read, and when.
    namespaces: Mutex<HashMap<String, (bool, Instant)>>,
}

/// The status writers' own last writes (see [`owned::Written`]).
#[derive(Default)]
pub struct Written {
    pub processors: owned::Written<Processor>,
    pub versions: owned::Written<ViewVersion>,
}

/// How often the writes their caches show are forgotten.
const SHOWN_SWEEP: Duration = Duration::from_secs(1);

/// How long a namespace's state is trusted by [`Context::namespace_going`].
const NAMESPACE_MEMORY: Duration = Duration::from_secs(5);

/// Which pods each version had when last seen, in memory: a pod that has
/// gone since may have left a static member behind in its group.
#[derive(Default)]
pub struct PodsSeen(Mutex<HashMap<String, std::collections::BTreeSet<String>>>);

impl PodsSeen {
    /// Records `now` for `uid`; true when a pod seen before is gone.
    pub fn any_gone(&self, uid: &str, now: &std::collections::BTreeSet<String>) -> bool {
        let before = self.0.lock().expect("pods lock").insert(uid.to_string(), now.clone());
        before.is_some_and(|b| !b.is_subset(now))
    }

    pub fn forget(&self, uid: &str) {
        self.0.lock().expect("pods lock").remove(uid);
    }

    /// Keeps only the versions `live` accepts.
    fn retain(&self, live: impl Fn(&str) -> bool) {
        self.0.lock().expect("pods lock").retain(|uid, _| live(uid));
    }
}

/// Per-object failure counts for back-off, with when each last failed.
#[derive(Default)]
struct Failures(Mutex<HashMap<String, (u32, Instant)>>);

/// A failing object is retried within the longest back-off (5 min); an
/// entry untouched for twice that belongs to an object that is gone (or no
/// longer retried), and is dropped.
const FAILURE_MEMORY: Duration = Duration::from_secs(600);

impl Failures {
    fn failed(&self, key: &str, now: Instant) -> u32 {
        let mut f = self.0.lock().expect("failures lock");
        let entry = f.entry(key.to_string()).or_insert((0, now));
        *entry = ((entry.0 + 1).min(16), now);
        entry.0
    }

    fn succeeded(&self, key: &str) {
        self.0.lock().expect("failures lock").remove(key);
    }

    fn forget_older_than(&self, cutoff: Instant) {
        self.0.lock().expect("failures lock").retain(|_, (_, at)| *at >= cutoff);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().expect("failures lock").len()
    }
}

impl Context {
    /// Exponential back-off per object: 2 s doubling to 5 min, reset by
    /// [`Context::succeeded`].
    pub fn backoff(&self, key: &str) -> Duration {
        let n = self.failures.failed(key, Instant::now());
        Duration::from_secs(2u64.saturating_pow(n).min(300))
    }

    pub fn succeeded(&self, key: &str) {
        self.failures.succeeded(key);
    }

    /// Drops what is kept in memory for objects that are gone: back-off
    /// entries, the clients of deleted KafkaClusters (their connections and
    /// batching task go with them) and their metric series, and the pods
    /// seen of deleted versions. Called periodically, once the caches are
    /// listed, so the memory line stays flat under churn.
    async fn forget_the_gone(&self) {
        self.stores.listed().await;
        if let Some(cutoff) = Instant::now().checked_sub(FAILURE_MEMORY) {
            self.failures.forget_older_than(cutoff);
        }
        for (ns, name, apis) in self.clusters.retain(|ns, name| self.stores.clusters.get(&ObjectRef::new(name).within(ns)).is_some()) {
            self.metrics.forget_cluster(&ns, &name, apis);
        }
        let versions: std::collections::HashSet<String> =
            self.stores.versions.state().iter().filter_map(|v| v.metadata.uid.clone()).collect();
        self.pods_seen.retain(|uid| versions.contains(uid));
        let processors: std::collections::HashSet<String> =
            self.stores.processors.state().iter().map(|p| owned::key(&p.namespace().unwrap_or_default(), &p.name_any())).collect();
        self.expectations.forget(|k| processors.contains(k));
        self.namespaces.lock().expect("namespaces lock").retain(|_, (_, at)| at.elapsed() < FAILURE_MEMORY);
    }

    /// Forgets the writes kept until their caches show them, once they do
    /// (every [`SHOWN_SWEEP`]: a burst of writes keeps no more than a
    /// second of them).
    fn forget_shown(&self) {
        self.applied.forget_shown(&self.stores.seen);
        self.written.processors.forget_shown(&self.stores.processors);
        self.written.versions.forget_shown(&self.stores.versions);
    }

    /// Whether namespace `ns` is being deleted, read at most once in
    /// [`NAMESPACE_MEMORY`] (a namespace of that name may be made again
    /// once gone): for writes that only report, where a read each would
    /// cost as much as the write saved. A create reads it fresh
    /// ([`namespace_terminating`]).
    pub async fn namespace_going(&self, ns: &str) -> bool {
        let known = self.namespaces.lock().expect("namespaces lock").get(ns).copied();
        if let Some((terminating, _)) = known.filter(|(_, at)| at.elapsed() < NAMESPACE_MEMORY) {
            return terminating;
        }
        let terminating = namespace_terminating(&self.client, ns).await;
        self.namespaces.lock().expect("namespaces lock").insert(ns.to_string(), (terminating, Instant::now()));
        terminating
    }

    /// Publishes an Event about `obj`; failing to record one is logged, not fatal.
    pub async fn event<K: Resource<DynamicType = ()>>(&self, obj: &K, warning: bool, reason: &str, action: &str, note: String) {
        self.publish(obj, None, warning, reason, action, note).await
    }

    /// Publishes an Event that must be told once: under a name of its own.
    pub async fn event_named<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        name: &str,
        warning: bool,
        reason: &str,
        action: &str,
        note: String,
    ) {
        self.publish(obj, Some(name), warning, reason, action, note).await
    }

    async fn publish<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        name: Option<&str>,
        warning: bool,
        reason: &str,
        action: &str,
        note: String,
    ) {
        // A terminating namespace takes no new objects, and an object on its
        // way out may be going with its namespace: that is asked first
        // (remembered a few seconds), so nothing is sent to be refused.
        if obj.meta().deletion_timestamp.is_some() && self.namespace_going(obj.meta().namespace.as_deref().unwrap_or_default()).await {
            return;
        }
        match self.events.publish(obj.object_ref(&()), name, warning, reason, action, note).await {
            Ok(()) => {}
            // (one that began terminating since; nobody will read the event)
            Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("being terminated") => {}
            Err(e) => warn!(error = %e, reason, "could not record an event"),
        }
    }
}

/// Whether namespace `ns` is being deleted, read fresh. Its objects are
/// going and it takes no new ones, so nothing is created there; asked only
/// before a create. Not knowing (no permission, a failed read) counts as
/// no: the create then speaks for itself.
pub async fn namespace_terminating(client: &Client, ns: &str) -> bool {
    use k8s_openapi::api::core::v1::Namespace;
    matches!(Api::<Namespace>::all(client.clone()).get_metadata_opt(ns).await, Ok(Some(n)) if n.metadata.deletion_timestamp.is_some())
}

/// Whether `obj` is in namespace `ns`. Watch mappers and reconciles scan
/// whole caches with it, so it compares in place (`ResourceExt::namespace`
/// allocates a copy per object).
pub fn in_ns<K: Resource>(obj: &K, ns: Option<&str>) -> bool {
    obj.meta().namespace.as_deref() == ns
}

fn key<K: Resource>(obj: &K) -> String {
    format!("{}/{}", obj.meta().namespace.as_deref().unwrap_or_default(), obj.meta().name.as_deref().unwrap_or_default())
}

/// Writes `status` through the status subresource with server-side apply,
/// unless it equals what the object already has: an idle reconcile writes
/// nothing. The object as written, when it was.
pub async fn apply_status<K, S>(client: &Client, obj: &K, current: Option<&S>, status: &S) -> Result<Option<K>>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
    S: Serialize + PartialEq,
{
    if current == Some(status) {
        return Ok(None);
    }
    let api: Api<K> = Api::namespaced(client.clone(), obj.meta().namespace.as_deref().unwrap_or_default());
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    match api.patch_status(&obj.name_any(), &PatchParams::apply(MANAGER).force(), &Patch::Apply(&patch)).await {
        Ok(written) => Ok(Some(written)),
        // Gone since it was read: its deletion is the next change to see.
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Applies some status fields under their own field manager, so that
/// several writers (the planner, the lag poller, a kind's own controller)
/// each own their fields of one status. None when the object is gone.
pub async fn apply_status_fields<K>(client: &Client, obj: &K, manager: &str, fields: serde_json::Value) -> Result<Option<K>>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), obj.meta().namespace.as_deref().unwrap_or_default());
    // An omitted field is removed from what this manager owns; null is not
    // how server-side apply says that.
    let mut fields = fields;
    if let Some(map) = fields.as_object_mut() {
        map.retain(|_, v| !v.is_null());
    }
    debug!(kind = %K::kind(&()), name = %obj.name_any(), manager, fields = ?fields.as_object().map(|m| m.keys().collect::<Vec<_>>()), "status write");
    let patch = json!({"apiVersion": K::api_version(&()), "kind": K::kind(&()), "status": fields});
    match api.patch_status(&obj.name_any(), &PatchParams::apply(manager).force(), &Patch::Apply(&patch)).await {
        Ok(written) => Ok(Some(written)),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The field manager that owns the operator's finalizer entries (apart
/// from the specs and statuses it applies, so neither drops the other).
const FINALIZER_MANAGER: &str = "kappa-operator-finalizer";

/// Adds `finalizer` to `obj` by server-side apply of that one entry:
/// idempotent, so a cache that has not seen an earlier add yet costs no
/// more than a write. The apply names the object's uid, so it never
/// creates: an object deleted (or replaced) since it was read is left as
/// it is, and false says so. The caller then does nothing more for it:
/// the next reconcile sees what became of it.
pub async fn hold<K>(api: &Api<K>, obj: &K, finalizer: &str) -> Result<bool>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let patch = json!({
        "apiVersion": K::api_version(&()), "kind": K::kind(&()),
        "metadata": {"name": obj.name_any(), "uid": obj.meta().uid, "finalizers": [finalizer]}
    });
    match api.patch(&obj.name_any(), &PatchParams::apply(FINALIZER_MANAGER).force(), &Patch::Apply(&patch)).await {
        Ok(_) => Ok(true),
        // (409: "uid mismatch", the only conflict a forced apply has)
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Removes `finalizer` from the object as it is now on the server (a cache
/// may be behind), with a test that fails rather than drop another
/// controller's finalizer. Gone already is fine.
pub async fn release_finalizer<K>(api: &Api<K>, name: &str, finalizer: &str) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let Some(fresh) = api.get_opt(name).await? else { return Ok(()) };
    let Some(i) = fresh.finalizers().iter().position(|f| f == finalizer) else { return Ok(()) };
    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": format!("/metadata/finalizers/{i}"), "value": finalizer},
        {"op": "remove", "path": format!("/metadata/finalizers/{i}")},
    ]))?;
    match api.patch(name, &PatchParams::default(), &Patch::Json::<()>(patch)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Metrics and logs around one reconcile.
pub async fn measured<F>(ctx: &Context, kind: &'static str, obj_key: String, f: F) -> Result<Action>
where
    F: Future<Output = Result<Action>>,
{
    // No reconcile reads a cache that is still filling.
    ctx.stores.listed().await;
    // (inside kube's span, which says why: the object, a related one, a retry)
    debug!(kind, object = %obj_key, "reconciling");
    let start = Instant::now();
    let result = f.await;
    ctx.metrics.reconciled(kind, start.elapsed());
    match &result {
        Ok(_) => ctx.succeeded(&format!("{kind}/{obj_key}")),
        Err(e) => {
            ctx.metrics.failed(kind, e.label());
            warn!(kind, object = %obj_key, error = %e, "reconcile failed");
        }
    }
    result
}

/// Requeue with per-object exponential back-off after an error.
pub fn error_policy<K: Resource>(kind: &'static str) -> impl Fn(Arc<K>, &Error, Arc<Context>) -> Action {
    move |obj, _err, ctx| Action::requeue(ctx.backoff(&format!("{kind}/{}", key(obj.as_ref()))))
}

/// A Controller for `K` that ignores changes it makes itself: its main
/// watch only triggers a reconcile when the spec (generation), the
/// deletion or a `kappa.dev/` annotation changes, never for a status write
/// or the Topic finalizer it adds (a reconcile goes on after adding it).
///
/// `concurrency` bounds the reconciles in flight, and so the requests in
/// flight and the memory they hold (over HTTP/1.1, a connection each). The first full
/// list into the cache is counted in `listed`.
fn controller_for<K>(
    client: &Client,
    settings: &Settings,
    concurrency: u16,
    listed: Listed,
    seen: Arc<owned::Seen>,
) -> kube::runtime::Controller<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    use kube::runtime::watcher;
    let (reader, stream) = owned::reflected::<K>(client, settings, watcher::Config::default().any_semantic(), &listed, &seen, |_| {});
    let stream = owned::changed(stream, wanted_changes::<K>);
    kube::runtime::Controller::for_stream(stream, reader).with_config(kube::runtime::Config::default().concurrency(concurrency))
}

fn wanted_changes<K: Resource>(obj: &K) -> Option<u64> {
    let m = obj.meta();
    Some(owned::hash64((m.generation, m.deletion_timestamp.as_ref().map(|t| t.0.as_second()), owned::own_annotations(m))))
}

/// The API for a kind across the watched namespaces.
pub fn watched_api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Refuses to start when the CRDs are missing, naming the install command.
pub async fn check_crds(client: &Client, namespace: Option<&str>) -> Result<()> {
    async fn present<K>(client: &Client, ns: Option<&str>) -> Result<bool>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
    {
        match watched_api::<K>(client, ns).list_metadata(&ListParams::default().limit(1)).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
    let mut missing = Vec::new();
    if !present::<KafkaCluster>(client, namespace).await? {
        missing.push("kafkaclusters.kappa.dev");
    }
    if !present::<Topic>(client, namespace).await? {
        missing.push("topics.kappa.dev");
    }
    if !present::<Processor>(client, namespace).await? {
        missing.push("processors.kappa.dev");
    }
    if !present::<ViewVersion>(client, namespace).await? {
        missing.push("viewversions.kappa.dev");
    }
    if missing.is_empty() { Ok(()) } else { Err(Error::CrdsMissing(format!("missing: {}", missing.join(", ")))) }
}

/// What a controller yields for each reconcile.
pub type Reconciled<K> =
    std::result::Result<(ObjectRef<K>, Action), kube::runtime::controller::Error<Error, kube::runtime::watcher::Error>>;

/// Logs what a controller yields: reconcile errors are logged
/// where they happen; a failing watch or runner is logged here, or it would
/// go unseen while the controller waits to retry.
async fn report<K: Resource>(r: Reconciled<K>) {
    use kube::runtime::controller::Error as E;
    match r {
        Ok(_) | Err(E::ReconcilerFailed(..)) => {}
        Err(E::ObjectNotFound(obj)) => debug!(object = %obj, "a reconcile was due for an object that is gone"),
        Err(e @ (E::QueueError(_) | E::RunnerError(_))) => warn!(error = %e, "controller"),
    }
}

/// Runs every controller until `shutdown` turns true.
pub async fn run(client: Client, settings: Settings, metrics: Arc<Metrics>, shutdown: watch::Receiver<bool>) -> Result<()> {
    check_crds(&client, settings.namespace.as_deref()).await?;
    let instance = std::env::var("POD_NAME").unwrap_or_else(|_| "local".into());
    let events = events::Events::new(client.clone(), instance);

    let listed: Listed = Arc::new(watch::Sender::new(0));
    let seen = Arc::new(owned::Seen::default());
    let kc = controller_for::<KafkaCluster>(&client, &settings, 16, listed.clone(), seen.clone());
    // 64 Topics in flight keep the API server (the bound on the lab) as busy
    // as 256 did, with a sixth less memory at 1,000 Topics and a quarter
    // less at 3,000 (hack/bench.sh topics).
    let topics = controller_for::<Topic>(&client, &settings, 64, listed.clone(), seen.clone());
    let processors = controller_for::<Processor>(&client, &settings, 32, listed.clone(), seen.clone());
    let versions = controller_for::<ViewVersion>(&client, &settings, 64, listed.clone(), seen.clone());
    let (owned, streams) = owned::Owned::new(&client, &settings, &listed, &seen);
    let stores = Stores {
        clusters: kc.store(),
        topics: topics.store(),
        processors: processors.store(),
        versions: versions.store(),
        owned,
        seen,
        listed,
    };
    let (monitor, woken) = progress::Monitor::new();
    let ctx = Arc::new(Context {
        client: client.clone(),
        settings: settings.clone(),
        metrics,
        events,
        clusters: clusters::Clusters::default(),
        stores: stores.clone(),
        monitor,
        pods_seen: PodsSeen::default(),
        quotas: quotas::Quotas::default(),
        expectations: owned::Expectations::default(),
        applied: owned::Applied::default(),
        written: Written::default(),
        failures: Failures::default(),
        namespaces: Mutex::default(),
    });

    let stop = move || {
        let mut rx = shutdown.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    info!(namespace = ?settings.namespace, "starting controllers");
    let kc = kafka_cluster::run(kc, &client, &ctx, stop()).for_each(report);
    let topics = topic::run(topics, &client, &ctx, stop()).for_each(report);
    let processors = processor::run(processors, &client, &ctx, streams, woken, stop()).for_each(report);
    let versions = view_version::run(versions, &client, &ctx, stop()).for_each(report);
    let progress = progress::run(ctx.clone(), stop());
    let housekeeping = {
        let (ctx, stop) = (ctx.clone(), stop());
        async move {
            let sweep = async {
                let mut swept = Instant::now();
                loop {
                    tokio::time::sleep(SHOWN_SWEEP).await;
                    ctx.forget_shown();
                    if swept.elapsed() >= ctx.settings.resync {
                        swept = Instant::now();
                        ctx.forget_the_gone().await;
                        quotas::sweep(&ctx).await;
                    }
                }
            };
            tokio::select! {
                _ = sweep => {},
                _ = stop => {},
            }
        }
    };
    tokio::join!(kc, topics, processors, versions, progress, housekeeping);
    info!("controllers stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_gone_since_the_last_look_is_noticed_once() {
        let seen = PodsSeen::default();
        let set = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<std::collections::BTreeSet<_>>();
        assert!(!seen.any_gone("v", &set(&["a"])), "nothing to compare with after a start");
        assert!(!seen.any_gone("v", &set(&["a", "b"])), "a pod added");
        assert!(seen.any_gone("v", &set(&["b"])), "pod a is gone");
        assert!(!seen.any_gone("v", &set(&["b"])), "and told once");
    }

    #[test]
    fn back_off_entries_of_objects_no_longer_retried_are_dropped() {
        let f = Failures::default();
        let start = Instant::now();
        assert_eq!(f.failed("Topic/ns/a", start), 1);
        assert_eq!(f.failed("Topic/ns/a", start), 2, "a failure again doubles the wait");
        f.failed("Topic/ns/gone", start);
        let later = start + FAILURE_MEMORY;
        f.failed("Topic/ns/a", later);
        f.forget_older_than(later);
        assert_eq!(f.len(), 1, "only the object still retried is remembered");
        assert_eq!(f.failed("Topic/ns/a", later), 4);
        f.succeeded("Topic/ns/a");
        assert_eq!(f.len(), 0);
    }

    #[tokio::test]
    async fn a_deleted_kafka_clusters_client_is_dropped() {
        let clusters = clusters::Clusters::default();
        let kept = clusters.ensure("ns", "kept", crate::kafka::Settings::plaintext("localhost:1"));
        let gone = clusters.ensure("ns", "gone", crate::kafka::Settings::plaintext("localhost:2"));
        let weak = Arc::downgrade(&gone);
        drop(gone);
        let dropped = clusters.retain(|_, name| name == "kept");
        assert_eq!(dropped.iter().map(|(ns, name, _)| format!("{ns}/{name}")).collect::<Vec<_>>(), ["ns/gone"]);
        assert!(weak.upgrade().is_none(), "nothing holds the deleted cluster's client");
        assert!(Arc::ptr_eq(&clusters.get("ns", "kept").unwrap(), &kept));
    }

    #[tokio::test]
    async fn reconciles_wait_until_every_cache_is_listed() {
        let listed: Listed = Arc::new(watch::Sender::new(0));
        let stores = Stores {
            clusters: kube::runtime::reflector::store().0,
            topics: kube::runtime::reflector::store().0,
            processors: kube::runtime::reflector::store().0,
            versions: kube::runtime::reflector::store().0,
            owned: owned::Owned::empty(),
            seen: Arc::default(),
            listed: listed.clone(),
        };
        // Several waiters, as several reconciles are: each is woken.
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                tokio::spawn({
                    let stores = stores.clone();
                    async move { stores.listed().await }
                })
            })
            .collect();
        for _ in 0..CACHES - 1 {
            listed.send_modify(|n| *n += 1);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(waiters.iter().all(|w| !w.is_finished()), "all caches but one are not enough");
        listed.send_modify(|n| *n += 1);
        for w in waiters {
            tokio::time::timeout(Duration::from_secs(5), w).await.expect("woken once all are listed").unwrap();
        }
    }
}

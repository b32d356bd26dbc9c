//! Caches of the objects the operator makes for Processors (Deployments,
//! Pods, Jobs, ConfigMaps, Services, all labelled `kappa.dev/processor`),
//! and the expectations that say when a reconcile may trust them.
//!
//! A steady Processor's reconcile reads only caches: no API request. But a
//! cache may lag the operator's own last write (a promotion, a created
//! version, a scale), and a reconcile acting on such a cache could do it
//! twice. So every write a Processor's reconcile makes to the objects it
//! plans with records the resourceVersion Kubernetes answered with, and the
//! next reconcile reads from the caches only once each kind's watch has
//! delivered that version (the expectations pattern of Kubernetes' own
//! ReplicaSet and Job controllers, by resourceVersion instead of by count);
//! until then it reads fresh from the API server.

use std::{
    collections::HashMap,
    fmt::Debug,
    sync::{Arc, Mutex},
};

use futures::{Stream, StreamExt};
use k8s_openapi::api::{
    apps::v1::Deployment,
    batch::v1::Job,
    core::v1::{ConfigMap, Pod, Service},
};
use kube::{
    Client, Resource, ResourceExt,
    api::ObjectMeta,
    runtime::{WatchStreamExt, reflector, reflector::Store, watcher},
};
use serde::de::DeserializeOwned;

use super::{Listed, Settings, watched_api};
use crate::api::labels;

/// The highest resourceVersion each kind's watch has delivered.
#[derive(Default)]
pub struct Seen(Mutex<HashMap<String, u64>>);

impl Seen {
    fn saw(&self, kind: &str, rv: Option<&str>) {
        if let Some(rv) = rv.and_then(|r| r.parse::<u64>().ok()) {
            let mut seen = self.0.lock().expect("seen lock");
            let at = seen.entry(kind.to_string()).or_default();
            *at = (*at).max(rv);
        }
    }

    fn reached(&self, kind: &str, rv: u64) -> bool {
        self.0.lock().expect("seen lock").get(kind).is_some_and(|at| *at >= rv)
    }

    /// Whether the cache of `kind` has had every event that any watch
    /// waking reconciles has delivered (recorded under [`woke`]`(kind)`):
    /// a reconcile woken by such an event finds it in the cache.
    pub fn caught_up_with_wakes(&self, kind: &str) -> bool {
        let seen = self.0.lock().expect("seen lock");
        let woke = seen.get(&woke(kind)).copied().unwrap_or(0);
        seen.get(kind).is_some_and(|at| *at >= woke)
    }
}

/// The key under which a watch that wakes reconciles records what it
/// delivered of `kind`.
fn woke(kind: &str) -> String {
    format!("{kind}/woke")
}

/// A watch stream that wakes reconciles with `kind` events: records each
/// resourceVersion it delivers, so that [`Seen::caught_up_with_wakes`] can
/// tell whether the cache has it too.
pub fn waking<T, E>(
    stream: impl Stream<Item = Result<watcher::Event<T>, E>> + Send + 'static,
    kind: &str,
    seen: &Arc<Seen>,
) -> impl Stream<Item = Result<watcher::Event<T>, E>> + Send + 'static
where
    T: Resource + Send + 'static,
    E: Send + 'static,
{
    let (key, seen) = (woke(kind), seen.clone());
    stream.inspect(move |e| {
        if let Ok(watcher::Event::Apply(o) | watcher::Event::Delete(o)) = e {
            seen.saw(&key, o.meta().resource_version.as_deref());
        }
    })
}

/// Per Processor (`namespace/name`), the resourceVersion of its latest
/// write of each kind that its caches must show.
#[derive(Default)]
pub struct Expectations(Mutex<HashMap<String, HashMap<String, u64>>>);

impl Expectations {
    /// A write by `processor`'s reconcile, answered with `rv`. An object
    /// deleted at once has none (and a delete is safe to repeat); a version
    /// that is not a number is never met: that Processor reads fresh.
    pub fn wrote(&self, processor: &str, kind: &str, rv: Option<&str>) {
        let Some(rv) = rv else { return };
        let rv = rv.parse::<u64>().unwrap_or(u64::MAX);
        let mut all = self.0.lock().expect("expectations lock");
        let at = all.entry(processor.to_string()).or_default().entry(kind.to_string()).or_default();
        *at = (*at).max(rv);
    }

    /// Whether every write of `processor`'s is in the caches (forgotten once it is).
    pub fn met(&self, processor: &str, seen: &Seen) -> bool {
        let mut all = self.0.lock().expect("expectations lock");
        let met = all.get(processor).is_none_or(|kinds| kinds.iter().all(|(kind, rv)| seen.reached(kind, *rv)));
        if met {
            all.remove(processor);
        }
        met
    }

    /// Forgets a Processor that is gone.
    pub fn forget(&self, keep: impl Fn(&str) -> bool) {
        self.0.lock().expect("expectations lock").retain(|k, _| keep(k));
    }
}

/// The objects the operator applied only to make them so (a view
/// ConfigMap, a Service) and that no decision is taken on: for each, a
/// digest of what was applied and the resourceVersion Kubernetes answered
/// with. Until its cache shows that version, the same apply again changes
/// nothing, so it is skipped (a reconcile soon after the first saw a cache
/// behind it and applied twice).
#[derive(Default)]
pub struct Applied(Mutex<HashMap<String, (u64, u64)>>);

impl Applied {
    /// Whether applying `digest` to `object` (of `kind`) is already done:
    /// applied last, and its cache has not caught up with it yet.
    pub fn in_flight(&self, kind: &str, object: &str, digest: u64, seen: &Seen) -> bool {
        let mut all = self.0.lock().expect("applied lock");
        let key = format!("{kind}/{object}");
        match all.get(&key) {
            Some((d, rv)) if *d == digest && !seen.reached(kind, *rv) => true,
            Some(_) => {
                all.remove(&key);
                false
            }
            None => false,
        }
    }

    /// An apply of `digest` to `object`, answered with `rv`.
    pub fn record(&self, kind: &str, object: &str, digest: u64, rv: Option<&str>) {
        if let Some(rv) = rv.and_then(|r| r.parse::<u64>().ok()) {
            self.0.lock().expect("applied lock").insert(format!("{kind}/{object}"), (digest, rv));
        }
    }

    /// Forgets the applies their caches show (the rest of the entries).
    pub fn forget_shown(&self, seen: &Seen) {
        self.0.lock().expect("applied lock").retain(|key, (_, rv)| key.split_once('/').is_some_and(|(kind, _)| !seen.reached(kind, *rv)));
    }
}

/// Objects as the operator's own last write of each left them (the API
/// server's answer), until their cache shows that write or a later one. A
/// reconcile that runs before then starts from what it wrote, not from a
/// cache behind it: it neither writes the same status again with new
/// transition times nor tells the same event twice.
pub struct Written<K>(Mutex<HashMap<String, Arc<K>>>);

impl<K> Default for Written<K> {
    fn default() -> Self {
        Written(Mutex::default())
    }
}

impl<K: Resource<DynamicType = ()> + Clone> Written<K> {
    /// The object as a write answered (its managed fields dropped, as in
    /// the caches).
    pub fn record(&self, mut written: K) {
        written.meta_mut().managed_fields = None;
        if version(&written).is_some() {
            self.0.lock().expect("written lock").insert(super::key(&written), Arc::new(written));
        }
    }

    /// The newer of the cached object and the operator's last write of it
    /// (the same object: same uid); the write is forgotten once the cache
    /// has it.
    pub fn newest(&self, cached: Arc<K>) -> Arc<K> {
        let mut all = self.0.lock().expect("written lock");
        let key = super::key(cached.as_ref());
        match all.get(&key) {
            Some(w) if w.meta().uid == cached.meta().uid && version(w.as_ref()) > version(cached.as_ref()) => w.clone(),
            Some(_) => {
                all.remove(&key);
                cached
            }
            None => cached,
        }
    }

    /// Forgets the writes `store` shows (or whose object is gone).
    pub fn forget_shown(&self, store: &Store<K>) {
        self.0.lock().expect("written lock").retain(|_, w| {
            store
                .get(&reflector::ObjectRef::from_obj(w.as_ref()))
                .is_some_and(|c| c.meta().uid == w.meta().uid && version(c.as_ref()) < version(w.as_ref()))
        });
    }
}

/// An object's resourceVersion as a number (None when it is not one: then
/// nothing is taken to be newer than the cache).
fn version<K: Resource>(obj: &K) -> Option<u64> {
    obj.meta().resource_version.as_deref()?.parse().ok()
}

/// The key of a Processor in [`Expectations`].
pub fn key(namespace: &str, processor: &str) -> String {
    format!("{namespace}/{processor}")
}

/// Records a write made by Processor `processor`'s reconcile (the object
/// as Kubernetes answered) that its caches must show.
pub fn wrote<K: Resource<DynamicType = ()>>(expectations: &Expectations, namespace: &str, processor: &str, obj: &K) {
    expectations.wrote(&key(namespace, processor), &K::kind(&()), obj.meta().resource_version.as_deref());
}

/// The caches of objects made for Processors.
#[derive(Clone)]
pub struct Owned {
    pub deployments: Store<Deployment>,
    pub pods: Store<Pod>,
    pub jobs: Store<Job>,
    pub config_maps: Store<ConfigMap>,
    pub services: Store<Service>,
}

/// The watch streams that fill [`Owned`]: the Processor controller polls
/// them (and reconciles the Processor an object belongs to).
pub struct Streams {
    pub deployments: futures::stream::BoxStream<'static, Result<Deployment, watcher::Error>>,
    pub pods: futures::stream::BoxStream<'static, Result<Pod, watcher::Error>>,
    pub jobs: futures::stream::BoxStream<'static, Result<Job, watcher::Error>>,
    pub config_maps: futures::stream::BoxStream<'static, Result<ConfigMap, watcher::Error>>,
    pub services: futures::stream::BoxStream<'static, Result<Service, watcher::Error>>,
}

/// How many caches [`Owned`] adds to the ones reconciles wait for.
pub const CACHES: usize = 5;

impl Owned {
    pub fn new(client: &Client, settings: &Settings, listed: &Listed, seen: &Arc<Seen>) -> (Owned, Streams) {
        let (deployments, d) = cache::<Deployment>(client, settings, listed, seen, Some(deployment_changes), trim_deployment);
        let (pods, p) = cache::<Pod>(client, settings, listed, seen, None, trim_pod);
        let (jobs, j) = cache::<Job>(client, settings, listed, seen, None, |_| {});
        let (config_maps, c) = cache::<ConfigMap>(client, settings, listed, seen, None, |_| {});
        let (services, s) = cache::<Service>(client, settings, listed, seen, None, |_| {});
        (
            Owned { deployments, pods, jobs, config_maps, services },
            Streams { deployments: d, pods: p, jobs: j, config_maps: c, services: s },
        )
    }

    #[cfg(test)]
    pub fn empty() -> Owned {
        Owned {
            deployments: reflector::store().0,
            pods: reflector::store().0,
            jobs: reflector::store().0,
            config_maps: reflector::store().0,
            services: reflector::store().0,
        }
    }
}

/// The objects of `store` in `ns` labelled for Processor `label`.
pub fn of<K: Resource + Clone>(store: &Store<K>, ns: &str, label: &str) -> Vec<Arc<K>>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    store
        .state()
        .into_iter()
        .filter(|o| o.meta().namespace.as_deref() == Some(ns) && o.labels().get(labels::PROCESSOR).map(String::as_str) == Some(label))
        .collect()
}

fn cache<K>(
    client: &Client,
    settings: &Settings,
    listed: &Listed,
    seen: &Arc<Seen>,
    wakes_on: Option<fn(&K) -> Option<u64>>,
    trim: fn(&mut K),
) -> (Store<K>, futures::stream::BoxStream<'static, Result<K, watcher::Error>>)
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let config = watcher::Config::default().labels(labels::PROCESSOR);
    let (reader, stream) = reflected::<K>(client, settings, config, listed, seen, trim);
    match wakes_on {
        Some(property) => (reader, boxed(changed(stream, property))),
        None => (reader, boxed(stream.applied_objects())),
    }
}

/// A watch of `K` into a cache, counting its first full list in `listed`
/// and every resourceVersion it delivers in `seen`. Managed fields are
/// dropped (they are most of an applied object's size), and what `trim`
/// drops: what no reconcile reads.
pub fn reflected<K>(
    client: &Client,
    settings: &Settings,
    config: watcher::Config,
    listed: &Listed,
    seen: &Arc<Seen>,
    trim: fn(&mut K),
) -> (Store<K>, impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static)
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let kind = K::kind(&()).into_owned();
    let (listed, seen) = (listed.clone(), seen.clone());
    let mut first = true;
    // A (re)list's objects are in the cache only once it is done.
    let mut listing: Option<String> = None;
    let stream = watcher(watched_api::<K>(client, settings.namespace.as_deref()), config)
        .default_backoff()
        .modify(move |o: &mut K| {
            o.meta_mut().managed_fields = None;
            trim(o);
        })
        .reflect(writer)
        .inspect(move |e| match e {
            Ok(watcher::Event::InitDone) => {
                seen.saw(&kind, listing.take().as_deref());
                if first {
                    first = false;
                    listed.send_modify(|n| *n += 1);
                }
            }
            Ok(watcher::Event::InitApply(o)) => {
                let rv = o.meta().resource_version.as_deref().and_then(|r| r.parse::<u64>().ok());
                let at = listing.as_deref().and_then(|r| r.parse::<u64>().ok());
                if rv > at {
                    listing = rv.map(|r| r.to_string());
                }
            }
            Ok(watcher::Event::Apply(o) | watcher::Event::Delete(o)) => seen.saw(&kind, o.meta().resource_version.as_deref()),
            _ => {}
        });
    (reader, stream)
}

/// The objects of a watch whose `property` (a hash of what a reconcile
/// reads) changed since the watch last delivered them; an object without
/// one always passes. Like kube's `predicate_filter`, but what it remembers
/// is bounded by the objects that exist: a deletion, or an object missing
/// from a relist, is forgotten at once (kube's keeps every object seen for
/// an hour, which under churn grows with every name ever made).
pub fn changed<K, S>(stream: S, property: fn(&K) -> Option<u64>) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource + Send + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    // By uid; while a (re)list is under way, the uids it delivered.
    let mut known: HashMap<String, u64> = HashMap::new();
    let mut listing: Option<std::collections::HashSet<String>> = None;
    stream.filter_map(move |event| {
        let uid = |o: &K| o.meta().uid.clone().unwrap_or_default();
        let out = match event {
            Ok(watcher::Event::Init) => {
                listing = Some(Default::default());
                None
            }
            Ok(watcher::Event::InitDone) => {
                if let Some(listed) = listing.take() {
                    known.retain(|u, _| listed.contains(u));
                }
                None
            }
            Ok(watcher::Event::Delete(o)) => {
                known.remove(&uid(&o));
                None
            }
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                let u = uid(&o);
                if let Some(listed) = listing.as_mut() {
                    listed.insert(u.clone());
                }
                match property(&o) {
                    Some(p) if known.insert(u, p) == Some(p) => None,
                    _ => Some(Ok(o)),
                }
            }
            Err(e) => Some(Err(e)),
        };
        futures::future::ready(out)
    })
}

/// What a Processor's reconcile reads of its Deployments: a Deployment
/// event that changes none of it (the Deployment controller's conditions,
/// counts and revision annotation as it works through a burst of
/// thousands) wakes nothing. Of the annotations, only the operator's own
/// (`kappa.dev/...`) are read.
pub fn deployment_changes(d: &Deployment) -> Option<u64> {
    let m = &d.metadata;
    let deleted = m.deletion_timestamp.as_ref().map(|t| t.0.as_second());
    Some(hash64((&m.uid, m.generation, &m.labels, own_annotations(m), deleted, d.status.as_ref().and_then(|s| s.ready_replicas))))
}

/// What a reconcile reads of a Deployment it made is its labels, the
/// operator's own annotations (on it and on its pod template), its replicas
/// and its status counts; the rest is not kept in the cache. The containers
/// are most of its size, and each map of a few labels costs a B-tree node
/// of half a kilobyte: at 1,000 Processors the selector, the template's
/// labels and the Deployment controller's annotations were 1.5 MiB.
fn trim_deployment(d: &mut Deployment) {
    keep_own_annotations(&mut d.metadata);
    if let Some(spec) = d.spec.as_mut() {
        spec.template.spec = None;
        spec.selector = Default::default();
        spec.strategy = None;
        if let Some(m) = spec.template.metadata.as_mut() {
            m.labels = None;
            keep_own_annotations(m);
        }
    }
    if let Some(status) = d.status.as_mut() {
        status.conditions = None;
    }
}

/// Drops the annotations that are not the operator's own (`kappa.dev/...`).
fn keep_own_annotations(m: &mut ObjectMeta) {
    if let Some(a) = m.annotations.as_mut() {
        a.retain(|k, _| k.starts_with("kappa.dev/"));
        if a.is_empty() {
            m.annotations = None;
        }
    }
}

/// What a reconcile reads of a pod is its metadata and status: its spec is
/// not kept in the cache.
fn trim_pod(p: &mut Pod) {
    p.spec = None;
}

/// The annotations the operator writes and reads (its API group's, `kappa.dev/...`).
pub fn own_annotations(m: &ObjectMeta) -> Vec<(&String, &String)> {
    m.annotations.iter().flatten().filter(|(k, _)| k.starts_with("kappa.dev/")).collect()
}

/// A 64-bit hash of `value`, for what is compared with itself within one
/// process (change filters, digests of applies).
pub fn hash64(value: impl std::hash::Hash) -> u64 {
    use std::hash::Hasher;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

fn boxed<T: Send + 'static>(s: impl Stream<Item = T> + Send + 'static) -> futures::stream::BoxStream<'static, T> {
    s.boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cache_is_read_only_once_it_has_every_event_that_woke_a_reconcile() {
        let seen = Arc::new(Seen::default());
        assert!(!seen.caught_up_with_wakes("ViewVersion"), "a cache that delivered nothing yet is not read");
        seen.saw("ViewVersion", Some("10"));
        assert!(seen.caught_up_with_wakes("ViewVersion"));
        let object = |rv: &str| {
            let mut c = ConfigMap::default();
            c.metadata.resource_version = Some(rv.into());
            c
        };
        let events = vec![Ok::<_, ()>(watcher::Event::Apply(object("12"))), Ok(watcher::Event::Delete(object("11")))];
        let delivered: Vec<_> = waking(futures::stream::iter(events), "ViewVersion", &seen).collect().await;
        assert_eq!(delivered.len(), 2, "the events go on to the controller");
        assert!(!seen.caught_up_with_wakes("ViewVersion"), "an event at 12 woke a reconcile; the cache is at 10");
        seen.saw("ViewVersion", Some("12"));
        assert!(seen.caught_up_with_wakes("ViewVersion"));
        assert!(!seen.caught_up_with_wakes("Deployment"), "each kind for itself");
    }

    #[test]
    fn the_same_apply_waits_for_its_cache_and_a_different_one_does_not() {
        let (seen, applied) = (Seen::default(), Applied::default());
        assert!(!applied.in_flight("ConfigMap", "ns/p-view", 7, &seen), "never applied");
        applied.record("ConfigMap", "ns/p-view", 7, Some("40"));
        seen.saw("ConfigMap", Some("39"));
        assert!(applied.in_flight("ConfigMap", "ns/p-view", 7, &seen), "the cache is behind the apply");
        assert!(!applied.in_flight("ConfigMap", "ns/p-view", 8, &seen), "something else to apply");
        applied.record("ConfigMap", "ns/p-view", 7, Some("40"));
        assert!(!applied.in_flight("Service", "ns/p-view", 7, &seen), "each kind for itself");
        applied.forget_shown(&seen);
        assert!(applied.in_flight("ConfigMap", "ns/p-view", 7, &seen), "not shown yet: kept");
        seen.saw("ConfigMap", Some("40"));
        applied.forget_shown(&seen);
        assert!(applied.0.lock().unwrap().is_empty(), "shown: the cache decides from now on");
        applied.record("ConfigMap", "ns/p-view", 7, Some("50"));
        seen.saw("ConfigMap", Some("50"));
        assert!(!applied.in_flight("ConfigMap", "ns/p-view", 7, &seen), "the cache shows it: compared there");
        assert!(applied.0.lock().unwrap().is_empty());
    }

    #[test]
    fn a_cached_deployment_keeps_what_a_reconcile_reads_and_nothing_else() {
        use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus};
        let map = |pairs: &[(&str, &str)]| Some(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        let mut d = Deployment::default();
        d.metadata.labels = map(&[(labels::PROCESSOR, "p"), (labels::VERSION, "v1")]);
        d.metadata.annotations = map(&[("kappa.dev/spec-hash", "h"), ("deployment.kubernetes.io/revision", "3")]);
        let mut spec = DeploymentSpec { replicas: Some(2), ..Default::default() };
        spec.selector.match_labels = map(&[(labels::VERSION, "v1")]);
        spec.template.metadata = Some(ObjectMeta {
            labels: map(&[(labels::VERSION, "v1")]),
            annotations: map(&[("kappa.dev/client-properties", "d"), ("kubectl.kubernetes.io/restartedAt", "now")]),
            ..Default::default()
        });
        spec.template.spec = Some(Default::default());
        d.spec = Some(spec);
        d.status = Some(DeploymentStatus { ready_replicas: Some(1), conditions: Some(vec![Default::default()]), ..Default::default() });
        let before = deployment_changes(&d);
        trim_deployment(&mut d);
        assert_eq!(deployment_changes(&d), before, "what wakes a reconcile is all kept");
        assert_eq!(d.labels().len(), 2);
        assert_eq!(own_annotations(&d.metadata), vec![(&"kappa.dev/spec-hash".to_string(), &"h".to_string())]);
        let spec = d.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(2));
        let template = spec.template.metadata.as_ref().unwrap();
        assert_eq!(template.annotations, map(&[("kappa.dev/client-properties", "d")]));
        assert!(template.labels.is_none() && spec.template.spec.is_none() && spec.selector.match_labels.is_none());
        let status = d.status.as_ref().unwrap();
        assert_eq!(status.ready_replicas, Some(1));
        assert!(status.conditions.is_none());
        let mut bare = Deployment::default();
        bare.metadata.annotations = map(&[("deployment.kubernetes.io/revision", "1")]);
        trim_deployment(&mut bare);
        assert!(bare.metadata.annotations.is_none(), "no empty map is kept");
    }

    #[test]
    fn only_deployment_changes_a_reconcile_reads_wake_its_processor() {
        use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentStatus};
        let mut d = Deployment::default();
        d.metadata.generation = Some(1);
        d.status = Some(DeploymentStatus { ready_replicas: Some(1), ..Default::default() });
        let before = deployment_changes(&d);
        let status = d.status.as_mut().unwrap();
        status.observed_generation = Some(1);
        status.conditions = Some(vec![DeploymentCondition { type_: "Available".into(), status: "True".into(), ..Default::default() }]);
        d.metadata.annotations = Some([("deployment.kubernetes.io/revision".to_string(), "1".to_string())].into());
        assert_eq!(deployment_changes(&d), before, "the Deployment controller's own bookkeeping");
        d.metadata.annotations.as_mut().unwrap().insert("kappa.dev/spec-hash".into(), "abc".into());
        assert_ne!(deployment_changes(&d), before, "the operator's own annotation");
        let before = deployment_changes(&d);
        d.status.as_mut().unwrap().ready_replicas = Some(2);
        assert_ne!(deployment_changes(&d), before, "a pod more is ready");
        let ready = deployment_changes(&d);
        d.metadata.generation = Some(2);
        assert_ne!(deployment_changes(&d), ready, "its spec changed (a scale, an edit behind the operator's back)");
    }

    #[test]
    fn a_reconcile_reads_its_own_last_write_until_the_cache_shows_it() {
        let object = |uid: &str, rv: &str, data: &str| {
            let mut c = ConfigMap::default();
            c.metadata.namespace = Some("ns".into());
            c.metadata.name = Some("p".into());
            c.metadata.uid = Some(uid.into());
            c.metadata.resource_version = Some(rv.into());
            c.data = Some([("k".to_string(), data.to_string())].into());
            Arc::new(c)
        };
        let data = |c: &ConfigMap| c.data.as_ref().unwrap()["k"].clone();
        let written = Written::<ConfigMap>::default();
        assert_eq!(data(&written.newest(object("u1", "10", "cached"))), "cached", "nothing written");
        written.record((*object("u1", "12", "written")).clone());
        assert_eq!(data(&written.newest(object("u1", "10", "cached"))), "written", "the cache is behind the write");
        assert_eq!(data(&written.newest(object("u2", "10", "new object"))), "new object", "another object of that name");
        written.record((*object("u1", "12", "written")).clone());
        assert_eq!(data(&written.newest(object("u1", "13", "later"))), "later", "a later change in the cache wins");
        assert!(written.0.lock().unwrap().is_empty(), "and the write is forgotten");

        let (store, mut writer) = reflector::store::<ConfigMap>();
        written.record((*object("u1", "12", "written")).clone());
        writer.apply_watcher_event(&watcher::Event::Apply((*object("u1", "11", "cached")).clone()));
        written.forget_shown(&store);
        assert_eq!(written.0.lock().unwrap().len(), 1, "not shown yet");
        writer.apply_watcher_event(&watcher::Event::Apply((*object("u1", "12", "written")).clone()));
        written.forget_shown(&store);
        assert!(written.0.lock().unwrap().is_empty(), "shown");
    }

    #[test]
    fn a_cached_deployment_keeps_what_a_reconcile_reads() {
        use k8s_openapi::api::{apps::v1::DeploymentSpec, core::v1::PodSpec};
        let mut d = Deployment::default();
        let mut spec = DeploymentSpec { replicas: Some(2), ..Default::default() };
        spec.template.metadata = Some(kube::api::ObjectMeta {
            annotations: Some([("kappa.dev/client-properties".to_string(), "abc".to_string())].into()),
            ..Default::default()
        });
        spec.template.spec = Some(PodSpec::default());
        d.spec = Some(spec);
        trim_deployment(&mut d);
        let spec = d.spec.unwrap();
        assert_eq!(spec.replicas, Some(2));
        assert!(spec.template.metadata.unwrap().annotations.unwrap().contains_key("kappa.dev/client-properties"));
        assert!(spec.template.spec.is_none(), "the containers are not kept");
    }

    #[tokio::test]
    async fn a_watch_passes_changes_and_forgets_what_is_gone() {
        let cm = |uid: &str, v: &str| {
            let mut c = ConfigMap::default();
            c.metadata.uid = Some(uid.into());
            c.data = Some([("v".to_string(), v.to_string())].into());
            c
        };
        let property = |c: &ConfigMap| Some(c.data.as_ref().map_or(0, |d| d["v"].len() as u64));
        use watcher::Event::*;
        let events = vec![
            Init,
            InitApply(cm("a", "1")),
            InitApply(cm("b", "1")),
            InitDone,
            Apply(cm("a", "2")), // the same length: unchanged
            Apply(cm("a", "22")),
            Delete(cm("b", "1")),
            Apply(cm("b", "1")), // gone, then back: passes
            Init,
            InitApply(cm("a", "22")), // a relist: unchanged
            InitDone,                 // b missing from it: forgotten
            Apply(cm("b", "1")),
        ];
        let passed: Vec<String> = changed(futures::stream::iter(events.into_iter().map(Ok)), property)
            .map(|c| {
                let c = c.unwrap();
                format!("{}{}", c.metadata.uid.unwrap(), c.data.unwrap()["v"])
            })
            .collect()
            .await;
        assert_eq!(passed, ["a1", "b1", "a22", "b1", "b1"]);
    }

    #[test]
    fn a_cache_is_trusted_once_its_watch_delivered_the_operators_last_write() {
        let (seen, expect) = (Seen::default(), Expectations::default());
        assert!(expect.met("ns/a", &seen), "nothing written: the caches are trusted");
        expect.wrote("ns/a", "ViewVersion", Some("120"));
        expect.wrote("ns/a", "Deployment", Some("118"));
        seen.saw("ViewVersion", Some("119"));
        seen.saw("Deployment", Some("130"));
        assert!(!expect.met("ns/a", &seen), "the ViewVersion cache has not shown the write at 120");
        assert!(expect.met("ns/b", &seen), "another Processor's writes do not hold this one");
        seen.saw("ViewVersion", Some("121"));
        assert!(expect.met("ns/a", &seen));
        seen.saw("ViewVersion", Some("5"));
        expect.wrote("ns/a", "ViewVersion", Some("125"));
        assert!(!expect.met("ns/a", &seen), "what was seen never goes back");
        expect.wrote("ns/a", "Job", Some("not-a-number"));
        seen.saw("ViewVersion", Some("200"));
        assert!(!expect.met("ns/a", &seen), "a version that cannot be compared is trusted only fresh");
        expect.forget(|k| k != "ns/a");
        assert!(expect.met("ns/a", &seen));
    }
}

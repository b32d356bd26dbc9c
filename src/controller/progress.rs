//! The progress monitor. Every lag poll, per KafkaCluster, it reads the
//! progress of the versions due (a new one or one on its way to a cutover
//! every second, the others every lag poll interval) in a few batched
//! requests (one FindCoordinator and an OffsetFetch per coordinator, then
//! one Metadata and two ListOffsets per partition leader), folds each
//! version's reading into its [`Track`] (the catch-up gate's memory, in
//! memory only: a restarted operator starts every window afresh, which only
//! ever delays a promotion), and:
//!
//! - wakes the version's Processor when the gate's answer changes (and only
//!   then: the planner asks the monitor for the answer itself);
//! - projects lag, progress and the answer into the ViewVersion's status for
//!   people, throttled so that a long replay costs no more writes than a
//!   short one (see [`worth_writing`]; live figures are in the metrics);
//! - says per cluster whether Kafka could be read, and since when.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{Stream, StreamExt};
use k8s_openapi::jiff::Timestamp;
use kube::{ResourceExt, runtime::reflector::ObjectRef};
use serde_json::json;
use tokio::sync::mpsc;
use tracing::warn;

use super::{Context, apply_status_fields, kafka_cluster};
use crate::{
    api::{CatchUp, Processor, RolloutPolicy, VersionPhase, ViewVersion},
    kafka::{
        GroupOffsets, PartitionOffsets,
        lag::{self, Figures},
    },
    metrics::{ProcessorLabels, VersionLabels},
    rollout::{
        self,
        gate::{self, Gate, Track},
    },
};

/// The field manager of the projected figures.
const MANAGER: &str = "kappa-operator-lag";
/// The active version's lag is projected at most this often.
const ACTIVE_LAG_EVERY: Duration = Duration::from_secs(30);

/// What the monitor knows of one version.
#[derive(Default)]
struct Entry {
    track: Track,
    figures: Option<Figures>,
    answer: Option<&'static str>,
    written: Option<Projection>,
    written_at: Option<Instant>,
    /// (when, records consumed) at the previous reading, for the rate.
    sample: Option<(Instant, i64)>,
    rate: i64,
    /// Its metric series, removed with it.
    labels: Option<VersionLabels>,
    /// A hash of what its series show, to set them only when that moves.
    shown: Option<u64>,
}

#[derive(Default)]
struct State {
    /// By ViewVersion uid. Boxed: the table keeps about as many empty
    /// slots as full ones, and an entry is some 600 bytes.
    versions: HashMap<String, Box<Entry>>,
    /// By (namespace, KafkaCluster).
    clusters: HashMap<(String, String), rollout::Kafka>,
}

pub struct Monitor {
    state: Mutex<State>,
    wake: mpsc::UnboundedSender<ObjectRef<Processor>>,
}

/// The attempt a ViewVersion's track follows: a revived standby starts a new one.
fn attempt(vv: &ViewVersion) -> Timestamp {
    vv.status.as_ref().and_then(|s| s.started_at.clone()).or(vv.metadata.creation_timestamp.clone()).map_or(Timestamp::UNIX_EPOCH, |t| t.0)
}

/// The gate's policy from a Processor's rollout policy.
pub fn gate_policy(p: &RolloutPolicy, poll: Duration) -> gate::Policy {
    let secs = |n: i32| Duration::from_secs(n.max(0) as u64);
    gate::Policy {
        max_lag: p.max_lag,
        stable_for: secs(p.stable_for_seconds),
        progress_deadline: secs(p.progress_deadline_seconds),
        stale_after: gate::stale_after(poll),
    }
}

impl Monitor {
    /// The monitor, and the stream of Processors to wake.
    pub fn new() -> (Monitor, impl Stream<Item = ObjectRef<Processor>> + Send + 'static) {
        let (wake, rx) = mpsc::unbounded_channel();
        let woken = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|p| (p, rx)) });
        (Monitor { state: Mutex::default(), wake }, woken)
    }

    /// The gate's answer for a version now, with its latest figures.
    pub fn gate(&self, vv: &ViewVersion, policy: &gate::Policy) -> (Gate, Option<Figures>) {
        let state = self.state.lock().expect("monitor lock");
        match state.versions.get(vv.metadata.uid.as_deref().unwrap_or_default()) {
            Some(e) => (e.track.verdict(Timestamp::now(), policy), e.figures.clone()),
            None => (Gate::Unknown("its progress has not been read yet".into()), None),
        }
    }

    /// Whether Kafka could be read on the last poll of this cluster.
    pub fn kafka(&self, ns: &str, cluster: &str) -> Option<rollout::Kafka> {
        self.state.lock().expect("monitor lock").clusters.get(&(ns.to_string(), cluster.to_string())).cloned()
    }

    /// Notes whether a poll could read the cluster. Up "since" is when this
    /// process saw it come back; without an outage seen, the epoch (the
    /// KafkaCluster's Ready condition knows of older ones).
    fn cluster_read(&self, ns: &str, cluster: &str, outcome: Result<(), String>) {
        let mut state = self.state.lock().expect("monitor lock");
        let key = (ns.to_string(), cluster.to_string());
        let next = match (outcome, state.clusters.get(&key)) {
            (Ok(()), Some(up @ rollout::Kafka::Up { .. })) => up.clone(),
            (Ok(()), Some(rollout::Kafka::Down(_))) => rollout::Kafka::Up { since: Timestamp::now() },
            (Ok(()), None) => rollout::Kafka::Up { since: Timestamp::UNIX_EPOCH },
            (Err(why), _) => rollout::Kafka::Down(why),
        };
        state.clusters.insert(key, next);
    }
}

/// What is projected into a ViewVersion's status.
#[derive(Clone, Debug, PartialEq)]
pub struct Projection {
    pub lag: Option<i64>,
    pub lag_by_topic: gate::SmallMap<String, i64>,
    pub progress: Option<f64>,
    pub replay_target: Option<i64>,
    pub records_per_second: i64,
    pub catch_up: CatchUp,
}

/// Whether a new projection is worth a write: the gate's answer changed, or
/// a replay passed half of its target, or (for the active version, at most
/// every 30 s) its lag changed by an order of magnitude. So a replay costs
/// the same handful of writes however long it is (each also updates the
/// Processor's mirror of it), and an idle version none. Live figures are in
/// the metrics.
pub fn worth_writing(old: Option<&Projection>, new: &Projection, active: bool, since_last: Duration) -> bool {
    let Some(old) = old else { return true };
    let half = |p: &Projection| p.progress.map(|f| (f * 2.0).floor() as i64);
    let magnitude = |p: &Projection| p.lag.map(|l| if l <= 0 { 0 } else { l.ilog10() as i64 + 1 });
    old.catch_up.state != new.catch_up.state
        || half(old) != half(new)
        || (active && magnitude(old) != magnitude(new) && since_last >= ACTIVE_LAG_EVERY)
}

fn catch_up(gate: &Gate) -> CatchUp {
    let message = match gate {
        Gate::CaughtUp => String::new(),
        Gate::Behind { lag } => format!("{lag} records behind"),
        Gate::Stuck { idle } => format!("no progress for {}s", idle.as_secs()),
        Gate::Unknown(why) => why.clone(),
    };
    CatchUp { state: gate.answer().to_string(), message }
}

/// Whether a version is on its way to a cutover: its gate is judged
/// promptly, every second.
fn rolling(vv: &ViewVersion) -> bool {
    use VersionPhase::*;
    matches!(vv.status.as_ref().and_then(|s| s.phase), None | Some(Pending | Replaying | CaughtUp | Verifying))
}

/// Whether a version is read in a poll: one never read or rolling in each
/// (a second apart), the others in the full poll every lag poll interval,
/// all of them together. A new version is read within a second, so that its
/// Processor's first status can carry its lag; and the versions made over a
/// minute's burst are not spread over the interval's seconds, each second's
/// poll asking every coordinator and leader again.
fn due(rolling: bool, read_before: bool, full: bool) -> bool {
    rolling || !read_before || full
}

/// Polls until `shutdown`.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()>) {
    let poll = async {
        ctx.stores.listed().await;
        let interval = ctx.settings.lag_poll_interval;
        let mut next_full = Instant::now();
        // By ViewVersion uid: the versions read at least once.
        let mut read_before: HashSet<String> = HashSet::new();
        loop {
            tokio::time::sleep(interval.min(Duration::from_secs(1))).await;
            // (a poll's own time is slack: one due within half a second counts)
            let now = Instant::now();
            let full = now + Duration::from_millis(500) >= next_full;
            if full {
                next_full = now + interval;
            }
            let mut read = ByCluster::new();
            let mut live = ByCluster::new();
            let mut live_uids = HashSet::new();
            for vv in ctx.stores.versions.state() {
                if vv.status.as_ref().and_then(|s| s.phase) == Some(VersionPhase::Retired) {
                    continue;
                }
                let uid = vv.metadata.uid.as_deref().unwrap_or_default();
                let due = due(rolling(&vv), read_before.contains(uid), full);
                // (between full polls, only what is due costs anything)
                if !due && !full {
                    continue;
                }
                let key = (vv.namespace().unwrap_or_default(), vv.spec.cluster_ref.clone());
                if due {
                    read_before.insert(uid.to_string());
                    read.entry(key.clone()).or_default().push(vv.clone());
                }
                if full {
                    live_uids.insert(uid.to_string());
                    live.entry(key).or_default().push(vv);
                }
            }
            // Side by side: a cluster that does not answer holds up only itself.
            futures::future::join_all(read.iter().map(|((ns, cluster), versions)| poll_cluster(&ctx, ns, cluster, versions))).await;
            if full {
                forget_the_gone(&ctx, &live, &live_uids);
                read_before.retain(|uid| live_uids.contains(uid));
            }
            if !read.is_empty() {
                ctx.metrics.lag_polls.inc();
            }
        }
    };
    tokio::select! {
        _ = poll => {},
        _ = shutdown => {},
    }
}

type ByCluster = BTreeMap<(String, String), Vec<Arc<ViewVersion>>>;

/// Drops what is known of versions that are gone (or retired), and their
/// metric series.
fn forget_the_gone(ctx: &Context, live: &ByCluster, live_uids: &HashSet<String>) {
    let mut state = ctx.monitor.state.lock().expect("monitor lock");
    let gone: Vec<String> = state.versions.keys().filter(|uid| !live_uids.contains(*uid)).cloned().collect();
    let mut gone_processors = Vec::new();
    for uid in gone {
        if let Some(labels) = state.versions.remove(&uid).and_then(|e| e.labels) {
            ctx.metrics.version_lag.remove(&labels);
            ctx.metrics.version_progress_permille.remove(&labels);
            ctx.metrics.version_records_per_second.remove(&labels);
            ctx.metrics.version_eta_seconds.remove(&labels);
            gone_processors.push((labels.namespace, labels.processor));
        }
    }
    // A Processor none of whose versions is left is gone: so are its series.
    for (ns, processor) in gone_processors {
        let left = live.values().flatten().any(|v| super::in_ns(v.as_ref(), Some(&ns)) && v.spec.processor == processor);
        if !left {
            ctx.metrics.phase(&ns, &processor, &rollout::Phase::names(), None);
        }
    }
    state.clusters.retain(|key, _| live.contains_key(key));
}

/// One cluster's poll: the reads, then each version's reading.
async fn poll_cluster(ctx: &Context, ns: &str, cluster: &str, versions: &[Arc<ViewVersion>]) {
    let read = read_cluster(ctx, ns, cluster, versions).await;
    let at = Timestamp::now();
    ctx.monitor.cluster_read(ns, cluster, read.as_ref().map(|_| ()).map_err(Clone::clone));
    if let Err(why) = &read {
        // A namespace being deleted loses its KafkaCluster first: saying
        // "unknown" on each of its versions, about to go, helps no one.
        if super::namespace_terminating(&ctx.client, ns).await {
            return;
        }
        warn!(namespace = %ns, cluster = %cluster, error = %why, "reading progress failed");
    }
    // Each reading is folded in here and now; only the projections worth a
    // write become requests, side by side (a burst of them, every version's
    // gate changing at once, must not hold the next poll back).
    let writes: Vec<Projected> = versions
        .iter()
        .filter_map(|vv| {
            let outcome = match &read {
                Ok((committed, offsets)) => lag::reading(at, &vv.spec.input_topics, &vv.spec.consumer_group, offsets, committed),
                Err(why) => Err(why.clone()),
            };
            observe(ctx, ns, vv, outcome, at)
        })
        .collect();
    futures::stream::iter(writes).for_each_concurrent(PROJECTIONS_IN_FLIGHT, |w| project(ctx, w)).await;
}

/// Status writes of one poll in flight at once.
const PROJECTIONS_IN_FLIGHT: usize = 16;

/// Committed offsets first, then the offsets of every partition they and
/// the inputs cover: the ends are read after the positions, so lag is never
/// understated.
async fn read_cluster(
    ctx: &Context,
    ns: &str,
    cluster: &str,
    versions: &[Arc<ViewVersion>],
) -> Result<(BTreeMap<String, GroupOffsets>, PartitionOffsets), String> {
    let handle = kafka_cluster::handle(ctx, ns, cluster)
        .await
        .map_err(|(reason, message)| format!("KafkaCluster {cluster}: {reason}: {message}"))?;
    let groups: Vec<String> = versions.iter().map(|v| v.spec.consumer_group.clone()).collect();
    let read = async {
        let committed = handle.kafka.committed(&groups).await.map_err(|e| e.to_string())?;
        let topics = lag::topics_to_read(versions.iter().flat_map(|v| v.spec.input_topics.iter()), &committed);
        let offsets = handle.kafka.partition_offsets(&topics).await.map_err(|e| e.to_string())?;
        Ok((committed, offsets))
    }
    .await;
    kafka_cluster::publish_requests(ctx, ns, cluster, &handle);
    read
}

/// A projection to write into a version's status.
struct Projected<'a> {
    vv: &'a ViewVersion,
    fields: serde_json::Value,
    /// Whether the gate's answer changed (its Processor is woken).
    changed: bool,
    answer: &'static str,
}

/// Folds one reading (taken at `at`) into a version's track and its
/// metrics; wakes its Processor if the gate's answer changed; returns its
/// figures when they are worth a write (see [`project`]). The answer is
/// the gate's as of the reading: judged later (after the poll's other
/// writes), a fresh reading would look stale and the answer would flap to
/// Unknown and back, a write each way. Its metric series are set only when
/// what they show moves, and its labels are built once.
fn observe<'a>(
    ctx: &Context,
    ns: &str,
    vv: &'a ViewVersion,
    outcome: Result<(gate::Reading, Figures), String>,
    at: Timestamp,
) -> Option<Projected<'a>> {
    let processor = ctx.stores.processors.get(&ObjectRef::new(&vv.spec.processor).within(ns));
    let poll = ctx.settings.lag_poll_interval;
    let policy = processor.as_ref().map_or_else(|| gate_policy(&RolloutPolicy::default(), poll), |p| gate_policy(&p.spec.rollout, poll));
    let phase = vv.status.as_ref().and_then(|s| s.phase);
    let replay_target = vv.status.as_ref().and_then(|s| s.replay_target);
    let mut state = ctx.monitor.state.lock().expect("monitor lock");
    let e = state.versions.entry(vv.metadata.uid.clone().unwrap_or_default()).or_default();
    match outcome {
        Ok((reading, figures)) => {
            e.track.advance(Ok(reading), attempt(vv), policy.max_lag);
            let now = Instant::now();
            if let Some((at, consumed)) = e.sample {
                let secs = now.duration_since(at).as_secs_f64().max(0.001);
                e.rate = ((figures.consumed - consumed).max(0) as f64 / secs).round() as i64;
            }
            e.sample = Some((now, figures.consumed));
            e.figures = Some(figures);
        }
        Err(why) => e.track.advance(Err(why), attempt(vv), policy.max_lag),
    }
    let gate = e.track.verdict(at, &policy);
    let changed = e.answer != Some(gate.answer());
    e.answer = Some(gate.answer());
    let target = replay_target.or(e.figures.as_ref().map(|f| f.available));
    let lag = e.figures.as_ref().map(|f| f.lag);
    let progress = e.figures.as_ref().zip(target).map(|(f, t)| lag::progress(f.consumed, t));
    let shown = super::owned::hash64((phase, lag, e.rate, progress.map(f64::to_bits)));
    if e.shown != Some(shown) {
        e.shown = Some(shown);
        let labels = e.labels.get_or_insert_with(|| VersionLabels {
            namespace: ns.to_string(),
            processor: vv.spec.processor.clone(),
            version: vv.spec.version.clone(),
        });
        show(ctx, labels, phase, lag, e.rate, progress);
    }
    let projection = Projection {
        lag,
        lag_by_topic: e.figures.as_ref().map(|f| f.lag_by_topic.clone()).unwrap_or_default(),
        progress,
        replay_target: target,
        records_per_second: e.rate,
        catch_up: catch_up(&gate),
    };
    let since = e.written_at.map_or(Duration::MAX, |w| w.elapsed());
    let write = vv.metadata.deletion_timestamp.is_none()
        && worth_writing(e.written.as_ref(), &projection, phase == Some(VersionPhase::Active), since);
    if !write {
        drop(state);
        if changed {
            let _ = ctx.monitor.wake.send(ObjectRef::new(&vv.spec.processor).within(ns));
        }
        return None;
    }
    let fields = json!({
        "lag": projection.lag,
        "lagByTopic": projection.lag_by_topic.iter().collect::<BTreeMap<_, _>>(),
        "progress": projection.progress,
        "replayTarget": projection.replay_target,
        "recordsPerSecond": projection.records_per_second,
        "catchUp": projection.catch_up,
    });
    e.written = Some(projection);
    e.written_at = Some(Instant::now());
    Some(Projected { vv, fields, changed, answer: gate.answer() })
}

/// A version's figures in its metric series (set when they move).
fn show(ctx: &Context, labels: &VersionLabels, phase: Option<VersionPhase>, lag: Option<i64>, rate: i64, progress: Option<f64>) {
    if let Some(f) = lag {
        ctx.metrics.version_lag.get_or_create(labels).set(f);
        if phase == Some(VersionPhase::Active) {
            let processor = ProcessorLabels { namespace: labels.namespace.clone(), processor: labels.processor.clone() };
            ctx.metrics.processor_lag.get_or_create(&processor).set(f);
        }
        ctx.metrics.version_records_per_second.get_or_create(labels).set(rate);
        // An estimate only while it replays: behind and consuming.
        if phase == Some(VersionPhase::Replaying) && f > 0 && rate > 0 {
            ctx.metrics.version_eta_seconds.get_or_create(labels).set((f as f64 / rate as f64).ceil() as i64);
        } else {
            ctx.metrics.version_eta_seconds.remove(labels);
        }
    }
    if let Some(p) = progress {
        ctx.metrics.version_progress_permille.get_or_create(labels).set((p * 1000.0) as i64);
    }
}

/// Writes a version's figures. A new answer is told with them: the write's
/// own event wakes the Processor, which then reads the answer and the
/// figures together (one status write, not one for each).
async fn project(ctx: &Context, w: Projected<'_>) {
    let vv = w.vv;
    let told = match apply_status_fields(&ctx.client, vv, MANAGER, w.fields).await {
        // (an apply that changed nothing makes no event)
        Ok(written) => written.is_some_and(|o| o.metadata.resource_version != vv.metadata.resource_version),
        Err(e) => {
            warn!(version = %vv.name_any(), gate = w.answer, error = %e, "writing progress failed");
            // Try again on the next poll.
            if let Some(e) =
                ctx.monitor.state.lock().expect("monitor lock").versions.get_mut(vv.metadata.uid.as_deref().unwrap_or_default())
            {
                e.written = None;
            }
            false
        }
    };
    if w.changed && !told {
        let _ = ctx.monitor.wake.send(ObjectRef::new(&vv.spec.processor).within(vv.metadata.namespace.as_deref().unwrap_or_default()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn projection(state: &str, progress: f64, lag: i64) -> Projection {
        Projection {
            lag: Some(lag),
            lag_by_topic: gate::SmallMap::new(),
            progress: Some(progress),
            replay_target: Some(1000),
            records_per_second: 0,
            catch_up: CatchUp { state: state.into(), message: String::new() },
        }
    }

    #[test]
    fn a_new_or_rolling_version_is_read_every_second_and_the_others_in_the_full_poll() {
        // Never read: due whatever it is.
        assert!(due(false, false, false));
        // A rolling version: every poll.
        assert!(due(true, true, false));
        // Settled: not in the polls between the full ones...
        assert!(!due(false, true, false));
        // ...but in each full one.
        assert!(due(false, true, true));
    }

    #[test]
    fn a_replay_costs_a_handful_of_writes_however_long() {
        for steps in [100u32, 10_000] {
            let mut written = projection("Behind", 0.0, 1_000_000);
            let mut writes = 0;
            for i in 0..=steps {
                let f = i as f64 / steps as f64;
                let state = if i == steps { "CaughtUp" } else { "Behind" };
                let p = projection(state, f, ((1.0 - f) * 1_000_000.0) as i64);
                if worth_writing(Some(&written), &p, false, Duration::from_secs(60)) {
                    writes += 1;
                    written = p;
                }
            }
            assert!(writes <= 3, "{writes} writes over {steps} readings");
        }
    }

    #[test]
    fn the_active_versions_lag_is_projected_by_magnitude_at_most_every_30s() {
        let old = projection("CaughtUp", 1.0, 5);
        assert!(!worth_writing(Some(&old), &projection("CaughtUp", 1.0, 7), true, Duration::from_secs(60)));
        assert!(!worth_writing(Some(&old), &projection("CaughtUp", 1.0, 70), true, Duration::from_secs(5)));
        assert!(worth_writing(Some(&old), &projection("CaughtUp", 1.0, 70), true, Duration::from_secs(31)));
        assert!(worth_writing(Some(&old), &projection("Unknown", 1.0, 5), true, Duration::ZERO), "a new answer at once");
        assert!(worth_writing(None, &old, true, Duration::ZERO));
    }
}

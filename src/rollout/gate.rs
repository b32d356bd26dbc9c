//! The catch-up gate: from what the progress monitor has read of one
//! version's consumer group, whether the version has caught up. Pure.
//!
//! A [`Track`] follows one attempt of one version through complete
//! [`Reading`]s (every partition answered) and failed ones. Its
//! [`Track::verdict`] is one of:
//!
//! - `Unknown`: the latest reading failed (a topic or partition missing from
//!   an answer, a coordinator that did not answer, the cluster unreachable),
//!   or it is older than the staleness bound, or there is none yet. Unknown
//!   never promotes and never fails a version, and the time it lasts does not
//!   count toward the progress deadline.
//! - `CaughtUp`: the version's committed offsets, over every partition it
//!   consumes, came within `maxLag` of a target, and the stable window around
//!   that had lasted `stableForSeconds` (see below).
//! - `Stuck`: no progress over `progressDeadlineSeconds` of complete readings.
//! - `Behind`: anything else.
//!
//! **The stable window.** Lag read at one instant is zero only for a
//! processor that commits continuously and an input at rest; under steady
//! input a processor that commits every 30 s (Kafka Streams' default) never
//! shows lag 0. So the gate compares commits with *targets*: the log end
//! offsets as of the reading before the one that armed the target. A target
//! met within `maxLag` arms the next one; a commit that falls short of its
//! target shows the version is behind, and restarts the window. The version
//! has caught up once a target is met after the window has lasted
//! `stableForSeconds`, and stays caught up while nothing is outstanding or its
//! next commit is not overdue (twice the interval seen between its commits).
//! A processor that commits every second is caught up `stableForSeconds`
//! after it reaches the log end; one that commits every 30 s, at its first
//! commit after that.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::kafka::Tp;

/// A map kept as a sorted vector. The monitor keeps several per version,
/// for thousands of versions that read one to a few partitions each, and
/// a B-tree's smallest node takes half a kilobyte whatever it holds.
pub type SmallMap<K, V> = litemap::LiteMap<K, V>;

/// Offsets per partition.
pub type Offsets = SmallMap<Tp, i64>;

/// One complete reading of a version's progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reading {
    pub at: Timestamp,
    /// Log end offsets of every partition the version consumes: every
    /// partition of its inputs, and every other partition its consumer
    /// group has committed on (a framework's internal topics).
    pub ends: Offsets,
    /// Where the group stands on each of those partitions: its committed
    /// offset, or the log start where it has none (it starts from the
    /// earliest offset).
    pub positions: Offsets,
    /// Kafka's id of each input topic: a topic deleted and created again
    /// under the same name is another log.
    pub topic_ids: SmallMap<String, String>,
}

impl Reading {
    /// Records not yet consumed, over every partition.
    pub fn lag(&self) -> i64 {
        shortfall(&self.ends, &self.positions)
    }
}

/// Records of `target` the positions have not reached, summed over the
/// partitions of the target that still exist.
fn shortfall(target: &Offsets, positions: &Offsets) -> i64 {
    target.iter().filter_map(|(tp, end)| positions.get(tp).map(|p| (end - p).max(0))).sum()
}

/// What the gate says about a version now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gate {
    CaughtUp,
    Behind { lag: i64 },
    Stuck { idle: Duration },
    Unknown(String),
}

impl Gate {
    /// The answer without its figures: what a change of is worth a wake-up.
    pub fn answer(&self) -> &'static str {
        match self {
            Gate::CaughtUp => "CaughtUp",
            Gate::Behind { .. } => "Behind",
            Gate::Stuck { .. } => "Stuck",
            Gate::Unknown(_) => "Unknown",
        }
    }
}

/// The policy fields the gate uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub max_lag: i64,
    pub stable_for: Duration,
    pub progress_deadline: Duration,
    /// A reading older than this says nothing.
    pub stale_after: Duration,
}

/// The staleness bound for a lag poll interval: three polls, and never less
/// than 10 s, so one slow or lost poll does not blank the gate.
pub fn stale_after(poll: Duration) -> Duration {
    (poll * 3).max(Duration::from_secs(10))
}

/// One attempt of one version, as the monitor has followed it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Track {
    /// When the attempt started (a standby revived for a rollback starts a
    /// new one: nothing seen before counts).
    attempt: Option<Timestamp>,
    /// The latest complete reading.
    last: Option<Reading>,
    /// Why the latest reading failed, if it did.
    gap: Option<String>,
    window: Option<Timestamp>,
    target: Option<Offsets>,
    met_at: Option<Timestamp>,
    /// When the positions last advanced, and the longest interval between
    /// two advances seen.
    committed_at: Option<Timestamp>,
    commit_interval: Option<Duration>,
    /// Time without progress, summed over consecutive complete readings
    /// only: a gap in what is known never counts toward the deadline.
    idle: Duration,
    /// The input topics' ids when the attempt was first read, and what
    /// changed since, if anything did: then nothing this attempt saw holds.
    topic_ids: Option<SmallMap<String, String>>,
    recreated: Option<String>,
}

fn since(later: Timestamp, earlier: Timestamp) -> Duration {
    later.duration_since(earlier).try_into().unwrap_or(Duration::ZERO)
}

impl Track {
    /// Folds one reading (or why it failed) into the track. `attempt` is when
    /// the version's current attempt started; a new one starts the track over.
    pub fn advance(&mut self, reading: Result<Reading, String>, attempt: Timestamp, max_lag: i64) {
        if self.attempt != Some(attempt) {
            *self = Track { attempt: Some(attempt), ..Track::default() };
        }
        let r = match reading {
            Err(why) => {
                // The window needs an unbroken view of the version.
                *self = Track {
                    attempt: self.attempt,
                    last: self.last.take(),
                    gap: Some(why),
                    committed_at: self.committed_at,
                    commit_interval: self.commit_interval,
                    idle: self.idle,
                    topic_ids: self.topic_ids.take(),
                    recreated: self.recreated.take(),
                    ..Track::default()
                };
                return;
            }
            Ok(r) => r,
        };
        // Every reading is checked against the first one's topic ids; the
        // reading kept as the last one keeps none (a monitor follows
        // thousands of versions).
        let mut r = r;
        let ids = std::mem::take(&mut r.topic_ids);
        match &self.topic_ids {
            None => self.topic_ids = Some(ids),
            Some(first) => {
                if let Some((topic, _)) = ids.iter().find(|(t, id)| first.get(*t).is_some_and(|f| f != *id)) {
                    self.recreated.get_or_insert_with(|| {
                        format!(
                            "input topic {topic} was deleted and created again (its topic id changed) since this version started: \
                             what it consumed is not this log; set spec.reprocessNonce to replay it"
                        )
                    });
                }
            }
        }
        let consecutive = self.gap.is_none();
        let advanced =
            self.last.as_ref().is_some_and(|last| r.positions.iter().any(|(tp, p)| last.positions.get(tp).is_none_or(|l| p > l)));
        if let (true, Some(c)) = (advanced, self.committed_at) {
            self.commit_interval = Some(self.commit_interval.unwrap_or_default().max(since(r.at, c)));
        }
        if advanced || self.committed_at.is_none() {
            // The first reading counts as a commit: where the version stood then.
            self.committed_at = Some(r.at);
        }
        if advanced || r.lag() <= max_lag {
            self.idle = Duration::ZERO;
        } else if let (true, Some(last)) = (consecutive, &self.last) {
            self.idle += since(r.at, last.at);
        }
        // The next target: the ends as of the previous reading (so a commit
        // made just after a reading is not held against the version), or
        // these ends when there is no previous one in an unbroken run.
        let next_target = consecutive.then(|| self.last.as_ref().map(|l| l.ends.clone())).flatten().unwrap_or_else(|| r.ends.clone());
        match &self.target {
            Some(target) if shortfall(target, &r.positions) <= max_lag => {
                self.met_at = Some(r.at);
                self.target = Some(next_target);
            }
            Some(_) if advanced => {
                // A commit after the target was armed that does not reach it:
                // the version is behind. The window starts again.
                self.window = Some(r.at);
                self.target = Some(next_target);
                self.met_at = None;
            }
            Some(_) => {}
            None => {
                self.window = Some(r.at);
                self.met_at = (r.lag() <= max_lag).then_some(r.at);
                self.target = Some(r.ends.clone());
            }
        }
        self.gap = None;
        self.last = Some(r);
    }

    /// The gate's answer at `now`.
    pub fn verdict(&self, now: Timestamp, p: &Policy) -> Gate {
        if let Some(why) = self.recreated.as_ref().or(self.gap.as_ref()) {
            return Gate::Unknown(why.clone());
        }
        let Some(last) = &self.last else { return Gate::Unknown("no complete reading of its progress yet".into()) };
        let age = since(now, last.at);
        if age > p.stale_after {
            return Gate::Unknown(format!("the last complete reading of its progress is {}s old", age.as_secs()));
        }
        let lag = last.lag();
        if let (Some(window), Some(met)) = (self.window, self.met_at)
            && since(met, window) >= p.stable_for
        {
            let allowance = p.stable_for.max(self.commit_interval.unwrap_or_default() * 2);
            if lag <= p.max_lag || since(now, met) <= allowance {
                return Gate::CaughtUp;
            }
        }
        if self.idle >= p.progress_deadline {
            return Gate::Stuck { idle: self.idle };
        }
        Gate::Behind { lag }
    }

    /// The latest complete reading, if the latest reading was complete.
    pub fn last(&self) -> Option<&Reading> {
        self.last.as_ref().filter(|_| self.gap.is_none())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn tp(p: i32) -> Tp {
        ("in".to_string(), p)
    }

    fn reading(at: i64, end: i64, position: i64) -> Reading {
        Reading {
            at: t(at),
            ends: Offsets::from_iter([(tp(0), end)]),
            positions: Offsets::from_iter([(tp(0), position)]),
            topic_ids: SmallMap::from_iter([("in".into(), "id1".into())]),
        }
    }

    fn policy(max_lag: i64, stable_for: u64) -> Policy {
        Policy {
            max_lag,
            stable_for: Duration::from_secs(stable_for),
            progress_deadline: Duration::from_secs(60),
            stale_after: Duration::from_secs(10),
        }
    }

    #[test]
    fn lag_zero_for_stable_for_is_caught_up_and_not_before() {
        let p = policy(0, 10);
        let mut track = Track::default();
        // Catching up: every commit falls short of the end a reading earlier, until 5.
        for s in 0..=5 {
            track.advance(Ok(reading(s, 100, 50 + s * 10)), t(0), 0);
        }
        assert_eq!(track.verdict(t(5), &p), Gate::Behind { lag: 0 }, "at the end, but not for long");
        for s in 6..14 {
            track.advance(Ok(reading(s, 100, 100)), t(0), 0);
            assert_eq!(track.verdict(t(s), &p), Gate::Behind { lag: 0 }, "at {s}: {} s since the last short commit", s - 4);
        }
        track.advance(Ok(reading(14, 100, 100)), t(0), 0);
        assert_eq!(track.verdict(t(14), &p), Gate::CaughtUp);
    }

    #[test]
    fn a_partial_or_stale_reading_is_unknown_and_breaks_the_window() {
        let p = policy(0, 10);
        let mut track = Track::default();
        for s in 0..20 {
            track.advance(Ok(reading(s, 100, 100)), t(0), 0);
        }
        assert_eq!(track.verdict(t(19), &p), Gate::CaughtUp);
        assert!(matches!(track.verdict(t(40), &p), Gate::Unknown(why) if why.contains("21s old")), "stale");
        track.advance(Err("no offsets for in/2 (LeaderNotAvailable)".into()), t(0), 0);
        assert_eq!(track.verdict(t(20), &p), Gate::Unknown("no offsets for in/2 (LeaderNotAvailable)".into()));
        track.advance(Ok(reading(21, 100, 100)), t(0), 0);
        assert_ne!(track.verdict(t(21), &p), Gate::CaughtUp, "the window starts again after a gap");
        for s in 22..=31 {
            track.advance(Ok(reading(s, 100, 100)), t(0), 0);
        }
        assert_eq!(track.verdict(t(31), &p), Gate::CaughtUp);
    }

    #[test]
    fn a_processor_that_commits_every_30s_under_steady_input_is_caught_up_at_its_first_commit_after_the_window() {
        // 100 records/s arrive; the processor keeps up but commits only every 30 s.
        let p = policy(0, 10);
        let mut track = Track::default();
        let mut position = 0;
        let mut caught = None;
        for s in 0..120 {
            if s % 30 == 7 {
                position = s * 100 - 20; // what it had consumed when it committed
            }
            track.advance(Ok(reading(s, s * 100, position)), t(0), 0);
            if caught.is_none() && track.verdict(t(s), &p) == Gate::CaughtUp {
                caught = Some(s);
            }
            if let Some(c) = caught {
                assert_eq!(track.verdict(t(s), &p), Gate::CaughtUp, "caught up at {c}, lost it at {s}: between commits is not behind");
            }
        }
        assert_eq!(caught, Some(37), "the first commit whose target is 10 s old");
    }

    #[test]
    fn a_commit_that_falls_short_restarts_the_window() {
        let p = policy(0, 5);
        let mut track = Track::default();
        // A replay: frequent commits, far behind.
        for s in 0..10 {
            track.advance(Ok(reading(s, 10_000 + s * 100, s * 500)), t(0), 0);
            assert!(matches!(track.verdict(t(s), &p), Gate::Behind { .. }));
        }
        // Reaches the end at 10 and keeps up.
        for s in 10..16 {
            track.advance(Ok(reading(s, 10_000 + s * 100, 10_000 + s * 100)), t(0), 0);
        }
        // The last commit that fell short was read at 9: the window runs from there.
        let mut fresh = Track::default();
        for s in 0..10 {
            fresh.advance(Ok(reading(s, 10_000 + s * 100, s * 500)), t(0), 0);
        }
        for s in 10..14 {
            fresh.advance(Ok(reading(s, 10_000 + s * 100, 10_000 + s * 100)), t(0), 0);
            assert_ne!(fresh.verdict(t(s), &p), Gate::CaughtUp, "at {s}, {} s into the window", s - 9);
        }
        assert_eq!(track.verdict(t(15), &p), Gate::CaughtUp);
        // A burst it cannot keep up with: the commits read at 17 and 18 meet
        // targets set before the burst; the one at 19 falls short of the end
        // read at 17.
        track.advance(Ok(reading(17, 50_000, 11_700)), t(0), 0);
        track.advance(Ok(reading(18, 50_000, 12_000)), t(0), 0);
        track.advance(Ok(reading(19, 50_000, 12_500)), t(0), 0);
        assert_eq!(track.verdict(t(19), &p), Gate::Behind { lag: 37_500 });
    }

    #[test]
    fn every_partition_counts_and_max_lag_is_a_sum() {
        let p = policy(5, 0);
        let ends = Offsets::from_iter([(tp(0), 10), (tp(1), 10), (("app-repartition".into(), 0), 7)]);
        let mut track = Track::default();
        let positions = Offsets::from_iter([(tp(0), 10), (tp(1), 10), (("app-repartition".into(), 0), 0)]);
        track.advance(Ok(Reading { at: t(0), ends: ends.clone(), positions, topic_ids: SmallMap::new() }), t(0), 5);
        assert_eq!(track.verdict(t(0), &p), Gate::Behind { lag: 7 }, "the repartition topic's 7 records count");
        let positions = Offsets::from_iter([(tp(0), 8), (tp(1), 7), (("app-repartition".into(), 0), 7)]);
        track.advance(Ok(Reading { at: t(1), ends, positions, topic_ids: SmallMap::new() }), t(0), 5);
        assert_eq!(track.verdict(t(1), &p), Gate::CaughtUp, "2 + 3 records behind is within maxLag 5");
    }

    #[test]
    fn no_progress_over_the_deadline_is_stuck_but_a_gap_does_not_count() {
        let p = policy(0, 10);
        let mut track = Track::default();
        for s in 0..40 {
            track.advance(Ok(reading(s, 100, 10)), t(0), 0);
        }
        // A 100 s outage: it adds nothing to the 39 s without progress.
        track.advance(Err("Kafka unreachable".into()), t(0), 0);
        for s in 140..160 {
            track.advance(Ok(reading(s, 100, 10)), t(0), 0);
        }
        assert_eq!(track.verdict(t(159), &p), Gate::Behind { lag: 90 });
        for s in 160..162 {
            track.advance(Ok(reading(s, 100, 10)), t(0), 0);
        }
        assert_eq!(track.verdict(t(161), &p), Gate::Stuck { idle: Duration::from_secs(60) });
        // A version at the log end with nothing to do is never stuck.
        let mut idle = Track::default();
        for s in 0..100 {
            idle.advance(Ok(reading(s, 100, 100)), t(0), 0);
        }
        assert_eq!(idle.verdict(t(99), &p), Gate::CaughtUp);
    }

    #[test]
    fn an_input_deleted_and_created_again_makes_the_attempt_unknown_for_good() {
        let p = policy(0, 0);
        let mut track = Track::default();
        track.advance(Ok(reading(0, 100, 100)), t(0), 0);
        assert_eq!(track.verdict(t(0), &p), Gate::CaughtUp);
        // An empty topic of the same name: the old commits are past its end.
        let mut again = reading(1, 0, 100);
        again.topic_ids.insert("in".into(), "id2".into());
        track.advance(Ok(again), t(0), 0);
        assert!(matches!(track.verdict(t(1), &p), Gate::Unknown(why) if why.contains("input topic in was deleted and created again")));
        track.advance(Ok(reading(2, 0, 100)), t(0), 0);
        assert!(matches!(track.verdict(t(2), &p), Gate::Unknown(_)), "for the rest of the attempt");
        track.advance(Ok(reading(3, 0, 0)), t(3), 0);
        assert_eq!(track.verdict(t(3), &p), Gate::CaughtUp, "a new attempt starts clean");
    }

    #[test]
    fn a_new_attempt_forgets_what_was_seen_before() {
        let p = policy(0, 10);
        let mut track = Track::default();
        for s in 0..30 {
            track.advance(Ok(reading(s, 100, 100)), t(0), 0);
        }
        assert_eq!(track.verdict(t(29), &p), Gate::CaughtUp);
        track.advance(Ok(reading(30, 100, 100)), t(30), 0);
        assert_ne!(track.verdict(t(30), &p), Gate::CaughtUp, "a revived standby is seen within the gate again");
    }

    /// A run of readings a second apart: input arriving, the processor
    /// committing at its cadence, some readings failing.
    fn run() -> impl Strategy<Value = Vec<(i64, bool, bool)>> {
        proptest::collection::vec((0i64..300, any::<bool>(), proptest::bool::weighted(0.05)), 1..150)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        /// CaughtUp is only said on a fresh, complete reading, after an
        /// unbroken run of readings at least stableFor long.
        #[test]
        fn caught_up_needs_a_fresh_unbroken_window(steps in run(), max_lag in 0i64..50, stable_for in 0u64..20) {
            let p = policy(max_lag, stable_for);
            let mut track = Track::default();
            let (mut end, mut position) = (0i64, 0i64);
            let mut run_start: Option<i64> = None;
            for (s, (arrive, commit, fail)) in steps.into_iter().enumerate() {
                let s = s as i64;
                end += arrive;
                if commit {
                    position = end - arrive / 2;
                }
                if fail {
                    track.advance(Err("partition missing".into()), t(0), max_lag);
                    run_start = None;
                    prop_assert!(matches!(track.verdict(t(s), &p), Gate::Unknown(_)));
                    continue;
                }
                track.advance(Ok(reading(s, end, position)), t(0), max_lag);
                let start = *run_start.get_or_insert(s);
                if track.verdict(t(s), &p) == Gate::CaughtUp {
                    prop_assert!(s - start >= stable_for as i64, "caught up at {s}, {} s into an unbroken run", s - start);
                }
                let later = t(s) + p.stale_after + Duration::from_secs(1);
                prop_assert!(matches!(track.verdict(later, &p), Gate::Unknown(_)), "a stale reading says nothing");
            }
        }

        /// A version that stays further behind than two readings' worth of
        /// input is never caught up, however often it commits.
        #[test]
        fn a_version_that_stays_behind_is_never_caught_up(arrivals in proptest::collection::vec(0i64..300, 1..150), max_lag in 0i64..50) {
            let p = policy(max_lag, 3);
            let mut track = Track::default();
            let behind = 600 + max_lag + 1;
            let mut end = 0;
            for (s, arrive) in arrivals.into_iter().enumerate() {
                end += arrive;
                track.advance(Ok(reading(s as i64, end + behind, end)), t(0), max_lag);
                prop_assert_ne!(track.verdict(t(s as i64), &p), Gate::CaughtUp);
            }
        }

        /// A version that keeps up and commits every `every` seconds is
        /// caught up at the first reading after a commit once stableFor has
        /// passed (one commit interval and two readings at most), at every
        /// reading after a commit from then on, and never stuck.
        #[test]
        fn a_version_that_keeps_up_is_caught_up_at_its_commits(every in 1i64..40, phase in 0i64..40, stable_for in 0u64..20, rate in 1i64..300) {
            let p = policy(0, stable_for);
            let mut track = Track::default();
            let mut position = 0;
            let due = every + stable_for as i64 + 2;
            for s in 0..(due + 3 * every + 5) {
                let commits = (s + phase) % every == 0;
                if commits {
                    position = s * rate;
                }
                track.advance(Ok(reading(s, s * rate, position)), t(0), 0);
                let verdict = track.verdict(t(s), &p);
                prop_assert!(!matches!(verdict, Gate::Stuck { .. }), "stuck at {}", s);
                if s >= due && commits {
                    prop_assert_eq!(verdict, Gate::CaughtUp, "at {} (commits every {} s)", s, every);
                }
            }
        }

        /// Stuck only after the deadline's worth of complete readings
        /// without progress.
        #[test]
        fn stuck_counts_only_complete_readings(steps in proptest::collection::vec(proptest::bool::weighted(0.1), 1..200)) {
            let p = policy(0, 10);
            let mut track = Track::default();
            let mut idle = 0i64;
            let mut consecutive = false;
            for (s, fail) in steps.into_iter().enumerate() {
                let s = s as i64;
                if fail {
                    track.advance(Err("unreachable".into()), t(0), 0);
                    consecutive = false;
                    continue;
                }
                track.advance(Ok(reading(s, 100, 10)), t(0), 0);
                if consecutive {
                    idle += 1;
                }
                consecutive = true;
                let stuck = matches!(track.verdict(t(s), &p), Gate::Stuck { .. });
                prop_assert_eq!(stuck, idle >= 60, "at {}: {} s idle", s, idle);
            }
        }
    }
}

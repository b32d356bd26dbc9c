//! Unit tests for every step of the rollout, and property tests over random
//! sequences of observations (restarts, crashes mid-execution, stale reads)
//! that check the invariants of DESIGN.md section 3 at every step.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::api::{PromotionMode, RolloutPolicy, VerifySpec, VersionPhase};

fn t(s: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + s).unwrap()
}

fn policy() -> RolloutPolicy {
    RolloutPolicy { stable_for_seconds: 10, scale_down_delay_seconds: 30, progress_deadline_seconds: 600, ..Default::default() }
}

fn version(id: &str) -> Version {
    Version {
        id: id.into(),
        phase: VersionPhase::Pending,
        view_ready: true,
        lag: None,
        lag_ok_since: None,
        started_at: Some(t(0)),
        progressed_at: None,
        promoted_at: None,
        demoted_at: None,
        replicas: None,
        ready_replicas: 0,
        broken: None,
        failure: None,
        verification: None,
    }
}

fn live(id: &str) -> Version {
    Version {
        phase: VersionPhase::Active,
        lag: Some(0),
        lag_ok_since: Some(t(0)),
        promoted_at: Some(t(0)),
        replicas: Some(2),
        ready_replicas: 2,
        ..version(id)
    }
}

fn obs(desired: &str, active: Option<&str>, versions: Vec<Version>, now: i64) -> Observation {
    Observation {
        now: t(now),
        desired: desired.into(),
        replicas: 2,
        policy: policy(),
        active: active.map(Into::into),
        versions,
        inputs: Inputs::Ready { truncated: vec![] },
    }
}

fn has(p: &Plan, a: &Action) -> bool {
    p.actions.contains(a)
}

fn promotes(p: &Plan) -> Option<(Option<String>, String)> {
    p.actions.iter().find_map(|a| match a {
        Action::Promote { from, to } => Some((from.clone(), to.clone())),
        _ => None,
    })
}

fn cond<'a>(p: &'a Plan, type_: &str) -> &'a Cond {
    p.conditions.iter().find(|c| c.type_ == type_).unwrap()
}

#[test]
fn the_first_version_is_created_then_active_at_once_but_not_ready_until_caught_up() {
    let p = plan(&obs("v1", None, vec![], 0));
    assert_eq!(p.actions, vec![Action::CreateVersion("v1".into())]);
    assert_eq!(p.phase, Phase::Pending);

    let p = plan(&obs("v1", None, vec![Version { lag: Some(500), ..version("v1") }], 1));
    assert_eq!(promotes(&p), Some((None, "v1".into())));
    assert!(has(&p, &Action::Scale { version: "v1".into(), replicas: 2 }));
    assert_eq!(p.active.as_deref(), Some("v1"));
    assert!(!cond(&p, "Ready").status);
    assert_eq!(cond(&p, "Ready").reason, "Replaying");

    let p = plan(&obs("v1", Some("v1"), vec![live("v1")], 2));
    assert_eq!(p.phase, Phase::Live);
    assert!(cond(&p, "Ready").status);
    assert!(promotes(&p).is_none());
}

#[test]
fn nothing_is_created_while_an_input_is_missing() {
    let mut o = obs("v1", None, vec![], 0);
    o.inputs = Inputs::Waiting("Topic orders (spec.inputs) does not exist".into());
    let p = plan(&o);
    assert!(p.actions.is_empty());
    assert!(cond(&p, "Ready").message.contains("Topic orders"));
}

#[test]
fn truncated_history_blocks_a_replay_unless_allowed() {
    let mut o = obs("v2", Some("v1"), vec![live("v1")], 0);
    o.inputs = Inputs::Ready { truncated: vec![Truncation { topic: "orders".into(), partition: 1, first_offset: 40 }] };
    let p = plan(&o);
    assert_eq!(p.phase, Phase::Blocked);
    assert!(!p.actions.iter().any(|a| matches!(a, Action::CreateVersion(_))));
    let blocked = cond(&p, REPROCESSING_BLOCKED);
    assert!(blocked.status && blocked.message.contains("orders partition 1 (first offset still held: 40)"), "{blocked:?}");
    assert!(cond(&p, "Stalled").status);
    assert!(cond(&p, "Ready").status, "the active version keeps serving");
    assert!(has(&p, &Action::Scale { version: "v1".into(), replicas: 2 }));

    o.policy.allow_truncated_history = true;
    assert!(has(&plan(&o), &Action::CreateVersion("v2".into())));
}

#[test]
fn a_new_version_replays_beside_the_live_one() {
    let p = plan(&obs("v2", Some("v1"), vec![live("v1")], 0));
    assert_eq!(p.actions.iter().filter(|a| matches!(a, Action::CreateVersion(_))).count(), 1);
    assert_eq!(p.candidate.as_deref(), Some("v2"));

    let p = plan(&obs("v2", Some("v1"), vec![live("v1"), Version { lag: Some(900), ..version("v2") }], 5));
    assert!(has(&p, &Action::Scale { version: "v2".into(), replicas: 2 }));
    assert!(has(&p, &Action::Scale { version: "v1".into(), replicas: 2 }), "the live version is untouched");
    assert!(has(&p, &Action::SetPhase { version: "v2".into(), phase: VersionPhase::Replaying, message: None }));
    assert_eq!(p.phase, Phase::Replaying);
    assert!(cond(&p, "Progressing").status);
    assert!(promotes(&p).is_none());
}

#[test]
fn the_gate_needs_lag_within_max_for_stable_for() {
    let v2 = Version { lag: Some(0), lag_ok_since: Some(t(100)), phase: VersionPhase::Replaying, ..version("v2") };
    let p = plan(&obs("v2", Some("v1"), vec![live("v1"), v2.clone()], 105));
    assert!(promotes(&p).is_none(), "only 5 of 10 seconds");
    assert_eq!(p.requeue_after, Some(Duration::from_secs(5)));

    let p = plan(&obs("v2", Some("v1"), vec![live("v1"), v2.clone()], 110));
    assert_eq!(promotes(&p), Some((Some("v1".into()), "v2".into())));
    assert_eq!(p.phase, Phase::CuttingOver);
    assert!(has(&p, &Action::SetPhase { version: "v1".into(), phase: VersionPhase::Standby, message: None }));
    assert!(
        !p.actions.iter().any(|a| matches!(a, Action::Scale { version, replicas: 0 } if version == "v1")),
        "no scale-down at the cutover"
    );

    let above = Version { lag: Some(1), ..v2 };
    assert!(promotes(&plan(&obs("v2", Some("v1"), vec![live("v1"), above], 200))).is_none());
}

#[test]
fn verification_runs_once_caught_up_and_decides() {
    let mut o = obs("v2", Some("v1"), vec![live("v1"), Version { lag: Some(0), lag_ok_since: Some(t(0)), ..version("v2") }], 100);
    o.policy.verify = Some(VerifySpec { image: "check".into(), ..Default::default() });
    let p = plan(&o);
    assert!(has(&p, &Action::StartVerification { candidate: "v2".into(), active: "v1".into() }));
    assert_eq!(p.phase, Phase::Verifying);
    assert!(promotes(&p).is_none());

    o.versions[1].verification = Some(Verification::Running);
    let p = plan(&o);
    assert!(!p.actions.iter().any(|a| matches!(a, Action::StartVerification { .. })), "started once");
    assert!(promotes(&p).is_none());

    o.versions[1].verification = Some(Verification::Failed("3 keys differ".into()));
    let p = plan(&o);
    assert!(promotes(&p).is_none());
    assert_eq!(p.phase, Phase::Failed);
    assert!(p.actions.iter().any(|a| matches!(a, Action::Event { reason: "VerificationFailed", .. })));
    assert!(cond(&p, "Ready").status, "the old version stays active and Ready");

    o.versions[1].verification = Some(Verification::Succeeded);
    assert_eq!(promotes(&plan(&o)), Some((Some("v1".into()), "v2".into())));
}

#[test]
fn manual_promotion_waits_for_the_spec_to_name_the_version() {
    let mut o = obs("v2", Some("v1"), vec![live("v1"), Version { lag: Some(0), lag_ok_since: Some(t(0)), ..version("v2") }], 100);
    o.policy.promotion = PromotionMode::Manual;
    let p = plan(&o);
    assert!(promotes(&p).is_none());
    assert_eq!(p.phase, Phase::AwaitingPromotion);
    assert!(!cond(&p, "Progressing").status);
    assert!(cond(&p, "Progressing").message.contains("promote: \"v2\""));
    o.policy.promote = Some("v1".into());
    assert!(promotes(&plan(&o)).is_none());
    o.policy.promote = Some("v2".into());
    assert_eq!(promotes(&plan(&o)), Some((Some("v1".into()), "v2".into())));
}

#[test]
fn a_broken_or_stuck_candidate_fails_and_the_active_version_stays() {
    let broken = Version { broken: Some("container processor: CrashLoopBackOff (restarts 3)".into()), replicas: Some(2), ..version("v3") };
    let p = plan(&obs("v3", Some("v2"), vec![live("v2"), broken], 50));
    assert!(has(&p, &Action::Scale { version: "v3".into(), replicas: 0 }));
    assert!(p.actions.iter().any(|a| matches!(a, Action::SetPhase { version, phase: VersionPhase::Failed, .. } if version == "v3")));
    assert_eq!(p.phase, Phase::Failed);
    assert_eq!(p.active.as_deref(), Some("v2"));
    assert!(cond(&p, "Stalled").status);

    let stuck = Version { lag: Some(10), started_at: Some(t(0)), progressed_at: Some(t(10)), ..version("v3") };
    let p = plan(&obs("v3", Some("v2"), vec![live("v2"), stuck.clone()], 611));
    assert_eq!(p.phase, Phase::Failed);
    let p = plan(&obs("v3", Some("v2"), vec![live("v2"), stuck], 300));
    assert_eq!(p.phase, Phase::Replaying);
    assert_eq!(p.requeue_after, Some(Duration::from_secs(30)));

    // Failed stays failed, saying why, until the spec changes; a new spec
    // starts a new attempt.
    let failed = Version { phase: VersionPhase::Failed, failure: Some("no progress for 600s".into()), ..version("v3") };
    let p = plan(&obs("v3", Some("v2"), vec![live("v2"), failed.clone()], 700));
    assert_eq!(p.phase, Phase::Failed);
    assert!(cond(&p, "Stalled").message.contains("no progress for 600s"));
    let verification = Version { failure: Some("verification failed: 3 keys differ".into()), ..failed.clone() };
    assert_eq!(cond(&plan(&obs("v3", Some("v2"), vec![live("v2"), verification], 700)), "Stalled").reason, "VerificationFailed");
    let p = plan(&obs("v4", Some("v2"), vec![live("v2"), failed], 700));
    assert!(has(&p, &Action::CreateVersion("v4".into())));
    assert!(has(&p, &Action::Retire("v3".into())), "the failed attempt goes once superseded");
}

#[test]
fn the_old_version_stands_by_after_the_delay_and_older_ones_retire() {
    let standby = |id: &str, demoted: i64| Version {
        phase: VersionPhase::Standby,
        promoted_at: Some(t(0)),
        demoted_at: Some(t(demoted)),
        replicas: Some(2),
        ..live(id)
    };
    let p = plan(&obs("v3", Some("v3"), vec![live("v3"), standby("v2", 100), standby("v1", 95)], 110));
    assert!(!p.actions.iter().any(|a| matches!(a, Action::Scale { version, .. } if version == "v2")), "within the delay");
    assert!(!has(&p, &Action::Retire("v1".into())), "readers get the delay to follow the cutover");
    let p = plan(&obs("v3", Some("v3"), vec![live("v3"), standby("v2", 100), standby("v1", 95)], 131));
    assert!(has(&p, &Action::Scale { version: "v2".into(), replicas: 0 }));
    assert!(has(&p, &Action::Retire("v1".into())), "beyond retainVersions: 1");
    assert!(!has(&p, &Action::Retire("v2".into())));
}

#[test]
fn rollback_revives_a_standby_from_its_own_offsets() {
    let standby = Version {
        phase: VersionPhase::Standby,
        promoted_at: Some(t(0)),
        demoted_at: Some(t(100)),
        replicas: Some(0),
        lag: Some(10_000),
        lag_ok_since: None,
        ..live("v1")
    };
    let p = plan(&obs("v1", Some("v2"), vec![live("v2"), standby.clone()], 500));
    assert!(!p.actions.iter().any(|a| matches!(a, Action::CreateVersion(_))), "no new version, no full replay");
    assert!(has(&p, &Action::Scale { version: "v1".into(), replicas: 2 }));
    assert_eq!(p.phase, Phase::RollingBack);
    // Revived at 495: the gate counts from then, even with an older figure.
    let caught = Version {
        lag: Some(0),
        lag_ok_since: Some(t(90)),
        replicas: Some(2),
        phase: VersionPhase::Replaying,
        started_at: Some(t(495)),
        ..standby.clone()
    };
    assert!(promotes(&plan(&obs("v1", Some("v2"), vec![live("v2"), caught.clone()], 500))).is_none(), "5 of 10 seconds since the revival");
    let still_standby = Version { lag: Some(0), lag_ok_since: Some(t(90)), ..standby };
    assert!(promotes(&plan(&obs("v1", Some("v2"), vec![live("v2"), still_standby], 500))).is_none(), "not in the plan that revives it");
    let p = plan(&obs("v1", Some("v2"), vec![live("v2"), caught], 505));
    assert_eq!(promotes(&p), Some((Some("v2".into()), "v1".into())));
    assert!(p.actions.iter().any(|a| matches!(a, Action::Event { reason: "RolledBack", .. })));
}

#[test]
fn a_superseded_candidate_that_never_served_is_retired() {
    let v2 = Version { lag: Some(50), phase: VersionPhase::Replaying, replicas: Some(2), ..version("v2") };
    let p = plan(&obs("v3", Some("v1"), vec![live("v1"), v2], 10));
    assert!(has(&p, &Action::Retire("v2".into())));
    assert!(has(&p, &Action::CreateVersion("v3".into())));
}

// ---------------------------------------------------------------- properties

/// A tiny world the planner acts on: versions with their observable state.
#[derive(Clone, Debug)]
struct World {
    now: i64,
    active: Option<String>,
    versions: BTreeMap<String, Version>,
    desired: String,
    policy: RolloutPolicy,
    replicas: i32,
    truncated: bool,
}

#[derive(Clone, Debug)]
enum Step {
    Tick(i64),
    Consume(usize, i64),
    Produce(i64),
    NewSpec(u8),
    RevertToOlder(usize),
    Break(usize),
    Verify(usize, bool),
    Truncate(bool),
    Promote(usize),
    /// The operator crashes after this many actions of the next plan.
    CrashAfter(usize),
    /// The next observation misses the last status writes (a stale cache).
    Stale,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (1i64..40).prop_map(Step::Tick),
        4 => (0usize..4, 0i64..2000).prop_map(|(i, n)| Step::Consume(i, n)),
        2 => (0i64..500).prop_map(Step::Produce),
        2 => (0u8..6).prop_map(Step::NewSpec),
        1 => (0usize..4).prop_map(Step::RevertToOlder),
        1 => (0usize..4).prop_map(Step::Break),
        1 => (0usize..4, any::<bool>()).prop_map(|(i, ok)| Step::Verify(i, ok)),
        1 => any::<bool>().prop_map(Step::Truncate),
        1 => (0usize..4).prop_map(Step::Promote),
        1 => (0usize..6).prop_map(Step::CrashAfter),
        1 => Just(Step::Stale),
    ]
}

fn world_policy() -> impl Strategy<Value = RolloutPolicy> {
    (0i64..3, 0i32..20, any::<bool>(), any::<bool>(), 0i32..3, 0i32..40, any::<bool>()).prop_map(
        |(max_lag, stable, manual, verify, retain, delay, allow)| RolloutPolicy {
            max_lag,
            stable_for_seconds: stable,
            promotion: if manual { PromotionMode::Manual } else { PromotionMode::Auto },
            promote: None,
            retain_versions: retain,
            scale_down_delay_seconds: delay,
            progress_deadline_seconds: 120,
            allow_truncated_history: allow,
            verify: verify.then(|| VerifySpec { image: "v".into(), ..Default::default() }),
        },
    )
}

impl World {
    fn observe(&self) -> Observation {
        Observation {
            now: t(self.now),
            desired: self.desired.clone(),
            replicas: self.replicas,
            policy: self.policy.clone(),
            active: self.active.clone(),
            versions: self.versions.values().cloned().collect(),
            inputs: Inputs::Ready {
                truncated: if self.truncated { vec![Truncation { topic: "in".into(), partition: 0, first_offset: 7 }] } else { vec![] },
            },
        }
    }

    fn nth(&self, i: usize) -> Option<String> {
        self.versions.keys().nth(i % self.versions.len().max(1)).cloned()
    }

    fn set_lag(&mut self, id: &str, lag: i64) {
        let now = t(self.now);
        let max = self.policy.max_lag;
        if let Some(v) = self.versions.get_mut(id) {
            if lag < v.lag.unwrap_or(i64::MAX) {
                v.progressed_at = Some(now);
            }
            v.lag = Some(lag);
            v.lag_ok_since = if lag <= max { v.lag_ok_since.or(Some(now)) } else { None };
        }
    }

    fn apply(&mut self, a: &Action) {
        let now = t(self.now);
        match a {
            Action::CreateVersion(id) => {
                let mut v = version(id);
                v.started_at = Some(now);
                v.lag = Some(300);
                self.versions.insert(id.clone(), v);
            }
            Action::Scale { version, replicas } => {
                if let Some(v) = self.versions.get_mut(version) {
                    v.replicas = Some(*replicas);
                    v.ready_replicas = *replicas;
                }
            }
            Action::SetPhase { version, phase, .. } => {
                if let Some(v) = self.versions.get_mut(version) {
                    if *phase == VersionPhase::Replaying && v.phase == VersionPhase::Standby {
                        v.started_at = Some(now);
                    }
                    if *phase == VersionPhase::Active && v.phase != VersionPhase::Active {
                        v.promoted_at = Some(now);
                    }
                    if *phase == VersionPhase::Standby && v.phase != VersionPhase::Standby {
                        v.demoted_at = Some(now);
                    }
                    v.phase = *phase;
                }
            }
            Action::StartVerification { candidate, .. } => {
                if let Some(v) = self.versions.get_mut(candidate) {
                    v.verification = Some(Verification::Running);
                }
            }
            Action::Promote { to, .. } => self.active = Some(to.clone()),
            Action::Retire(id) => {
                self.versions.remove(id);
            }
            Action::Event { .. } => {}
        }
    }
}

/// The versions a plan must never retire: the active one (before and
/// after), the candidate, and the `retainVersions` most recently demoted.
fn protected(o: &Observation, p: &Plan) -> Vec<String> {
    let mut keep: Vec<String> = p.active.iter().chain(p.candidate.iter()).cloned().collect();
    // Formerly active versions, most recently demoted first; one demoted in
    // this very plan counts as demoted now.
    let mut former: Vec<&Version> = o
        .versions
        .iter()
        .filter(|v| !keep.contains(&v.id) && (v.demoted_at.is_some() || o.active.as_deref() == Some(v.id.as_str())))
        .collect();
    former.sort_by_key(|v| std::cmp::Reverse(v.demoted_at.unwrap_or(o.now)));
    let delay = secs(o.policy.scale_down_delay_seconds);
    for (i, v) in former.iter().enumerate() {
        if i < o.policy.retain_versions as usize || elapsed(o.now, v.demoted_at.unwrap_or(o.now)) < delay {
            keep.push(v.id.clone());
        }
    }
    keep
}

fn check_invariants(o: &Observation, p: &Plan) -> Result<(), TestCaseError> {
    let find = |id: &str| o.versions.iter().find(|v| v.id == id);
    for a in &p.actions {
        match a {
            Action::Promote { from: Some(_), to } => {
                // Traffic moves only to a caught-up (and verified) version.
                let v = find(to).expect("promoted version exists");
                prop_assert!(v.lag.is_some_and(|l| l <= o.policy.max_lag), "promoted {to} with lag {:?}", v.lag);
                let since = v.lag_ok_since.expect("lag within max has a since");
                prop_assert!(elapsed(o.now, since) >= secs(o.policy.stable_for_seconds), "promoted {to} before stableFor");
                if o.policy.verify.is_some() {
                    prop_assert_eq!(&v.verification, &Some(Verification::Succeeded), "promoted {} unverified", to);
                }
                if o.policy.promotion == PromotionMode::Manual {
                    prop_assert_eq!(o.policy.promote.as_deref(), Some(to.as_str()));
                }
                prop_assert!(v.broken.is_none() && v.phase != VersionPhase::Failed);
                prop_assert_ne!(o.active.as_deref(), Some(to.as_str()), "no step twice: promoting the active version");
            }
            Action::Promote { from: None, to } => prop_assert!(o.active.is_none() && *to == o.desired),
            Action::Retire(id) => {
                prop_assert!(!protected(o, p).contains(id), "retired protected version {id}");
            }
            Action::Scale { version, replicas } => {
                // The active version keeps its replicas, before and after a cutover.
                if Some(version) == p.active.as_ref() {
                    prop_assert_eq!(*replicas, o.replicas);
                }
                if Some(version) == o.active.as_ref() && *replicas < o.replicas {
                    let v = find(version).unwrap();
                    // Demoted in this plan counts as demoted now.
                    let demoted = p.active.as_ref() != Some(version)
                        && elapsed(o.now, v.demoted_at.unwrap_or(o.now)) >= secs(o.policy.scale_down_delay_seconds);
                    prop_assert!(demoted, "scaled down {version} before its scale-down delay");
                }
            }
            Action::CreateVersion(id) => prop_assert!(find(id).is_none(), "no step twice: {id} exists"),
            Action::StartVerification { candidate, .. } => {
                prop_assert!(find(candidate).is_some_and(|v| v.verification.is_none()), "verification started twice");
            }
            _ => {}
        }
    }
    let promotions = p.actions.iter().filter(|a| matches!(a, Action::Promote { .. })).count();
    prop_assert!(promotions <= 1, "exactly one active version: one promotion at most");
    if o.active.is_some() {
        prop_assert!(p.active.is_some(), "an active version never disappears");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_over_random_histories(policy in world_policy(), replicas in 0i32..3, steps in proptest::collection::vec(step(), 1..60)) {
        let mut w = World { now: 0, active: None, versions: BTreeMap::new(), desired: "v0".into(), policy, replicas, truncated: false };
        let mut crash_after: Option<usize> = None;
        let mut stale: Option<Observation> = None;
        for s in steps {
            match s {
                Step::Tick(d) => w.now += d,
                Step::Consume(i, n) => if let Some(id) = w.nth(i) {
                    let lag = w.versions[&id].lag.unwrap_or(0);
                    if w.versions[&id].replicas.unwrap_or(0) > 0 { w.set_lag(&id, (lag - n).max(0)); }
                },
                Step::Produce(n) => for id in w.versions.keys().cloned().collect::<Vec<_>>() {
                    let lag = w.versions[&id].lag.unwrap_or(0);
                    w.set_lag(&id, lag + n);
                },
                Step::NewSpec(n) => w.desired = format!("v{}", n + 1),
                Step::RevertToOlder(i) => if let Some(id) = w.nth(i) { w.desired = id },
                Step::Break(i) => if let Some(id) = w.nth(i)
                    && w.active.as_deref() != Some(id.as_str()) {
                        w.versions.get_mut(&id).unwrap().broken = Some("CrashLoopBackOff".into());
                    },
                Step::Verify(i, ok) => if let Some(id) = w.nth(i) {
                    let v = w.versions.get_mut(&id).unwrap();
                    if v.verification == Some(Verification::Running) {
                        v.verification = Some(if ok { Verification::Succeeded } else { Verification::Failed("diff".into()) });
                    }
                },
                Step::Truncate(on) => w.truncated = on,
                Step::Promote(i) => w.policy.promote = w.nth(i),
                Step::CrashAfter(n) => crash_after = Some(n),
                Step::Stale => stale = Some(w.observe()),
            }
            // A stale observation is planned on, but the world acts on the plan.
            let o = stale.take().filter(|s| s.now <= t(w.now)).map(|mut s| { s.now = t(w.now); s }).unwrap_or_else(|| w.observe());
            let p = plan(&o);
            check_invariants(&o, &p)?;
            let n = crash_after.take().unwrap_or(p.actions.len());
            for a in p.actions.iter().take(n) {
                w.apply(a);
            }
            // Exactly one active version once there is one, and it is Active
            // after its plan ran to the end.
            if n == p.actions.len() {
                if let Some(a) = &w.active {
                    prop_assert!(w.versions.contains_key(a), "the active version {a} was retired");
                }
                let actives = w.versions.values().filter(|v| v.phase == VersionPhase::Active).count();
                prop_assert!(actives <= 1 || stale.is_some(), "{actives} versions in phase Active");
            }
        }
    }

    /// A restart is another observation: planning twice on the same
    /// observation gives the same plan.
    #[test]
    fn planning_is_deterministic(policy in world_policy(), lag in 0i64..5, now in 0i64..100) {
        let mut o = obs("v2", Some("v1"), vec![live("v1"), Version { lag: Some(lag), lag_ok_since: Some(t(0)), ..version("v2") }], now);
        o.policy = policy;
        prop_assert_eq!(plan(&o), plan(&o));
    }
}

//! Unit tests for every step of the rollout, and property tests over random
//! histories (restarts, crashes mid-execution, stale and partial readings,
//! Kafka outages, lost status, deleted versions) that check the invariants
//! of DESIGN.md section 3 at every step.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::{gate::Track, *};
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
        promotion: None,
        deleting: false,
        gate: Gate::Behind { lag: 300 },
        caught_up_at: None,
        started_at: Some(t(0)),
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
        gate: Gate::CaughtUp,
        caught_up_at: Some(t(0)),
        promotion: Some(1),
        promoted_at: Some(t(0)),
        replicas: Some(2),
        ready_replicas: 2,
        ..version(id)
    }
}

/// A candidate the gate has passed, running its pods.
fn caught(id: &str) -> Version {
    Version { gate: Gate::CaughtUp, phase: VersionPhase::Replaying, replicas: Some(2), ready_replicas: 2, ..version(id) }
}

fn obs(desired: &str, active: Option<&str>, versions: Vec<Version>, now: i64) -> Observation {
    Observation {
        now: t(now),
        desired: desired.into(),
        replicas: 2,
        policy: policy(),
        recorded_active: active.map(Into::into),
        versions,
        inputs: Inputs::Ready { truncated: vec![] },
        kafka: Kafka::Up { since: t(-1000) },
        conflict: None,
        read_by: Default::default(),
        cascade: None,
        input_partitions: Some(6),
    }
}

fn has(p: &Plan, a: &Action) -> bool {
    p.actions.contains(a)
}

fn promotes(p: &Plan) -> Option<(Option<String>, String)> {
    p.actions.iter().find_map(|a| match a {
        Action::Promote { from, to, .. } => Some((from.clone(), to.clone())),
        _ => None,
    })
}

fn fails(p: &Plan, id: &str) -> bool {
    p.actions.iter().any(|a| matches!(a, Action::SetPhase { version, phase: VersionPhase::Failed, .. } if version == id))
}

fn cond<'a>(p: &'a Plan, type_: &str) -> &'a Cond {
    p.conditions.iter().find(|c| c.type_ == type_).unwrap()
}

#[test]
fn the_first_version_is_created_then_active_at_once_but_not_ready_until_caught_up() {
    let p = plan(&obs("v1", None, vec![], 0));
    assert_eq!(p.actions, vec![Action::CreateActive { version: "v1".into(), promotion: 1 }], "created committed");
    assert_eq!(p.phase, Phase::Pending);
    // Seen with its commit: active, with nothing left to commit.
    let created = Version { promotion: Some(1), gate: Gate::Unknown("not read".into()), ..version("v1") };
    let p = plan(&obs("v1", None, vec![created.clone()], 1));
    assert_eq!(p.active.as_deref(), Some("v1"));
    assert!(promotes(&p).is_none());
    assert!(has(&p, &Action::Scale { version: "v1".into(), replicas: 2 }));
    assert!(has(&p, &Action::SetPhase { version: "v1".into(), phase: VersionPhase::Active, message: None }));
    // Until its view is ready, its phase waits (one write then says both),
    // and it gets no pods.
    let p = plan(&obs("v1", None, vec![Version { view_ready: false, ..created }], 1));
    assert_eq!(p.active.as_deref(), Some("v1"));
    assert!(!p.actions.iter().any(|a| matches!(a, Action::SetPhase { .. } | Action::Scale { .. })), "{:?}", p.actions);

    // (a first version created uncommitted, by an operator before this one, is promoted)
    let p = plan(&obs("v1", None, vec![Version { gate: Gate::Behind { lag: 500 }, ..version("v1") }], 1));
    assert_eq!(promotes(&p), Some((None, "v1".into())));
    assert!(p.actions.iter().any(|a| matches!(a, Action::Promote { promotion: 1, reason: "FirstVersion", .. })));
    assert!(has(&p, &Action::Scale { version: "v1".into(), replicas: 2 }));
    assert_eq!(p.active.as_deref(), Some("v1"));
    assert!(!cond(&p, "Ready").status);
    assert_eq!(cond(&p, "Ready").reason, "Replaying");

    let first = Version { phase: VersionPhase::Active, promotion: Some(1), replicas: Some(2), ready_replicas: 2, ..version("v1") };
    let p = plan(&obs("v1", Some("v1"), vec![Version { gate: Gate::Behind { lag: 500 }, ..first.clone() }], 2));
    assert_eq!(p.phase, Phase::Replaying);
    assert_eq!(p.requeue_after, None, "a first version replaying decides nothing: its gate wakes it, no timer");
    let p = plan(&obs("v1", Some("v1"), vec![Version { gate: Gate::CaughtUp, ..first.clone() }], 2));
    assert!(has(&p, &Action::RecordCaughtUp("v1".into())), "the first time it is caught up is recorded");
    assert!(cond(&p, "Ready").status);
    let p = plan(&obs("v1", Some("v1"), vec![live("v1")], 3));
    assert_eq!(p.phase, Phase::Live);
    assert!(promotes(&p).is_none());
    assert!(!p.actions.iter().any(|a| matches!(a, Action::RecordCaughtUp(_))));
}

#[test]
fn a_candidate_replays_with_replay_replicas_then_holds_at_its_final_size_before_promotion() {
    let with = |o: Observation| Observation { policy: RolloutPolicy { replay_replicas: Some(8), ..policy() }, ..o };
    let scale = |p: &Plan| p.actions.iter().find_map(|a| matches!(a, Action::Scale { version, .. } if version == "v2").then(|| a.clone()));
    let to = |replicas| Some(Action::Scale { version: "v2".into(), replicas });
    // Replaying: as many pods as asked, up to the 6 input partitions.
    let replaying = Version { phase: VersionPhase::Replaying, replicas: Some(6), ready_replicas: 6, ..version("v2") };
    let p = plan(&with(obs("v2", Some("v1"), vec![live("v1"), replaying.clone()], 5)));
    assert_eq!(scale(&p), to(6));
    assert_eq!(p.phase, Phase::Replaying);
    // Caught up: scaled to its final size, caught up recorded, not promoted.
    let caught_up = Version { gate: Gate::CaughtUp, ..replaying.clone() };
    let p = plan(&with(obs("v2", Some("v1"), vec![live("v1"), caught_up.clone()], 20)));
    assert_eq!(scale(&p), to(2));
    assert!(has(&p, &Action::RecordCaughtUp("v2".into())));
    assert!(promotes(&p).is_none(), "the gate holds again at the final size");
    // At its final size, for less than stableFor: held, with a timer.
    let resized = Version { caught_up_at: Some(t(20)), replicas: Some(2), ready_replicas: 2, ..caught_up };
    let p = plan(&with(obs("v2", Some("v1"), vec![live("v1"), resized.clone()], 25)));
    assert!(promotes(&p).is_none());
    assert_eq!(scale(&p), to(2));
    assert!(p.requeue_after.is_some_and(|d| d <= Duration::from_secs(5)), "{:?}", p.requeue_after);
    // Behind again at the final size: it stays at that size.
    let behind = Version { gate: Gate::Behind { lag: 40 }, ..resized.clone() };
    let p = plan(&with(obs("v2", Some("v1"), vec![live("v1"), behind], 26)));
    assert_eq!(scale(&p), to(2), "no flapping back to the replay size");
    assert!(promotes(&p).is_none());
    // stableFor later, still caught up: promoted.
    let p = plan(&with(obs("v2", Some("v1"), vec![live("v1"), resized], 31)));
    assert_eq!(promotes(&p), Some((Some("v1".into()), "v2".into())));
    // Without replayReplicas: no resize, and no hold (even once a phase
    // such as Verifying has stamped caughtUpAt).
    let p = plan(&obs("v2", Some("v1"), vec![live("v1"), caught("v2")], 20));
    assert_eq!(promotes(&p), Some((Some("v1".into()), "v2".into())));
    let stamped = Version { caught_up_at: Some(t(19)), ..caught("v2") };
    assert_eq!(promotes(&plan(&obs("v2", Some("v1"), vec![live("v1"), stamped], 20))), Some((Some("v1".into()), "v2".into())));
    assert!(!p.actions.iter().any(|a| matches!(a, Action::Scale { version, replicas } if version == "v2" && *replicas != 2)));
}

#[test]
fn the_commit_record_is_rebuilt_from_the_versions_when_the_status_is_lost() {
    // Status wiped mid-rollout: v1 is still the highest promotion, v2 replays.
    let v2 = Version { phase: VersionPhase::Replaying, replicas: Some(2), ..version("v2") };
    let p = plan(&obs("v2", None, vec![live("v1"), v2.clone()], 5));
    assert!(promotes(&p).is_none(), "v2 has not caught up: no cutover, and it is not a first version");
    assert_eq!(p.active.as_deref(), Some("v1"));
    assert_eq!(p.phase, Phase::Replaying);
    // The newest promotion wins over a stale mirror.
    let v2 = Version { promotion: Some(2), phase: VersionPhase::Active, ..live("v2") };
    let v1 = Version { phase: VersionPhase::Active, ..live("v1") };
    let p = plan(&obs("v2", Some("v1"), vec![v1, v2], 6));
    assert_eq!(p.active.as_deref(), Some("v2"));
    assert!(has(&p, &Action::SetPhase { version: "v1".into(), phase: VersionPhase::Standby, message: None }));
}

#[test]
fn a_processor_with_any_other_version_is_never_treated_as_a_first_version() {
    // The active ViewVersion is gone altogether (its finalizer forced away):
    // the status still names it, so v2 must pass the gate.
    let v2 = Version { phase: VersionPhase::Replaying, replicas: Some(2), ..version("v2") };
    let p = plan(&obs("v2", Some("v1"), vec![v2.clone()], 5));
    assert!(promotes(&p).is_none());
    assert!(!cond(&p, "Ready").status);
    assert!(cond(&p, "Ready").message.contains("v1, recorded as active, is gone"), "{}", cond(&p, "Ready").message);
    let p = plan(&obs("v2", Some("v1"), vec![caught("v2")], 20));
    assert_eq!(promotes(&p), Some((None, "v2".into())));
    // A version that once served carries its promotion: it is the active
    // one by the record, and the new version is a candidate like any other.
    let v1 = Version { promotion: Some(1), ..live("v1") };
    let p = plan(&obs("v3", None, vec![v1, version("v3")], 50));
    assert_eq!(p.active.as_deref(), Some("v1"));
    assert!(promotes(&p).is_none(), "v3 has not caught up");
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
    assert!(cond(&p, "Available").status, "the active version keeps serving");
    let ready = cond(&p, "Ready");
    assert!(!ready.status && ready.reason == REPROCESSING_BLOCKED, "the spec is not served: {ready:?}");
    assert!(!cond(&p, "Reconciling").status, "stalled, not reconciling");
    assert!(has(&p, &Action::Scale { version: "v1".into(), replicas: 2 }));

    o.policy.allow_truncated_history = true;
    assert!(has(&plan(&o), &Action::CreateVersion("v2".into())));
}

#[test]
fn a_new_version_replays_beside_the_live_one() {
    let p = plan(&obs("v2", Some("v1"), vec![live("v1")], 0));
    assert_eq!(p.actions.iter().filter(|a| matches!(a, Action::CreateVersion(_))).count(), 1);
    assert_eq!(p.candidate.as_deref(), Some("v2"));

    let p = plan(&obs("v2", Some("v1"), vec![live("v1"), Version { gate: Gate::Behind { lag: 900 }, ..version("v2") }], 5));
    assert!(has(&p, &Action::Scale { version: "v2".into(), replicas: 2 }));
    assert!(has(&p, &Action::Scale { version: "v1".into(), replicas: 2 }), "the live version is untouched");
    assert!(has(&p, &Action::SetPhase { version: "v2".into(), phase: VersionPhase::Replaying, message: None }));
    assert_eq!(p.phase, Phase::Replaying);
    assert!(cond(&p, "Progressing").status);
    assert!(promotes(&p).is_none());
}

#[test]
fn promotion_needs_the_gate_and_ready_pods() {
    let p = plan(&obs("v2", Some("v1"), vec![live("v1"), caught("v2")], 110));
    assert_eq!(promotes(&p), Some((Some("v1".into()), "v2".into())));
    assert!(p.actions.iter().any(|a| matches!(a, Action::Promote { promotion: 2, reason: "CutOver", .. })));
    assert_eq!(p.phase, Phase::CuttingOver);
    assert!(has(&p, &Action::SetPhase { version: "v1".into(), phase: VersionPhase::Standby, message: None }));
    assert_eq!(
        p.actions.iter().filter(|a| matches!(a, Action::SetPhase { version, phase: VersionPhase::Standby, .. } if version == "v1")).count(),
        1
    );
    assert!(has(&p, &Action::RecordCaughtUp("v2".into())));
    assert!(has(&p, &Action::Scale { version: "v2".into(), replicas: 2 }));
    assert!(
        !p.actions.iter().any(|a| matches!(a, Action::Scale { version, replicas: 0 } if version == "v1")),
        "no scale-down at the cutover"
    );

    let not_ready = Version { ready_replicas: 1, ..caught("v2") };
    let p = plan(&obs("v2", Some("v1"), vec![live("v1"), not_ready], 110));
    assert!(promotes(&p).is_none(), "one of two pods is not Ready");
    assert!(cond(&p, "Progressing").message.contains("waiting for its pods to be Ready"));
    for gate in [Gate::Behind { lag: 1 }, Gate::Unknown("no offsets for orders/2: LeaderNotAvailable".into())] {
        let p = plan(&obs("v2", Some("v1"), vec![live("v1"), Version { gate: gate.clone(), ..caught("v2") }], 200));
        assert!(promotes(&p).is_none(), "{gate:?}");
        assert!(!fails(&p, "v2"), "{gate:?}");
    }
}

#[test]
fn an_unknown_gate_waits_and_says_why() {
    let unknown = Version { gate: Gate::Unknown("input topic orders is not in Kafka's metadata".into()), ..caught("v2") };
    let p = plan(&obs("v2", Some("v1"), vec![live("v1"), unknown], 5000));
    assert!(promotes(&p).is_none());
    assert!(!fails(&p, "v2"));
    let progressing = cond(&p, "Progressing");
    assert!(progressing.message.contains("input topic orders is not in Kafka's metadata"), "{}", progressing.message);
}

#[test]
fn verification_runs_once_caught_up_and_decides() {
    let mut o = obs("v2", Some("v1"), vec![live("v1"), caught("v2")], 100);
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
    assert!(cond(&p, "Available").status, "the old version stays active and serves");
    assert_eq!(cond(&p, "Ready").reason, "VerificationFailed");
    assert!(cond(&p, "Stalled").status && !cond(&p, "Reconciling").status);

    o.versions[1].verification = Some(Verification::Succeeded);
    assert_eq!(promotes(&plan(&o)), Some((Some("v1".into()), "v2".into())));
}

#[test]
fn manual_promotion_waits_for_the_spec_to_name_the_version() {
    let mut o = obs("v2", Some("v1"), vec![live("v1"), caught("v2")], 100);
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
    let crash = |at: i64| Broken { why: "container processor is crash-looping (3 restarts)".into(), at: Some(t(at)) };
    let broken = Version { broken: Some(crash(40)), replicas: Some(2), ..version("v3") };
    let p = plan(&obs("v3", Some("v2"), vec![live("v2"), broken], 50));
    assert!(has(&p, &Action::Scale { version: "v3".into(), replicas: 0 }));
    assert!(fails(&p, "v3"));
    assert_eq!(p.phase, Phase::Failed);
    assert_eq!(p.active.as_deref(), Some("v2"));
    assert!(cond(&p, "Stalled").status);

    let stuck = Version { gate: Gate::Stuck { idle: Duration::from_secs(600) }, ..version("v3") };
    let p = plan(&obs("v3", Some("v2"), vec![live("v2"), stuck], 611));
    assert_eq!(p.phase, Phase::Failed);
    assert!(cond(&p, "Stalled").message.contains("no progress for 600s"));

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
fn a_kafka_outage_is_not_the_versions_fault() {
    let crash = |at: i64| Broken { why: "container processor is crash-looping (4 restarts)".into(), at: Some(t(at)) };
    let mut o = obs("v3", Some("v2"), vec![live("v2"), Version { broken: Some(crash(100)), ..version("v3") }], 100);
    o.kafka = Kafka::Down("cannot reach Kafka at 127.0.0.1:9092".into());
    assert!(!fails(&plan(&o), "v3"), "crash loops while Kafka is away do not count");
    o.kafka = Kafka::Up { since: t(120) };
    o.versions[1].broken = Some(crash(110));
    o.now = t(130);
    assert!(!fails(&plan(&o), "v3"), "nor do the stops before Kafka came back");
    o.versions[1].broken = Some(crash(140));
    assert!(!fails(&plan(&o), "v3"), "nor those within the grace after it");
    o.versions[1].broken = Some(crash(160));
    assert!(fails(&plan(&o), "v3"), "a crash loop well after Kafka came back does");
    // An image that cannot start is never Kafka's doing.
    o.kafka = Kafka::Down("unreachable".into());
    o.versions[1].broken = Some(Broken { why: "cannot start: ErrImagePull".into(), at: None });
    assert!(fails(&plan(&o), "v3"));
}

#[test]
fn the_old_version_stands_by_after_the_delay_and_older_ones_retire() {
    let standby = |id: &str, demoted: i64, promotion: u64| Version {
        phase: VersionPhase::Standby,
        promotion: Some(promotion),
        demoted_at: Some(t(demoted)),
        replicas: Some(2),
        ..live(id)
    };
    let v3 = Version { promotion: Some(3), ..live("v3") };
    let p = plan(&obs("v3", Some("v3"), vec![v3.clone(), standby("v2", 100, 2), standby("v1", 95, 1)], 110));
    assert!(!p.actions.iter().any(|a| matches!(a, Action::Scale { version, .. } if version == "v2")), "within the delay");
    assert!(!has(&p, &Action::Retire("v1".into())), "readers get the delay to follow the cutover");
    let p = plan(&obs("v3", Some("v3"), vec![v3, standby("v2", 100, 2), standby("v1", 95, 1)], 131));
    assert!(has(&p, &Action::Scale { version: "v2".into(), replicas: 0 }));
    assert!(has(&p, &Action::Retire("v1".into())), "beyond retainVersions: 1");
    assert!(!has(&p, &Action::Retire("v2".into())));
}

#[test]
fn a_version_a_downstream_reads_keeps_running_until_no_one_reads_it() {
    let standby = |id: &str, promotion: u64| Version {
        phase: VersionPhase::Standby,
        promotion: Some(promotion),
        demoted_at: Some(t(0)),
        replicas: Some(2),
        ..live(id)
    };
    let v3 = Version { promotion: Some(3), ..live("v3") };
    let mut o = obs("v3", Some("v3"), vec![v3.clone(), standby("v2", 2), standby("v1", 1)], 1000);
    o.read_by.insert("v1".into(), Reader { who: "Processor fraud version f1".into(), live: true });
    let p = plan(&o);
    assert!(!has(&p, &Action::Retire("v1".into())), "beyond retainVersions, but read");
    assert!(!p.actions.iter().any(|a| matches!(a, Action::Scale { version, .. } if version == "v1")), "its view stays live");
    assert!(has(&p, &Action::Scale { version: "v2".into(), replicas: 0 }), "the unread standby stands by as before");
    assert_ne!(p.requeue_after, Some(Duration::ZERO), "no busy loop: the reader moving on wakes it");
    // Deleting it by hand is held while it is read, and says by whom.
    o.versions[2].deleting = true;
    let held = plan(&o);
    assert!(cond(&held, DELETION_BLOCKED).message.contains("v1 (read by Processor fraud version f1)"));
    // Read by a standby only: kept, but at rest.
    o.versions[2].deleting = false;
    o.read_by.insert("v1".into(), Reader { who: "Processor fraud version f0".into(), live: false });
    let p = plan(&o);
    assert!(!has(&p, &Action::Retire("v1".into())));
    assert!(has(&p, &Action::Scale { version: "v1".into(), replicas: 0 }));
    // Once the reader moved on, it goes.
    o.read_by.clear();
    assert!(has(&plan(&o), &Action::Retire("v1".into())));
}

#[test]
fn a_together_cascade_holds_commits_once_and_cuts_over_after_the_stages_downstream() {
    let cascade = |root: bool, committed: bool, waiting: &[&str]| {
        Some(Cascade { root, committed, waiting_for: waiting.iter().map(|w| w.to_string()).collect() })
    };
    let at = |c: Option<Cascade>| {
        let mut o = obs("v2", Some("v1"), vec![live("v1"), caught("v2")], 100);
        o.cascade = c;
        plan(&o)
    };
    let holds = |p: &Plan| {
        promotes(p).is_none()
            && p.phase == Phase::AwaitingPromotion
            && has(p, &Action::SetPhase { version: "v2".into(), phase: VersionPhase::CaughtUp, message: None })
    };
    // The root waits for the stages, then commits (once: the record is
    // then seen), then waits for them to switch, then cuts over.
    let p = at(cascade(true, false, &["Processor peaks (replaying)"]));
    assert!(holds(&p) && !has(&p, &Action::CommitCascade("v2".into())));
    assert!(cond(&p, "Reconciling").message.contains("waits for Processor peaks (replaying)"), "{:?}", p.conditions);
    let p = at(cascade(true, false, &[]));
    assert!(holds(&p) && has(&p, &Action::CommitCascade("v2".into())));
    let p = at(cascade(true, true, &["Processor peaks"]));
    assert!(holds(&p) && !has(&p, &Action::CommitCascade("v2".into())));
    assert!(p.requeue_after.is_some_and(|d| d <= Duration::from_secs(1)), "their switch is not this Processor's event");
    assert_eq!(promotes(&at(cascade(true, true, &[]))), Some((Some("v1".into()), "v2".into())));
    // A stage downstream never commits, holds until committed, then cuts over.
    let p = at(cascade(false, false, &[]));
    assert!(holds(&p) && !p.actions.iter().any(|a| matches!(a, Action::CommitCascade(_))));
    assert_eq!(promotes(&at(cascade(false, true, &[]))), Some((Some("v1".into()), "v2".into())));
    // The root's manual promotion gates the commit; a stage's own does not
    // hold a committed chain.
    let manual = |c: Option<Cascade>, promote: Option<&str>| {
        let mut o = obs("v2", Some("v1"), vec![live("v1"), caught("v2")], 100);
        o.policy.promotion = PromotionMode::Manual;
        o.policy.promote = promote.map(Into::into);
        o.cascade = c;
        plan(&o)
    };
    let p = manual(cascade(true, false, &[]), None);
    assert!(holds(&p) && !has(&p, &Action::CommitCascade("v2".into())));
    assert!(has(&manual(cascade(true, false, &[]), Some("v2")), &Action::CommitCascade("v2".into())));
    assert!(promotes(&manual(cascade(false, true, &[]), None)).is_some());
    // A candidate still replaying is not held by the cascade: it replays.
    let mut o =
        obs("v2", Some("v1"), vec![live("v1"), Version { phase: VersionPhase::Replaying, replicas: Some(2), ..version("v2") }], 100);
    o.cascade = cascade(true, false, &[]);
    assert_eq!(plan(&o).phase, Phase::Replaying);
}

#[test]
fn a_committed_cascade_cuts_over_whatever_befalls_its_candidate_after_the_commit() {
    let crash = Broken { why: "container processor is crash-looping (3 restarts)".into(), at: Some(t(90)) };
    let after_the_commit = [
        Version { broken: Some(crash), ..caught("v2") },
        Version { gate: Gate::Stuck { idle: Duration::from_secs(600) }, ..caught("v2") },
        Version { gate: Gate::Behind { lag: 5000 }, ..caught("v2") },
        Version { gate: Gate::Unknown("Kafka is down".into()), ..caught("v2") },
        Version { ready_replicas: 0, ..caught("v2") },
    ];
    for v2 in after_the_commit {
        for root in [true, false] {
            let at = |waiting: &[&str]| {
                let mut o = obs("v2", Some("v1"), vec![live("v1"), v2.clone()], 100);
                o.cascade = Some(Cascade { root, committed: true, waiting_for: waiting.iter().map(|w| w.to_string()).collect() });
                plan(&o)
            };
            // The stages below switch first: it never fails meanwhile...
            let p = at(&["Processor peaks"]);
            assert!(!fails(&p, "v2") && promotes(&p).is_none(), "{v2:?}: {:?}", p.actions);
            assert!(has(&p, &Action::Scale { version: "v2".into(), replicas: 2 }), "{v2:?}: it keeps its pods");
            // ...and then it cuts over, so that no stage is left serving a
            // view built on a version that never serves.
            let p = at(&[]);
            assert_eq!(promotes(&p), Some((Some("v1".into()), "v2".into())), "{v2:?}");
            assert!(!fails(&p, "v2"));
        }
    }
    // Until its view is back, it waits (readers are never pointed at a
    // missing view), and says so.
    let mut o = obs("v2", Some("v1"), vec![live("v1"), Version { view_ready: false, ..caught("v2") }], 100);
    o.cascade = Some(Cascade { root: true, committed: true, waiting_for: vec![] });
    let p = plan(&o);
    assert!(promotes(&p).is_none() && !fails(&p, "v2"));
    assert!(cond(&p, "Reconciling").message.contains("once its view is ready again"), "{:?}", p.conditions);
}

#[test]
fn deleting_a_needed_version_waits_and_never_cuts_over() {
    // The active ViewVersion deleted mid-rollout.
    let v1 = Version { deleting: true, ..live("v1") };
    let v2 = Version { phase: VersionPhase::Replaying, replicas: Some(2), ..version("v2") };
    let p = plan(&obs("v2", Some("v1"), vec![v1.clone(), v2], 10));
    assert!(promotes(&p).is_none());
    assert!(!has(&p, &Action::Retire("v1".into())));
    assert_eq!(p.active.as_deref(), Some("v1"));
    let held = cond(&p, DELETION_BLOCKED);
    assert!(held.status && held.message.contains("v1 (active)"), "{held:?}");
    assert!(p.actions.iter().any(|a| matches!(a, Action::Event { warning: true, reason: DELETION_BLOCKED, .. })));
    // Once another version is promoted, the deleted one is no longer needed
    // (retainVersions 0) and goes.
    let mut o = obs(
        "v2",
        Some("v2"),
        vec![Version { phase: VersionPhase::Standby, demoted_at: Some(t(0)), ..v1 }, Version { promotion: Some(2), ..live("v2") }],
        100,
    );
    o.policy.retain_versions = 0;
    assert!(has(&plan(&o), &Action::Retire("v1".into())));
    // A deleted candidate is retired, then replayed afresh.
    let deleted = Version { deleting: true, ..caught("v2") };
    let p = plan(&obs("v2", Some("v1"), vec![live("v1"), deleted], 10));
    assert!(has(&p, &Action::Retire("v2".into())));
    assert!(promotes(&p).is_none());
}

#[test]
fn a_pinned_version_whose_code_changed_stalls_and_keeps_everything() {
    let mut o = obs("v1", Some("v1"), vec![live("v1")], 10);
    o.conflict = Some("spec.version is pinned to \"v1\", but ...".into());
    let p = plan(&o);
    assert_eq!(p.phase, Phase::Blocked);
    let stalled = cond(&p, "Stalled");
    assert!(stalled.status && stalled.reason == "VersionPinned" && stalled.message.contains("spec.version"));
    assert!(!p.actions.iter().any(|a| matches!(a, Action::Retire(_) | Action::CreateVersion(_) | Action::Promote { .. })));
}

#[test]
fn rollback_revives_a_standby_from_its_own_offsets() {
    let standby = Version {
        phase: VersionPhase::Standby,
        promotion: Some(1),
        demoted_at: Some(t(100)),
        replicas: Some(0),
        ready_replicas: 0,
        gate: Gate::Behind { lag: 10_000 },
        ..live("v1")
    };
    let v2 = Version { promotion: Some(2), ..live("v2") };
    let p = plan(&obs("v1", Some("v2"), vec![v2.clone(), standby.clone()], 500));
    assert!(!p.actions.iter().any(|a| matches!(a, Action::CreateVersion(_))), "no new version, no full replay");
    assert!(has(&p, &Action::Scale { version: "v1".into(), replicas: 2 }));
    assert_eq!(p.phase, Phase::RollingBack);
    let revived = Version { gate: Gate::CaughtUp, replicas: Some(2), ready_replicas: 2, phase: VersionPhase::Replaying, ..standby };
    let p = plan(&obs("v1", Some("v2"), vec![v2, revived], 505));
    assert_eq!(promotes(&p), Some((Some("v2".into()), "v1".into())));
    assert!(p.actions.iter().any(|a| matches!(a, Action::Promote { promotion: 3, reason: "RolledBack", .. })));
}

#[test]
fn a_superseded_candidate_that_never_served_is_retired() {
    let v2 = Version { phase: VersionPhase::Replaying, replicas: Some(2), ..version("v2") };
    let p = plan(&obs("v3", Some("v1"), vec![live("v1"), v2], 10));
    assert!(has(&p, &Action::Retire("v2".into())));
    assert!(has(&p, &Action::CreateVersion("v3".into())));
}

// ---------------------------------------------------------------- properties

/// One version in the world: its observable state and what the monitor
/// has made of it.
#[derive(Clone, Debug)]
struct WorldVersion {
    v: Version,
    /// The committed offset of its group (one input partition).
    position: i64,
    track: Track,
}

/// A tiny world the planner acts on, with a real monitor: one input
/// partition whose end grows, versions that consume it, readings that can
/// fail or stop coming.
#[derive(Clone, Debug)]
struct World {
    now: i64,
    end: i64,
    recorded: Option<String>,
    versions: BTreeMap<String, WorldVersion>,
    desired: String,
    policy: RolloutPolicy,
    replicas: i32,
    truncated: bool,
    kafka: Kafka,
}

#[derive(Clone, Debug)]
enum Step {
    Tick(i64),
    /// The monitor reads every version (failing while Kafka is down).
    Read,
    /// A reading that misses a partition.
    PartialRead,
    Consume(usize, i64),
    Produce(i64),
    NewSpec(u8),
    RevertToOlder(usize),
    Break(usize),
    Verify(usize, bool),
    Truncate(bool),
    Promote(usize),
    KafkaDown,
    KafkaUp,
    /// Someone deletes a ViewVersion (its finalizer holds it).
    Delete(usize),
    /// The Processor's status is lost.
    WipeStatus,
    /// The operator crashes after this many actions of the next plan.
    CrashAfter(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (1i64..40).prop_map(Step::Tick),
        6 => Just(Step::Read),
        1 => Just(Step::PartialRead),
        4 => (0usize..4, 0i64..2000).prop_map(|(i, n)| Step::Consume(i, n)),
        2 => (0i64..500).prop_map(Step::Produce),
        2 => (0u8..6).prop_map(Step::NewSpec),
        1 => (0usize..4).prop_map(Step::RevertToOlder),
        1 => (0usize..4).prop_map(Step::Break),
        1 => (0usize..4, any::<bool>()).prop_map(|(i, ok)| Step::Verify(i, ok)),
        1 => any::<bool>().prop_map(Step::Truncate),
        1 => (0usize..4).prop_map(Step::Promote),
        1 => Just(Step::KafkaDown),
        1 => Just(Step::KafkaUp),
        1 => (0usize..4).prop_map(Step::Delete),
        1 => Just(Step::WipeStatus),
        1 => (0usize..6).prop_map(Step::CrashAfter),
    ]
}

fn world_policy() -> impl Strategy<Value = RolloutPolicy> {
    (0i64..3, 0i32..20, any::<bool>(), any::<bool>(), 0i32..3, 0i32..40, any::<bool>(), proptest::option::of(1i32..5)).prop_map(
        |(max_lag, stable, manual, verify, retain, delay, allow, replay_replicas)| RolloutPolicy {
            max_lag,
            stable_for_seconds: stable,
            promotion: if manual { PromotionMode::Manual } else { PromotionMode::Auto },
            promote: None,
            retain_versions: retain,
            scale_down_delay_seconds: delay,
            progress_deadline_seconds: 120,
            allow_truncated_history: allow,
            verify: verify.then(|| VerifySpec { image: "v".into(), ..Default::default() }),
            cascade: Default::default(),
            replay_replicas,
            replay_byte_rate: None,
        },
    )
}

fn gate_policy(p: &RolloutPolicy) -> gate::Policy {
    gate::Policy {
        max_lag: p.max_lag,
        stable_for: secs(p.stable_for_seconds),
        progress_deadline: secs(p.progress_deadline_seconds),
        stale_after: Duration::from_secs(10),
    }
}

impl World {
    fn observe(&self) -> Observation {
        let gp = gate_policy(&self.policy);
        Observation {
            now: t(self.now),
            desired: self.desired.clone(),
            replicas: self.replicas,
            policy: self.policy.clone(),
            recorded_active: self.recorded.clone(),
            versions: self.versions.values().map(|w| Version { gate: w.track.verdict(t(self.now), &gp), ..w.v.clone() }).collect(),
            inputs: Inputs::Ready {
                truncated: if self.truncated { vec![Truncation { topic: "in".into(), partition: 0, first_offset: 7 }] } else { vec![] },
            },
            kafka: self.kafka.clone(),
            conflict: None,
            read_by: Default::default(),
            cascade: None,
            input_partitions: Some(3),
        }
    }

    fn nth(&self, i: usize) -> Option<String> {
        self.versions.keys().nth(i % self.versions.len().max(1)).cloned()
    }

    fn read(&mut self, partial: bool) {
        let (now, end, max_lag) = (t(self.now), self.end, self.policy.max_lag);
        let down = matches!(self.kafka, Kafka::Down(_));
        for w in self.versions.values_mut() {
            let attempt = w.v.started_at.unwrap_or(t(0));
            let reading = if down {
                Err("cannot reach Kafka".to_string())
            } else if partial {
                Err("no offsets for in/0: LeaderNotAvailable".to_string())
            } else {
                Ok(gate::Reading {
                    at: now,
                    ends: gate::Offsets::from_iter([(("in".to_string(), 0), end)]),
                    positions: gate::Offsets::from_iter([(("in".to_string(), 0), w.position)]),
                    topic_ids: gate::SmallMap::new(),
                })
            };
            w.track.advance(reading, attempt, max_lag);
        }
    }

    fn apply(&mut self, a: &Action) {
        let now = t(self.now);
        match a {
            Action::CreateVersion(id) => {
                let mut v = version(id);
                v.started_at = Some(now);
                v.gate = Gate::Unknown("not read".into());
                self.versions.insert(id.clone(), WorldVersion { v, position: 0, track: Track::default() });
            }
            Action::CreateActive { version: id, promotion } => {
                self.apply(&Action::CreateVersion(id.clone()));
                self.versions.get_mut(id).expect("just created").v.promotion = Some(*promotion);
            }
            Action::Scale { version, replicas } => {
                if let Some(w) = self.versions.get_mut(version) {
                    w.v.replicas = Some(*replicas);
                    w.v.ready_replicas = *replicas;
                }
            }
            Action::SetPhase { version, phase, .. } => {
                if let Some(w) = self.versions.get_mut(version) {
                    let v = &mut w.v;
                    if *phase == VersionPhase::Replaying && v.phase == VersionPhase::Standby {
                        v.started_at = Some(now);
                    }
                    if *phase == VersionPhase::Active && v.phase != VersionPhase::Active {
                        v.promoted_at = Some(now);
                    }
                    if *phase == VersionPhase::Standby && v.phase != VersionPhase::Standby {
                        v.demoted_at = Some(now);
                    }
                    if *phase == VersionPhase::Failed {
                        v.failure = Some("failed".into());
                    }
                    v.phase = *phase;
                }
            }
            Action::RecordCaughtUp(id) => {
                if let Some(w) = self.versions.get_mut(id) {
                    w.v.caught_up_at = Some(now);
                }
            }
            Action::StartVerification { candidate, .. } => {
                if let Some(w) = self.versions.get_mut(candidate) {
                    w.v.verification = Some(Verification::Running);
                }
            }
            Action::Promote { to, promotion, .. } => {
                if let Some(w) = self.versions.get_mut(to) {
                    w.v.promotion = Some(*promotion);
                }
                // The executor writes the Processor's status right after the commit.
                self.recorded = Some(to.clone());
            }
            Action::Retire(id) => {
                self.versions.remove(id);
            }
            Action::Event { .. } | Action::CommitCascade(_) => {}
        }
    }
}

/// The versions a plan must never retire: the active one (before and
/// after: one demoted by this plan counts as the most recent standby, and
/// is not retired before readers follow), the candidate, and the retained
/// standbys (a deleted version wanted back is retired and replayed afresh).
fn protected(o: &Observation, p: &Plan) -> Vec<String> {
    let before = committed_active(&o.versions, o.recorded_active.as_deref());
    let mut keep: Vec<String> = p.active.iter().cloned().collect();
    if let Some(c) = &p.candidate
        && o.versions.iter().any(|v| &v.id == c && !v.deleting)
    {
        keep.push(c.clone());
    }
    let mut former: Vec<&Version> =
        o.versions.iter().filter(|v| !keep.contains(&v.id) && v.served() && !(v.deleting && v.id == o.desired)).collect();
    former.sort_by_key(|v| std::cmp::Reverse((v.demoted_at.unwrap_or(o.now), v.promotion)));
    let delay = secs(o.policy.scale_down_delay_seconds);
    for (i, v) in former.iter().enumerate() {
        if i < o.policy.retain_versions as usize || elapsed(o.now, v.demoted_at.unwrap_or(o.now)) < delay {
            keep.push(v.id.clone());
        }
    }
    keep.extend(before);
    keep
}

fn check_invariants(o: &Observation, p: &Plan) -> Result<(), TestCaseError> {
    let find = |id: &str| o.versions.iter().find(|v| v.id == id);
    let before = committed_active(&o.versions, o.recorded_active.as_deref());
    let first =
        before.is_none() && o.recorded_active.is_none() && o.versions.iter().all(|v| v.id == o.desired && !v.served() && !v.deleting);
    for a in &p.actions {
        match a {
            Action::Promote { to, promotion, .. } => {
                let v = find(to).expect("promoted version exists");
                // Traffic moves only to a version the gate says is caught up, on
                // a fresh, complete reading (the first version aside).
                if !first {
                    prop_assert_eq!(&v.gate, &Gate::CaughtUp, "promoted {} on {:?}", to, v.gate);
                    prop_assert!(v.pods_ready(), "promoted {to} without ready pods");
                    if o.policy.verify.is_some() && before.is_some() {
                        prop_assert_eq!(&v.verification, &Some(Verification::Succeeded), "promoted {} unverified", to);
                    }
                    if o.policy.promotion == PromotionMode::Manual {
                        prop_assert_eq!(o.policy.promote.as_deref(), Some(to.as_str()));
                    }
                } else {
                    prop_assert_eq!(to, &o.desired);
                }
                prop_assert!(v.phase != VersionPhase::Failed && !v.deleting);
                prop_assert_ne!(before.as_deref(), Some(to.as_str()), "no step twice: promoting the active version");
                prop_assert!(o.versions.iter().all(|x| x.promotion < Some(*promotion)), "promotion numbers only grow");
            }
            Action::SetPhase { version, phase: VersionPhase::Failed, .. } => {
                // A version fails only on what is known: stuck over complete
                // readings, pods that cannot run (not while Kafka is away), a
                // failed verification.
                let v = find(version).unwrap();
                let known = matches!(v.gate, Gate::Stuck { .. })
                    || v.broken.as_ref().is_some_and(|b| counts(b, &o.kafka))
                    || matches!(v.verification, Some(Verification::Failed(_)));
                prop_assert!(known, "failed {version} on {:?} / {:?} / Kafka {:?}", v.gate, v.broken, o.kafka);
            }
            Action::Retire(id) => {
                prop_assert!(!protected(o, p).contains(id), "retired protected version {id}");
            }
            Action::Scale { version, replicas } => {
                // The active version keeps its replicas, before and after a cutover.
                if Some(version) == p.active.as_ref() {
                    prop_assert_eq!(*replicas, o.replicas);
                }
                if Some(version) == before.as_ref() && *replicas < o.replicas {
                    let v = find(version).unwrap();
                    let demoted = p.active.as_ref() != Some(version)
                        && elapsed(o.now, v.demoted_at.unwrap_or(o.now)) >= secs(o.policy.scale_down_delay_seconds);
                    prop_assert!(demoted, "scaled down {version} before its scale-down delay");
                }
            }
            Action::CreateVersion(id) | Action::CreateActive { version: id, .. } => {
                prop_assert!(find(id).is_none(), "no step twice: {id} exists")
            }
            Action::StartVerification { candidate, .. } => {
                prop_assert!(find(candidate).is_some_and(|v| v.verification.is_none()), "verification started twice");
            }
            _ => {}
        }
    }
    let promotions = p.actions.iter().filter(|a| matches!(a, Action::Promote { .. })).count();
    prop_assert!(promotions <= 1, "exactly one active version: one promotion at most");
    if before.is_some() {
        prop_assert!(p.active.is_some(), "an active version never disappears");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_over_random_histories(policy in world_policy(), replicas in 0i32..3, steps in proptest::collection::vec(step(), 1..80)) {
        let mut w = World {
            now: 0, end: 0, recorded: None, versions: BTreeMap::new(), desired: "v0".into(), policy, replicas, truncated: false,
            kafka: Kafka::Up { since: t(-1000) },
        };
        let mut crash_after: Option<usize> = None;
        for s in steps {
            match s {
                Step::Tick(d) => w.now += d,
                Step::Read => w.read(false),
                Step::PartialRead => w.read(true),
                Step::Consume(i, n) => if let Some(id) = w.nth(i) {
                    let end = w.end;
                    let v = w.versions.get_mut(&id).unwrap();
                    if v.v.replicas.unwrap_or(0) > 0 { v.position = (v.position + n).min(end); }
                },
                Step::Produce(n) => w.end += n,
                Step::NewSpec(n) => w.desired = format!("v{}", n + 1),
                Step::RevertToOlder(i) => if let Some(id) = w.nth(i) { w.desired = id },
                Step::Break(i) => if let Some(id) = w.nth(i) {
                    let at = if i % 2 == 0 { Some(t(w.now)) } else { None };
                    w.versions.get_mut(&id).unwrap().v.broken = Some(Broken { why: "CrashLoopBackOff".into(), at });
                },
                Step::Verify(i, ok) => if let Some(id) = w.nth(i) {
                    let v = &mut w.versions.get_mut(&id).unwrap().v;
                    if v.verification == Some(Verification::Running) {
                        v.verification = Some(if ok { Verification::Succeeded } else { Verification::Failed("diff".into()) });
                    }
                },
                Step::Truncate(on) => w.truncated = on,
                Step::Promote(i) => w.policy.promote = w.nth(i),
                Step::KafkaDown => w.kafka = Kafka::Down("cannot reach Kafka".into()),
                Step::KafkaUp => if matches!(w.kafka, Kafka::Down(_)) { w.kafka = Kafka::Up { since: t(w.now) } },
                Step::Delete(i) => if let Some(id) = w.nth(i) { w.versions.get_mut(&id).unwrap().v.deleting = true },
                Step::WipeStatus => w.recorded = None,
                Step::CrashAfter(n) => crash_after = Some(n),
            }
            let o = w.observe();
            let p = plan(&o);
            check_invariants(&o, &p)?;
            let n = crash_after.take().unwrap_or(p.actions.len());
            for a in p.actions.iter().take(n) {
                w.apply(a);
            }
            if n == p.actions.len() {
                w.recorded = p.active.clone();
                // The commit record and its mirror agree, and the active
                // version exists (a first version created committed is
                // mirrored by the reconcile its creation wakes).
                let committed = committed_active(&w.observe().versions, w.recorded.as_deref());
                let created_active = p.actions.iter().find_map(|a| match a {
                    Action::CreateActive { version, .. } => Some(version.clone()),
                    _ => None,
                });
                prop_assert_eq!(&committed, &p.active.clone().or(created_active));
                let actives = w.versions.values().filter(|v| v.v.phase == VersionPhase::Active).count();
                prop_assert!(actives <= 1, "{actives} versions in phase Active");
            }
        }
    }

    /// A restart is another observation: planning twice on the same
    /// observation gives the same plan.
    #[test]
    fn planning_is_deterministic(policy in world_policy(), caught_up in any::<bool>(), now in 0i64..100) {
        let gate = if caught_up { Gate::CaughtUp } else { Gate::Behind { lag: 3 } };
        let mut o = obs("v2", Some("v1"), vec![live("v1"), Version { gate, ..caught("v2") }], now);
        o.policy = policy;
        prop_assert_eq!(plan(&o), plan(&o));
    }
}

/// What GitOps tools read (kstatus: Reconciling=True is InProgress, then
/// Stalled=True is Failed, then Ready), phase by phase: Current only when
/// the version the spec asks for serves readers.
#[test]
fn conditions_say_whether_the_spec_is_served_for_every_phase() {
    let manual = |mut o: Observation| {
        o.policy.promotion = PromotionMode::Manual;
        o
    };
    let verify = |mut o: Observation| {
        o.policy.verify = Some(VerifySpec::default());
        o
    };
    let truncated = |mut o: Observation| {
        o.inputs = Inputs::Ready { truncated: vec![Truncation { topic: "orders".into(), partition: 0, first_offset: 9 }] };
        o
    };
    let crashing = Broken { why: "container crash-looping".into(), at: Some(t(-5)) };
    let rolling_back = Version { demoted_at: Some(t(-100)), promotion: Some(1), phase: VersionPhase::Standby, ..version("v1") };
    // (case, observation, phase, Ready, Available, Reconciling, Stalled)
    let cases: Vec<(&str, Observation, Phase, bool, bool, bool, bool)> = vec![
        ("nothing yet", obs("v1", None, vec![], 0), Phase::Pending, false, false, true, false),
        (
            "first replay",
            obs("v1", Some("v1"), vec![Version { promotion: Some(1), ..version("v1") }], 1),
            Phase::Replaying,
            false,
            false,
            true,
            false,
        ),
        ("live", obs("v1", Some("v1"), vec![live("v1")], 2), Phase::Live, true, true, false, false),
        (
            "live, no ready pod",
            obs("v1", Some("v1"), vec![Version { ready_replicas: 0, ..live("v1") }], 2),
            Phase::Live,
            false,
            false,
            true,
            false,
        ),
        (
            "live, pods crash",
            obs("v1", Some("v1"), vec![Version { broken: Some(crashing.clone()), ..live("v1") }], 2),
            Phase::Live,
            false,
            false,
            false,
            true,
        ),
        ("candidate replays", obs("v2", Some("v1"), vec![live("v1"), version("v2")], 5), Phase::Replaying, false, true, true, false),
        ("verifying", verify(obs("v2", Some("v1"), vec![live("v1"), caught("v2")], 20)), Phase::Verifying, false, true, true, false),
        (
            "awaiting promotion",
            manual(obs("v2", Some("v1"), vec![live("v1"), caught("v2")], 20)),
            Phase::AwaitingPromotion,
            false,
            true,
            true,
            false,
        ),
        ("cutting over", obs("v2", Some("v1"), vec![live("v1"), caught("v2")], 20), Phase::CuttingOver, false, true, true, false),
        (
            "rolling back",
            obs("v1", Some("v2"), vec![rolling_back, Version { promotion: Some(2), ..live("v2") }], 20),
            Phase::RollingBack,
            false,
            true,
            true,
            false,
        ),
        (
            "candidate failed",
            obs("v2", Some("v1"), vec![live("v1"), Version { broken: Some(crashing), ..version("v2") }], 20),
            Phase::Failed,
            false,
            true,
            false,
            true,
        ),
        ("blocked", truncated(obs("v2", Some("v1"), vec![live("v1")], 0)), Phase::Blocked, false, true, false, true),
    ];
    for (case, o, phase, ready, available, reconciling, stalled) in cases {
        let p = plan(&o);
        let got = |t: &str| cond(&p, t).status;
        assert_eq!(p.phase, phase, "{case}");
        assert_eq!(
            (got("Ready"), got("Available"), got("Reconciling"), got("Stalled")),
            (ready, available, reconciling, stalled),
            "{case}: {:#?}",
            p.conditions
        );
        for c in &p.conditions {
            assert!(!c.reason.is_empty(), "{case}: {c:?}");
            if c.status && c.type_ != "Available" || c.type_ == "Ready" {
                assert!(!c.message.is_empty(), "{case}: a condition that matters says why: {c:?}");
            }
        }
    }
}

proptest! {
    /// Whatever a cascade's state, the candidate's gate and the policy: a
    /// stage cuts over only once the chain is committed and the stages
    /// below it have switched, only the root commits, under its own
    /// promotion policy, and never in the same plan as a cutover.
    #[test]
    fn a_cascade_never_cuts_over_before_its_commit(
        root in any::<bool>(), committed in any::<bool>(), waiting in any::<bool>(),
        manual in any::<bool>(), promoted in any::<bool>(), caught_up in any::<bool>(),
    ) {
        let c = if caught_up { caught("v2") } else { Version { phase: VersionPhase::Replaying, replicas: Some(2), ..version("v2") } };
        let mut o = obs("v2", Some("v1"), vec![live("v1"), c], 100);
        o.policy.promotion = if manual { PromotionMode::Manual } else { PromotionMode::Auto };
        o.policy.promote = promoted.then(|| "v2".into());
        o.cascade = Some(Cascade { root, committed, waiting_for: if waiting { vec!["Processor d".into()] } else { vec![] } });
        let p = plan(&o);
        let commits = p.actions.iter().any(|a| matches!(a, Action::CommitCascade(_)));
        if promotes(&p).is_some() {
            prop_assert!(committed && !waiting);
            prop_assert!(!commits);
        }
        if commits {
            prop_assert!(root && !committed && !waiting && caught_up);
            prop_assert!(!manual || promoted);
        }
        if committed && !waiting {
            prop_assert!(promotes(&p).is_some(), "a committed stage with nothing below to wait for cuts over, whatever its gate");
        }
    }
}

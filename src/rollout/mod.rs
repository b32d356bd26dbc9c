//! The reprocessing planner: from what is observed of a Processor (its spec,
//! its versions, their Deployments, the catch-up gate, retention facts,
//! verification, Kafka's availability, the clock) it returns what to do
//! next. No I/O: the reconciler observes, plans, acts and writes status, so
//! an operator restart is just another observation.
//!
//! **The commit record.** Which version is active is recorded on the
//! ViewVersions themselves: each promotion stamps the promoted version with
//! the next promotion number ([`Action::Promote`]), and the active version is
//! the one with the highest. The Processor's `status.activeVersion` mirrors
//! it, and Service and ConfigMap follow it, so losing the Processor's status
//! loses nothing; the active and retained ViewVersions carry a finalizer, so
//! they cannot vanish under it either. Only a Processor with no trace of an
//! earlier version treats its version as the first (active from the start).
//!
//! The plan reads like the recipe: [`Planner::commit_record`],
//! [`Planner::keep_active_serving`], [`Planner::advance_candidate`] (create,
//! gate, verify, promote or fail), [`Planner::retire_or_stand_by`], then
//! phase and conditions.

pub mod gate;
#[cfg(test)]
mod tests;

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::jiff::Timestamp;

use crate::api::{Cond, PromotionMode, RolloutPolicy, VersionPhase, conditions::types};
pub use gate::Gate;

pub const REPROCESSING_BLOCKED: &str = "ReprocessingBlocked";
pub const DELETION_BLOCKED: &str = "DeletionBlocked";
/// The promotion of a Processor's first version (active from the start).
pub const FIRST_VERSION: &str = "FirstVersion";
/// A caught-up version serves readers, whether or not it is the one the
/// spec asks for (Ready says that).
pub const AVAILABLE: &str = "Available";
const VERIFICATION_FAILED_PREFIX: &str = "verification failed: ";
/// A container that stopped within this long after Kafka came back may
/// have stopped because of the outage (a client's own timeouts run out).
pub const OUTAGE_GRACE: Duration = Duration::from_secs(30);

/// A partition that no longer starts at offset zero.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Truncation {
    pub topic: String,
    pub partition: i32,
    pub first_offset: i64,
}

/// The Processor's inputs, as the Topic resources report them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inputs {
    /// All present and Ready; truncated partitions of non-compacted topics.
    Ready { truncated: Vec<Truncation> },
    /// Why a new version cannot start yet (a Topic missing or not Ready).
    Waiting(String),
}

/// Kafka as the operator last saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kafka {
    Up { since: Timestamp },
    Down(String),
}

/// The verification Job of a candidate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verification {
    Running,
    Succeeded,
    Failed(String),
}

/// Pods of a version that cannot run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Broken {
    pub why: String,
    /// When the crash-looping container last stopped; None for a container
    /// that cannot start at all (an image that cannot be pulled), which has
    /// nothing to do with Kafka.
    pub at: Option<Timestamp>,
}

/// One version, as observed.
#[derive(Clone, Debug, PartialEq)]
pub struct Version {
    pub id: String,
    pub phase: VersionPhase,
    /// Its view Topic exists and its inputs are Ready.
    pub view_ready: bool,
    /// The commit record: the promotion that made it active (higher is later).
    pub promotion: Option<u64>,
    /// Deletion was asked for (its finalizer holds it while it is needed).
    pub deleting: bool,
    /// The catch-up gate's answer for its current attempt.
    pub gate: Gate,
    pub caught_up_at: Option<Timestamp>,
    pub started_at: Option<Timestamp>,
    pub promoted_at: Option<Timestamp>,
    pub demoted_at: Option<Timestamp>,
    /// Deployment replicas as applied; None when there is no Deployment.
    pub replicas: Option<i32>,
    pub ready_replicas: i32,
    pub broken: Option<Broken>,
    /// Why it failed, once it has (recorded with the Failed phase).
    pub failure: Option<String>,
    pub verification: Option<Verification>,
}

impl Version {
    /// It has served readers at some point.
    fn served(&self) -> bool {
        self.promotion.is_some() || self.promoted_at.is_some() || self.demoted_at.is_some()
    }

    fn pods_ready(&self) -> bool {
        self.replicas.is_some_and(|r| r > 0 && self.ready_replicas >= r)
    }

    fn lag_text(&self) -> String {
        match &self.gate {
            Gate::Behind { lag } => format!("lag {lag}"),
            Gate::CaughtUp => "caught up".into(),
            Gate::Stuck { idle } => format!("no progress for {}s", idle.as_secs()),
            Gate::Unknown(why) => format!("progress unknown: {why}"),
        }
    }
}

/// Everything the planner looks at.
#[derive(Clone, Debug)]
pub struct Observation {
    pub now: Timestamp,
    /// The version id the spec asks for.
    pub desired: String,
    pub replicas: i32,
    pub policy: RolloutPolicy,
    /// The active version as the Processor's status names it (a mirror:
    /// it may be stale, or wiped).
    pub recorded_active: Option<String>,
    pub versions: Vec<Version>,
    pub inputs: Inputs,
    pub kafka: Kafka,
    /// Why the desired version cannot be the spec (`spec.version` pinned to
    /// a version whose code differs from the spec's).
    pub conflict: Option<String>,
    /// Versions whose view a version of a downstream Processor reads, and
    /// who reads it: they are not retired, and while a running version
    /// reads them, not scaled down.
    pub read_by: BTreeMap<String, Reader>,
    /// The candidate is part of a `Together` cascade.
    pub cascade: Option<Cascade>,
    /// Partitions of the inputs, summed, when every input's count is known.
    pub input_partitions: Option<i32>,
}

/// Who reads a version's view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reader {
    /// For people: `Processor P version V`, comma-separated.
    pub who: String,
    /// A running version (active or candidate) reads it: its view must
    /// stay live.
    pub live: bool,
}

/// Where the candidate stands in a `Together` cascade (a chain of
/// Processors that cuts over as one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cascade {
    /// This Processor starts the chain: it writes the commit record, under
    /// its own promotion policy.
    pub root: bool,
    /// The chain's commit record names this candidate.
    pub committed: bool,
    /// Before the commit (root only): the stages without a caught-up
    /// version on the chain yet. After it: the downstream stages whose
    /// readers have not switched yet (this one switches after them).
    pub waiting_for: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Create the ViewVersion (and so its view Topic) of this version.
    CreateVersion(String),
    /// Create the first version committed: nothing served before it, so
    /// it carries its promotion from its creation (one write, not a create
    /// and then a commit), and its promotion's event is told once it is seen.
    CreateActive {
        version: String,
        promotion: u64,
    },
    /// Ensure the version's Deployment runs this many replicas.
    Scale {
        version: String,
        replicas: i32,
    },
    /// Record the version's phase (the executor stamps the timestamps).
    SetPhase {
        version: String,
        phase: VersionPhase,
        message: Option<String>,
    },
    /// Record that the active version has caught up (first versions).
    RecordCaughtUp(String),
    /// Run the verification Job of `candidate` against `active`.
    StartVerification {
        candidate: String,
        active: String,
    },
    /// The commit point of a cutover: `to` is stamped with promotion number
    /// `promotion` and so becomes the active version; the event is told once.
    Promote {
        from: Option<String>,
        to: String,
        promotion: u64,
        reason: &'static str,
        message: String,
    },
    /// Write the commit record of a `Together` cascade on this candidate:
    /// from then on every stage of the chain cuts over, the last first.
    CommitCascade(String),
    /// Delete the version: Deployment, view topic and consumer group.
    Retire(String),
    Event {
        warning: bool,
        reason: &'static str,
        message: String,
    },
}

/// The Processor's phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Live,
    Replaying,
    Verifying,
    AwaitingPromotion,
    CuttingOver,
    RollingBack,
    Failed,
    Blocked,
}

impl Phase {
    pub const ALL: [Phase; 9] = [
        Phase::Pending,
        Phase::Live,
        Phase::Replaying,
        Phase::Verifying,
        Phase::AwaitingPromotion,
        Phase::CuttingOver,
        Phase::RollingBack,
        Phase::Failed,
        Phase::Blocked,
    ];

    pub fn names() -> [&'static str; 9] {
        Self::ALL.map(Phase::as_str)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Live => "Live",
            Phase::Replaying => "Replaying",
            Phase::Verifying => "Verifying",
            Phase::AwaitingPromotion => "AwaitingPromotion",
            Phase::CuttingOver => "CuttingOver",
            Phase::RollingBack => "RollingBack",
            Phase::Failed => "Failed",
            Phase::Blocked => "Blocked",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// The active version once the actions are done.
    pub active: Option<String>,
    pub candidate: Option<String>,
    pub phase: Phase,
    pub conditions: Vec<Cond>,
    /// When to look again even if nothing changes (timers: scale-down
    /// delay; a slow safety net while a version is on its way). The catch-up
    /// gate wakes the Processor itself when its answer changes.
    pub requeue_after: Option<Duration>,
}

fn secs(n: i32) -> Duration {
    Duration::from_secs(n.max(0) as u64)
}

fn elapsed(now: Timestamp, since: Timestamp) -> Duration {
    now.duration_since(since).try_into().unwrap_or(Duration::ZERO)
}

/// The active version by the commit record: the highest promotion number;
/// without any, the version the Processor's status names, if it exists.
pub fn committed_active(versions: &[Version], recorded: Option<&str>) -> Option<String> {
    versions
        .iter()
        .filter(|v| v.promotion.is_some())
        .max_by_key(|v| v.promotion)
        .map(|v| v.id.clone())
        .or_else(|| recorded.filter(|r| versions.iter().any(|v| v.id == *r)).map(str::to_string))
}

/// Whether a crash-looping container counts against its version: not while
/// Kafka is away, nor for a stop within [`OUTAGE_GRACE`] of its return.
fn counts(b: &Broken, kafka: &Kafka) -> bool {
    match (kafka, b.at) {
        (_, None) => true,
        (Kafka::Down(_), Some(_)) => false,
        (Kafka::Up { since }, Some(at)) => at > *since + OUTAGE_GRACE,
    }
}

fn truncation_message(truncated: &[Truncation]) -> String {
    let parts: Vec<String> =
        truncated.iter().map(|t| format!("{} partition {} (first offset still held: {})", t.topic, t.partition, t.first_offset)).collect();
    format!(
        "inputs lost history, so a replay from offset zero would be incomplete: {}; raise retention or set \
         spec.rollout.allowTruncatedHistory: true to replay what is left",
        parts.join(", ")
    )
}

/// Earliest of the timers that matter to the plan.
#[derive(Default)]
struct Wake(Option<Duration>);

impl Wake {
    fn at(&mut self, d: Duration) {
        let d = d.max(Duration::from_secs(1));
        self.0 = Some(self.0.map_or(d, |w| w.min(d)));
    }
}

/// The plan as it is being built.
struct Planner<'a> {
    o: &'a Observation,
    actions: Vec<Action>,
    wake: Wake,
    active: Option<String>,
    candidate: Option<String>,
    blocked: Option<String>,
    failed: Option<(String, &'static str)>,
    awaiting: Option<String>,
    waiting: Option<String>,
    /// What the candidate waits for, when the gate cannot say.
    unknown: Option<String>,
    deletion_blocked: Vec<String>,
    /// The active version before this plan (the commit record as found).
    committed: Option<String>,
    rolling_back: bool,
    verifying: bool,
}

pub fn plan(o: &Observation) -> Plan {
    let mut p = Planner {
        o,
        actions: Vec::new(),
        wake: Wake::default(),
        active: None,
        candidate: None,
        blocked: None,
        failed: None,
        awaiting: None,
        waiting: None,
        unknown: None,
        deletion_blocked: Vec::new(),
        committed: None,
        rolling_back: false,
        verifying: false,
    };
    p.commit_record();
    p.keep_active_serving();
    p.advance_candidate();
    p.retire_or_stand_by();
    p.finish()
}

impl<'a> Planner<'a> {
    fn find(&self, id: &str) -> Option<&'a Version> {
        self.o.versions.iter().find(|v| v.id == id)
    }

    fn next_promotion(&self) -> u64 {
        self.o.versions.iter().filter_map(|v| v.promotion).max().unwrap_or(0) + 1
    }

    /// A version that does not exist yet needs its inputs, and, for a
    /// replay from offset zero, all of their history.
    fn may_create(&mut self) -> bool {
        match &self.o.inputs {
            Inputs::Waiting(why) => {
                self.waiting = Some(why.clone());
                false
            }
            Inputs::Ready { truncated } if !truncated.is_empty() && !self.o.policy.allow_truncated_history => {
                self.blocked = Some(truncation_message(truncated));
                false
            }
            Inputs::Ready { .. } => true,
        }
    }

    /// Who is active, from the commit record; the first version is active
    /// from the start, and only a Processor with no trace of another
    /// version has a first version.
    fn commit_record(&mut self) {
        let o = self.o;
        self.active = committed_active(&o.versions, o.recorded_active.as_deref());
        self.committed = self.active.clone();
        if self.active.as_deref() == Some(o.desired.as_str()) || o.conflict.is_some() {
            return;
        }
        let first = self.active.is_none()
            && o.recorded_active.as_deref().is_none_or(|r| r == o.desired)
            && o.versions.iter().all(|v| v.id == o.desired && !v.served() && !v.deleting);
        if !first {
            self.candidate = Some(o.desired.clone());
            return;
        }
        match self.find(&o.desired) {
            None => {
                if self.may_create() {
                    self.actions.push(Action::CreateActive { version: o.desired.clone(), promotion: self.next_promotion() });
                }
            }
            Some(_) => {
                self.actions.push(Action::Promote {
                    from: None,
                    to: o.desired.clone(),
                    promotion: self.next_promotion(),
                    reason: FIRST_VERSION,
                    message: format!("version {} is the first: active from the start, replaying from offset zero", o.desired),
                });
                self.active = Some(o.desired.clone());
            }
        }
    }

    /// The active version keeps its replicas, whatever else happens.
    fn keep_active_serving(&mut self) {
        let Some(a) = self.active.clone() else { return };
        let v = self.find(&a).expect("the active version is observed");
        if v.view_ready {
            self.actions.push(Action::Scale { version: a.clone(), replicas: self.o.replicas });
        }
        // (a first version's phase waits for its view: one write says both)
        if v.phase != VersionPhase::Active && (v.view_ready || v.phase != VersionPhase::Pending) {
            self.actions.push(Action::SetPhase { version: a.clone(), phase: VersionPhase::Active, message: None });
        }
        if v.caught_up_at.is_none() && v.gate == Gate::CaughtUp {
            self.actions.push(Action::RecordCaughtUp(a));
        }
    }

    fn fail(&mut self, c: &str, why: String, reason: &'static str, phase_message: String) {
        let message = format!("version {c} failed: {why}; version {} stays active", self.active.as_deref().unwrap_or("none"));
        self.actions.push(Action::SetPhase { version: c.into(), phase: VersionPhase::Failed, message: Some(phase_message) });
        self.actions.push(Action::Scale { version: c.into(), replicas: 0 });
        self.actions.push(Action::Event { warning: true, reason, message: message.clone() });
        self.failed = Some((message, reason));
    }

    fn set_phase(&mut self, v: &Version, phase: VersionPhase, message: Option<String>) {
        if v.phase != phase {
            self.actions.push(Action::SetPhase { version: v.id.clone(), phase, message });
        }
    }

    /// The candidate: created, replayed to the gate, verified, promoted, or
    /// failed.
    fn advance_candidate(&mut self) {
        let Some(c) = self.candidate.clone() else { return };
        let o = self.o;
        let Some(v) = self.find(&c) else {
            if self.may_create() {
                self.actions.push(Action::CreateVersion(c));
            }
            return;
        };
        if v.deleting {
            // Deleted by someone: retired in `retire_or_stand_by`, then
            // created again from offset zero.
            self.waiting = Some(format!("version {c} is being deleted; it replays from offset zero once gone"));
            return;
        }
        if v.phase == VersionPhase::Failed {
            let why = v.failure.clone().unwrap_or_else(|| "failed".into());
            let reason = if why.starts_with(VERIFICATION_FAILED_PREFIX) { "VerificationFailed" } else { "RolloutFailed" };
            self.failed = Some((format!("version {c}: {why}; change the spec to start a new attempt"), reason));
            if v.replicas.unwrap_or(0) != 0 {
                self.actions.push(Action::Scale { version: c, replicas: 0 });
            }
            return;
        }
        // A retained standby is revived from its own committed offsets.
        self.rolling_back = v.demoted_at.is_some();
        if let Some(cascade) = o.cascade.as_ref().filter(|c| c.committed) {
            // The chain's commit decided this cutover, and the stages below
            // may already serve views built on this candidate: a crash, a
            // stall or new lag from now on is the active version's to show,
            // not a reason to leave them on a version that never serves.
            // (Whatever this stage's own promotion policy, too.)
            self.actions.push(Action::Scale { version: c.clone(), replicas: self.final_size() });
            if !v.view_ready {
                self.unknown = Some(format!("the cascade is committed; version {c} cuts over once its view is ready again"));
            } else if self.cascade_allows(v, cascade, true) {
                self.cut_over(v);
            }
            return;
        }
        if let Some(b) = v.broken.as_ref().filter(|b| counts(b, &o.kafka)) {
            self.fail(&c, b.why.clone(), "RolloutFailed", b.why.clone());
            return;
        }
        if let Gate::Stuck { idle } = v.gate {
            let why = format!("no progress for {}s of complete readings (progressDeadlineSeconds)", idle.as_secs());
            self.fail(&c, why.clone(), "RolloutFailed", why);
            return;
        }
        if !v.view_ready {
            self.set_phase(v, VersionPhase::Pending, None);
            return;
        }
        // The candidate replays with at least one pod (`replayReplicas` while
        // it replays from zero); once caught up it runs its final size, and
        // once promoted the spec's replicas like any active version.
        let final_size = self.final_size();
        let replay = self.replay_size();
        let resize = replay != final_size && v.caught_up_at.is_none() && v.gate == Gate::CaughtUp;
        let size = if v.caught_up_at.is_some() || resize { final_size } else { replay };
        self.actions.push(Action::Scale { version: c.clone(), replicas: size });
        if resize {
            // Caught up at replay size: the gate holds again at the final
            // size, from now.
            self.actions.push(Action::RecordCaughtUp(c.clone()));
            self.set_phase(v, VersionPhase::Replaying, Some(format!("caught up with {replay} pods; scaling to {final_size}")));
            self.unknown = Some(format!(
                "version {c} caught up with {replay} replay pods; it holds at {final_size} for {}s before promotion",
                o.policy.stable_for_seconds
            ));
            self.wake.at(secs(o.policy.stable_for_seconds));
            return;
        }
        match &v.gate {
            Gate::CaughtUp => {}
            Gate::Unknown(why) => {
                if v.phase == VersionPhase::Pending {
                    self.set_phase(v, VersionPhase::Replaying, None);
                }
                self.unknown = Some(format!("version {c}: progress unknown ({why}); nothing is promoted or failed until it is known"));
                return;
            }
            _ => {
                let message = self.rolling_back.then(|| "rolling back: catching up from its own committed offsets".to_string());
                self.set_phase(v, VersionPhase::Replaying, message);
                return;
            }
        }
        if !v.pods_ready() {
            self.unknown = Some(format!("version {c} has caught up; waiting for its pods to be Ready"));
            return;
        }
        if let Some(at) = v.caught_up_at.filter(|_| v.demoted_at.is_none() && replay != final_size)
            && elapsed(o.now, at) < secs(o.policy.stable_for_seconds)
        {
            // Scaled from its replay size: the final size must hold too.
            let left = secs(o.policy.stable_for_seconds) - elapsed(o.now, at);
            self.unknown = Some(format!("version {c} has caught up; it holds at its final size for {}s more", left.as_secs().max(1)));
            self.wake.at(left);
            return;
        }
        if !self.verified(v) {
            return;
        }
        let allowed = match o.policy.promotion {
            PromotionMode::Auto => true,
            PromotionMode::Manual => o.policy.promote.as_deref() == Some(c.as_str()),
        };
        if let Some(cascade) = &o.cascade
            && !self.cascade_allows(v, cascade, allowed)
        {
            return;
        }
        if !allowed {
            self.set_phase(v, VersionPhase::CaughtUp, None);
            self.awaiting = Some(format!(
                "version {c} has caught up{}; set spec.rollout.promote: \"{c}\" to cut over",
                if o.policy.verify.is_some() { " and passed verification" } else { "" }
            ));
            return;
        }
        self.cut_over(v);
    }

    /// The candidate becomes the active version: the commit point, its
    /// final size, and the replaced version as a standby that keeps its
    /// replicas through the cutover.
    fn cut_over(&mut self, v: &Version) {
        let o = self.o;
        let c = v.id.clone();
        let from = self.active.clone();
        self.actions.push(Action::Promote {
            from: from.clone(),
            to: c.clone(),
            promotion: self.next_promotion(),
            reason: if self.rolling_back { "RolledBack" } else { "CutOver" },
            message: format!("readers switched from version {} to version {c}", from.as_deref().unwrap_or("none")),
        });
        for a in &mut self.actions {
            if let Action::Scale { version, replicas } = a
                && *version == c
            {
                *replicas = o.replicas;
            }
        }
        self.actions.push(Action::SetPhase { version: c.clone(), phase: VersionPhase::Active, message: None });
        if v.caught_up_at.is_none() {
            self.actions.push(Action::RecordCaughtUp(c.clone()));
        }
        if let Some(f) = &from {
            self.actions.push(Action::SetPhase { version: f.clone(), phase: VersionPhase::Standby, message: None });
        }
        if let Some(f) = from.as_deref().and_then(|f| self.find(f))
            && f.view_ready
        {
            // The replaced version keeps its replicas through the cutover.
            self.actions.push(Action::Scale { version: f.id.clone(), replicas: o.replicas });
        }
        self.active = Some(c);
        self.candidate = None;
    }

    /// Pods a caught-up candidate runs: the spec's replicas, at least one.
    fn final_size(&self) -> i32 {
        self.o.replicas.max(1)
    }

    /// Pods a candidate replays with from zero: `replayReplicas`, capped at
    /// the input partitions; without it, the final size.
    fn replay_size(&self) -> i32 {
        match (self.o.policy.replay_replicas, self.o.input_partitions) {
            (None, _) => self.final_size(),
            (Some(r), Some(n)) if n > 0 => r.min(n).max(1),
            (Some(r), _) => r.max(1),
        }
    }

    /// A caught-up candidate in a `Together` cascade: held until the chain
    /// is committed (the root commits it once every stage has caught up and
    /// its own policy allows), then cut over once the stages downstream of
    /// it have switched their readers. True when it may cut over now.
    fn cascade_allows(&mut self, v: &Version, cascade: &Cascade, allowed: bool) -> bool {
        let c = v.id.clone();
        let waiting = cascade.waiting_for.join(", ");
        let message = match (cascade.committed, cascade.root) {
            (true, _) if cascade.waiting_for.is_empty() => return true,
            (true, _) => {
                // Their switch is not an event of this Processor's: look again soon.
                self.wake.at(Duration::from_secs(1));
                format!("the cascade is committed; version {c} cuts over once {waiting} switched readers")
            }
            (false, true) if !cascade.waiting_for.is_empty() => {
                self.wake.at(Duration::from_secs(2));
                format!("version {c} has caught up; the cascade waits for {waiting}")
            }
            (false, true) if !allowed => {
                format!("version {c} and every downstream stage have caught up; set spec.rollout.promote: \"{c}\" to cut the chain over")
            }
            (false, true) => {
                self.actions.push(Action::CommitCascade(c.clone()));
                self.wake.at(Duration::from_secs(1));
                format!("the cascade is committed; version {c} cuts over once the downstream stages switched readers")
            }
            (false, false) => format!("version {c} has caught up; it cuts over with the cascade of its upstream"),
        };
        self.set_phase(v, VersionPhase::CaughtUp, None);
        self.awaiting = Some(message);
        false
    }

    /// Verification of a caught-up candidate: true once it has passed (or
    /// none is asked for).
    fn verified(&mut self, v: &Version) -> bool {
        let c = v.id.clone();
        match (self.o.policy.verify.is_some(), &v.verification) {
            (false, _) | (true, Some(Verification::Succeeded)) => true,
            (true, Some(Verification::Running)) => {
                self.verifying = true;
                self.set_phase(v, VersionPhase::Verifying, None);
                false
            }
            (true, Some(Verification::Failed(why))) => {
                let phase_message = format!("{VERIFICATION_FAILED_PREFIX}{why}");
                self.fail(&c, format!("verification failed: {why}"), "VerificationFailed", phase_message);
                false
            }
            (true, None) => match self.active.clone() {
                Some(against) => {
                    self.verifying = true;
                    self.actions.push(Action::StartVerification { candidate: c.clone(), active: against });
                    self.actions.push(Action::SetPhase { version: c, phase: VersionPhase::Verifying, message: None });
                    false
                }
                // Nothing to compare against: no active version.
                None => true,
            },
        }
    }

    /// Everything else: the version just replaced keeps running for the
    /// scale-down delay, then stands by at zero replicas; standbys beyond
    /// retainVersions, versions that never served, and deleted versions
    /// that are not needed are retired. A deleted version that is needed
    /// (active, or a retained standby) is kept, and said so.
    fn retire_or_stand_by(&mut self) {
        let o = self.o;
        let policy = &o.policy;
        // A pinned version in conflict with the spec is kept as it is while
        // the user fixes the spec.
        let conflicted = o.conflict.as_ref().map(|_| o.desired.clone());
        let keep: Vec<&str> = self.active.iter().chain(self.candidate.iter()).chain(conflicted.iter()).map(String::as_str).collect();
        let protected_candidate = |v: &Version| keep.contains(&v.id.as_str()) && !(v.deleting && Some(&v.id) == self.candidate.as_ref());
        let mut former: Vec<&Version> =
            o.versions.iter().filter(|v| !keep.contains(&v.id.as_str()) && (v.served() || self.is_recorded(&v.id))).collect();
        // Most recently demoted first; one demoted in this very plan has no timestamp yet.
        former.sort_by_key(|v| std::cmp::Reverse((v.demoted_at.unwrap_or(o.now), v.promotion)));
        let mut retained: Vec<&str> = Vec::new();
        for (i, v) in former.iter().enumerate() {
            let delay = secs(policy.scale_down_delay_seconds);
            let since_demotion = v.demoted_at.map_or(Duration::ZERO, |d| elapsed(o.now, d));
            // One demoted in this very plan stays at least until readers
            // have followed the cutover (the next plan).
            let just_demoted = self.committed.as_deref() == Some(v.id.as_str());
            let reader = o.read_by.get(&v.id);
            if since_demotion < delay || just_demoted || reader.is_some_and(|r| r.live) {
                if since_demotion < delay || just_demoted {
                    self.wake.at(delay.saturating_sub(since_demotion));
                }
                retained.push(&v.id);
            } else if i >= policy.retain_versions as usize && reader.is_none() {
                self.actions.push(Action::Retire(v.id.clone()));
                continue;
            } else {
                retained.push(&v.id);
                if v.replicas.unwrap_or(0) != 0 {
                    self.actions.push(Action::Scale { version: v.id.clone(), replicas: 0 });
                }
            }
            // (one demoted in this very plan was given its phase with the promotion)
            if v.phase != VersionPhase::Standby && self.committed.as_deref() != Some(v.id.as_str()) {
                self.actions.push(Action::SetPhase { version: v.id.clone(), phase: VersionPhase::Standby, message: None });
            }
        }
        for v in o.versions.iter().filter(|v| v.deleting) {
            if Some(&v.id) == self.active.as_ref() {
                self.deletion_blocked.push(format!("{} (active)", v.id));
            } else if let Some(reader) = o.read_by.get(&v.id) {
                self.deletion_blocked.push(format!("{} (read by {})", v.id, reader.who));
            } else if retained.contains(&v.id.as_str()) {
                self.deletion_blocked.push(format!("{} (retained standby)", v.id));
            }
        }
        for v in
            o.versions.iter().filter(|v| !protected_candidate(v) && !former.iter().any(|f| f.id == v.id) && !o.read_by.contains_key(&v.id))
        {
            // Never served readers and no longer wanted (superseded, failed,
            // or deleted by someone).
            self.actions.push(Action::Retire(v.id.clone()));
        }
    }

    fn is_recorded(&self, id: &str) -> bool {
        self.o.recorded_active.as_deref() == Some(id)
    }

    fn active_id(&self) -> &str {
        self.active.as_deref().unwrap_or("none")
    }

    /// Available: a caught-up version serves readers (whatever the spec
    /// asks for next).
    fn available(&self, active: Option<&Version>, blocked: Option<&str>) -> Cond {
        let o = self.o;
        let Some(v) = active else {
            let message = blocked.map(str::to_string).or(self.waiting.clone()).unwrap_or_else(|| match &o.recorded_active {
                Some(r) if r != &o.desired => {
                    format!("version {r}, recorded as active, is gone; version {} serves once it has caught up", o.desired)
                }
                _ => format!("version {} is being created", o.desired),
            });
            let reason = if self.blocked.is_some() { REPROCESSING_BLOCKED } else { "NoActiveVersion" };
            return Cond::new(AVAILABLE, false, reason, message);
        };
        let caught = v.caught_up_at.is_some() || v.gate == Gate::CaughtUp;
        if let Some(b) = &v.broken {
            Cond::new(AVAILABLE, false, "PodsFailing", format!("version {}: {}", v.id, b.why))
        } else if !v.view_ready {
            let message = self.waiting.clone().unwrap_or_else(|| format!("version {} waits for its view topic and inputs", v.id));
            Cond::new(AVAILABLE, false, "Pending", message)
        } else if !caught {
            Cond::new(AVAILABLE, false, "Replaying", format!("version {} is replaying ({})", v.id, v.lag_text()))
        } else if o.replicas > 0 && v.ready_replicas == 0 {
            Cond::new(AVAILABLE, false, "PodsNotReady", format!("version {} has no ready pod", v.id))
        } else {
            Cond::new(AVAILABLE, true, "Live", format!("version {} serves a caught-up view", v.id))
        }
    }

    fn finish(mut self) -> Plan {
        let o = self.o;
        let mut phase = if self.blocked.is_some() || o.conflict.is_some() {
            Phase::Blocked
        } else if self.failed.is_some() {
            Phase::Failed
        } else if self.candidate.is_some() {
            if self.awaiting.is_some() {
                Phase::AwaitingPromotion
            } else if self.verifying {
                Phase::Verifying
            } else if self.rolling_back {
                Phase::RollingBack
            } else {
                Phase::Replaying
            }
        } else if self.active.is_some() {
            Phase::Live
        } else {
            Phase::Pending
        };
        if self.actions.iter().any(|a| matches!(a, Action::Promote { from: Some(_), .. })) {
            phase = Phase::CuttingOver;
        }
        let blocked = self.blocked.clone().or(o.conflict.clone());
        let active_v = self.active.as_deref().and_then(|a| self.find(a));
        // The first version replays while it is already the one readers
        // follow: until it has caught up, the Processor is not Live.
        if phase == Phase::Live
            && let Some(v) = active_v.filter(|v| v.caught_up_at.is_none() && v.gate != Gate::CaughtUp)
        {
            phase = if v.view_ready { Phase::Replaying } else { Phase::Pending };
        }
        let available = self.available(active_v, blocked.as_deref());
        let stalled = match (&self.blocked, &o.conflict, &self.failed) {
            (Some(why), _, _) => Cond::new(types::STALLED, true, REPROCESSING_BLOCKED, why.clone()),
            (_, Some(why), _) => Cond::new(types::STALLED, true, "VersionPinned", why.clone()),
            (_, _, Some((why, reason))) => Cond::new(types::STALLED, true, *reason, why.clone()),
            // Pods of the active version that cannot run wait for a change
            // (unless Kafka's absence explains them).
            _ => match active_v.and_then(|v| v.broken.as_ref()).filter(|b| counts(b, &o.kafka)) {
                Some(b) => Cond::new(types::STALLED, true, "PodsFailing", format!("version {}: {}", self.active_id(), b.why)),
                None => Cond::new(types::STALLED, false, "NotStalled", ""),
            },
        };
        let on_its_way = |c: &str| match &self.unknown {
            Some(why) => format!("version {c} is on its way; {why}"),
            None => format!("version {c} is on its way"),
        };
        // What the rollout is doing, in words: the same for Ready (while the
        // desired version does not serve yet), Reconciling and Progressing.
        let doing = match phase {
            Phase::Replaying | Phase::Verifying | Phase::RollingBack if self.candidate.is_some() => {
                let c = self.candidate.as_deref().unwrap_or_default();
                match active_v {
                    Some(a) => format!("{}; version {} serves readers meanwhile", on_its_way(c), a.id),
                    None => format!("{}; {}", on_its_way(c), available.message),
                }
            }
            Phase::CuttingOver => format!("readers switch to version {}", self.active_id()),
            Phase::AwaitingPromotion => self.awaiting.clone().unwrap_or_default(),
            Phase::Failed => self.failed.as_ref().map(|f| f.0.clone()).unwrap_or_default(),
            Phase::Blocked => blocked.clone().unwrap_or_default(),
            // Pending, Live, and the first version's replay: what the
            // active version (or its absence) says.
            _ => available.message.clone(),
        };
        let ready = match phase {
            Phase::Live => Cond { type_: types::READY, ..available.clone() },
            // The desired version is the active one (the first): Ready is
            // whether it serves, for the same reason.
            Phase::Pending | Phase::Replaying if self.candidate.is_none() => Cond { type_: types::READY, ..available.clone() },
            Phase::Failed | Phase::Blocked => Cond::new(types::READY, false, stalled.reason.clone(), doing.clone()),
            _ => Cond::new(types::READY, false, phase.as_str(), doing.clone()),
        };
        // Reconciling: the spec is not served yet and the operator is on
        // it, or waits for something that comes without a change to any
        // spec (a replay, a human's promotion).
        let reconciling = if stalled.status || ready.status {
            Cond::new(types::RECONCILING, false, if stalled.status { "Stalled" } else { "Live" }, "")
        } else if phase == Phase::Live {
            Cond::new(types::RECONCILING, true, ready.reason.clone(), ready.message.clone())
        } else {
            Cond::new(types::RECONCILING, true, phase.as_str(), doing.clone())
        };
        let progressing = match phase {
            Phase::Replaying | Phase::Verifying | Phase::RollingBack | Phase::CuttingOver | Phase::Pending => {
                Cond::new(types::PROGRESSING, true, phase.as_str(), doing.clone())
            }
            Phase::AwaitingPromotion | Phase::Failed | Phase::Blocked => {
                Cond::new(types::PROGRESSING, false, phase.as_str(), doing.clone())
            }
            Phase::Live => Cond::new(types::PROGRESSING, false, "RolloutComplete", format!("version {} is active", self.active_id())),
        };
        let blocked_cond = match &self.blocked {
            Some(why) => Cond::new(REPROCESSING_BLOCKED, true, "TruncatedHistory", why.clone()),
            None => Cond::new(REPROCESSING_BLOCKED, false, "FullHistory", ""),
        };
        if let Some(why) = &self.blocked {
            self.actions.push(Action::Event { warning: true, reason: REPROCESSING_BLOCKED, message: why.clone() });
        }
        let deletion = if self.deletion_blocked.is_empty() {
            Cond::new(DELETION_BLOCKED, false, "NothingHeld", "")
        } else {
            let message = format!(
                "ViewVersion deletion waits: version {} still needed; an active version is kept until another is promoted, a \
                 standby until it is beyond spec.rollout.retainVersions (or the Processor is deleted)",
                self.deletion_blocked.join(", ")
            );
            self.actions.push(Action::Event { warning: true, reason: DELETION_BLOCKED, message: message.clone() });
            Cond::new(DELETION_BLOCKED, true, "VersionNeeded", message)
        };
        // A first version replaying has nothing to decide (it serves
        // already): its gate wakes the Processor when it catches up.
        let first_replay = phase == Phase::Replaying && self.candidate.is_none();
        if matches!(phase, Phase::Replaying | Phase::Verifying | Phase::RollingBack | Phase::Pending | Phase::AwaitingPromotion)
            && !first_replay
        {
            // The gate wakes the Processor when its answer changes; this is
            // only a safety net, during a rollout. A live Processor is woken
            // by changes alone (its pods, versions, inputs): no timer.
            self.wake.at(Duration::from_secs(60));
        }
        Plan {
            actions: self.actions,
            active: self.active,
            candidate: self.candidate,
            phase,
            conditions: vec![ready, available, reconciling, stalled, progressing, blocked_cond, deletion],
            requeue_after: self.wake.0,
        }
    }
}

//! The reprocessing planner: from what is observed of a Processor (its spec,
//! its versions, their Deployments, lag, retention facts, verification, the
//! clock) it returns what to do next. No I/O: the reconciler observes,
//! plans, acts and writes status, so an operator restart is just another
//! observation.
//!
//! The commit point of a cutover is [`Action::Promote`]: the executor records
//! the new active version in the Processor's status before anything else of
//! the cutover, and every reader-facing object (Service, ConfigMap) is
//! derived from that record.

#[cfg(test)]
mod tests;

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::api::{Cond, PromotionMode, RolloutPolicy, VersionPhase, conditions::types};

pub const REPROCESSING_BLOCKED: &str = "ReprocessingBlocked";
const VERIFICATION_FAILED_PREFIX: &str = "verification failed: ";

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

/// The verification Job of a candidate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verification {
    Running,
    Succeeded,
    Failed(String),
}

/// One version, as observed.
#[derive(Clone, Debug, PartialEq)]
pub struct Version {
    pub id: String,
    pub phase: VersionPhase,
    /// Its view Topic exists and its inputs are Ready.
    pub view_ready: bool,
    pub lag: Option<i64>,
    pub lag_ok_since: Option<Timestamp>,
    pub started_at: Option<Timestamp>,
    pub progressed_at: Option<Timestamp>,
    pub promoted_at: Option<Timestamp>,
    pub demoted_at: Option<Timestamp>,
    /// Deployment replicas as applied; None when there is no Deployment.
    pub replicas: Option<i32>,
    pub ready_replicas: i32,
    /// Pods that cannot run: crash-looping, or an image that cannot start.
    pub broken: Option<String>,
    /// Why it failed, once it has (recorded with the Failed phase).
    pub failure: Option<String>,
    pub verification: Option<Verification>,
}

/// Everything the planner looks at.
#[derive(Clone, Debug)]
pub struct Observation {
    pub now: Timestamp,
    /// The version id the spec asks for.
    pub desired: String,
    pub replicas: i32,
    pub policy: RolloutPolicy,
    /// The committed active version (Processor status).
    pub active: Option<String>,
    pub versions: Vec<Version>,
    pub inputs: Inputs,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Create the ViewVersion (and so its view Topic) of this version.
    CreateVersion(String),
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
    /// Run the verification Job of `candidate` against `active`.
    StartVerification {
        candidate: String,
        active: String,
    },
    /// The commit point of a cutover: `to` becomes the active version.
    Promote {
        from: Option<String>,
        to: String,
    },
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
    /// When to look again even if nothing changes (timers: stableFor,
    /// scale-down delay, progress deadline).
    pub requeue_after: Option<Duration>,
}

fn secs(n: i32) -> Duration {
    Duration::from_secs(n.max(0) as u64)
}

fn elapsed(now: Timestamp, since: Timestamp) -> Duration {
    now.duration_since(since).try_into().unwrap_or(Duration::ZERO)
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

/// Whether a version's lag has been within the gate for long enough. The
/// window starts no earlier than this attempt did: a standby revived for a
/// rollback may carry a lag figure from before its scale-down, and must be
/// seen within the gate again after it runs.
fn caught_up(v: &Version, policy: &RolloutPolicy, now: Timestamp, wake: &mut Wake) -> bool {
    if v.phase == VersionPhase::Standby {
        return false;
    }
    let within = v.lag.is_some_and(|l| l <= policy.max_lag);
    let since = v.lag_ok_since.map(|s| v.started_at.map_or(s, |started| s.max(started)));
    match since.filter(|_| within) {
        Some(since) => {
            let stable = secs(policy.stable_for_seconds);
            let waited = elapsed(now, since);
            if waited >= stable {
                true
            } else {
                wake.at(stable - waited);
                false
            }
        }
        None => false,
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

pub fn plan(o: &Observation) -> Plan {
    let mut actions = Vec::new();
    let mut wake = Wake::default();
    let policy = &o.policy;
    let find = |id: &str| o.versions.iter().find(|v| v.id == id);
    let mut active = o.active.clone().filter(|a| find(a).is_some());
    let mut phase;
    let mut candidate: Option<String> = None;
    let mut blocked: Option<String> = None;
    let mut failed: Option<(String, &'static str)> = None;
    let mut awaiting: Option<String> = None;
    let mut waiting_inputs: Option<String> = None;

    // A version that does not exist yet needs its inputs, and, for a
    // replay from offset zero, all of their history.
    let may_create = |blocked: &mut Option<String>, waiting: &mut Option<String>| -> bool {
        match &o.inputs {
            Inputs::Waiting(why) => {
                *waiting = Some(why.clone());
                false
            }
            Inputs::Ready { truncated } if !truncated.is_empty() && !policy.allow_truncated_history => {
                *blocked = Some(truncation_message(truncated));
                false
            }
            Inputs::Ready { .. } => true,
        }
    };

    if active.is_none() {
        // The first version: with nothing older to serve, it is active from
        // the start (and Ready only once caught up).
        match find(&o.desired) {
            None => {
                if may_create(&mut blocked, &mut waiting_inputs) {
                    actions.push(Action::CreateVersion(o.desired.clone()));
                }
            }
            Some(_) => {
                actions.push(Action::Promote { from: None, to: o.desired.clone() });
                actions.push(Action::Event {
                    warning: false,
                    reason: "FirstVersion",
                    message: format!("version {} is the first: active from the start, replaying from offset zero", o.desired),
                });
                active = Some(o.desired.clone());
            }
        }
    } else if active.as_deref() != Some(o.desired.as_str()) {
        candidate = Some(o.desired.clone());
    }

    // The active version keeps its replicas, whatever else happens.
    if let Some(a) = active.clone() {
        let v = find(&a).expect("active exists");
        if v.view_ready {
            actions.push(Action::Scale { version: a.clone(), replicas: o.replicas });
        }
        if v.phase != VersionPhase::Active {
            actions.push(Action::SetPhase { version: a.clone(), phase: VersionPhase::Active, message: None });
        }
    }

    let mut rolling_back = false;
    let mut verifying = false;
    if let Some(c) = candidate.clone() {
        match find(&c) {
            None => {
                if may_create(&mut blocked, &mut waiting_inputs) {
                    actions.push(Action::CreateVersion(c.clone()));
                }
            }
            Some(v) if v.phase == VersionPhase::Failed => {
                let why = v.failure.clone().unwrap_or_else(|| "failed".into());
                let reason = if why.starts_with(VERIFICATION_FAILED_PREFIX) { "VerificationFailed" } else { "RolloutFailed" };
                failed = Some((format!("version {c}: {why}; change the spec to start a new attempt"), reason));
                if v.replicas.unwrap_or(0) != 0 {
                    actions.push(Action::Scale { version: c.clone(), replicas: 0 });
                }
            }
            Some(v) => {
                // A retained standby is revived from its own committed offsets.
                rolling_back = v.demoted_at.is_some();
                let deadline = secs(policy.progress_deadline_seconds);
                let last_progress = v.progressed_at.or(v.started_at);
                let stuck = v.lag.is_none_or(|l| l > policy.max_lag) && last_progress.is_some_and(|t| elapsed(o.now, t) >= deadline);
                if let Some(t) = last_progress {
                    wake.at(deadline.saturating_sub(elapsed(o.now, t)));
                }
                if let Some(why) =
                    v.broken.clone().or_else(|| stuck.then(|| format!("no progress for {}s", policy.progress_deadline_seconds)))
                {
                    let message = format!("version {c} failed: {why}; version {} stays active", active.as_deref().unwrap_or("none"));
                    actions.push(Action::SetPhase { version: c.clone(), phase: VersionPhase::Failed, message: Some(why) });
                    actions.push(Action::Scale { version: c.clone(), replicas: 0 });
                    actions.push(Action::Event { warning: true, reason: "RolloutFailed", message: message.clone() });
                    failed = Some((message, "RolloutFailed"));
                } else if !v.view_ready {
                    if v.phase != VersionPhase::Pending {
                        actions.push(Action::SetPhase { version: c.clone(), phase: VersionPhase::Pending, message: None });
                    }
                } else if !caught_up(v, policy, o.now, &mut wake) {
                    let message = rolling_back.then(|| "rolling back: catching up from its own committed offsets".to_string());
                    if v.phase != VersionPhase::Replaying {
                        actions.push(Action::SetPhase { version: c.clone(), phase: VersionPhase::Replaying, message });
                    }
                } else {
                    let verified = match (policy.verify.is_some(), &v.verification) {
                        (false, _) => true,
                        (true, Some(Verification::Succeeded)) => true,
                        (true, Some(Verification::Running)) => {
                            verifying = true;
                            if v.phase != VersionPhase::Verifying {
                                actions.push(Action::SetPhase { version: c.clone(), phase: VersionPhase::Verifying, message: None });
                            }
                            false
                        }
                        (true, Some(Verification::Failed(why))) => {
                            let message = format!(
                                "verification of version {c} failed: {why}; version {} stays active",
                                active.as_deref().unwrap_or("none")
                            );
                            actions.push(Action::SetPhase {
                                version: c.clone(),
                                phase: VersionPhase::Failed,
                                message: Some(format!("{VERIFICATION_FAILED_PREFIX}{why}")),
                            });
                            actions.push(Action::Scale { version: c.clone(), replicas: 0 });
                            actions.push(Action::Event { warning: true, reason: "VerificationFailed", message: message.clone() });
                            failed = Some((message, "VerificationFailed"));
                            false
                        }
                        (true, None) => {
                            verifying = true;
                            let against = active.clone().expect("a candidate implies an active version");
                            actions.push(Action::StartVerification { candidate: c.clone(), active: against });
                            actions.push(Action::SetPhase { version: c.clone(), phase: VersionPhase::Verifying, message: None });
                            false
                        }
                    };
                    if verified && failed.is_none() {
                        let allowed = match policy.promotion {
                            PromotionMode::Auto => true,
                            PromotionMode::Manual => policy.promote.as_deref() == Some(c.as_str()),
                        };
                        if allowed {
                            let from = active.clone();
                            actions.push(Action::Promote { from: from.clone(), to: c.clone() });
                            actions.push(Action::SetPhase { version: c.clone(), phase: VersionPhase::Active, message: None });
                            if let Some(f) = &from {
                                actions.push(Action::SetPhase { version: f.clone(), phase: VersionPhase::Standby, message: None });
                            }
                            actions.push(Action::Event {
                                warning: false,
                                reason: if rolling_back { "RolledBack" } else { "CutOver" },
                                message: format!("readers switched from version {} to version {c}", from.as_deref().unwrap_or("none")),
                            });
                            active = Some(c.clone());
                            candidate = None;
                        } else {
                            if v.phase != VersionPhase::CaughtUp {
                                actions.push(Action::SetPhase { version: c.clone(), phase: VersionPhase::CaughtUp, message: None });
                            }
                            awaiting = Some(format!(
                                "version {c} has caught up{}; set spec.rollout.promote: \"{c}\" to cut over",
                                if policy.verify.is_some() { " and passed verification" } else { "" }
                            ));
                        }
                    }
                }
            }
        }
    }

    // The candidate replays with at least one pod; once promoted it runs
    // the spec's replicas like any active version.
    if let Some(c) = &candidate
        && let Some(v) = find(c)
        && v.view_ready
        && failed.is_none()
    {
        actions.push(Action::Scale { version: c.clone(), replicas: o.replicas.max(1) });
    }
    if let (Some(a), Some(v)) = (&active, active.as_deref().and_then(find))
        && o.active.as_deref() != Some(a.as_str())
        && v.view_ready
        && !actions.iter().any(|x| matches!(x, Action::Scale { version, .. } if version == a))
    {
        actions.push(Action::Scale { version: a.clone(), replicas: o.replicas });
    }

    // Everything else: the version just replaced keeps running for the
    // scale-down delay, then stands by at zero replicas; standbys beyond
    // retainVersions, and versions that never served, are retired.
    let keep: Vec<&str> = active.iter().chain(candidate.iter()).map(String::as_str).collect();
    let mut former: Vec<&Version> = o
        .versions
        .iter()
        .filter(|v| {
            !keep.contains(&v.id.as_str())
                && (v.promoted_at.is_some() || v.demoted_at.is_some() || o.active.as_deref() == Some(v.id.as_str()))
        })
        .collect();
    // Most recently demoted first; one demoted in this very plan has no timestamp yet.
    former.sort_by_key(|v| std::cmp::Reverse(v.demoted_at.unwrap_or(o.now)));
    for (i, v) in former.iter().enumerate() {
        // Readers get the scale-down delay to follow a cutover.
        let delay = secs(policy.scale_down_delay_seconds);
        let since_demotion = v.demoted_at.map_or(Duration::ZERO, |d| elapsed(o.now, d));
        if since_demotion < delay {
            wake.at(delay - since_demotion);
        } else if i >= policy.retain_versions as usize {
            actions.push(Action::Retire(v.id.clone()));
            continue;
        } else if v.replicas.unwrap_or(0) != 0 {
            actions.push(Action::Scale { version: v.id.clone(), replicas: 0 });
        }
        if v.phase != VersionPhase::Standby && o.active.as_deref() != Some(v.id.as_str()) {
            actions.push(Action::SetPhase { version: v.id.clone(), phase: VersionPhase::Standby, message: None });
        }
    }
    for v in o.versions.iter().filter(|v| !keep.contains(&v.id.as_str()) && !former.iter().any(|f| f.id == v.id)) {
        // Never served readers and no longer wanted (superseded or failed).
        actions.push(Action::Retire(v.id.clone()));
    }

    // Phase and conditions.
    phase = if blocked.is_some() {
        Phase::Blocked
    } else if failed.is_some() {
        Phase::Failed
    } else if candidate.is_some() {
        if awaiting.is_some() {
            Phase::AwaitingPromotion
        } else if verifying {
            Phase::Verifying
        } else if rolling_back {
            Phase::RollingBack
        } else {
            Phase::Replaying
        }
    } else if active.is_some() {
        Phase::Live
    } else {
        Phase::Pending
    };
    if actions.iter().any(|a| matches!(a, Action::Promote { from: Some(_), .. })) {
        phase = Phase::CuttingOver;
    }

    let active_v = active.as_deref().and_then(find);
    let ready = match active_v {
        None => Cond::new(
            types::READY,
            false,
            if blocked.is_some() { REPROCESSING_BLOCKED } else { "NoActiveVersion" },
            blocked.clone().or(waiting_inputs.clone()).unwrap_or_else(|| format!("version {} is being created", o.desired)),
        ),
        Some(v) => {
            let caught = v.lag.is_some_and(|l| l <= policy.max_lag);
            if let Some(why) = &v.broken {
                Cond::new(types::READY, false, "PodsFailing", format!("version {}: {why}", v.id))
            } else if !v.view_ready {
                Cond::new(
                    types::READY,
                    false,
                    "Pending",
                    waiting_inputs.clone().unwrap_or_else(|| format!("version {} waits for its view topic and inputs", v.id)),
                )
            } else if !caught {
                Cond::new(
                    types::READY,
                    false,
                    "Replaying",
                    format!("version {} is replaying (lag {})", v.id, v.lag.map_or("unknown".into(), |l| l.to_string())),
                )
            } else if o.replicas > 0 && v.ready_replicas == 0 {
                Cond::new(types::READY, false, "PodsNotReady", format!("version {} has no ready pod", v.id))
            } else {
                Cond::new(types::READY, true, "Live", format!("version {} serves a caught-up view", v.id))
            }
        }
    };
    let progressing = match phase {
        Phase::Replaying | Phase::Verifying | Phase::RollingBack | Phase::CuttingOver => Cond::new(
            types::PROGRESSING,
            true,
            phase.as_str(),
            format!("version {} is on its way", candidate.as_deref().unwrap_or(o.desired.as_str())),
        ),
        Phase::Pending => {
            Cond::new(types::PROGRESSING, true, "Pending", waiting_inputs.clone().unwrap_or_else(|| "creating the first version".into()))
        }
        Phase::AwaitingPromotion => Cond::new(types::PROGRESSING, false, "AwaitingPromotion", awaiting.clone().unwrap_or_default()),
        Phase::Failed | Phase::Blocked => Cond::new(
            types::PROGRESSING,
            false,
            phase.as_str(),
            failed.as_ref().map(|f| f.0.clone()).or(blocked.clone()).unwrap_or_default(),
        ),
        Phase::Live => {
            Cond::new(types::PROGRESSING, false, "RolloutComplete", format!("version {} is active", active.as_deref().unwrap_or_default()))
        }
    };
    let stalled = match (&blocked, &failed) {
        (Some(why), _) => Cond::new(types::STALLED, true, REPROCESSING_BLOCKED, why.clone()),
        (_, Some((why, reason))) => Cond::new(types::STALLED, true, *reason, why.clone()),
        _ => Cond::new(types::STALLED, false, "NotStalled", ""),
    };
    let blocked_cond = match &blocked {
        Some(why) => Cond::new(REPROCESSING_BLOCKED, true, "TruncatedHistory", why.clone()),
        None => Cond::new(REPROCESSING_BLOCKED, false, "FullHistory", ""),
    };
    if let Some(why) = &blocked {
        actions.push(Action::Event { warning: true, reason: REPROCESSING_BLOCKED, message: why.clone() });
    }
    if matches!(phase, Phase::Replaying | Phase::Verifying | Phase::RollingBack | Phase::Pending) || (active_v.is_some() && !ready.status) {
        // Lag arrives by watch; this is only a safety net.
        wake.at(Duration::from_secs(30));
    }
    Plan { actions, active, candidate, phase, conditions: vec![ready, progressing, stalled, blocked_cond], requeue_after: wake.0 }
}

//! Standard `metav1.Condition`s and the small helpers every status uses.

pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

/// Condition types shared by all kinds (kstatus-compatible: Ready, plus
/// Reconciling and Stalled).
pub mod types {
    pub const READY: &str = "Ready";
    pub const RECONCILING: &str = "Reconciling";
    pub const STALLED: &str = "Stalled";
    pub const PROGRESSING: &str = "Progressing";
}

/// A condition to set; `lastTransitionTime` is filled in by [`merge`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cond {
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

impl Cond {
    pub fn new(type_: &'static str, status: bool, reason: impl Into<String>, message: impl Into<String>) -> Self {
        Cond { type_, status, reason: reason.into(), message: message.into() }
    }
}

/// Builds the new condition list from the desired ones, keeping
/// `lastTransitionTime` of every condition whose status did not change, so
/// an unchanged status serializes identically and causes no write.
pub fn merge(existing: &[Condition], desired: &[Cond], generation: Option<i64>, now: Timestamp) -> Vec<Condition> {
    desired
        .iter()
        .map(|d| {
            let status = if d.status { "True" } else { "False" }.to_string();
            let since = existing
                .iter()
                .find(|c| c.type_ == d.type_ && c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or(Time(now));
            Condition {
                type_: d.type_.to_string(),
                status,
                reason: if d.reason.is_empty() { "Unknown".into() } else { d.reason.clone() },
                message: d.message.clone(),
                last_transition_time: since,
                observed_generation: generation,
            }
        })
        .collect()
}

/// True when the condition of that type is present and True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions.iter().any(|c| c.type_ == type_ && c.status == "True")
}

pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_transition_time_while_status_holds() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let t1: Timestamp = "2026-01-01T00:05:00Z".parse().unwrap();
        let first = merge(&[], &[Cond::new("Ready", false, "Waiting", "x")], Some(1), t0);
        let same = merge(&first, &[Cond::new("Ready", false, "Waiting", "y")], Some(1), t1);
        assert_eq!(same[0].last_transition_time.0, t0);
        let flipped = merge(&same, &[Cond::new("Ready", true, "Ok", "")], Some(1), t1);
        assert_eq!(flipped[0].last_transition_time.0, t1);
        assert_eq!(flipped[0].status, "True");
    }
}

//! Fault injection for the crash tests: with `KAPPA_FAULT_PAUSE_AT` naming
//! one of [`POINTS`], the operator logs `fault: pausing at <point>` and
//! stops there for `KAPPA_FAULT_PAUSE_SECONDS` (default 60) the first time
//! a rollout reaches it, so that a test can kill it at that boundary.
//! Unset, it costs one lookup.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

/// The phase boundaries of a rollout a test can stop the operator at.
pub const POINTS: [&str; 11] = [
    "version-created",
    "deployment-applied",
    "replaying",
    "caught-up",
    "verification-started",
    "verification-ended",
    "awaiting-promotion",
    "committed",
    "readers-switched",
    "scaling-down",
    "retiring",
];

/// Boundaries of a `Together` cascade (not of every rollout).
pub const CASCADE_POINTS: [&str; 1] = ["cascade-committed"];

static PAUSED: AtomicBool = AtomicBool::new(false);

/// Pauses here if the environment asks for this point (once per process).
pub async fn point(name: &'static str) {
    debug_assert!(POINTS.contains(&name) || CASCADE_POINTS.contains(&name), "{name} is not a fault point");
    if std::env::var("KAPPA_FAULT_PAUSE_AT").ok().as_deref() != Some(name) || PAUSED.swap(true, Ordering::SeqCst) {
        return;
    }
    let secs = std::env::var("KAPPA_FAULT_PAUSE_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    tracing::warn!(point = name, secs, "fault: pausing at {name}");
    tokio::time::sleep(Duration::from_secs(secs)).await;
}

//! Kubernetes Events (events.k8s.io/v1) about the objects the operator
//! manages.
//!
//! Each Event is created and forgotten. kube-runtime's `Recorder` keeps
//! every Event it sent for six minutes so that repeats become a series; at
//! 10,000 Topics that cache was a fifth of the operator's memory. The
//! reconcilers publish only when something changed, so repeats are rare
//! and a series buys little.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

use k8s_openapi::{
    api::{core::v1::ObjectReference, events::v1::Event},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{Api, Client, api::PostParams};

/// The API server refuses an Event note over 1 KiB.
const NOTE_MAX: usize = 1024;

#[derive(Clone)]
pub struct Events {
    client: Client,
    /// The reporting instance (the pod's name).
    instance: String,
}

impl Events {
    pub const CONTROLLER: &str = "kappa-operator";

    pub fn new(client: Client, instance: String) -> Events {
        Events { client, instance }
    }

    /// Creates the Event, under `name` if given (then telling it twice
    /// creates it once: the API server refuses the second).
    pub async fn publish(
        &self,
        regarding: ObjectReference,
        name: Option<&str>,
        warning: bool,
        reason: &str,
        action: &str,
        note: String,
    ) -> kube::Result<()> {
        let namespace = regarding.namespace.clone().unwrap_or_else(|| "default".into());
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.map_or_else(|| event_name(regarding.name.as_deref().unwrap_or("kappa")), str::to_string)),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            event_time: Some(MicroTime(Timestamp::now())),
            type_: Some(if warning { "Warning" } else { "Normal" }.into()),
            reason: Some(reason.into()),
            action: Some(action.into()),
            note: Some(truncate(note, NOTE_MAX)),
            regarding: Some(regarding),
            reporting_controller: Some(Self::CONTROLLER.into()),
            reporting_instance: Some(self.instance.clone()),
            ..Default::default()
        };
        match Api::<Event>::namespaced(self.client.clone(), &namespace).create(&PostParams::default(), &event).await {
            Err(kube::Error::Api(s)) if s.code == 409 && name.is_some() => Ok(()),
            other => other.map(|_| ()),
        }
    }
}

/// `<object>.<hex>`, unique per process and instant, as kubectl's own
/// Events are named.
fn event_name(object: &str) -> String {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let n = SEQUENCE.fetch_add(1, Ordering::Relaxed) % 4096;
    let prefix: String = object.chars().take(200).collect();
    format!("{prefix}.{nanos:x}{n:03x}")
}

/// At most `max` bytes, cut at a character boundary.
fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max - 3;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn long_notes_are_cut_on_a_character_boundary() {
        let cut = super::truncate("é".repeat(600), 1024);
        assert!(cut.len() <= 1024 && cut.ends_with("..."), "{}", cut.len());
        assert_eq!(super::truncate("short".into(), 1024), "short");
    }

    #[test]
    fn event_names_are_valid_and_distinct() {
        let (a, b) = (super::event_name("orders"), super::event_name("orders"));
        assert_ne!(a, b);
        assert!(a.starts_with("orders.") && a.len() <= 253);
        assert!(super::event_name(&"x".repeat(253)).len() <= 253);
    }
}

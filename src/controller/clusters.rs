//! One Kafka client per KafkaCluster, shared by every controller, replaced
//! when the KafkaCluster's settings or credentials change.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use crate::kafka::{Kafka, Settings, client::WireKafka, topics::Batcher};

pub struct ClusterHandle {
    pub settings: Settings,
    pub kafka: Arc<dyn Kafka>,
    pub topics: Batcher,
    /// The last connection check: Ok, or why it failed (reason, message).
    health: Mutex<Option<Result<(), (String, String)>>>,
}

impl ClusterHandle {
    pub fn health(&self) -> Option<Result<(), (String, String)>> {
        self.health.lock().expect("health lock").clone()
    }
    pub fn set_health(&self, h: Result<(), (String, String)>) {
        *self.health.lock().expect("health lock") = Some(h);
    }
}

#[derive(Default)]
pub struct Clusters {
    handles: Mutex<HashMap<(String, String), Arc<ClusterHandle>>>,
}

impl Clusters {
    /// The handle for a KafkaCluster, new if its settings changed.
    pub fn ensure(&self, namespace: &str, name: &str, settings: Settings) -> Arc<ClusterHandle> {
        let mut handles = self.handles.lock().expect("clusters lock");
        let key = (namespace.to_string(), name.to_string());
        if let Some(h) = handles.get(&key).filter(|h| h.settings == settings) {
            return h.clone();
        }
        let kafka: Arc<dyn Kafka> = Arc::new(WireKafka::new(settings.clone()));
        let handle = Arc::new(ClusterHandle { topics: Batcher::spawn(kafka.clone()), settings, kafka, health: Mutex::new(None) });
        handles.insert(key, handle.clone());
        handle
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<ClusterHandle>> {
        self.handles.lock().expect("clusters lock").get(&(namespace.to_string(), name.to_string())).cloned()
    }

    /// Keeps the handles of the KafkaClusters `exists` accepts; returns
    /// the others' (namespace, name, Kafka APIs used), now dropped.
    pub fn retain(&self, exists: impl Fn(&str, &str) -> bool) -> Vec<(String, String, Vec<&'static str>)> {
        let mut handles = self.handles.lock().expect("clusters lock");
        let gone: Vec<(String, String)> = handles.keys().filter(|(ns, name)| !exists(ns, name)).cloned().collect();
        gone.into_iter()
            .filter_map(|key| {
                let h = handles.remove(&key)?;
                Some((key.0, key.1, h.kafka.requests_by_api().into_keys().collect()))
            })
            .collect()
    }

    /// (namespace, name) of every KafkaCluster with a client.
    pub fn keys(&self) -> Vec<(String, String)> {
        self.handles.lock().expect("clusters lock").keys().cloned().collect()
    }

    pub fn remove(&self, namespace: &str, name: &str) {
        self.handles.lock().expect("clusters lock").remove(&(namespace.to_string(), name.to_string()));
    }
}

//! Kappa Operator: Kappa-architecture pipelines on Kubernetes.
//!
//! - [`api`]: the custom resources and their generated CRDs;
//! - [`naming`]: version ids and the names of everything a version owns;
//! - [`rollout`]: the pure reprocessing planner;
//! - [`resources`]: pure builders of Deployments, Services, ConfigMaps, Jobs;
//! - [`kafka`]: the Kafka admin trait, its rdkafka implementation, lag probing;
//! - [`controller`]: one reconciler per kind over a shared context.

pub mod api;
pub mod naming;
pub mod kafka;

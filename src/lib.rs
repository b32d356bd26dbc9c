//! Kappa Operator: Kappa-architecture pipelines on Kubernetes.
//!
//! - [`api`]: the custom resources and their generated CRDs;
//! - [`naming`]: version ids and the names of everything a version owns;
//! - [`rollout`]: the pure reprocessing planner;
//! - [`resources`]: pure builders of Deployments, Services, ConfigMaps, Jobs;
//! - [`kafka`]: the Kafka trait, its implementation, batched topic work, lag;
//! - [`controller`]: one reconciler per kind over a shared context;
//! - [`kube_client`]: the operator's HTTP/2 client of the API server.

pub mod api;
pub mod controller;
pub mod http;
pub mod kafka;
pub mod kube_client;
pub mod leader;
pub mod metrics;
pub mod naming;
pub mod pipeline;
pub mod resources;
pub mod rollout;
pub mod telemetry;

/// Errors of the operator's reconcilers. Variant names double as metric
/// labels ([`Error::label`]).
#[derive(thiserror::Error, Debug)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Kafka(#[from] kafka::KafkaError),
    #[error(
        "the kappa.dev CRDs are not installed ({0}); install them with \
         `kappa-operator crd | kubectl apply --server-side -f -` or `helm install kappa-operator charts/kappa-operator`"
    )]
    CrdsMissing(String),
    #[error("finalizer: {0}")]
    Finalizer(String),
    #[error("serialization: {0}")]
    Serde(#[from] serde_json::Error),
}

impl Error {
    /// The API server's refusal when the operator lacks a permission (it
    /// names the verb, resource and namespace).
    pub fn forbidden(&self) -> Option<&str> {
        match self {
            // (a namespace being deleted refuses creates with 403 too: not a permission)
            Error::Kube(kube::Error::Api(s)) if s.code == 403 && !s.message.contains("being terminated") => Some(&s.message),
            _ => None,
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubeError",
            Error::Kafka(e) => e.reason(),
            Error::CrdsMissing(_) => "CrdsMissing",
            Error::Finalizer(_) => "FinalizerError",
            Error::Serde(_) => "SerdeError",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

//! Prometheus metrics, served at `/metrics`.

use std::time::Duration;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: &'static str,
    pub error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    pub namespace: String,
    pub processor: String,
    pub version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProcessorLabels {
    pub namespace: String,
    pub processor: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    pub namespace: String,
    pub cluster: String,
}

pub struct Metrics {
    pub registry: Registry,
    pub reconciles: Family<KindLabels, Counter>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub reconcile_duration: Family<KindLabels, Histogram>,
    pub version_lag: Family<VersionLabels, Gauge>,
    pub version_progress_permille: Family<VersionLabels, Gauge>,
    pub rollouts: Family<ProcessorLabels, Counter>,
    pub cutovers: Family<ProcessorLabels, Counter>,
    pub kafka_requests: Family<ClusterLabels, Gauge>,
    pub topic_sync_requests: Family<ClusterLabels, Gauge>,
    pub topic_resyncs: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("kappa");
        let reconciles = Family::<KindLabels, Counter>::default();
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        let reconcile_duration =
            Family::<KindLabels, Histogram>::new_with_constructor(|| Histogram::new([0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0]));
        let version_lag = Family::<VersionLabels, Gauge>::default();
        let version_progress_permille = Family::<VersionLabels, Gauge>::default();
        let rollouts = Family::<ProcessorLabels, Counter>::default();
        let cutovers = Family::<ProcessorLabels, Counter>::default();
        let kafka_requests = Family::<ClusterLabels, Gauge>::default();
        let topic_sync_requests = Family::<ClusterLabels, Gauge>::default();
        let topic_resyncs = Counter::default();
        registry.register("reconciles", "Reconciliations by kind", reconciles.clone());
        registry.register("reconcile_errors", "Failed reconciliations by kind and error", reconcile_errors.clone());
        registry.register("reconcile_duration_seconds", "Time spent in one reconciliation", reconcile_duration.clone());
        registry.register("version_lag_records", "Records a processor version has not consumed yet", version_lag.clone());
        registry.register(
            "version_progress_permille",
            "Share of its replay a processor version has consumed, in thousandths",
            version_progress_permille.clone(),
        );
        registry.register("rollouts", "Reprocessing rollouts started", rollouts.clone());
        registry.register("cutovers", "Traffic switches from one version to another", cutovers.clone());
        registry.register("kafka_requests", "Kafka requests sent per KafkaCluster since start", kafka_requests.clone());
        registry.register(
            "topic_sync_requests",
            "Kafka requests sent by batched Topic reconciliation per KafkaCluster since start",
            topic_sync_requests.clone(),
        );
        registry.register("topic_resyncs", "Periodic comparisons of every Topic with Kafka", topic_resyncs.clone());
        Metrics {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            version_lag,
            version_progress_permille,
            rollouts,
            cutovers,
            kafka_requests,
            topic_sync_requests,
            topic_resyncs,
        }
    }
}

impl Metrics {
    pub fn reconciled(&self, kind: &'static str, took: Duration) {
        self.reconciles.get_or_create(&KindLabels { kind }).inc();
        self.reconcile_duration.get_or_create(&KindLabels { kind }).observe(took.as_secs_f64());
    }

    pub fn failed(&self, kind: &'static str, error: &'static str) {
        self.reconcile_errors.get_or_create(&ErrorLabels { kind, error }).inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("metrics encode to a String");
        out
    }
}

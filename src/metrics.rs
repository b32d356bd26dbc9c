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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KafkaApiLabels {
    pub namespace: String,
    pub cluster: String,
    pub api: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub namespace: String,
    pub processor: String,
    pub phase: &'static str,
}

/// A request to the API server: its verb as the API server's own
/// `apiserver_request_total` says it (GET, LIST, WATCH, POST, APPLY, PATCH,
/// PUT, DELETE, DELETECOLLECTION) and its `resource[/subresource]`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiRequestLabels {
    pub verb: &'static str,
    pub resource: String,
}

/// A Processor and an outcome (a rollout's result, a cutover's reason, the phase).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub namespace: String,
    pub processor: String,
    pub outcome: &'static str,
}

/// What a rollout is counted by.
pub const ROLLOUT_OUTCOMES: [&str; 3] = ["started", "promoted", "failed"];
/// Why readers switched.
pub const CUTOVER_REASONS: [&str; 2] = ["CutOver", "RolledBack"];

pub struct Metrics {
    pub registry: Registry,
    pub reconciles: Family<KindLabels, Counter>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub reconcile_duration: Family<KindLabels, Histogram>,
    pub version_lag: Family<VersionLabels, Gauge>,
    pub version_progress_permille: Family<VersionLabels, Gauge>,
    pub version_records_per_second: Family<VersionLabels, Gauge>,
    pub version_eta_seconds: Family<VersionLabels, Gauge>,
    pub processor_lag: Family<ProcessorLabels, Gauge>,
    pub processor_phase: Family<PhaseLabels, Gauge>,
    pub rollouts: Family<OutcomeLabels, Counter>,
    pub cutovers: Family<OutcomeLabels, Counter>,
    pub kafka_requests: Family<KafkaApiLabels, Gauge>,
    pub leader: Gauge,
    pub topic_sync_requests: Family<ClusterLabels, Gauge>,
    pub topic_resyncs: Counter,
    pub lag_polls: Counter,
    /// Counted by the API server client (see [`crate::kube_client`]).
    pub api_requests: Family<ApiRequestLabels, Counter>,
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
        let version_records_per_second = Family::<VersionLabels, Gauge>::default();
        let version_eta_seconds = Family::<VersionLabels, Gauge>::default();
        let processor_lag = Family::<ProcessorLabels, Gauge>::default();
        let processor_phase = Family::<PhaseLabels, Gauge>::default();
        let rollouts = Family::<OutcomeLabels, Counter>::default();
        let cutovers = Family::<OutcomeLabels, Counter>::default();
        let kafka_requests = Family::<KafkaApiLabels, Gauge>::default();
        let leader = Gauge::default();
        let topic_sync_requests = Family::<ClusterLabels, Gauge>::default();
        let topic_resyncs = Counter::default();
        let lag_polls = Counter::default();
        let api_requests = Family::<ApiRequestLabels, Counter>::default();
        registry.register("reconciles", "Reconciliations by kind", reconciles.clone());
        registry.register("reconcile_errors", "Failed reconciliations by kind and error", reconcile_errors.clone());
        registry.register("reconcile_duration_seconds", "Time spent in one reconciliation", reconcile_duration.clone());
        registry.register("version_lag_records", "Records a processor version has not consumed yet", version_lag.clone());
        registry.register(
            "version_progress_permille",
            "Share of its replay a processor version has consumed, in thousandths",
            version_progress_permille.clone(),
        );
        registry.register(
            "version_records_per_second",
            "Records per second a processor version consumes, as recently measured",
            version_records_per_second.clone(),
        );
        registry.register(
            "version_eta_seconds",
            "Seconds until a replaying version catches up at its recent rate",
            version_eta_seconds.clone(),
        );
        registry.register("processor_lag_records", "Records the active version of a Processor has not consumed yet", processor_lag.clone());
        registry.register(
            "processor_phase",
            "1 for the phase a Processor is in (Live, Replaying, Verifying, AwaitingPromotion, CuttingOver, RollingBack, Failed, Blocked, Pending)",
            processor_phase.clone(),
        );
        registry.register("rollouts", "Reprocessing rollouts by outcome: started, promoted, failed", rollouts.clone());
        registry.register("cutovers", "Switches of readers from one version to another, by outcome: CutOver, RolledBack", cutovers.clone());
        registry.register("kafka_requests", "Kafka requests sent per KafkaCluster and API since start", kafka_requests.clone());
        registry.register("leader", "1 while this replica leads (or runs without leader election), 0 while it stands by", leader.clone());
        registry.register(
            "topic_sync_requests",
            "Kafka requests sent by batched Topic reconciliation per KafkaCluster since start",
            topic_sync_requests.clone(),
        );
        registry.register("topic_resyncs", "Periodic comparisons of every Topic with Kafka", topic_resyncs.clone());
        registry.register("lag_polls", "Rounds of the progress monitor's lag poll (every cluster read once each)", lag_polls.clone());
        registry.register(
            "api_requests",
            "Requests sent to the Kubernetes API server by verb (as the API server counts them) and resource",
            api_requests.clone(),
        );
        Metrics {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            version_lag,
            version_progress_permille,
            version_records_per_second,
            version_eta_seconds,
            processor_lag,
            processor_phase,
            rollouts,
            cutovers,
            kafka_requests,
            leader,
            topic_sync_requests,
            topic_resyncs,
            lag_polls,
            api_requests,
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

    /// Counts a rollout outcome of a Processor (one of [`ROLLOUT_OUTCOMES`]).
    pub fn rollout(&self, namespace: &str, processor: &str, outcome: &'static str) {
        debug_assert!(ROLLOUT_OUTCOMES.contains(&outcome), "{outcome}");
        self.rollouts.get_or_create(&OutcomeLabels { namespace: namespace.into(), processor: processor.into(), outcome }).inc();
    }

    /// Counts a switch of readers (one of [`CUTOVER_REASONS`]).
    pub fn cutover(&self, namespace: &str, processor: &str, outcome: &'static str) {
        debug_assert!(CUTOVER_REASONS.contains(&outcome), "{outcome}");
        self.cutovers.get_or_create(&OutcomeLabels { namespace: namespace.into(), processor: processor.into(), outcome }).inc();
    }

    /// Sets a Processor's phase series to `to`, dropping the others of `all`.
    pub fn phase(&self, namespace: &str, processor: &str, all: &[&'static str], to: Option<&'static str>) {
        let labels = |phase| PhaseLabels { namespace: namespace.into(), processor: processor.into(), phase };
        for other in all.iter().filter(|p| Some(**p) != to) {
            self.processor_phase.remove(&labels(other));
        }
        if let Some(to) = to {
            self.processor_phase.get_or_create(&labels(to)).set(1);
        } else {
            // The Processor is gone: so are its series, counters included
            // (a name used once each would grow them without end).
            self.processor_lag.remove(&ProcessorLabels { namespace: namespace.into(), processor: processor.into() });
            let outcome = |outcome| OutcomeLabels { namespace: namespace.into(), processor: processor.into(), outcome };
            for o in ROLLOUT_OUTCOMES {
                self.rollouts.remove(&outcome(o));
            }
            for o in CUTOVER_REASONS {
                self.cutovers.remove(&outcome(o));
            }
        }
    }

    /// Drops the series of a KafkaCluster that is gone.
    pub fn forget_cluster(&self, namespace: &str, cluster: &str, apis: Vec<&'static str>) {
        for api in apis {
            self.kafka_requests.remove(&KafkaApiLabels { namespace: namespace.into(), cluster: cluster.into(), api });
        }
        self.topic_sync_requests.remove(&ClusterLabels { namespace: namespace.into(), cluster: cluster.into() });
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("metrics encode to a String");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The alerting rules and the dashboard the chart ships read only
    /// metrics the operator registers.
    #[test]
    fn a_processor_gone_takes_its_series_counters_included() {
        let m = Metrics::default();
        m.phase("ns", "p", &["Live"], Some("Live"));
        m.rollout("ns", "p", "started");
        m.cutover("ns", "p", "RolledBack");
        m.rollout("ns", "q", "started");
        m.phase("ns", "p", &["Live"], None);
        let exported = m.encode();
        assert!(!exported.contains("processor=\"p\""), "{exported}");
        assert!(exported.contains("processor=\"q\""), "{exported}");
    }

    #[test]
    fn the_charts_rules_and_dashboard_read_registered_metrics() {
        let m = Metrics::default();
        let (ns, p) = ("ns".to_string(), "p".to_string());
        let version = VersionLabels { namespace: ns.clone(), processor: p.clone(), version: "v".into() };
        let processor = ProcessorLabels { namespace: ns.clone(), processor: p.clone() };
        m.reconciled("Topic", Duration::from_millis(3));
        m.failed("Topic", "Kafka");
        for family in [&m.version_lag, &m.version_progress_permille, &m.version_records_per_second, &m.version_eta_seconds] {
            family.get_or_create(&version).set(1);
        }
        m.processor_lag.get_or_create(&processor).set(1);
        m.phase(&ns, &p, &["Live"], Some("Live"));
        m.rollout(&ns, &p, "started");
        m.cutover(&ns, &p, "CutOver");
        m.kafka_requests.get_or_create(&KafkaApiLabels { namespace: ns.clone(), cluster: "c".into(), api: "Metadata" }).set(1);
        m.topic_sync_requests.get_or_create(&ClusterLabels { namespace: ns, cluster: "c".into() }).set(1);
        let exported = m.encode();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/kappa-operator/monitoring");
        let mut read = 0;
        for file in ["rules.yaml", "dashboard.json"] {
            let text = std::fs::read_to_string(dir.join(file)).unwrap();
            for (i, _) in text.match_indices("kappa_") {
                let name: String = text[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                assert!(
                    exported.lines().any(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} "))),
                    "{file}: {name}"
                );
                read += 1;
            }
        }
        assert!(read >= 15, "the files read metrics: {read}");
    }
}

//! `processors N`: N Processors (replicas 0, one shared input) to an active
//! version; then a steady state with nothing changing: API reads and writes
//! per minute, operator CPU and memory, Kafka requests per lag poll; then
//! one rollout among them (seconds from its gate to its promotion, beyond
//! stableFor); then the namespace deleted: what the operator still tries to
//! write.

use std::{
    collections::{BTreeMap, HashSet},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kappa_operator::{
    api::{Processor, Topic},
    kafka::{Settings, client::WireKafka},
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
    runtime::watcher,
};
use serde_json::json;

use crate::{
    common::{self, Operator, progress},
    rollout,
};

/// Everything the operator reads or writes for Processors: (API group, resource).
const KINDS: [(&str, &str); 8] = [
    ("kappa.dev", "*"),
    ("apps", "deployments"),
    ("", "pods"),
    ("batch", "jobs"),
    ("", "services"),
    ("", "configmaps"),
    ("", "secrets"),
    ("", "namespaces"),
];
const LAG_POLL_SECONDS: u64 = 5;
const INPUT_RECORDS: u64 = 1_000;
const STABLE_FOR: u64 = 5;
const BROKERS: f64 = 3.0;
/// The Kafka APIs of a lag poll.
const POLL_APIS: [&str; 3] = ["ListOffsets", "OffsetFetch", "FindCoordinator"];

pub async fn run(operator: &Path, processor: &Path, count: usize, steady_seconds: u64) -> anyhow::Result<serde_json::Value> {
    let (client, ns, bootstrap, input) = common::namespace_with_input("bench-processors").await?;
    let op = Operator::start(operator, &ns, &["--lag-poll-seconds", &LAG_POLL_SECONDS.to_string()])?;
    let topics: Api<Topic> = Api::namespaced(client.clone(), &ns);
    common::wait_until("the input Topic to be Ready", Duration::from_secs(60), || async {
        Ok(topics.get("orders").await?.status.is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")))
    })
    .await?;
    // Every version has a real lag (nothing runs at replicas 0, so it stays).
    rollout::produce(processor, &bootstrap, &input, INPUT_RECORDS, 1)?;
    let processors: Api<Processor> = Api::namespaced(client.clone(), &ns);
    progress(format!("namespace {ns}: {count} Processors"));

    let writes_before = common::operator_writes_by(&client, &KINDS, true).await?;
    let own_before = Counters::scrape(&op).await?.writes;
    let (cpu0, machine0) = (common::CpuSplit::now(&op)?, common::machine_cpu()?);
    let start = Instant::now();
    let active = Arc::new(AtomicUsize::new(0));
    let watching = {
        let (processors, active) = (processors.clone(), active.clone());
        tokio::spawn(async move {
            let mut names = HashSet::new();
            let mut events = watcher(processors, watcher::Config::default()).boxed();
            while let Some(event) = events.next().await {
                if let Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) = event
                    && p.status.as_ref().is_some_and(|s| s.active_version.is_some())
                {
                    names.insert(p.name_any());
                }
                active.store(names.len(), Ordering::Relaxed);
            }
        })
    };
    let processor = |i| {
        json!({"metadata": {"name": format!("p{i}")}, "spec": {
            "inputs": ["orders"], "replicas": 0,
            "template": {"image": "ghcr.io/kappa-dev/kappa-processor:bench", "args": ["run", "--logic", "sum"]},
            "view": {"partitions": 1}
        }})
    };
    common::create_each(&processors, 0..count, 32, processor, &AtomicUsize::new(0)).await?;
    let mut last = Instant::now();
    let active_seconds = loop {
        let n = active.load(Ordering::Relaxed);
        if n >= count {
            break start.elapsed().as_secs_f64();
        }
        if last.elapsed() > Duration::from_secs(5) {
            progress(format!("{:>6.1}s: {n} of {count} with an active version", start.elapsed().as_secs_f64()));
            last = Instant::now();
        }
        anyhow::ensure!(start.elapsed() < Duration::from_secs(900), "not all Processors active after 900 s ({n}/{count})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    watching.abort();
    let burst_cpu = common::CpuSplit::now(&op)?.since(&cpu0);
    let machine_busy = common::machine_cpu()?.busy_since(&machine0);
    progress(format!("all {count} have an active version after {active_seconds:.1} s"));
    progress(format!("burst: CPU seconds {burst_cpu}; the machine's cores {:.0}% busy", machine_busy * 100.0));
    // The last status writes and events of the burst land.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let to_active = delta(&common::operator_writes_by(&client, &KINDS, true).await?, &writes_before);
    progress(format!("writes to get there: {to_active:?}"));
    let writes_to_active: f64 = to_active.values().sum();
    let own_to_active = delta(&Counters::scrape(&op).await?.writes, &own_before);
    progress(format!("the operator's own (its kappa_api_requests): {own_to_active:?}"));

    // Nothing changing means the Deployment controller is done too: at
    // 1,000 it is still writing their status a minute after the burst, and
    // every such event is a Deployment the operator decodes.
    let settled = Instant::now();
    common::wait_until("the Deployment controller to settle the Deployments", Duration::from_secs(600), || {
        deployments_settled(&client, &ns)
    })
    .await?;
    progress(format!("the Deployment controller settled the Deployments {:.0} s later", settled.elapsed().as_secs_f64()));
    progress(format!("steady for {steady_seconds} s"));
    let writes0 = common::operator_writes_by(&client, &KINDS, true).await?;
    let reads0 = common::reads_by(&client, &KINDS).await?;
    let cpu0 = op.cpu_seconds()?;
    let before = Counters::scrape(&op).await?;
    let steady = Instant::now();
    let mut rss_max: f64 = 0.0;
    while steady.elapsed() < Duration::from_secs(steady_seconds) {
        rss_max = rss_max.max(op.rss_mib()?);
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let minutes = steady.elapsed().as_secs_f64() / 60.0;
    let cpu = op.cpu_seconds()? - cpu0;
    let after = Counters::scrape(&op).await?;
    let polls = after.polls - before.polls;
    let kafka_by_api = delta(&after.kafka, &before.kafka);
    let reconciles = delta(&after.reconciles, &before.reconciles);
    progress(format!("steady: Kafka requests of {polls} lag polls {kafka_by_api:?}"));
    progress(format!("steady: reconciles {reconciles:?}"));
    let kafka: f64 = kafka_by_api.values().sum();
    let writes = delta(&common::operator_writes_by(&client, &KINDS, true).await?, &writes0);
    let reads = delta(&common::reads_by(&client, &KINDS).await?, &reads0);
    progress(format!("steady: writes {writes:?}"));
    progress(format!("steady: reads {reads:?}"));

    // One rollout among them: p0 runs a pod and changes its logic.
    let patch = json!({"spec": {"replicas": 1, "template": {"args": ["run", "--logic", "count"]},
        "rollout": {"stableForSeconds": STABLE_FOR}}});
    processors.patch("p0", &PatchParams::default(), &Patch::Merge(patch)).await?;
    let wire = WireKafka::new(Settings::plaintext(&bootstrap));
    let (promoted, to_switch) = rollout::time_to_switch(&processors, &wire, &input, "p0", |c| {
        let processors = processors.clone();
        async move { Ok(processors.get("p0").await?.status.and_then(|s| s.active_version) == Some(c)) }
    })
    .await?;
    let promote_latency = (to_switch - STABLE_FOR as f64).max(0.0);
    progress(format!("p0 promoted {to_switch:.1} s after its gate ({promote_latency:.1} s beyond stableFor)"));
    // The rollout ends when readers follow (its ConfigMap names the new
    // version, written right after the status): the deletion below is to
    // show what the operator does because of it, not the rollout's tail.
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    common::wait_until("p0's readers to switch", Duration::from_secs(60), || {
        let (maps, promoted) = (maps.clone(), promoted.clone());
        async move { Ok(maps.get_opt("p0-view").await?.and_then(|c| c.data?.get("version").cloned()) == Some(promoted)) }
    })
    .await?;

    progress("deleting the namespace: what does the operator still try to write?");
    let before = common::operator_writes_by(&client, &KINDS, true).await?;
    let own_before = Counters::scrape(&op).await?.writes;
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone()).delete(&ns, &DeleteParams::background()).await?;
    let gone = wait_gone(&client, &ns, Duration::from_secs(600)).await;
    let during_deletion = delta(&common::operator_writes_by(&client, &KINDS, true).await?, &before);
    let own_during_deletion = delta(&Counters::scrape(&op).await?.writes, &own_before);
    if !gone {
        // (the operator stops with the bench: nothing would release them)
        common::release_finalizers(&client, &ns).await?;
    }
    progress(format!("namespace {}: writes while it went {during_deletion:?}", if gone { "gone" } else { "still terminating" }));
    progress(format!("the operator's own: {own_during_deletion:?}"));
    let peak_rss_mib = op.peak_rss_mib()?;
    drop(op);
    // View topics are retained (their Topics' deletionPolicy), and the
    // input stays: thousands of partitions left behind would slow the
    // brokers in every later run.
    common::delete_kafka_topics_of(&ns).await?;

    // (folded from 0.0: an empty f64 sum is -0.0, printed as "-0.0")
    let per_minute = |m: &BTreeMap<String, f64>| (m.values().fold(0.0, |a, b| a + b) / minutes * 10.0).round() / 10.0;
    // (PATCHes are finalizer releases; status applies and Events are told apart)
    let creates_or_applies = |writes: &BTreeMap<String, f64>| -> f64 {
        writes
            .iter()
            .filter(|(k, _)| !k.starts_with("events ") && !k.contains("/status") && (k.ends_with(" POST") || k.ends_with(" APPLY")))
            .fold(0.0, |a, (_, v)| a + v)
    };
    Ok(json!({
        "count": count,
        "active_seconds": (active_seconds * 10.0).round() / 10.0,
        "writes_per_processor": (writes_to_active / count as f64 * 10.0).round() / 10.0,
        "operator_writes_per_processor": (own_to_active.values().fold(0.0, |a, b| a + b) / count as f64 * 10.0).round() / 10.0,
        "burst_cpu_seconds": burst_cpu,
        "burst_machine_busy": (machine_busy * 100.0).round() / 100.0,
        "steady_minutes": (minutes * 10.0).round() / 10.0,
        "steady_writes_per_minute": per_minute(&writes),
        "steady_reads_per_minute": per_minute(&reads),
        "steady_cpu_seconds_per_minute": (cpu / minutes * 100.0).round() / 100.0,
        "steady_reconciles_per_minute": per_minute(&reconciles),
        "steady_max_rss_mib": (rss_max * 10.0).round() / 10.0,
        "peak_rss_mib": (peak_rss_mib * 10.0).round() / 10.0,
        "kafka_requests_per_lag_poll_per_broker": (kafka / polls.max(1.0) / BROKERS * 100.0).round() / 100.0,
        "promote_latency_seconds": (promote_latency * 10.0).round() / 10.0,
        "stable_for_seconds": STABLE_FOR,
        "deletion_creates_or_applies": creates_or_applies(&during_deletion),
        "deletion_writes": during_deletion,
        "deletion_operator_creates_or_applies": creates_or_applies(&own_during_deletion),
        "deletion_operator_writes": own_during_deletion,
    }))
}

/// The operator's own counters, from one scrape.
struct Counters {
    /// Lag polls run.
    polls: f64,
    /// Kafka requests of lag polls, by API (published after each poll).
    kafka: BTreeMap<String, f64>,
    /// Reconciles, by kind.
    reconciles: BTreeMap<String, f64>,
    /// The operator's writes to the API server, by `resource VERB` (the
    /// keys [`common::operator_writes_by`] gives for everyone's).
    writes: BTreeMap<String, f64>,
}

impl Counters {
    async fn scrape(op: &Operator) -> anyhow::Result<Counters> {
        let text = common::http_get(&op.metrics_addr, "/metrics").await?;
        let labelled = |metric: &str, label: &str, values: &[&str]| -> BTreeMap<String, f64> {
            values.iter().map(|v| (v.to_string(), common::sum_metric(&text, metric, |l| l.contains(&format!("{label}=\"{v}\""))))).collect()
        };
        Ok(Counters {
            polls: common::sum_metric(&text, "kappa_lag_polls_total", |_| true),
            kafka: labelled("kappa_kafka_requests", "api", &POLL_APIS),
            reconciles: labelled("kappa_reconciles_total", "kind", &["Processor", "ViewVersion", "Topic", "KafkaCluster"]),
            writes: common::metric_by(&text, "kappa_api_requests_total", &["resource", "verb"])
                .into_iter()
                .filter(|(k, _)| k.rsplit_once(' ').is_some_and(|(_, verb)| common::WRITE_VERBS.contains(&verb)))
                .collect(),
        })
    }
}

fn delta(now: &BTreeMap<String, f64>, before: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    now.iter().map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0))).filter(|(_, v)| *v > 0.0).collect()
}

/// Whether the Deployment controller has observed every Deployment of `ns`
/// and finished with it (its Progressing condition says the ReplicaSet is
/// available).
async fn deployments_settled(client: &Client, ns: &str) -> anyhow::Result<bool> {
    let deployments = Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), ns).list(&Default::default()).await?;
    Ok(deployments.items.iter().all(|d| {
        let status = d.status.as_ref();
        status.and_then(|s| s.observed_generation) == d.metadata.generation
            && status
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Progressing" && c.reason.as_deref() == Some("NewReplicaSetAvailable")))
    }))
}

async fn wait_gone(client: &Client, ns: &str, limit: Duration) -> bool {
    let api = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone());
    let start = Instant::now();
    while start.elapsed() < limit {
        if matches!(api.get_opt(ns).await, Ok(None)) {
            return true;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    false
}

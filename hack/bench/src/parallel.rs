//! `replay N --replicas R`: replay parallelism and the replay budget.
//!
//! One Processor over N events on an input of max(R, 3) partitions. Its
//! first version replays with one pod: the single-pod rate. (Rates are
//! taken over the middle 80% of the records, while every pod consumes;
//! from the first record to the last as well.) While it then
//! serves live traffic (a steady producer), its logic changes twice: a
//! candidate replays with `replayReplicas` R and no budget (the R-pod rate),
//! then another with a `replayByteRate` budget. Throughout, the live
//! version's end-to-end latency (record timestamp to its view write
//! acknowledged, from the reference processor's histogram) is measured:
//! before any replay, during the unthrottled one and during the throttled
//! one.

use std::{
    collections::BTreeMap,
    path::Path,
    time::{Duration, Instant},
};

use kappa_operator::{
    api::Processor,
    kafka::{Kafka, Settings, client::WireKafka},
};
use kube::{
    Api,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;

use crate::common::{self, Operator, progress};

/// Events per second of live traffic.
const LIVE_RATE: u64 = 200;
const WINDOW: Duration = Duration::from_secs(20);
const HISTOGRAM: &str = "kappa_processor_latency_seconds";

pub async fn run(operator: &Path, processor: &Path, count: u64, replicas: i32, budget: i64) -> anyhow::Result<serde_json::Value> {
    let partitions = replicas.max(3);
    let (client, ns, bootstrap, input) = common::namespace_with_topic("bench-parallel", "events", partitions).await?;
    let kafka = WireKafka::new(Settings::plaintext(&bootstrap));
    let pp = PostParams::default();
    let op = Operator::start(operator, &ns, &["--lag-poll-seconds", "1"])?;
    common::wait_until("the input topic to exist", Duration::from_secs(60), || async {
        Ok(!kafka.topics(std::slice::from_ref(&input)).await?.is_empty())
    })
    .await?;
    progress(format!("producing {count} events to {input} ({partitions} partitions)"));
    crate::rollout::produce(processor, &bootstrap, &input, count, 1)?;
    // What the brokers deliver to one raw consumer, for scale.
    let raw = {
        let (bootstrap, input) = (bootstrap.clone(), input.clone());
        tokio::task::spawn_blocking(move || crate::replay::raw_read(&bootstrap, &input, count)).await??
    };
    progress(format!("a raw consumer read them at {raw:.0} records/s"));

    let processors: Api<Processor> = Api::namespaced(client.clone(), &ns);
    processors
        .create(
            &pp,
            &serde_json::from_value(json!({"metadata": {"name": "live"}, "spec": {
                "inputs": ["events"], "replicas": 1,
                "template": {"image": "ghcr.io/kappa-dev/kappa-processor:bench", "args": ["run", "--logic", "sum"]},
                "view": {"partitions": partitions},
                "rollout": {"stableForSeconds": 2, "scaleDownDelaySeconds": 2, "replayReplicas": replicas}
            }}))?,
        )
        .await?;
    let pods = Pods { api: Api::namespaced(client.clone(), &ns) };
    let v1 = common::wait_until_some("the first version", Duration::from_secs(60), || async {
        Ok(processors.get("live").await?.status.and_then(|s| s.active_version))
    })
    .await?;
    let single = pods.replay_rate(&v1, 1, count).await?;
    progress(format!(
        "one pod replayed {count} events at {:.0} records/s (first to last record: {:.0}); the machine's cores {:.0}% busy",
        single.steady,
        single.first_to_last,
        single.busy.unwrap_or_default() * 100.0
    ));
    caught_up(&processors, &kafka, &client, &input, &v1).await?;

    // Live traffic for the rest of the run.
    let seconds = 3600;
    let mut traffic = std::process::Command::new(processor)
        .args(["produce", "--bootstrap", &bootstrap, "--topic", &input, "--seed", "7", "--keys", "10000"])
        .args(["--count", &(LIVE_RATE * seconds).to_string(), "--rate", &LIVE_RATE.to_string()])
        .stdout(std::process::Stdio::null())
        .spawn()?;
    let result = async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let before = pods.histogram(&v1).await?;
        tokio::time::sleep(WINDOW).await;
        let idle_p99 = p99(&before, &pods.histogram(&v1).await?);
        progress(format!("live p99 with no replay: {idle_p99:.3} s"));

        // A candidate replays with R pods, no budget.
        let logic = |l: &str, budget: Option<i64>| {
            json!({"spec": {"template": {"args": ["run", "--logic", l]}, "rollout": {"replayByteRate": budget}}})
        };
        let before = pods.histogram(&v1).await?;
        processors.patch("live", &PatchParams::default(), &Patch::Merge(logic("count", None))).await?;
        let v2 = candidate(&processors).await?;
        let parallel = pods.replay_rate(&v2, replicas as usize, count).await?;
        let unthrottled_p99 = p99(&before, &pods.histogram(&v1).await?);
        progress(format!(
            "{replicas} pods replayed at {:.0} records/s (first to last record: {:.0}; the machine's cores {:.0}% busy); live p99 meanwhile {unthrottled_p99:.3} s",
            parallel.steady,
            parallel.first_to_last,
            parallel.busy.unwrap_or_default() * 100.0
        ));
        common::wait_until("v2 promoted", Duration::from_secs(300), || async {
            Ok(processors.get("live").await?.status.and_then(|s| s.active_version).as_deref() == Some(v2.as_str()))
        })
        .await?;
        caught_up(&processors, &kafka, &client, &input, &v2).await?;

        // Another candidate under a budget: the same window on the live version.
        let before = pods.histogram(&v2).await?;
        processors.patch("live", &PatchParams::default(), &Patch::Merge(logic("max", Some(budget)))).await?;
        let v3 = candidate(&processors).await?;
        common::wait_until("the throttled candidate's first records", Duration::from_secs(120), || async { Ok(pods.records(&v3).await? > 0.0) })
            .await?;
        let records_before = pods.records(&v3).await?;
        let started = Instant::now();
        tokio::time::sleep(WINDOW).await;
        let throttled_rate = (pods.records(&v3).await? - records_before) / started.elapsed().as_secs_f64();
        let throttled_p99 = p99(&before, &pods.histogram(&v2).await?);
        progress(format!("under a budget of {budget} B/s per broker: {throttled_rate:.0} records/s; live p99 {throttled_p99:.3} s"));
        anyhow::Ok((idle_p99, parallel, unthrottled_p99, throttled_rate, throttled_p99))
    }
    .await;
    let _ = traffic.kill();
    let _ = traffic.wait();
    let (idle_p99, parallel, unthrottled_p99, throttled_rate, throttled_p99) = result?;

    progress("cleaning up");
    common::delete_namespace(&client, &ns, Duration::from_secs(120)).await?;
    drop(op);
    let ms = |s: f64| (s * 10_000.0).round() / 10.0;
    Ok(json!({
        "records": count,
        "replicas": replicas,
        "partitions": partitions,
        "raw_consumer_records_per_second": raw.round(),
        "single_pod_records_per_second": single.steady.round(),
        "replicas_records_per_second": parallel.steady.round(),
        "speedup": (parallel.steady / single.steady * 100.0).round() / 100.0,
        "speedup_over_replicas": (parallel.steady / single.steady / replicas as f64 * 100.0).round() / 100.0,
        "single_pod_records_per_second_first_to_last": single.first_to_last.round(),
        "replicas_records_per_second_first_to_last": parallel.first_to_last.round(),
        "single_pod_machine_busy": single.busy.map(|b| (b * 100.0).round() / 100.0),
        "replicas_machine_busy": parallel.busy.map(|b| (b * 100.0).round() / 100.0),
        "live_events_per_second": LIVE_RATE,
        "live_p99_ms_no_replay": ms(idle_p99),
        "live_p99_ms_unthrottled_replay": ms(unthrottled_p99),
        "replay_byte_rate": budget,
        "throttled_records_per_second": throttled_rate.round(),
        "live_p99_ms_throttled_replay": ms(throttled_p99),
    }))
}

async fn candidate(processors: &Api<Processor>) -> anyhow::Result<String> {
    common::wait_until_some("a candidate version", Duration::from_secs(60), || async {
        Ok(processors.get("live").await?.status.and_then(|s| s.candidate_version))
    })
    .await
}

async fn caught_up(processors: &Api<Processor>, kafka: &WireKafka, client: &kube::Client, input: &str, v: &str) -> anyhow::Result<()> {
    let ns = processors.namespace().unwrap_or_default().to_string();
    common::wait_until(&format!("version {v} caught up (lag 0, read from Kafka)"), Duration::from_secs(300), || async {
        Ok(kafka.group_lag(&common::consumer_group(client, &ns, "live", v).await?, input).await?.is_some_and(|l| l < 100))
    })
    .await
}

/// The pods of one version of Processor `live`, read through their metrics.
struct Pods {
    api: Api<k8s_openapi::api::core::v1::Pod>,
}

impl Pods {
    async fn addresses(&self, version: &str) -> anyhow::Result<Vec<String>> {
        let lp = ListParams::default().labels(&format!("kappa.dev/processor=live,kappa.dev/version={version}"));
        Ok(self
            .api
            .list(&lp)
            .await?
            .items
            .iter()
            .filter_map(|p| {
                let st = p.status.as_ref()?;
                (st.phase.as_deref() == Some("Running")).then(|| st.pod_ip.clone()).flatten()
            })
            .map(|ip| format!("{ip}:8080"))
            .collect())
    }

    /// Records applied by the version's running pods.
    async fn records(&self, version: &str) -> anyhow::Result<f64> {
        let mut total = 0.0;
        for addr in self.addresses(version).await? {
            if let Ok(text) = common::http_get(&addr, "/metrics").await {
                total += common::sum_metric(&text, "kappa_processor_records_total", |_| true);
            }
        }
        Ok(total)
    }

    /// The latency histogram summed over the version's pods: upper bound -> count.
    async fn histogram(&self, version: &str) -> anyhow::Result<BTreeMap<String, f64>> {
        let mut out = BTreeMap::new();
        for addr in self.addresses(version).await? {
            let text = common::http_get(&addr, "/metrics").await?;
            for line in text.lines().filter(|l| l.starts_with(&format!("{HISTOGRAM}_bucket{{"))) {
                let Some((series, value)) = line.rsplit_once(' ') else { continue };
                let le = series.split("le=\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or_default();
                *out.entry(le.to_string()).or_default() += value.parse::<f64>().unwrap_or(0.0);
            }
        }
        Ok(out)
    }

    /// The replay rate of `want` records by `pods` pods of the version
    /// (their counters read every 20 ms): over the middle 80% of the
    /// records, so that pods starting and joining their group one after
    /// another, and the last partition's tail, are left out; and from the
    /// first record applied to the last.
    async fn replay_rate(&self, version: &str, pods: usize, want: u64) -> anyhow::Result<Rate> {
        let start = Instant::now();
        let (mut first, mut report) = (None::<Instant>, Instant::now());
        let (mut tenth, mut ninth) = (None::<Instant>, None::<Instant>);
        let (mut cpu_tenth, mut busy) = (None, None);
        loop {
            let addresses = self.addresses(version).await?;
            anyhow::ensure!(addresses.len() <= pods, "version {version} runs {} pods, more than {pods}", addresses.len());
            let mut records = 0.0;
            for addr in &addresses {
                if let Ok(text) = common::http_get(addr, "/metrics").await {
                    records += common::sum_metric(&text, "kappa_processor_records_total", |_| true);
                }
            }
            let now = Instant::now();
            if records > 0.0 {
                first.get_or_insert(now);
            }
            if records >= want as f64 * 0.1 && tenth.is_none() {
                tenth = Some(now);
                cpu_tenth = Some(common::machine_cpu()?);
            }
            if records >= want as f64 * 0.9 && ninth.is_none() {
                ninth = Some(now);
                busy = cpu_tenth.as_ref().map(|t| common::machine_cpu().map(|n| n.busy_since(t))).transpose()?;
            }
            if records >= want as f64 {
                let secs = |from: Option<Instant>, to: Instant| from.map_or(0.001, |f| to.duration_since(f).as_secs_f64().max(0.001));
                let first_to_last = records / secs(first, now);
                // (a replay too short to sample its middle: the whole of it)
                let window = secs(tenth, ninth.unwrap_or(now));
                let steady = if window >= 1.0 { want as f64 * 0.8 / window } else { first_to_last };
                return Ok(Rate { steady, first_to_last, busy });
            }
            if report.elapsed() > Duration::from_secs(2) {
                progress(format!("  {version}: {records} of {want} on {} pods", addresses.len()));
                report = Instant::now();
            }
            anyhow::ensure!(start.elapsed() < Duration::from_secs(900), "the replay of {version} did not finish in 15 minutes");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A replay's records per second.
struct Rate {
    /// From 10% of the records applied to 90%.
    steady: f64,
    /// From the first record applied to the last.
    first_to_last: f64,
    /// The share of the machine's cores busy from 10% to 90% (what limits
    /// the rate when it is near 1).
    busy: Option<f64>,
}

/// The 99th percentile of the observations between two readings of a
/// cumulative histogram, interpolated within its bucket.
fn p99(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> f64 {
    let mut buckets: Vec<(f64, f64)> = after
        .iter()
        .map(|(le, n)| {
            (if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(f64::INFINITY) }, n - before.get(le).copied().unwrap_or(0.0))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last().map_or(0.0, |b| b.1);
    if total <= 0.0 {
        return f64::NAN;
    }
    let target = total * 0.99;
    let (mut low, mut below) = (0.0, 0.0);
    for (le, n) in buckets {
        if n >= target {
            if le.is_infinite() {
                return low;
            }
            return low + (le - low) * ((target - below) / (n - below).max(1e-9));
        }
        (low, below) = (le, n);
    }
    low
}

#[cfg(test)]
mod tests {
    #[test]
    fn p99_is_interpolated_within_its_bucket() {
        let before = super::BTreeMap::from([("0.01".to_string(), 10.0), ("0.1".to_string(), 10.0), ("+Inf".to_string(), 10.0)]);
        let after = super::BTreeMap::from([("0.01".to_string(), 60.0), ("0.1".to_string(), 110.0), ("+Inf".to_string(), 110.0)]);
        // 100 observations: 50 up to 10 ms, 50 between 10 and 100 ms; the 99th is the 49th of the second.
        let p = super::p99(&before, &after);
        assert!((p - (0.01 + 0.09 * 49.0 / 50.0)).abs() < 1e-9, "{p}");
    }
}

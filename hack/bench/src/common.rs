//! What every benchmark shares: the lab's clients, an operator process with
//! its peak memory and metrics, and the API server's write counter.

use std::{
    collections::BTreeMap,
    path::Path,
    process::{Child, Command},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde_json::json;

/// A namespace named after `prefix` with the lab's KafkaCluster and an input
/// Topic `orders` (3 partitions): (client, namespace, bootstrap, Kafka name
/// of the input).
pub async fn namespace_with_input(prefix: &str) -> anyhow::Result<(Client, String, String, String)> {
    namespace_with_topic(prefix, "orders", 3).await
}

/// A namespace with a KafkaCluster `default` and an input Topic `name`
/// (Kafka topic `{namespace}-{name}`, deletionPolicy Delete): the client,
/// the namespace, the bootstrap servers and the Kafka topic.
pub async fn namespace_with_topic(prefix: &str, name: &str, partitions: i32) -> anyhow::Result<(Client, String, String, String)> {
    let bootstrap = env("KAPPA_KAFKA_BOOTSTRAP")?;
    let client = client().await?;
    install_crds(&client).await?;
    let ns = create_namespace(&client, prefix).await?;
    let input = format!("{ns}-{name}");
    let pp = PostParams::default();
    Api::<kappa_operator::api::KafkaCluster>::namespaced(client.clone(), &ns)
        .create(&pp, &serde_json::from_value(json!({"metadata": {"name": "default"}, "spec": {"bootstrapServers": bootstrap}}))?)
        .await?;
    let topic = json!({"metadata": {"name": name}, "spec": {"topicName": input, "partitions": partitions, "deletionPolicy": "Delete"}});
    Api::<kappa_operator::api::Topic>::namespaced(client.clone(), &ns).create(&pp, &serde_json::from_value(topic)?).await?;
    Ok((client, ns, bootstrap, input))
}

pub fn progress(msg: impl AsRef<str>) {
    eprintln!("[bench] {}", msg.as_ref());
}

pub fn env(var: &str) -> anyhow::Result<String> {
    std::env::var(var).with_context(|| format!("{var} is not set; run through hack/bench.sh (it loads the lab's environment)"))
}

pub async fn client() -> anyhow::Result<Client> {
    Ok(Client::try_default().await?)
}

pub async fn install_crds(client: &Client) -> anyhow::Result<()> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in kappa_operator::api::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(&name, &PatchParams::apply("kappa-bench").force(), &Patch::Apply(&crd)).await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(())
}

pub async fn create_namespace(client: &Client, prefix: &str) -> anyhow::Result<String> {
    let name = format!("{prefix}-{}", std::process::id());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await?;
    Ok(name)
}

/// Deletes the namespace and waits (up to `limit`) until it is gone, so the
/// operator can finish its cleanup (Kafka topics with deletionPolicy Delete).
pub async fn delete_namespace(client: &Client, name: &str, limit: Duration) -> anyhow::Result<()> {
    let api = Api::<Namespace>::all(client.clone());
    api.delete(name, &DeleteParams::background()).await?;
    let start = Instant::now();
    while api.get_opt(name).await?.is_some() {
        if start.elapsed() > limit {
            progress(format!("namespace {name} still terminating after {limit:?}; leaving it"));
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(())
}

/// Creates the objects `object(i)` for each `i` of `indices`, `concurrency`
/// at a time, counting them in `created`.
pub async fn create_each<K>(
    api: &Api<K>,
    indices: std::ops::Range<usize>,
    concurrency: usize,
    object: impl Fn(usize) -> serde_json::Value,
    created: &std::sync::atomic::AtomicUsize,
) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + k8s_openapi::serde::de::DeserializeOwned + k8s_openapi::serde::Serialize + std::fmt::Debug,
{
    use futures::{StreamExt, TryStreamExt};
    futures::stream::iter(indices)
        .map(|i| {
            let o = serde_json::from_value::<K>(object(i));
            async move {
                api.create(&PostParams::default(), &o?).await?;
                created.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                anyhow::Ok(())
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Removes the kappa finalizers left in namespace `ns` (one the operator
/// no longer watches would otherwise stay terminating).
pub async fn release_finalizers(client: &Client, ns: &str) -> anyhow::Result<()> {
    use kappa_operator::api::{KafkaCluster, Processor, Topic, ViewVersion};
    async fn release<K>(api: Api<K>) -> anyhow::Result<()>
    where
        K: kube::Resource<DynamicType = ()> + Clone + k8s_openapi::serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let patch = kube::api::Patch::Merge(json!({"metadata": {"finalizers": null}}));
        for o in api.list_metadata(&kube::api::ListParams::default()).await?.items {
            if o.metadata.finalizers.as_ref().is_some_and(|f| !f.is_empty()) {
                let _ = api.patch_metadata(&kube::ResourceExt::name_any(&o), &kube::api::PatchParams::default(), &patch).await;
            }
        }
        Ok(())
    }
    release(Api::<ViewVersion>::namespaced(client.clone(), ns)).await?;
    release(Api::<Topic>::namespaced(client.clone(), ns)).await?;
    release(Api::<Processor>::namespaced(client.clone(), ns)).await?;
    release(Api::<KafkaCluster>::namespaced(client.clone(), ns)).await
}

/// The operator as a local process watching one namespace.
pub struct Operator {
    child: Child,
    pub metrics_addr: String,
    log: std::path::PathBuf,
}

impl Operator {
    pub fn start(binary: &Path, ns: &str, extra: &[&str]) -> anyhow::Result<Operator> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let metrics_addr = format!("127.0.0.1:{port}");
        let log_path = std::env::temp_dir().join(format!("kappa-bench-operator-{ns}.log"));
        let log = std::fs::File::create(&log_path)?;
        let child = Command::new(binary)
            .args(["run", "--namespace", ns, "--http-addr", &metrics_addr])
            .args(extra)
            // KAPPA_BENCH_LOG: a finer filter, to see why the operator works.
            .env("RUST_LOG", std::env::var("KAPPA_BENCH_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Operator { child, metrics_addr, log: log_path })
    }

    /// Its log (warnings and errors).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU seconds the operator has used (user and system).
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        process_cpu_seconds(self.child.id())
    }

    /// Resident memory now (VmRSS) in MiB.
    pub fn rss_mib(&self) -> anyhow::Result<f64> {
        self.status_mib("VmRSS:")
    }

    /// Peak resident memory (VmHWM) in MiB.
    pub fn peak_rss_mib(&self) -> anyhow::Result<f64> {
        self.status_mib("VmHWM:")
    }

    /// A memory figure of /proc/PID/status, in MiB.
    fn status_mib(&self, field: &str) -> anyhow::Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no {field} in /proc/PID/status"))?;
        Ok(kb / 1024.0)
    }

    /// One metric's value (summed over its label sets).
    pub async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let text = http_get(&self.metrics_addr, "/metrics").await?;
        Ok(sum_metric(&text, name, |_| true))
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        // SAFETY: SIGTERM to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn http_get(addr: &str, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    match out.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_string()),
        _ => bail!("GET {addr}{path} failed: {}", out.lines().next().unwrap_or_default()),
    }
}

/// Sums a Prometheus metric over the label sets `keep` accepts.
pub fn sum_metric(text: &str, name: &str, keep: impl Fn(&str) -> bool) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, labels) = series.split_once('{').unwrap_or((series, ""));
            (metric == name && keep(labels)).then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// The value of label `name` in a series' `labels` (empty if absent).
fn label<'a>(labels: &'a str, name: &str) -> &'a str {
    labels.split(&format!("{name}=\"")).nth(1).and_then(|rest| rest.split('"').next()).unwrap_or_default()
}

/// A metric's series summed by the values of `labels`, joined by spaces.
pub fn metric_by(text: &str, name: &str, labels: &[&str]) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
        if metric != name {
            continue;
        }
        let key: Vec<&str> = labels.iter().map(|l| label(rest, l)).collect();
        *out.entry(key.join(" ")).or_default() += value.parse::<f64>().unwrap_or(0.0);
    }
    out
}

/// Create, update and patch requests the API server has served for the
/// given (group, resource) pairs (resource `*`: all of the group, status
/// included; otherwise the main resource only, not its status, which other
/// controllers write), and for Events if asked; from its own metrics.
/// Deletes are left out: the namespace controller's sweeps of terminating
/// namespaces are not the operator's.
pub async fn operator_writes(client: &Client, kinds: &[(&str, &str)], events: bool) -> anyhow::Result<f64> {
    Ok(operator_writes_by(client, kinds, events).await?.values().sum())
}

/// The verbs of writes (deletes aside), as the API server counts them.
pub const WRITE_VERBS: [&str; 4] = ["POST", "PUT", "PATCH", "APPLY"];

/// The same, by `resource[/subresource] VERB`.
pub async fn operator_writes_by(client: &Client, kinds: &[(&str, &str)], events: bool) -> anyhow::Result<BTreeMap<String, f64>> {
    requests_by(client, &WRITE_VERBS, kinds, events).await
}

/// GET and LIST requests (not WATCH) the API server has served for the
/// given kinds, by `resource[/subresource] VERB` (read as for writes).
pub async fn reads_by(client: &Client, kinds: &[(&str, &str)]) -> anyhow::Result<BTreeMap<String, f64>> {
    requests_by(client, &["GET", "LIST"], kinds, false).await
}

async fn requests_by(client: &Client, verbs: &[&str], kinds: &[(&str, &str)], events: bool) -> anyhow::Result<BTreeMap<String, f64>> {
    let req = http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(req).await?;
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let labels = series.trim_start_matches("apiserver_request_total{");
        let write = verbs.contains(&label(labels, "verb"));
        let (group, resource, sub) = (label(labels, "group"), label(labels, "resource"), label(labels, "subresource"));
        let ours =
            kinds.iter().any(|(g, r)| group == *g && (*r == "*" || (resource == *r && sub.is_empty()))) || (events && resource == "events");
        if write && ours {
            let key = format!("{resource}{}{sub} {}", if sub.is_empty() { "" } else { "/" }, label(labels, "verb"));
            *out.entry(key).or_default() += value.parse::<f64>().unwrap_or(0.0);
        }
    }
    Ok(out)
}

pub async fn wait_until<F, Fut>(what: &str, limit: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    wait_until_some(what, limit, || {
        let done = check();
        async move { Ok(done.await?.then_some(())) }
    })
    .await
}

/// Polls `check` until it yields a value, or fails after `limit`.
pub async fn wait_until_some<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if start.elapsed() > limit {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The consumer group of a processor's version, as its ViewVersion records it.
pub async fn consumer_group(client: &Client, ns: &str, processor: &str, version: &str) -> anyhow::Result<String> {
    let vv: Api<kappa_operator::api::ViewVersion> = Api::namespaced(client.clone(), ns);
    Ok(vv.get(&kappa_operator::naming::version_object(processor, version)).await?.spec.consumer_group)
}

/// The machine's CPU time so far (the first line of /proc/stat), in ticks.
pub struct MachineCpu {
    busy: u64,
    total: u64,
}

impl MachineCpu {
    /// The share of all cores busy since `earlier` (0 to 1).
    pub fn busy_since(&self, earlier: &MachineCpu) -> f64 {
        (self.busy - earlier.busy) as f64 / (self.total - earlier.total).max(1) as f64
    }
}

pub fn machine_cpu() -> anyhow::Result<MachineCpu> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    // cpu user nice system idle iowait irq softirq steal ...
    let ticks: Vec<u64> = line.split_whitespace().skip(1).map(str::parse).collect::<Result<_, _>>()?;
    let total = ticks.iter().take(8).sum();
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    Ok(MachineCpu { busy: total - idle, total })
}

/// CPU seconds (user and system) process `pid` has used.
fn process_cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command (which may hold spaces): utime is the 14th field overall.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("no ) in /proc/PID/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok(ticks / 100.0)
}

/// CPU seconds used so far by each of the lab's components (by the pid
/// files in `$KAPPA_LAB_HOME/run`; the brokers summed as `kafka`) and by
/// `operator`: where a burst's CPU went.
pub struct CpuSplit(BTreeMap<String, f64>);

impl CpuSplit {
    pub fn now(operator: &Operator) -> anyhow::Result<CpuSplit> {
        let mut split = BTreeMap::from([("operator".to_string(), operator.cpu_seconds()?)]);
        for entry in std::fs::read_dir(Path::new(&env("KAPPA_LAB_HOME")?).join("run"))? {
            let path = entry?.path();
            let (Some(name), Some("pid")) = (path.file_stem().and_then(|s| s.to_str()), path.extension().and_then(|e| e.to_str())) else {
                continue;
            };
            let Ok(pid) = std::fs::read_to_string(&path)?.trim().parse::<u32>() else { continue };
            // A component that is not running used nothing.
            let seconds = process_cpu_seconds(pid).unwrap_or(0.0);
            let name = if name.starts_with("kafka-") { "kafka" } else { name };
            *split.entry(name.to_string()).or_default() += seconds;
        }
        Ok(CpuSplit(split))
    }

    /// Seconds `name` has used.
    pub fn of(&self, name: &str) -> f64 {
        self.0.get(name).copied().unwrap_or(0.0)
    }

    /// Seconds all have used since `earlier`.
    pub fn total_since(&self, earlier: &CpuSplit) -> f64 {
        self.0.iter().map(|(name, s)| s - earlier.of(name)).sum()
    }

    /// Seconds each used since `earlier`, rounded to a tenth, as JSON.
    pub fn since(&self, earlier: &CpuSplit) -> serde_json::Value {
        self.0
            .iter()
            .map(|(name, s)| (name.clone(), json!(((s - earlier.of(name)) * 10.0).round() / 10.0)))
            .collect::<serde_json::Map<_, _>>()
            .into()
    }
}

/// The machine's cores.
pub fn cores() -> f64 {
    std::thread::available_parallelism().map_or(1, |n| n.get()) as f64
}

/// Deletes the Kafka topics of namespace `ns` (named `{ns}.…` or `{ns}-…`,
/// as its views and the benches' inputs are).
pub async fn delete_kafka_topics_of(ns: &str) -> anyhow::Result<()> {
    use kappa_operator::kafka::{Kafka as _, Settings, client::WireKafka};
    let kafka = WireKafka::new(Settings::plaintext(&env("KAPPA_KAFKA_BOOTSTRAP")?));
    let (dot, dash) = (format!("{ns}."), format!("{ns}-"));
    let ours: Vec<String> = kafka.list_topics().await?.into_iter().filter(|t| t.starts_with(&dot) || t.starts_with(&dash)).collect();
    progress(format!("deleting the {} Kafka topics of {ns}", ours.len()));
    delete_kafka_topics(&kafka, &ours).await
}

/// Deletes these Kafka topics, 1,000 to a request.
pub async fn delete_kafka_topics(kafka: &kappa_operator::kafka::client::WireKafka, names: &[String]) -> anyhow::Result<()> {
    use kappa_operator::kafka::Kafka as _;
    for chunk in names.chunks(1000) {
        kafka.delete_topics(chunk).await?;
    }
    Ok(())
}

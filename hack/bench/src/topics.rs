//! `topics N`: N Topic resources to Ready, against the time the API server
//! alone takes to accept the same creates; then a quiet minute.

use std::{
    collections::HashSet,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use futures::{StreamExt, TryStreamExt};
use kappa_operator::{
    api::{KafkaCluster, Topic},
    kafka::{Kafka as _, NewTopic, Settings, client::WireKafka},
};
use kube::{
    Api, Resource as _, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
    runtime::watcher,
};
use serde_json::json;

use crate::common::{self, Operator, progress};

const RESYNC_SECONDS: u64 = 20;

/// `retain`: Topics with deletionPolicy Retain (no finalizer) instead of Delete.
pub async fn run(operator: &Path, count: usize, idle_seconds: u64, retain: bool) -> anyhow::Result<serde_json::Value> {
    let policy = if retain { "Retain" } else { "Delete" };
    let client = common::client().await?;
    common::install_crds(&client).await?;
    let ns = common::create_namespace(&client, "bench-topics").await?;
    progress(format!("namespace {ns}: {count} Topics"));
    let clusters: Api<KafkaCluster> = Api::namespaced(client.clone(), &ns);
    clusters
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "default"}, "spec": {"bootstrapServers": common::env("KAPPA_KAFKA_BOOTSTRAP")?}}),
            )?,
        )
        .await?;
    let op = Operator::start(operator, &ns, &["--resync-seconds", &RESYNC_SECONDS.to_string()])?;
    common::wait_until("the KafkaCluster to be Ready", Duration::from_secs(60), || async {
        let kc = clusters.get("default").await?;
        Ok(kc.status.is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")))
    })
    .await?;

    // The floor: the same creates in a second namespace no operator
    // watches, so only the API server works; gone before the real run.
    let floor_ns = common::create_namespace(&client, "bench-topics-floor").await?;
    let floor_start = Instant::now();
    let floor_cpu = common::CpuSplit::now(&op)?;
    let floor_topics: Api<Topic> = Api::namespaced(client.clone(), &floor_ns);
    create(floor_topics.clone(), "floor".into(), count, policy, Arc::default()).await?;
    let create_floor_seconds = floor_start.elapsed().as_secs_f64();
    progress(format!("floor: the API server alone took {create_floor_seconds:.1} s to accept {count} creates"));
    // The writes the operator cannot avoid after the create, for the API
    // server alone: a finalizer (Delete only) and one status each.
    let write_start = Instant::now();
    write_floor(&floor_topics, count, policy).await?;
    let write_floor_seconds = write_start.elapsed().as_secs_f64();
    let after_writes = common::CpuSplit::now(&op)?;
    let (api_floor_cpu, mut floor_cpu_seconds) = (after_writes.since(&floor_cpu), after_writes.total_since(&floor_cpu));
    progress(format!("floor: then {write_floor_seconds:.1} s for the finalizer and status writes; CPU seconds: {api_floor_cpu}"));
    common::release_finalizers(&client, &floor_ns).await?;
    common::delete_namespace(&client, &floor_ns, Duration::from_secs(300)).await?;
    // Kafka alone: the same topics created in the operator's batches of
    // 1,000, one batch at a time, then deleted again before the real run.
    let kafka = WireKafka::new(Settings::plaintext(&common::env("KAPPA_KAFKA_BOOTSTRAP")?));
    let (kafka_floor_seconds, kafka_floor_cpu) = kafka_floor(&kafka, count, &op).await?;
    floor_cpu_seconds += kafka_floor_cpu;
    progress(format!(
        "floor: Kafka alone took {kafka_floor_seconds:.1} s to create {count} topics, and {kafka_floor_cpu:.1} CPU seconds until the brokers were quiet again"
    ));
    // The CPU the floors took, spread over all the cores: what this
    // machine needs for the work, however it is scheduled.
    let machine_floor_seconds = floor_cpu_seconds / common::cores();

    let topics: Api<Topic> = Api::namespaced(client.clone(), &ns);
    let prefix = format!("bench-{}-{}", std::process::id(), Instant::now().elapsed().as_nanos() % 1000);
    let start = Instant::now();
    let cpu_before = common::CpuSplit::now(&op)?;
    let created = Arc::new(AtomicUsize::new(0));
    let creating = tokio::spawn(create(topics.clone(), prefix.clone(), count, policy, created.clone()));
    // Ready is counted from a watch: listing 10,000 Topics twice a second
    // would load the API server more than the operator does.
    let ready = Arc::new(AtomicUsize::new(0));
    let watching = {
        let (topics, ready) = (topics.clone(), ready.clone());
        tokio::spawn(async move {
            let mut names = HashSet::new();
            let mut events = watcher(topics, watcher::Config::default()).boxed();
            while let Some(event) = events.next().await {
                match event {
                    Ok(watcher::Event::Apply(t) | watcher::Event::InitApply(t)) if is_ready(&t) => names.insert(t.name_any()),
                    Ok(watcher::Event::Apply(t) | watcher::Event::InitApply(t) | watcher::Event::Delete(t)) => names.remove(&t.name_any()),
                    _ => false,
                };
                ready.store(names.len(), Ordering::Relaxed);
            }
        })
    };
    let mut last_report = Instant::now();
    let ready_seconds = loop {
        let ready = ready.load(Ordering::Relaxed);
        if ready >= count {
            break start.elapsed().as_secs_f64();
        }
        if last_report.elapsed() > Duration::from_secs(2) {
            progress(format!("{:>6.1}s: {} created, {ready} Ready", start.elapsed().as_secs_f64(), created.load(Ordering::Relaxed)));
            last_report = Instant::now();
        }
        anyhow::ensure!(start.elapsed() < Duration::from_secs(600), "not all Topics Ready after 600 s ({ready}/{count})");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let burst_cpu = common::CpuSplit::now(&op)?.since(&cpu_before);
    watching.abort();
    creating.await?.context("creating Topics")?;
    progress(format!("all {count} Topics Ready in {ready_seconds:.1} s; CPU seconds meanwhile: {burst_cpu}"));

    // Let the last events and status writes land, and the Kafka request
    // gauge (refreshed by the KafkaCluster's check every 15 s) count the
    // last of the creation burst; then watch a quiet period.
    tokio::time::sleep(Duration::from_secs(16)).await;
    let writes_before = common::operator_writes(&client, &[("kappa.dev", "*")], true).await?;
    let requests_before = op.metric("kappa_topic_sync_requests").await?;
    let resyncs_before = op.metric("kappa_topic_resyncs_total").await?;
    progress(format!("idle for {idle_seconds} s (resync every {RESYNC_SECONDS} s)"));
    tokio::time::sleep(Duration::from_secs(idle_seconds)).await;
    let idle_writes = common::operator_writes(&client, &[("kappa.dev", "*")], true).await? - writes_before;
    // The gauge is refreshed by the KafkaCluster's periodic check; give it one.
    tokio::time::sleep(Duration::from_secs(16)).await;
    let requests = op.metric("kappa_topic_sync_requests").await? - requests_before;
    let resyncs = op.metric("kappa_topic_resyncs_total").await? - resyncs_before;
    let peak_rss_mib = op.peak_rss_mib()?;
    progress(format!("peak RSS {peak_rss_mib:.1} MiB (pid {}), {idle_writes} writes while idle", op.pid()));

    let names: Vec<String> = (0..count).map(|i| format!("{prefix}-{i}")).collect();
    if policy == "Retain" {
        // Retained: deleting the resources leaves Kafka alone, so the
        // bench deletes its own topics.
        common::delete_kafka_topics(&kafka, &names).await?;
    }
    progress("cleaning up");
    // The operator deletes the Kafka topics (about 15 a second on the lab);
    // past the deadline the bench lets go of what is left itself.
    let limit = Duration::from_secs((count as u64 / 10).max(600));
    let deadline = Instant::now() + limit;
    loop {
        let left = topics.list_metadata(&ListParams::default()).await?.items;
        if left.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            progress(format!("{} Topics still there after {limit:?}: releasing them and deleting their Kafka topics", left.len()));
            common::release_finalizers(&client, &ns).await?;
            common::delete_kafka_topics(&kafka, &names).await?;
            break;
        }
        if left.iter().any(|t| t.metadata.deletion_timestamp.is_none()) {
            // Deleting 10,000 can outlast the API server's request timeout;
            // what it did not reach is asked again next round.
            if let Err(e) = topics.delete_collection(&kube::api::DeleteParams::background(), &ListParams::default()).await {
                progress(format!("deleting Topics: {e}; asking again"));
            }
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    common::delete_namespace(&client, &ns, Duration::from_secs(120)).await?;
    drop(op);

    Ok(json!({
        "count": count,
        "deletion_policy": policy,
        "ready_seconds": (ready_seconds * 10.0).round() / 10.0,
        "create_floor_seconds": (create_floor_seconds * 10.0).round() / 10.0,
        "ready_over_floor": (ready_seconds / create_floor_seconds * 100.0).round() / 100.0,
        // What the work itself costs: the API server's creates and the
        // operator's writes, Kafka's creates, and the CPU of both over the
        // cores. The largest is a bound no operator beats on this machine.
        "write_floor_seconds": (write_floor_seconds * 10.0).round() / 10.0,
        "kafka_floor_seconds": (kafka_floor_seconds * 10.0).round() / 10.0,
        "floor_cpu_seconds": (floor_cpu_seconds * 10.0).round() / 10.0,
        "machine_floor_seconds": (machine_floor_seconds * 10.0).round() / 10.0,
        "ready_over_work_floor": (ready_seconds / (create_floor_seconds + write_floor_seconds).max(kafka_floor_seconds).max(machine_floor_seconds) * 100.0).round() / 100.0,
        "burst_cpu_seconds": burst_cpu,
        "topics_per_second": (count as f64 / ready_seconds).round(),
        "peak_rss_mib": (peak_rss_mib * 10.0).round() / 10.0,
        "idle_writes": idle_writes,
        "idle_seconds": idle_seconds,
        "kafka_requests_per_resync": if resyncs > 0.0 { (requests / resyncs * 10.0).round() / 10.0 } else { -1.0 },
    }))
}

/// Creates Topics `t0`..`t{count-1}` (Kafka names `{prefix}-{i}`), 32 at a
/// time, counting them in `created`.
async fn create(topics: Api<Topic>, prefix: String, count: usize, policy: &'static str, created: Arc<AtomicUsize>) -> anyhow::Result<()> {
    let topic = |i| {
        json!({"metadata": {"name": format!("t{i}")},
            "spec": {"topicName": format!("{prefix}-{i}"), "partitions": 1, "deletionPolicy": policy}})
    };
    common::create_each(&topics, 0..count, 32, topic, &created).await
}

/// Writes each floor Topic as the operator does: its finalizer (for
/// Delete), then a Ready status, the same kinds of patch; 32 at a time, as
/// the creates.
async fn write_floor(topics: &Api<Topic>, count: usize, policy: &'static str) -> anyhow::Result<()> {
    let apply = PatchParams::apply(kappa_operator::api::MANAGER).force();
    let (api_version, kind) = (Topic::api_version(&()), Topic::kind(&()));
    futures::stream::iter(0..count)
        .map(|i| {
            let (name, apply, api_version, kind) = (format!("t{i}"), &apply, &api_version, &kind);
            async move {
                if policy == "Delete" {
                    let finalizer = json!({"apiVersion": api_version, "kind": kind,
                        "metadata": {"name": name, "finalizers": [kappa_operator::api::finalizers::TOPIC]}});
                    topics.patch(&name, apply, &Patch::Apply(finalizer)).await?;
                }
                let status = json!({"apiVersion": api_version, "kind": kind, "status": {"conditions": [{"type": "Ready",
                    "status": "True", "reason": "Created", "message": "floor", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
                topics.patch_status(&name, apply, &Patch::Apply(status)).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Seconds Kafka takes to create `count` one-partition topics in batches of
/// 1,000, one batch at a time (as the operator's batcher sends them), and
/// the CPU seconds the machine spent until the brokers were done making
/// their partitions (quiet for two seconds). The topics are deleted again,
/// and gone from the metadata, before it returns.
async fn kafka_floor(kafka: &WireKafka, count: usize, op: &Operator) -> anyhow::Result<(f64, f64)> {
    let cpu_before = common::CpuSplit::now(op)?;
    let prefix = format!("bench-floor-{}", std::process::id());
    let names: Vec<String> = (0..count).map(|i| format!("{prefix}-{i}")).collect();
    // The same shape as the bench's Topics (the Topic defaults).
    let spec: Topic = serde_json::from_value(json!({"metadata": {"name": "t"}, "spec": {"partitions": 1}}))?;
    let start = Instant::now();
    for chunk in names.chunks(1000) {
        let batch: Vec<NewTopic> = chunk
            .iter()
            .map(|name| NewTopic {
                name: name.clone(),
                partitions: spec.spec.partitions,
                replication_factor: spec.spec.replication_factor,
                config: spec.spec.config.clone(),
            })
            .collect();
        let created = kafka.create_topics(&batch).await?;
        let failed = created.values().filter(|r| r.is_err()).count();
        anyhow::ensure!(failed == 0, "Kafka refused {failed} of the floor's topics: {:?}", created.values().find(|r| r.is_err()));
    }
    let seconds = start.elapsed().as_secs_f64();
    let cpu = brokers_quiet(op).await?.total_since(&cpu_before);
    common::delete_kafka_topics(kafka, &names).await?;
    common::wait_until("the floor's Kafka topics to be deleted", Duration::from_secs(300), || async {
        Ok(!kafka.list_topics().await?.iter().any(|t| t.starts_with(&prefix)))
    })
    .await?;
    // Brokers remove a deleted topic's files a minute later
    // (file.delete.delay.ms): that work is not left to the real run.
    progress("waiting for the brokers to remove the floor's files");
    tokio::time::sleep(Duration::from_secs(61)).await;
    brokers_quiet(op).await?;
    Ok((seconds, cpu))
}

/// Waits until the brokers use less than a tenth of a core (about what idle
/// brokers use) over two seconds, at most two minutes; the CPU split then.
async fn brokers_quiet(op: &Operator) -> anyhow::Result<common::CpuSplit> {
    let mut last = common::CpuSplit::now(op)?;
    let give_up = Instant::now() + Duration::from_secs(120);
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = common::CpuSplit::now(op)?;
        let busy = now.of("kafka") - last.of("kafka");
        last = now;
        if busy < 0.2 || Instant::now() >= give_up {
            return Ok(last);
        }
    }
}

fn is_ready(t: &Topic) -> bool {
    t.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

//! `replay N`: the reference processor replaying N events from offset zero
//! through the operator, against a raw consumer reading the same topic; the
//! Kafka Streams example replaying the same topic; and
//! the cost of one lag poll over 1,000 partitions and 100 consumer groups.

use std::{
    collections::BTreeMap,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use kappa_operator::{
    api::Processor,
    kafka::{Kafka, NewTopic, Settings, client::WireKafka, lag},
};
use kube::{Api, api::PostParams};
use rdkafka::{
    ClientConfig, Message,
    consumer::{BaseConsumer, Consumer},
};
use serde_json::json;

use crate::common::{self, Operator, progress};

const PARTITIONS: i32 = 3;

pub async fn run(operator: &Path, processor: &Path, count: u64) -> anyhow::Result<serde_json::Value> {
    let (client, ns, bootstrap, input) = common::namespace_with_topic("bench-replay", "events", PARTITIONS).await?;
    let kafka = WireKafka::new(Settings::plaintext(&bootstrap));
    let op = Operator::start(operator, &ns, &["--lag-poll-seconds", "1"])?;
    common::wait_until("the input topic to exist", Duration::from_secs(60), || async {
        Ok(!kafka.topics(std::slice::from_ref(&input)).await?.is_empty())
    })
    .await?;

    progress(format!("producing {count} events to {input}"));
    let out = std::process::Command::new(processor)
        .args(["produce", "--bootstrap", &bootstrap, "--topic", &input, "--count", &count.to_string(), "--keys", "10000"])
        .output()?;
    anyhow::ensure!(out.status.success(), "produce failed: {}", String::from_utf8_lossy(&out.stderr));

    // The raw rate on this shared machine is noisy: the median of three reads.
    let mut raws = Vec::new();
    for i in 1..=3 {
        let (bootstrap, input) = (bootstrap.clone(), input.clone());
        let r = tokio::task::spawn_blocking(move || raw_read(&bootstrap, &input, count)).await??;
        progress(format!("raw consumer, read {i} of 3: {r:.0} records/s"));
        raws.push(r);
    }
    raws.sort_by(f64::total_cmp);
    let raw = raws[1];

    progress("processor: replaying from offset zero through the operator");
    let created = Instant::now();
    Api::<Processor>::namespaced(client.clone(), &ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "replay"}, "spec": {
                "inputs": ["events"], "replicas": 1,
                "template": {"image": "ghcr.io/kappa-dev/kappa-processor:bench", "args": ["run", "--logic", "sum"]},
                "view": {"partitions": PARTITIONS}
            }}))?,
        )
        .await?;
    // The processor's own record counter, read every 20 ms from its pod:
    // the same first-record-to-last-record measure as the raw consumer's.
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), &ns);
    let started = Instant::now();
    let pod_ip = loop {
        let list = pods.list(&kube::api::ListParams::default().labels("kappa.dev/processor=replay")).await?;
        let ip = list.items.iter().find_map(|p| {
            let st = p.status.as_ref()?;
            (st.phase.as_deref() == Some("Running")).then(|| st.pod_ip.clone()).flatten()
        });
        if let Some(ip) = ip {
            break ip;
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(120), "no processor pod running after 120 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let metrics_addr = format!("{pod_ip}:8080");
    let (mut first, mut last) = (None::<Instant>, None::<Instant>);
    let mut report = Instant::now();
    while last.is_none() {
        let records = match common::http_get(&metrics_addr, "/metrics").await {
            Ok(text) => common::sum_metric(&text, "kappa_processor_records_total", |_| true) as u64,
            Err(_) => 0,
        };
        if records > 0 && first.is_none() {
            first = Some(Instant::now());
        }
        if records >= count {
            last = Some(Instant::now());
        }
        if report.elapsed() > Duration::from_secs(2) {
            progress(format!("{records} of {count} processed"));
            report = Instant::now();
        }
        anyhow::ensure!(created.elapsed() < Duration::from_secs(900), "the replay did not finish in 15 minutes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = last.unwrap().duration_since(first.context("no record processed")?).as_secs_f64().max(0.001);
    let processor_rate = count as f64 / elapsed;
    let processors: Api<Processor> = Api::namespaced(client.clone(), &ns);
    common::wait_until("the view to be complete (lag 0, read from Kafka)", Duration::from_secs(120), || async {
        let Some(v) = processors.get("replay").await?.status.and_then(|s| s.active_version) else { return Ok(false) };
        Ok(kafka.group_lag(&common::consumer_group(&client, &ns, "replay", &v).await?, &input).await? == Some(0))
    })
    .await?;
    let end_to_end = created.elapsed().as_secs_f64();
    progress(format!("processor: {processor_rate:.0} records/s; {end_to_end:.1} s from Processor created to lag 0"));

    let streams_rate = kafka_streams_replay(&client, &kafka, &ns, &input, count).await?;
    progress(format!("Kafka Streams example: {streams_rate:.0} records/s ({:.2} of raw)", streams_rate / raw));

    let (per_broker, lag_ms) = lag_poll(&kafka, &ns).await?;
    let most = per_broker.values().copied().max().unwrap_or(0);
    progress(format!("one lag poll over 1000 partitions and 100 groups: {per_broker:?} requests by broker, {lag_ms:.1} ms"));

    progress("cleaning up");
    common::delete_namespace(&client, &ns, Duration::from_secs(120)).await?;
    drop(op);
    Ok(json!({
        "records": count,
        "processor_records_per_second": processor_rate.round(),
        "raw_records_per_second": raw.round(),
        "ratio_vs_raw": ((processor_rate / raw) * 100.0).round() / 100.0,
        "end_to_end_seconds": (end_to_end * 10.0).round() / 10.0,
        "kafka_streams_records_per_second": streams_rate.round(),
        "kafka_streams_ratio_vs_raw": ((streams_rate / raw) * 100.0).round() / 100.0,
        "lag_poll_requests": per_broker.values().sum::<u64>(),
        "lag_poll_requests_per_broker_max": most,
        "lag_poll_ms": (lag_ms * 10.0).round() / 10.0,
    }))
}

/// The Kafka Streams example replaying the same input through the operator
/// (committing every second here, so its progress can be read): its input
/// consumption rate, from its group's committed offsets, between its first
/// commit and the commit that reaches the end. Each record also passes
/// through its repartition topic and state store.
async fn kafka_streams_replay(client: &kube::Client, kafka: &WireKafka, ns: &str, input: &str, count: u64) -> anyhow::Result<f64> {
    progress("Kafka Streams example: replaying the same input through the operator");
    let processors: Api<Processor> = Api::namespaced(client.clone(), ns);
    processors
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "streams"}, "spec": {
                "inputs": ["events"], "replicas": 1,
                "template": {
                    "image": "ghcr.io/kappa-dev/kappa-streams-example:bench",
                    "args": ["--logic", "sum", "--commit-interval-ms", "1000"],
                    "env": [{"name": "JAVA_OPTS", "value": "-Xmx512m -XX:+UseParallelGC"}]
                },
                "view": {"partitions": PARTITIONS}
            }}))?,
        )
        .await?;
    let group = common::wait_until_some("the Kafka Streams version", Duration::from_secs(60), || async {
        let Some(v) = processors.get("streams").await?.status.and_then(|s| s.active_version) else { return Ok(None) };
        Ok(Some(common::consumer_group(client, ns, "streams", &v).await?))
    })
    .await?;
    let committed = || async {
        let c = kafka.committed(std::slice::from_ref(&group)).await?.remove(&group);
        let c = c.context("no answer for the group")?.map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok::<i64, anyhow::Error>(c.iter().filter(|((t, _), _)| t == input).map(|(_, o)| *o).sum())
    };
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut first: Option<(Instant, i64)> = None;
    loop {
        anyhow::ensure!(Instant::now() < deadline, "the Kafka Streams replay did not finish in 15 minutes");
        let done = committed().await?;
        let now = Instant::now();
        if done > 0 && first.is_none() {
            first = Some((now, done));
        }
        if done as u64 >= count {
            let (t0, n0) = first.expect("set above");
            let secs = now.duration_since(t0).as_secs_f64();
            anyhow::ensure!(secs > 0.0, "the replay finished before a second commit: use more records");
            return Ok((done - n0) as f64 / secs);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads `count` records from the beginning as fast as librdkafka allows;
/// records per second from the first record to the last.
pub(crate) fn raw_read(bootstrap: &str, topic: &str, count: u64) -> anyhow::Result<f64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("bench-raw-{}-{}", std::process::id(), Instant::now().elapsed().as_nanos()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("fetch.max.bytes", "52428800")
        // The reference processor's prefetch settings, the fastest found
        // for both: a short queue that stays in the CPU cache, and no 1 s
        // pause when it is full.
        .set("queued.max.messages.kbytes", "16384")
        .set("queued.min.messages", "20000")
        .set("fetch.queue.backoff.ms", "10")
        .create()?;
    consumer.subscribe(&[topic])?;
    let mut read = 0u64;
    let mut bytes = 0usize;
    let mut start = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    while read < count {
        anyhow::ensure!(Instant::now() < deadline, "raw read did not finish");
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m?;
            start.get_or_insert_with(Instant::now);
            bytes += m.payload().map_or(0, |p| p.len());
            read += 1;
        }
    }
    let secs = start.map_or(1.0, |s| s.elapsed().as_secs_f64().max(0.001));
    let _ = bytes;
    Ok(count as f64 / secs)
}

/// One lag poll as the operator does it, over a topic of 1,000 partitions
/// and 100 groups that have committed on all of them: a first poll learns
/// where partitions lead and groups are coordinated, the second is measured
/// (requests per broker, the most any broker got, and the time).
async fn lag_poll(kafka: &WireKafka, ns: &str) -> anyhow::Result<(BTreeMap<String, u64>, f64)> {
    let topic = format!("{ns}-wide");
    kafka.create_topics(&[NewTopic { name: topic.clone(), partitions: 1000, replication_factor: 1, config: Default::default() }]).await?;
    let groups: Vec<String> = (0..100).map(|i| format!("{ns}-wide-group-{i}")).collect();
    common::wait_until("leaders for 1000 partitions", Duration::from_secs(60), || async {
        Ok(kafka.log_offsets(std::slice::from_ref(&topic)).await.is_ok_and(|o| o.len() == 1000))
    })
    .await?;
    let bootstrap = common::env("KAPPA_KAFKA_BOOTSTRAP")?;
    let (t, gs) = (topic.clone(), groups.clone());
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..1000 {
            tpl.add_partition_offset(&t, p, rdkafka::Offset::Offset(0))?;
        }
        for g in &gs {
            let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &bootstrap).set("group.id", g).create()?;
            consumer.commit(&tpl, rdkafka::consumer::CommitMode::Sync)?;
        }
        Ok(())
    })
    .await??;
    let poll = || async {
        // What the operator's progress monitor does per poll.
        let committed = kafka.committed(&groups).await?;
        let offsets = kafka.partition_offsets(&lag::topics_to_read([&topic], &committed)).await?;
        anyhow::Ok((committed, offsets))
    };
    poll().await?;
    let before = kafka.requests_by_broker();
    let start = Instant::now();
    let (committed, offsets) = poll().await?;
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    let per_broker: BTreeMap<String, u64> =
        kafka.requests_by_broker().into_iter().map(|(b, n)| (b.clone(), n - before.get(&b).copied().unwrap_or(0))).collect();
    for g in &groups {
        let (reading, f) = lag::reading(k8s_openapi::jiff::Timestamp::now(), std::slice::from_ref(&topic), g, &offsets, &committed)
            .map_err(anyhow::Error::msg)?;
        anyhow::ensure!(reading.ends.len() == 1000, "expected 1000 partitions, got {}", reading.ends.len());
        anyhow::ensure!(f.lag == 0, "unexpected lag {}", f.lag);
    }
    kafka.delete_groups(&groups).await?;
    kafka.delete_topics(&[topic]).await?;
    Ok((per_broker, ms))
}

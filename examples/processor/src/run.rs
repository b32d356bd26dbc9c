//! `run`: the processor itself, under the Kappa contract.
//!
//! It consumes the inputs under its consumer group from the earliest offset,
//! keeps each key's aggregate, writes changed aggregates to the (compacted)
//! view topic, and commits the consumed offsets only after those writes are
//! flushed. On every assignment it rebuilds its state from the view, which
//! holds every key's aggregate as of the committed offsets (or later: see
//! `logic::Agg::apply` for why that is still exact), before it applies a
//! record of the new assignment. When partitions are revoked, the batch in
//! progress is dropped, neither written nor committed: their next owner may
//! already have rebuilt its state, and a late write would overwrite newer
//! aggregates.
//!
//! Two threads share the work: this one consumes, writes and commits; the
//! aggregator (`aggregate`) parses and applies the records, in order.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use rdkafka::{
    ClientContext, Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance},
    producer::{BaseRecord, Producer},
};

use crate::{
    STOP,
    aggregate::{Aggregator, Chunk, Work},
    http::Stats,
    kafka,
    logic::{self, Agg, Logic},
};

pub struct Contract {
    pub bootstrap: String,
    pub inputs: Vec<String>,
    pub output: String,
    pub group: String,
    /// `KAPPA_CLIENT_ID`: the id a replay quota is set on (the group's name
    /// when an older operator does not set it).
    pub client_id: String,
    pub version: String,
    pub start_from: String,
}

impl Contract {
    pub fn from_env() -> Result<Contract, String> {
        let var = |k: &str| std::env::var(k).map_err(|_| format!("{k} is not set (the Kappa processor contract)"));
        Ok(Contract {
            bootstrap: var("KAPPA_BOOTSTRAP_SERVERS")?,
            inputs: var("KAPPA_INPUT_TOPICS")?.split(',').map(str::to_string).filter(|s| !s.is_empty()).collect(),
            output: var("KAPPA_OUTPUT_TOPIC")?,
            group: var("KAPPA_CONSUMER_GROUP")?,
            client_id: std::env::var("KAPPA_CLIENT_ID").or_else(|_| var("KAPPA_CONSUMER_GROUP"))?,
            version: var("KAPPA_VIEW_VERSION")?,
            start_from: std::env::var("KAPPA_START_FROM").unwrap_or_else(|_| "earliest".into()),
        })
    }
}

/// Notes rebalances (they happen inside `poll`) for the loop to act on
/// before it applies the next record.
#[derive(Default)]
struct Rebalances {
    revoked: AtomicBool,
    assigned: AtomicBool,
}

impl ClientContext for Rebalances {}

impl ConsumerContext for Rebalances {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if matches!(rebalance, Rebalance::Revoke(_)) {
            self.revoked.store(true, Ordering::SeqCst);
        }
    }
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if matches!(rebalance, Rebalance::Assign(_)) {
            self.assigned.store(true, Ordering::SeqCst);
        }
    }
}

pub type State = Arc<Mutex<logic::FastMap<Agg>>>;

/// An input partition this process has read from.
struct Part {
    topic: String,
    partition: i32,
    /// `topic/partition`, the aggregates' key for it.
    source: Arc<str>,
    /// The offset to commit, if records were read since the last commit.
    next: Option<i64>,
}

impl Part {
    fn new(topic: &str, partition: i32) -> Part {
        Part { topic: topic.into(), partition, source: format!("{topic}/{partition}").into(), next: None }
    }
}

/// A batch (records applied, then their keys written to the view, then
/// their offsets committed) ends at this many records, after the batch
/// wait, or when the inputs have nothing more. Each batch end writes every
/// key it changed and waits for the broker, so in a replay fewer, larger
/// batches are faster.
const BATCH_MAX: usize = 1_000_000;
const BATCH_WAIT: Duration = Duration::from_millis(1000);

/// When a batch ends, and so when offsets are committed.
#[derive(Clone, Copy, Debug)]
pub struct Cadence {
    /// The longest a batch lasts.
    pub wait: Duration,
    /// A batch also ends as soon as the inputs have nothing more.
    pub when_drained: bool,
}

impl Cadence {
    /// Commit promptly: at most every second, and whenever caught up.
    pub const PROMPT: Cadence = Cadence { wait: BATCH_WAIT, when_drained: true };

    /// Commit only every `seconds` (as Kafka Streams does every 30 s by default).
    pub fn every(seconds: u64) -> Cadence {
        Cadence { wait: Duration::from_secs(seconds), when_drained: false }
    }
}

/// What the processor computes, and when it commits.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub logic: Logic,
    pub cadence: Cadence,
}

/// How long to wait between attempts while Kafka cannot be reached.
const RETRY: Duration = Duration::from_secs(2);

pub fn run(c: &Contract, o: Options, field: &str, state: State, stats: Arc<Stats>) -> Result<(), String> {
    let logic = o.logic;
    let consumer: BaseConsumer<Rebalances> = kafka::config(&c.bootstrap)
        .set("group.id", &c.group)
        .set("client.id", &c.client_id)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", &c.start_from)
        .set("enable.partition.eof", "false")
        .set("fetch.max.bytes", "52428800")
        // A full prefetch queue pauses fetching for this long (default 1 s):
        // the queue drains in a fraction of that, then the loop starved.
        .set("fetch.queue.backoff.ms", "10")
        // A replica that dies hard hands its partitions over in 10 s, not 45.
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "2000")
        // A short prefetch queue: its messages are still in the CPU cache
        // when they are polled (a deep one cost about 30% more CPU per record).
        .set("queued.max.messages.kbytes", "16384")
        .set("queued.min.messages", "20000")
        // Eager rebalancing: every partition is revoked before any is
        // assigned, so a revoke drops the whole batch.
        .set("partition.assignment.strategy", "range")
        .create_with_context(Rebalances::default())
        .map_err(|e| e.to_string())?;
    let producer: kafka::CheckedProducer = kafka::config(&c.bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        // A broker outage is waited out, however long: the batch is
        // committed once its view writes are delivered, not dropped.
        .set("message.timeout.ms", "0")
        .create_with_context(Default::default())
        .map_err(|e| e.to_string())?;
    let inputs: Vec<&str> = c.inputs.iter().map(String::as_str).collect();
    consumer.subscribe(&inputs).map_err(|e| e.to_string())?;
    eprintln!("kappa-processor {}: {} -> {} (group {}, logic {})", c.version, c.inputs.join(","), c.output, c.group, logic.name());

    let aggregator = Aggregator::start(logic, field, state.clone(), stats.clone());
    let result = consume(c, &consumer, &producer, &aggregator, o, &state, &stats);
    aggregator.stop();
    result?;
    eprintln!(
        "kappa-processor {}: stopping ({} records, {} rejected)",
        c.version,
        stats.records.load(Ordering::Relaxed),
        stats.rejected.load(Ordering::Relaxed)
    );
    producer.flush(Duration::from_secs(30)).map_err(|e| e.to_string())?;
    Ok(())
}

/// The consuming thread: polls the inputs, hands the records to the
/// aggregator, and at each batch end writes the changed keys to the view
/// and then commits.
fn consume(
    c: &Contract,
    consumer: &BaseConsumer<Rebalances>,
    producer: &kafka::CheckedProducer,
    aggregator: &Aggregator,
    Options { logic, cadence }: Options,
    state: &State,
    stats: &Stats,
) -> Result<(), String> {
    let mut parts: Vec<Part> = Vec::new();
    let mut outage = Outage::default();
    let mut chunk = Chunk::default();
    let mut value = Vec::new();
    // The batch's record timestamps, for the latency histogram.
    let mut stamps: Vec<i64> = Vec::new();
    let single_input = c.inputs.len() == 1;
    while !STOP.load(Ordering::SeqCst) {
        let started = Instant::now();
        let mut n = 0;
        // The clock is read every 256 polls: it showed in profiles.
        let mut polls = 0u32;
        while n < BATCH_MAX && !STOP.load(Ordering::SeqCst) {
            polls = polls.wrapping_add(1);
            if polls.is_multiple_of(256) && started.elapsed() >= cadence.wait {
                break;
            }
            let polled = consumer.poll(Duration::from_millis(50));
            if consumer.context().revoked.swap(false, Ordering::SeqCst) {
                chunk = Chunk::default();
                stamps.clear();
                aggregator.send(Work::Revoked)?;
                parts.clear();
                eprintln!("partitions revoked: the batch in progress is dropped, its records will be read again");
            }
            if consumer.context().assigned.swap(false, Ordering::SeqCst) {
                aggregator.send_chunk(&mut chunk)?;
                aggregator.send(Work::Restored(restore_when_possible(c, stats)?))?;
            }
            let Some(msg) = polled else {
                // Caught up: write and commit what the batch has now,
                // not when the batch wait is over.
                if (n > 0 && cadence.when_drained) || started.elapsed() >= cadence.wait {
                    break;
                }
                continue;
            };
            let m = match msg {
                Ok(m) => m,
                // Brokers away, a leader moving, a topic briefly gone:
                // librdkafka reconnects and retries by itself.
                Err(e) if !matches!(e, rdkafka::error::KafkaError::MessageConsumptionFatal(_)) => {
                    outage.note(&e);
                    continue;
                }
                Err(e) => return Err(format!("consuming: {e}")),
            };
            n += 1;
            // Per-partition bookkeeping without an allocation per record.
            // With one input the partition alone says which: reading the
            // topic name checks UTF-8 and compares it, per record.
            let i = match parts.iter().position(|p| p.partition == m.partition() && (single_input || p.topic.as_str() == m.topic())) {
                Some(i) => i,
                None => {
                    parts.push(Part::new(m.topic(), m.partition()));
                    parts.len() - 1
                }
            };
            parts[i].next = Some(m.offset() + 1);
            if let Some(t) = m.timestamp().to_millis() {
                stamps.push(t);
            }
            chunk.push(&parts[i].source, m.offset(), m.key(), m.payload());
            if chunk.is_full() {
                aggregator.send_chunk(&mut chunk)?;
            }
        }
        aggregator.send_chunk(&mut chunk)?;
        if parts.iter().all(|p| p.next.is_none()) {
            continue;
        }
        let dirty = aggregator.end_batch()?;
        {
            let mut st = state.lock().expect("state lock");
            for key in dirty {
                let Some(agg) = st.get_mut(&key) else { continue };
                agg.dirty = false;
                agg.write_json(logic, &c.version, &mut value);
                kafka::send(producer, BaseRecord::to(&c.output).key(key.as_str()).payload(value.as_slice()))
                    .map_err(|e| format!("writing the view: {e}"))?;
                stats.view_writes.fetch_add(1, Ordering::Relaxed);
            }
        }
        if parts.iter().all(|p| p.next.is_none()) {
            continue;
        }
        // The view first, then the offsets: never commit what is not written.
        // A view write that failed for good stops the processor without
        // committing, and the next start redoes the batch.
        kafka::wait_delivered(producer, None, "the view")?;
        stats.latency.observe(now_ms(), &stamps);
        stamps.clear();
        let mut tpl = TopicPartitionList::new();
        for p in &mut parts {
            if let Some(o) = p.next.take() {
                tpl.add_partition_offset(&p.topic, p.partition, Offset::Offset(o)).map_err(|e| e.to_string())?;
            }
        }
        match consumer.commit(&tpl, CommitMode::Sync) {
            Ok(()) => {
                stats.commits.fetch_add(1, Ordering::Relaxed);
            }
            // Lost the partitions in a rebalance: the new owner resumes from
            // the last commit and the view makes replays harmless.
            Err(e) => eprintln!("commit failed (will be redone by the partitions' next owner): {e}"),
        }
    }
    Ok(())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Says (once a minute at most) why consuming is waiting, instead of exiting.
#[derive(Default)]
struct Outage {
    last: Option<Instant>,
}

impl Outage {
    fn note(&mut self, e: &rdkafka::error::KafkaError) {
        if self.last.is_none_or(|l| l.elapsed() > Duration::from_secs(60)) {
            eprintln!("waiting for Kafka (librdkafka retries by itself): {e}");
            self.last = Some(Instant::now());
        }
    }
}

/// The view as of now, retried while Kafka cannot be read.
fn restore_when_possible(c: &Contract, stats: &Stats) -> Result<logic::FastMap<Agg>, String> {
    loop {
        match restore(c, stats) {
            Ok(state) => return Ok(state),
            Err(e) if !STOP.load(Ordering::SeqCst) => {
                eprintln!("restoring the view failed, retrying in {RETRY:?}: {e}");
                std::thread::sleep(RETRY);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Every key's aggregate, rebuilt from the view topic.
fn restore(c: &Contract, stats: &Stats) -> Result<logic::FastMap<Agg>, String> {
    let started = Instant::now();
    let mut fresh: logic::FastMap<Agg> = Default::default();
    let read = kafka::read_all(&c.bootstrap, std::slice::from_ref(&c.output), |_, _, _, key, payload| {
        let (Some(key), Some(payload)) = (key, payload) else { return };
        if let (Ok(k), Ok(v)) = (std::str::from_utf8(key), serde_json::from_slice::<serde_json::Value>(payload)) {
            fresh.insert(k.into(), Agg::from_json(&v));
        }
    })?;
    eprintln!("restored {} keys from {} view records of {} in {:?}", fresh.len(), read, c.output, started.elapsed());
    stats.restores.fetch_add(1, Ordering::Relaxed);
    Ok(fresh)
}

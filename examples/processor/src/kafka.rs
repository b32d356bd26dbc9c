//! Kafka settings from the processor contract, and reading a topic whole.

use std::{
    collections::HashMap,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use rdkafka::{
    ClientConfig, ClientContext, Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
    error::KafkaError,
    producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer},
    types::RDKafkaErrorCode,
};

/// A producer that remembers failed deliveries: `flush` returning only
/// says nothing is in flight any more, not that everything arrived.
pub type CheckedProducer = ThreadedProducer<Deliveries>;

#[derive(Default)]
pub struct Deliveries {
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            self.first_error.lock().expect("first_error lock").get_or_insert_with(|| e.to_string());
        }
    }
}

impl Deliveries {
    /// Err naming how many records failed since the start, and the first reason.
    fn check(&self, what: &str) -> Result<(), String> {
        match self.failed.load(Ordering::Relaxed) {
            0 => Ok(()),
            n => {
                let first = self.first_error.lock().expect("first_error lock").clone().unwrap_or_default();
                Err(format!("{n} record(s) of {what} were not delivered; the first failed with: {first}"))
            }
        }
    }
}

/// Sends one record, waiting while the producer's queue is full.
pub fn send(producer: &CheckedProducer, mut record: BaseRecord<'_, str, [u8]>) -> Result<(), KafkaError> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((e, r)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                record = r;
                std::thread::sleep(Duration::from_millis(2));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Waits until every record sent is acknowledged and its delivery report
/// served, then fails if any of `what` was not delivered. Without a
/// timeout it waits as long as the producer retries (until asked to stop).
/// A ThreadedProducer's own `flush` waits in 100 ms polls of a queue its
/// background thread drains, so it took 100 ms per batch.
pub fn wait_delivered(producer: &CheckedProducer, timeout: Option<Duration>, what: &str) -> Result<(), String> {
    // A zero-timeout flush wakes the brokers to send what linger.ms holds.
    let _ = producer.flush(Duration::ZERO);
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let left = producer.in_flight_count();
        if left == 0 {
            return producer.context().check(what);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(format!("{left} record(s) of {what} not acknowledged within {timeout:?}"));
        }
        if crate::STOP.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(format!("stopping with {left} record(s) of {what} not acknowledged"));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A client config from the contract's variables: `KAPPA_BOOTSTRAP_SERVERS`
/// and the security settings the operator derives from the KafkaCluster.
pub fn config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    for (var, key) in [
        ("KAPPA_SECURITY_PROTOCOL", "security.protocol"),
        ("KAPPA_SASL_MECHANISM", "sasl.mechanism"),
        ("KAPPA_SASL_USERNAME", "sasl.username"),
        ("KAPPA_SASL_PASSWORD", "sasl.password"),
        ("KAPPA_SSL_CA_LOCATION", "ssl.ca.location"),
        ("KAPPA_SSL_CERTIFICATE_LOCATION", "ssl.certificate.location"),
        ("KAPPA_SSL_KEY_LOCATION", "ssl.key.location"),
    ] {
        if let Some(v) = env(var) {
            c.set(key, v);
        }
    }
    c
}

/// Every record of `topics` from the beginning up to their ends as of now,
/// in offset order per partition, passed to `f(topic, partition, offset, key, payload)`.
pub fn read_all(
    bootstrap: &str,
    topics: &[String],
    mut f: impl FnMut(&str, i32, i64, Option<&[u8]>, Option<&[u8]>),
) -> Result<u64, String> {
    let consumer: BaseConsumer = config(bootstrap)
        .set("group.id", format!("kappa-read-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("isolation.level", "read_committed")
        .create()
        .map_err(|e| e.to_string())?;
    let timeout = Duration::from_secs(30);
    let mut tpl = TopicPartitionList::new();
    let mut ends: HashMap<(String, i32), i64> = HashMap::new();
    for t in topics {
        let meta = consumer.fetch_metadata(Some(t), timeout).map_err(|e| format!("metadata of {t}: {e}"))?;
        let topic = meta.topics().first().ok_or_else(|| format!("topic {t} not found"))?;
        if topic.error().is_some() || topic.partitions().is_empty() {
            return Err(format!("topic {t} not found"));
        }
        for p in topic.partitions() {
            let (low, high) = consumer.fetch_watermarks(t, p.id(), timeout).map_err(|e| format!("offsets of {t}/{}: {e}", p.id()))?;
            if high > low {
                ends.insert((t.clone(), p.id()), high);
                tpl.add_partition_offset(t, p.id(), Offset::Beginning).map_err(|e| e.to_string())?;
            }
        }
    }
    if ends.is_empty() {
        return Ok(0);
    }
    consumer.assign(&tpl).map_err(|e| e.to_string())?;
    let mut read = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(600);
    while !ends.is_empty() {
        if std::time::Instant::now() > deadline {
            return Err(format!("reading {topics:?} did not finish within 10 minutes"));
        }
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                let k = (m.topic().to_string(), m.partition());
                if let Some(end) = ends.get(&k).copied() {
                    f(m.topic(), m.partition(), m.offset(), m.key(), m.payload());
                    read += 1;
                    // Transaction markers take offsets too: stop at the end as of the start.
                    if m.offset() + 1 >= end {
                        ends.remove(&k);
                    }
                }
            }
            // A broker away or a leader moving: librdkafka retries by itself.
            Some(Err(e)) if !matches!(e, KafkaError::MessageConsumptionFatal(_)) => {}
            Some(Err(e)) => return Err(e.to_string()),
            None => {
                // Nothing more to read below the end (e.g. an aborted tail).
                let positions = consumer.position().map_err(|e| e.to_string())?;
                for el in positions.elements() {
                    if let Offset::Offset(o) = el.offset() {
                        let k = (el.topic().to_string(), el.partition());
                        if ends.get(&k).is_some_and(|end| o >= *end) {
                            ends.remove(&k);
                        }
                    }
                }
            }
        }
    }
    Ok(read)
}

//! Reading a topic's records with Fetch, for `kubectl kappa views`: the
//! operator itself never reads records.
//!
//! Reads are `read_committed`, as a processor's readers see a view: records
//! of aborted transactions and control markers are left out. Batches may
//! be compressed with any codec Kafka has.

use bytes::{Buf, Bytes};
use kafka_protocol::{
    messages::{
        ApiKey, BrokerId, FetchRequest, TopicName,
        fetch_request::{FetchPartition, FetchTopic},
        fetch_response::AbortedTransaction,
    },
    records::RecordBatchDecoder,
};

use super::{KafkaError, Result, WireKafka, item_error, s};

/// One record of a topic, as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Bytes>,
    /// None: a tombstone.
    pub value: Option<Bytes>,
}

/// What [`WireKafka::read_topic`] read.
#[derive(Debug, Default)]
pub struct TopicRead {
    /// Per partition in offset order, partitions in order.
    pub records: Vec<LogRecord>,
    /// The read stopped at the record limit before the end of the log.
    pub truncated: bool,
}

/// Bytes asked for per Fetch; Kafka returns at least one whole batch.
const FETCH_BYTES: i32 = 4 << 20;

impl WireKafka {
    /// The committed records of `topic` from each partition's log start
    /// to its end as of the call, at most `limit` records in all.
    pub async fn read_topic(&self, topic: &str, limit: usize) -> Result<TopicRead> {
        let names = [topic.to_string()];
        let bounds = super::Kafka::log_offsets(self, &names).await?;
        let layout = self.layout(&names, false).await?;
        let mut read = TopicRead::default();
        for ((t, partition), (start, end)) in bounds {
            let leader = layout.by_leader.iter().find(|(_, tps)| tps.contains(&(t.clone(), partition))).map(|(l, _)| *l);
            let addr = leader.and_then(|l| self.broker_addr(l)).ok_or_else(|| KafkaError::Api {
                api: "Metadata",
                code: "LEADER_NOT_AVAILABLE".into(),
                message: format!("{t}/{partition} has no leader now"),
            })?;
            let mut offset = start;
            while offset < end {
                if read.records.len() >= limit {
                    read.truncated = true;
                    return Ok(read);
                }
                let resp = self.call(&addr, ApiKey::Fetch, |_| fetch_request(&t, partition, offset)).await?;
                let data = resp.responses.into_iter().flat_map(|r| r.partitions).find(|p| p.partition_index == partition);
                let Some(data) = data else {
                    return Err(KafkaError::Protocol { api: "Fetch", reason: format!("no answer for {t}/{partition}") });
                };
                if let Some(e) = item_error(data.error_code, None) {
                    return Err(KafkaError::Api { api: "Fetch", code: e.name(), message: format!("{t}/{partition} at offset {offset}") });
                }
                let batch = decode(partition, offset, data.records.unwrap_or_default(), data.aborted_transactions.unwrap_or_default())
                    .map_err(|reason| KafkaError::Protocol { api: "Fetch", reason: format!("{t}/{partition}: {reason}") })?;
                match batch.next_offset {
                    Some(next) => offset = next,
                    // Nothing more is committed yet (an open transaction
                    // holds the last stable offset below `end`).
                    None => break,
                }
                let room = limit - read.records.len();
                read.truncated |= batch.records.len() > room;
                read.records.extend(batch.records.into_iter().take(room));
            }
        }
        Ok(read)
    }
}

fn fetch_request(topic: &str, partition: i32, offset: i64) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(FETCH_BYTES)
        .with_isolation_level(1)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default().with_topic(TopicName(s(topic))).with_partitions(vec![
            FetchPartition::default()
                .with_partition(partition)
                .with_current_leader_epoch(-1)
                .with_fetch_offset(offset)
                .with_log_start_offset(-1)
                .with_partition_max_bytes(FETCH_BYTES),
        ])])
}

/// The records one Fetch answer holds from `from` on, and the offset to
/// fetch next (None when the answer held no batch).
#[derive(Debug, Default, PartialEq)]
struct Decoded {
    records: Vec<LogRecord>,
    next_offset: Option<i64>,
}

/// Splits the answer into whole batches (the last may be cut short by the
/// size limit), decodes them, and drops control batches, records of
/// aborted transactions and records before `from` (a batch is returned
/// whole). A batch that compaction emptied still moves the offset on.
fn decode(partition: i32, from: i64, mut buf: Bytes, mut aborted: Vec<AbortedTransaction>) -> std::result::Result<Decoded, String> {
    aborted.sort_by_key(|a| a.first_offset);
    let mut aborted = aborted.into_iter().peekable();
    let mut aborting: Vec<i64> = Vec::new();
    let mut out = Decoded::default();
    // Batch header: baseOffset i64, batchLength i32, leaderEpoch i32,
    // magic i8, crc u32, attributes i16, lastOffsetDelta i32.
    while buf.len() >= 27 {
        let length = i32::from_be_bytes(buf[8..12].try_into().expect("4 bytes"));
        let size = 12 + usize::try_from(length).map_err(|_| format!("a batch of length {length}"))?;
        if buf.len() < size {
            break;
        }
        let mut batch = buf.split_to(size);
        let base = i64::from_be_bytes(batch[0..8].try_into().expect("8 bytes"));
        let last = base + i64::from(i32::from_be_bytes(batch[23..27].try_into().expect("4 bytes")));
        out.next_offset = Some(last + 1);
        let set = RecordBatchDecoder::decode(&mut batch).map_err(|e| format!("a record batch at offset {base}: {e}"))?;
        let Some(first) = set.records.first() else { continue };
        let (producer, transactional, control) = (first.producer_id, first.transactional, first.control);
        if transactional {
            while let Some(a) = aborted.next_if(|a| a.first_offset <= last) {
                aborting.push(a.producer_id.0);
            }
        }
        if control {
            // An abort marker (key: version, type 0) ends that transaction.
            let abort = first.key.as_ref().is_some_and(|k| k.len() >= 4 && k.slice(2..4).get_i16() == 0);
            if abort {
                aborting.retain(|p| *p != producer);
            }
            continue;
        }
        if transactional && aborting.contains(&producer) {
            continue;
        }
        out.records.extend(set.records.into_iter().filter(|r| r.offset >= from).map(|r| LogRecord {
            partition,
            offset: r.offset,
            key: r.key,
            value: r.value,
        }));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use kafka_protocol::{
        messages::ProducerId,
        records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType},
    };

    use super::*;

    fn record(offset: i64, key: &str, value: Option<&str>, producer: i64, transactional: bool, control: bool) -> Record {
        Record {
            transactional,
            control,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: producer,
            producer_epoch: 0,
            timestamp_type: TimestampType::Creation,
            offset,
            sequence: if producer < 0 { -1 } else { offset as i32 },
            timestamp: 0,
            key: Some(Bytes::copy_from_slice(key.as_bytes())),
            value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
            headers: Default::default(),
        }
    }

    fn batch(buf: &mut BytesMut, records: &[Record], compression: Compression) {
        RecordBatchEncoder::encode(buf, records, &RecordEncodeOptions { version: 2, compression }).unwrap();
    }

    fn marker(offset: i64, producer: i64, abort: bool) -> Record {
        let mut r = record(offset, "", None, producer, true, true);
        r.key = Some(Bytes::from(vec![0, 0, 0, if abort { 0 } else { 1 }]));
        r
    }

    fn keys(d: &Decoded) -> Vec<(i64, &str)> {
        d.records.iter().map(|r| (r.offset, std::str::from_utf8(r.key.as_deref().unwrap()).unwrap())).collect()
    }

    #[test]
    fn whole_batches_are_read_from_the_offset_asked_and_a_cut_batch_waits_for_the_next_fetch() {
        let mut buf = BytesMut::new();
        batch(&mut buf, &[record(0, "a", Some("1"), -1, false, false), record(1, "b", Some("2"), -1, false, false)], Compression::None);
        batch(&mut buf, &[record(2, "c", Some("3"), -1, false, false)], Compression::Gzip);
        let whole = buf.len();
        batch(&mut buf, &[record(3, "d", Some("4"), -1, false, false)], Compression::None);
        let mut bytes = buf.freeze();
        bytes.truncate(whole + 20);
        let d = decode(0, 1, bytes, vec![]).unwrap();
        assert_eq!(keys(&d), vec![(1, "b"), (2, "c")]);
        assert_eq!(d.next_offset, Some(3));
        assert_eq!(decode(0, 0, Bytes::new(), vec![]).unwrap(), Decoded::default());
    }

    #[test]
    fn aborted_transactions_and_markers_are_left_out() {
        let mut buf = BytesMut::new();
        batch(&mut buf, &[record(0, "kept", Some("1"), 7, true, false)], Compression::None);
        batch(&mut buf, &[marker(1, 7, false)], Compression::None);
        batch(&mut buf, &[record(2, "aborted", Some("2"), 8, true, false)], Compression::Snappy);
        batch(&mut buf, &[record(3, "plain", Some("3"), -1, false, false)], Compression::None);
        batch(&mut buf, &[marker(4, 8, true)], Compression::None);
        batch(&mut buf, &[record(5, "later", Some("4"), 8, true, false)], Compression::None);
        let aborted = vec![AbortedTransaction::default().with_producer_id(ProducerId(8)).with_first_offset(2)];
        let d = decode(0, 0, buf.freeze(), aborted).unwrap();
        assert_eq!(keys(&d), vec![(0, "kept"), (3, "plain"), (5, "later")]);
        assert_eq!(d.next_offset, Some(6));
    }
}

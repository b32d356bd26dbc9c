//! The aggregating half of `run`, on a thread of its own: it parses the
//! records the consuming thread hands over in chunks and applies them to the
//! state. Consuming (librdkafka's poll and freeing each message) and
//! aggregating (JSON and the key's aggregate) cost about the same per
//! record, so on two threads a replay runs at nearly the rate of a consumer
//! that does nothing with its records.
//!
//! Everything arrives on one channel, in the consumer's order: records,
//! revocations, restored states and batch ends, so the aggregator sees
//! exactly what a single thread would have done, in the same order.

use std::{
    ops::Range,
    sync::{
        Arc,
        atomic::Ordering,
        mpsc::{Receiver, SyncSender, sync_channel},
    },
    thread::JoinHandle,
};

use compact_str::CompactString;

use crate::{
    http::Stats,
    logic::{self, Agg, FastMap, Logic},
    run::State,
};

/// Records per chunk: large enough that the hand-over costs nothing per
/// record, small enough that the chunks in flight stay in the cache.
const CHUNK_RECORDS: usize = 2048;
/// Chunks the consumer may run ahead of the aggregator.
const CHUNKS_IN_FLIGHT: usize = 4;

/// Records copied out of librdkafka's messages (which cannot leave the
/// consuming thread) into one buffer.
#[derive(Default)]
pub struct Chunk {
    records: Vec<Record>,
    bytes: Vec<u8>,
    /// The `topic/partition` sources of the records, by index.
    sources: Vec<Arc<str>>,
}

struct Record {
    source: u32,
    offset: i64,
    key: Option<Range<u32>>,
    payload: Option<Range<u32>>,
}

impl Chunk {
    pub fn push(&mut self, source: &Arc<str>, offset: i64, key: Option<&[u8]>, payload: Option<&[u8]>) {
        let source = match self.sources.iter().rposition(|s| Arc::ptr_eq(s, source)) {
            Some(i) => i,
            None => {
                self.sources.push(source.clone());
                self.sources.len() - 1
            }
        } as u32;
        let key = key.map(|k| self.copy(k));
        let payload = payload.map(|p| self.copy(p));
        self.records.push(Record { source, offset, key, payload });
    }

    fn copy(&mut self, b: &[u8]) -> Range<u32> {
        let start = self.bytes.len() as u32;
        self.bytes.extend_from_slice(b);
        start..self.bytes.len() as u32
    }

    pub fn is_full(&self) -> bool {
        self.records.len() >= CHUNK_RECORDS
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    fn clear(&mut self) {
        self.records.clear();
        self.bytes.clear();
        self.sources.clear();
    }
}

pub enum Work {
    Records(Chunk),
    /// The partitions were revoked: the batch in progress is dropped.
    Revoked,
    /// A new assignment: the state as rebuilt from the view.
    Restored(FastMap<Agg>),
    /// The batch ends: answers with the keys it changed, once every record
    /// sent before it is applied.
    EndBatch(SyncSender<Vec<CompactString>>),
}

/// The consumer's side: sends work and reuses the chunks the aggregator
/// is done with.
pub struct Aggregator {
    work: SyncSender<Work>,
    empty: Receiver<Chunk>,
    thread: JoinHandle<()>,
}

impl Aggregator {
    pub fn start(logic: Logic, field: &str, state: State, stats: Arc<Stats>) -> Aggregator {
        let (work, inbox) = sync_channel(CHUNKS_IN_FLIGHT);
        let (recycle, empty) = sync_channel(CHUNKS_IN_FLIGHT + 1);
        let field = field.to_string();
        let thread = std::thread::Builder::new()
            .name("aggregate".into())
            .spawn(move || aggregate(inbox, recycle, logic, &field, &state, &stats))
            .expect("spawning the aggregating thread");
        Aggregator { work, empty, thread }
    }

    pub fn send(&self, w: Work) -> Result<(), String> {
        self.work.send(w).map_err(|_| "the aggregating thread stopped".to_string())
    }

    /// Sends `chunk` if it has records, leaving an empty one in its place.
    pub fn send_chunk(&self, chunk: &mut Chunk) -> Result<(), String> {
        if chunk.is_empty() {
            return Ok(());
        }
        let next = self.empty.try_recv().unwrap_or_default();
        self.send(Work::Records(std::mem::replace(chunk, next)))
    }

    /// The keys changed since the last batch end, once all sent is applied.
    pub fn end_batch(&self) -> Result<Vec<CompactString>, String> {
        let (reply, answer) = sync_channel(1);
        self.send(Work::EndBatch(reply))?;
        answer.recv().map_err(|_| "the aggregating thread stopped".to_string())
    }

    pub fn stop(self) {
        drop(self.work);
        let _ = self.thread.join();
    }
}

fn aggregate(inbox: Receiver<Work>, recycle: SyncSender<Chunk>, logic: Logic, field: &str, state: &State, stats: &Stats) {
    // Keys changed in this batch; each aggregate's own flag keeps the list
    // free of duplicates without a second lookup per record.
    let mut dirty: Vec<CompactString> = Vec::new();
    for w in inbox {
        match w {
            Work::Records(mut chunk) => {
                let mut st = state.lock().expect("state lock");
                let mut applied = 0;
                for r in &chunk.records {
                    let bytes = |range: &Option<Range<u32>>| range.as_ref().map(|r| &chunk.bytes[r.start as usize..r.end as usize]);
                    let source = &chunk.sources[r.source as usize];
                    match logic::parse(bytes(&r.key), bytes(&r.payload), field) {
                        Ok((key, amount)) => {
                            let agg = match st.get_mut(key.as_ref()) {
                                Some(agg) => agg,
                                None => st.entry(key.as_ref().into()).or_default(),
                            };
                            if agg.apply(logic, amount, source, r.offset) && !agg.dirty {
                                agg.dirty = true;
                                dirty.push(key.as_ref().into());
                            }
                            applied += 1;
                        }
                        Err(why) => {
                            // Counted and logged without the event's content.
                            let total = stats.rejected.fetch_add(1, Ordering::Relaxed) + 1;
                            if total <= 10 || total.is_power_of_two() {
                                eprintln!("rejected event at {source}@{}: {why:?} ({total} rejected so far)", r.offset);
                            }
                        }
                    }
                }
                drop(st);
                // Published per chunk, so progress is visible within a batch.
                stats.records.fetch_add(applied, Ordering::Relaxed);
                chunk.clear();
                let _ = recycle.try_send(chunk);
            }
            Work::Revoked => {
                let mut st = state.lock().expect("state lock");
                for key in dirty.drain(..) {
                    if let Some(agg) = st.get_mut(&key) {
                        agg.dirty = false;
                    }
                }
            }
            Work::Restored(fresh) => {
                *state.lock().expect("state lock") = fresh;
                dirty.clear();
            }
            Work::EndBatch(reply) => {
                let _ = reply.send(std::mem::take(&mut dirty));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(source: &Arc<str>, events: &[(i64, &str, &str)]) -> Chunk {
        let mut c = Chunk::default();
        for (offset, key, payload) in events {
            c.push(source, *offset, Some(key.as_bytes()), Some(payload.as_bytes()));
        }
        c
    }

    fn count(state: &State, key: &str) -> Option<u64> {
        state.lock().unwrap().get(key).map(|a| a.count)
    }

    #[test]
    fn a_batch_end_answers_after_every_record_sent_before_it() {
        let (state, stats): (State, Arc<Stats>) = Default::default();
        let a = Aggregator::start(Logic::Sum, "amount", state.clone(), stats.clone());
        let t0: Arc<str> = "t/0".into();
        let mut c = chunk(&t0, &[(0, "a", r#"{"amount":1}"#), (1, "b", r#"{"amount":2}"#), (2, "a", "{oops")]);
        a.send_chunk(&mut c).unwrap();
        assert!(c.is_empty(), "a sent chunk is replaced by an empty one");
        a.send_chunk(&mut chunk(&t0, &[(3, "a", r#"{"amount":4}"#), (1, "b", r#"{"amount":2}"#)])).unwrap();
        let mut dirty = a.end_batch().unwrap();
        dirty.sort();
        assert_eq!(dirty, ["a", "b"], "each changed key once");
        assert_eq!(state.lock().unwrap()["a"].result(Logic::Sum), (2, Some(5)));
        assert_eq!(count(&state, "b"), Some(1), "offset 1 of t/0 was applied already");
        // A record seen again counts as processed: the counter is progress.
        assert_eq!((stats.records.load(Ordering::Relaxed), stats.rejected.load(Ordering::Relaxed)), (4, 1));
        assert!(a.end_batch().unwrap().is_empty(), "nothing changed since");
        a.stop();
    }

    #[test]
    fn a_revoke_forgets_the_batch_and_a_restore_replaces_the_state() {
        let (state, stats): (State, Arc<Stats>) = Default::default();
        let a = Aggregator::start(Logic::Count, "amount", state.clone(), stats);
        let t0: Arc<str> = "t/0".into();
        a.send_chunk(&mut chunk(&t0, &[(0, "a", r#"{"amount":1}"#)])).unwrap();
        a.send(Work::Revoked).unwrap();
        let mut restored = FastMap::default();
        restored.insert("z".into(), Agg { count: 7, ..Default::default() });
        a.send(Work::Restored(restored)).unwrap();
        assert!(a.end_batch().unwrap().is_empty(), "the revoked batch writes nothing");
        assert_eq!((count(&state, "a"), count(&state, "z")), (None, Some(7)));
        a.send_chunk(&mut chunk(&t0, &[(0, "z", r#"{"amount":1}"#)])).unwrap();
        assert_eq!(a.end_batch().unwrap(), ["z"]);
        assert_eq!(count(&state, "z"), Some(8));
        a.stop();
    }
}

//! What the processor computes: per-key aggregates of JSON events. Pure.
//!
//! An event is a JSON object with a numeric field (default `amount`); its
//! key is the Kafka record key, or else the event's `key` field. Each key's
//! aggregate remembers the last input offset it applied per partition, so a
//! record seen again after a restart (it was written to the view, but its
//! offset not yet committed) is not counted twice: the view stays exact with
//! at-least-once delivery.

use std::{
    borrow::Cow,
    hash::{BuildHasherDefault, Hasher},
    sync::Arc,
};

/// FNV-1a: keys are short and not attacker-chosen in a view's own state.
#[derive(Default)]
pub struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        // FNV-1a leaves the high bits of short keys nearly constant, and
        // hashbrown tags buckets with the top 7: without this mix most
        // probes matched the tag and fell through to a string compare.
        let h = self.0 ^ (self.0 >> 29);
        h.wrapping_mul(0xbf58476d1ce4e5b9) ^ (h >> 32)
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 { 0xcbf29ce484222325 } else { self.0 };
        for b in bytes {
            h = (h ^ *b as u64).wrapping_mul(0x100000001b3);
        }
        self.0 = h;
    }
}

/// Keys up to 24 bytes live inline in the table: a lookup touches no
/// second allocation to compare the key.
pub type FastMap<V> = std::collections::HashMap<compact_str::CompactString, V, BuildHasherDefault<Fnv>>;

use serde_json::{Value, json};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Logic {
    /// count and sum of the field
    Sum,
    /// count only
    Count,
    /// count and maximum of the field
    Max,
}

impl Logic {
    pub fn name(self) -> &'static str {
        match self {
            Logic::Sum => "sum",
            Logic::Count => "count",
            Logic::Max => "max",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Agg {
    pub count: u64,
    pub sum: i64,
    pub max: Option<i64>,
    /// `topic/partition` -> last offset applied. A key usually comes from
    /// one partition per topic, so a short list beats a map; sources are
    /// shared strings, compared by pointer first.
    pub seen: Vec<(Arc<str>, i64)>,
    /// Changed since last written to the view (not part of the view).
    pub dirty: bool,
}

/// Why an event was not counted. Never carries the event's content.
#[derive(Debug, PartialEq, Eq)]
pub enum Reject {
    NotJson,
    NoKey,
    NoNumber,
}

/// The common shape, parsed without building a map: `{"key": .., "amount": ..}`.
#[derive(serde::Deserialize)]
struct Amount<'a> {
    #[serde(borrow)]
    key: Option<&'a str>,
    amount: Option<i64>,
}

/// Parses one event: (key, value of the numeric field). The key borrows
/// from the record when it can: no allocation on the hot path.
pub fn parse<'a>(record_key: Option<&'a [u8]>, payload: Option<&'a [u8]>, field: &str) -> Result<(Cow<'a, str>, i64), Reject> {
    let payload = payload.unwrap_or_default();
    let record_key = record_key.and_then(|k| std::str::from_utf8(k).ok()).filter(|k| !k.is_empty());
    if field == "amount"
        && let Ok(Amount { key, amount: Some(n) }) = serde_json::from_slice::<Amount>(payload)
        && let Some(k) = record_key.or(key)
    {
        return Ok((Cow::Borrowed(k), n));
    }
    // Anything else, and telling why an event is rejected.
    let v: Value = serde_json::from_slice(payload).map_err(|_| Reject::NotJson)?;
    let key = match record_key {
        Some(k) => Cow::Borrowed(k),
        None => Cow::Owned(v.get("key").and_then(Value::as_str).ok_or(Reject::NoKey)?.to_string()),
    };
    let n = v.get(field).and_then(Value::as_i64).ok_or(Reject::NoNumber)?;
    Ok((key, n))
}

impl Agg {
    /// Applies one event at `offset` of `source` (`topic/partition`); false
    /// if that offset was already applied.
    pub fn apply(&mut self, logic: Logic, n: i64, source: &Arc<str>, offset: i64) -> bool {
        match self.seen.iter_mut().find(|(s, _)| Arc::ptr_eq(s, source) || **s == **source) {
            Some((_, last)) if *last >= offset => return false,
            Some((s, last)) => {
                *s = source.clone();
                *last = offset;
            }
            None => self.seen.push((source.clone(), offset)),
        }
        self.count += 1;
        match logic {
            Logic::Sum => self.sum += n,
            Logic::Count => {}
            Logic::Max => self.max = Some(self.max.map_or(n, |m| m.max(n))),
        }
        true
    }

    /// The view record for this key, written into `out` (cleared first):
    /// `{"count":..,"logic":..,"seen":{"topic/partition":offset},"sum"|"max":..,"version":..}`.
    /// Serialized straight from the aggregate: the view of every changed
    /// key is written once per batch, and building a `Value` per key showed
    /// in profiles.
    pub fn write_json(&self, logic: Logic, version: &str, out: &mut Vec<u8>) {
        out.clear();
        let record = ViewRecord {
            count: self.count,
            logic: logic.name(),
            seen: Seen(&self.seen),
            sum: (logic == Logic::Sum).then_some(self.sum),
            max: if logic == Logic::Max { self.max } else { None },
            version,
        };
        serde_json::to_writer(out, &record).expect("a view record always serializes");
    }

    pub fn from_json(v: &Value) -> Agg {
        Agg {
            count: v.get("count").and_then(Value::as_u64).unwrap_or(0),
            sum: v.get("sum").and_then(Value::as_i64).unwrap_or(0),
            max: v.get("max").and_then(Value::as_i64),
            seen: v
                .get("seen")
                .and_then(Value::as_object)
                .map(|m| m.iter().filter_map(|(k, o)| Some((Arc::from(k.as_str()), o.as_i64()?))).collect())
                .unwrap_or_default(),
            dirty: false,
        }
    }

    /// The part of the aggregate a logic defines (what `check` compares).
    pub fn result(&self, logic: Logic) -> (u64, Option<i64>) {
        match logic {
            Logic::Sum => (self.count, Some(self.sum)),
            Logic::Count => (self.count, None),
            Logic::Max => (self.count, self.max),
        }
    }
}

#[derive(serde::Serialize)]
struct ViewRecord<'a> {
    count: u64,
    logic: &'static str,
    seen: Seen<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sum: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max: Option<i64>,
    version: &'a str,
}

/// The per-partition offsets as a JSON object.
struct Seen<'a>(&'a [(Arc<str>, i64)]);

impl serde::Serialize for Seen<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(source, offset)| (&**source, offset)))
    }
}

/// A small deterministic generator for `produce` (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E3779B97F4A7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }
}

/// Event `i` of a seeded sequence: (key, payload).
pub fn event(rng: &mut Rng, keys: u64) -> (String, String) {
    let key = format!("k{}", rng.next() % keys);
    let amount = (rng.next() % 1000) as i64;
    let payload = json!({"key": key, "amount": amount}).to_string();
    (key, payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keys_from_the_record_or_the_event() {
        assert_eq!(parse(Some(b"a"), Some(br#"{"amount": 5}"#), "amount"), Ok(("a".into(), 5)));
        assert_eq!(parse(None, Some(br#"{"key":"b","amount": 7}"#), "amount"), Ok(("b".into(), 7)));
        assert_eq!(parse(None, Some(br#"{"key":"c","n": 2}"#), "n"), Ok(("c".into(), 2)));
        assert_eq!(parse(None, Some(b"{oops"), "amount"), Err(Reject::NotJson));
        assert_eq!(parse(Some(b"a"), Some(br#"{"amount": "x"}"#), "amount"), Err(Reject::NoNumber));
        assert_eq!(parse(None, Some(br#"{"amount": 1}"#), "amount"), Err(Reject::NoKey));
    }

    #[test]
    fn a_replayed_offset_is_not_counted_twice() {
        let mut a = Agg::default();
        let (t0, t1): (Arc<str>, Arc<str>) = ("t/0".into(), "t/1".into());
        assert!(a.apply(Logic::Sum, 5, &t0, 10));
        assert!(!a.apply(Logic::Sum, 5, &"t/0".into(), 10), "an equal string from elsewhere is the same source");
        assert!(a.apply(Logic::Sum, 1, &t1, 3));
        assert_eq!(a.result(Logic::Sum), (2, Some(6)));
    }

    #[test]
    fn the_view_record_round_trips() {
        let mut a = Agg::default();
        let t0: Arc<str> = "t/0".into();
        a.apply(Logic::Max, 4, &t0, 1);
        a.apply(Logic::Max, 9, &t0, 2);
        let mut json = Vec::new();
        a.write_json(Logic::Max, "v1", &mut json);
        let back = Agg::from_json(&serde_json::from_slice(&json).unwrap());
        assert_eq!(back.result(Logic::Max), (2, Some(9)));
        assert_eq!(back.seen, a.seen);
    }

    #[test]
    fn logics_give_different_views() {
        let mut a = Agg::default();
        a.apply(Logic::Sum, 4, &"t/0".into(), 1);
        let (mut sum, mut count) = (Vec::new(), Vec::new());
        a.write_json(Logic::Sum, "v", &mut sum);
        a.write_json(Logic::Count, "v", &mut count);
        assert_ne!(sum, count);
        assert_eq!(serde_json::from_slice::<Value>(&sum).unwrap()["sum"], 4);
    }
}

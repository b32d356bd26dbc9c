//! A version's progress from offsets: the gate's reading, and the figures
//! people read. Pure.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;

use super::{GroupOffsets, PartitionOffsets, ResponseError, Tp};
use crate::rollout::gate::{Offsets, Reading, SmallMap};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Figures {
    /// Records not yet consumed, over every partition the version consumes.
    pub lag: i64,
    pub lag_by_topic: SmallMap<String, i64>,
    /// Records of the inputs consumed since the start of the log.
    pub consumed: i64,
    /// Records of the inputs in the log now (end minus start, summed).
    pub available: i64,
}

/// The topics one poll must read for these versions: every input topic,
/// and every other topic their groups have committed on.
pub fn topics_to_read<'a>(inputs: impl IntoIterator<Item = &'a String>, committed: &BTreeMap<String, GroupOffsets>) -> Vec<String> {
    let mut topics: Vec<String> = inputs.into_iter().cloned().collect();
    topics.extend(committed.values().flatten().flat_map(|o| o.keys().map(|(t, _)| t.clone())));
    topics.sort();
    topics.dedup();
    topics
}

/// One version's reading from what a poll answered, or why it says nothing:
/// a complete reading covers every partition of every input (a partition
/// the group has not committed on stands at its log start) and every
/// partition of every other topic the group has committed on. Internal topics that no longer
/// exist are left out; an input that does not exist, a partition without an
/// answer, or a group its coordinator did not answer for is a gap.
pub fn reading(
    at: Timestamp,
    inputs: &[String],
    group: &str,
    offsets: &PartitionOffsets,
    committed: &BTreeMap<String, GroupOffsets>,
) -> Result<(Reading, Figures), String> {
    let commits = match committed.get(group) {
        Some(Ok(c)) => c,
        Some(Err(e)) => return Err(format!("the committed offsets of group {group} are unknown: {e}")),
        None => return Err(format!("the committed offsets of group {group} were not read")),
    };
    let mut partitions: Vec<(Tp, bool)> = Vec::new();
    let mut topic_ids = SmallMap::new();
    for t in inputs {
        match offsets.topics.get(t) {
            Some(Ok(info)) => {
                topic_ids.insert(t.clone(), info.id.clone());
                partitions.extend((0..info.partitions).map(|p| ((t.clone(), p), true)));
            }
            Some(Err(e)) => return Err(format!("input topic {t} is not in Kafka's metadata: {e}")),
            None => return Err(format!("input topic {t} was not read")),
        }
    }
    // A topic the group commits on is one it consumes: all of its partitions
    // count, the ones not committed on yet from their log start (a framework
    // commits a repartition partition only once a task has read from it).
    let mut internal: Vec<&String> = commits.keys().map(|(t, _)| t).filter(|t| !inputs.contains(t)).collect();
    internal.dedup();
    for t in internal {
        match offsets.topics.get(t) {
            Some(Ok(info)) => partitions.extend((0..info.partitions).map(|p| ((t.clone(), p), false))),
            Some(Err(e)) if e.is(ResponseError::UnknownTopicOrPartition) => {}
            Some(Err(e)) => return Err(format!("topic {t} (group {group} commits on it) is not in Kafka's metadata: {e}")),
            None => return Err(format!("topic {t} (group {group} commits on it) was not read")),
        }
    }
    let n = partitions.len();
    let mut r = Reading { at, ends: Offsets::with_capacity(n), positions: Offsets::with_capacity(n), topic_ids };
    let mut f = Figures::default();
    for (tp, input) in partitions {
        let (start, end) = match offsets.offsets.get(&tp) {
            Some(Ok(o)) => *o,
            Some(Err(e)) => return Err(format!("no offsets for {}/{}: {e}", tp.0, tp.1)),
            None => return Err(format!("no offsets for {}/{}", tp.0, tp.1)),
        };
        let position = commits.get(&tp).copied().unwrap_or(start);
        let lag = (end - position.max(start)).max(0);
        f.lag += lag;
        *f.lag_by_topic.entry(tp.0.clone()).or_default() += lag;
        if input {
            f.consumed += (position.min(end) - start).max(0);
            f.available += end - start;
        }
        r.ends.insert(tp.clone(), end);
        r.positions.insert(tp, position);
    }
    Ok((r, f))
}

/// Share of the replay target consumed, 0 to 1, rounded to a thousandth so
/// that status does not change on noise.
pub fn progress(consumed: i64, target: i64) -> f64 {
    if target <= 0 {
        return 1.0;
    }
    ((consumed as f64 / target as f64).min(1.0) * 1000.0).floor() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::{ItemError, TopicInfo};

    fn tp(t: &str, p: i32) -> Tp {
        (t.to_string(), p)
    }

    fn info(partitions: i32) -> Result<TopicInfo, ItemError> {
        Ok(TopicInfo { id: "x".into(), partitions, replication_factor: 1 })
    }

    fn error(code: ResponseError) -> ItemError {
        ItemError::kafka(code, "")
    }

    fn t0() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap()
    }

    fn offsets() -> PartitionOffsets {
        PartitionOffsets {
            topics: [("a".to_string(), info(2)), ("b".to_string(), info(1)), ("app-repartition".to_string(), info(1))].into(),
            offsets: [
                (tp("a", 0), Ok((0, 100))),
                (tp("a", 1), Ok((0, 50))),
                (tp("b", 0), Ok((10, 20))),
                (tp("app-repartition", 0), Ok((300, 400))),
            ]
            .into(),
        }
    }

    fn inputs() -> Vec<String> {
        vec!["a".into(), "b".into()]
    }

    #[test]
    fn lag_counts_every_input_partition_and_every_partition_the_group_commits() {
        let committed = [("g".to_string(), Ok([(tp("a", 0), 90), (tp("b", 0), 20), (tp("app-repartition", 0), 350)].into()))].into();
        let (r, f) = reading(t0(), &inputs(), "g", &offsets(), &committed).unwrap();
        assert_eq!(f.lag, 10 + 50 + 50, "a/1 was never committed: all of it is behind; the repartition topic counts");
        assert_eq!(f.lag_by_topic, SmallMap::from_iter([("a".to_string(), 60), ("b".to_string(), 0), ("app-repartition".to_string(), 50)]));
        assert_eq!((f.consumed, f.available), (90 + 10, 160), "progress is over the inputs");
        assert_eq!(r.positions[&tp("a", 1)], 0);
        assert_eq!(r.lag(), f.lag);
        assert_eq!(topics_to_read(&inputs(), &committed), vec!["a".to_string(), "app-repartition".into(), "b".into()]);
    }

    #[test]
    fn a_missing_input_partition_or_group_answer_is_a_gap_not_lag_zero() {
        let committed: BTreeMap<String, GroupOffsets> = [("g".to_string(), Ok(BTreeMap::new()))].into();
        let mut o = offsets();
        o.offsets.remove(&tp("a", 1));
        assert_eq!(reading(t0(), &inputs(), "g", &o, &committed).unwrap_err(), "no offsets for a/1");
        let mut o = offsets();
        o.offsets.insert(tp("a", 1), Err(error(ResponseError::NotLeaderOrFollower)));
        assert!(reading(t0(), &inputs(), "g", &o, &committed).unwrap_err().contains("a/1: NotLeaderOrFollower"));
        let mut o = offsets();
        o.topics.insert("b".into(), Err(error(ResponseError::UnknownTopicOrPartition)));
        assert_eq!(
            reading(t0(), &inputs(), "g", &o, &committed).unwrap_err(),
            "input topic b is not in Kafka's metadata: UnknownTopicOrPartition"
        );
        let failed: BTreeMap<String, GroupOffsets> = [("g".to_string(), Err(error(ResponseError::CoordinatorLoadInProgress)))].into();
        assert!(reading(t0(), &inputs(), "g", &offsets(), &failed).unwrap_err().contains("CoordinatorLoadInProgress"));
        assert!(reading(t0(), &inputs(), "other", &offsets(), &committed).is_err());
    }

    #[test]
    fn a_repartition_partition_not_committed_yet_counts_from_its_log_start() {
        let committed =
            [("g".to_string(), Ok([(tp("a", 0), 100), (tp("a", 1), 50), (tp("b", 0), 20), (tp("app-repartition", 0), 400)].into()))].into();
        let mut o = offsets();
        o.topics.insert("app-repartition".into(), info(2));
        o.offsets.insert(tp("app-repartition", 1), Ok((70, 90)));
        let (r, f) = reading(t0(), &inputs(), "g", &o, &committed).unwrap();
        assert_eq!(f.lag, 20, "the inputs are read to their ends, but 20 records wait in the repartition topic's partition 1");
        assert_eq!(r.positions[&tp("app-repartition", 1)], 70);
    }

    #[test]
    fn an_internal_topic_that_is_gone_is_left_out() {
        let committed = [("g".to_string(), Ok([(tp("gone-changelog", 0), 5)].into()))].into();
        let mut o = offsets();
        o.topics.insert("gone-changelog".into(), Err(error(ResponseError::UnknownTopicOrPartition)));
        let (r, _) = reading(t0(), &inputs(), "g", &o, &committed).unwrap();
        assert!(!r.ends.contains_key(&tp("gone-changelog", 0)));
    }

    #[test]
    fn truncated_partitions_count_from_their_first_offset() {
        let committed: BTreeMap<String, GroupOffsets> = [("g".to_string(), Ok(BTreeMap::new()))].into();
        let (_, f) = reading(t0(), &["b".to_string()], "g", &offsets(), &committed).unwrap();
        assert_eq!((f.lag, f.consumed, f.available), (10, 0, 10));
    }

    #[test]
    fn progress_is_bounded_and_stable() {
        assert_eq!(progress(0, 0), 1.0);
        assert_eq!(progress(50, 100), 0.5);
        assert_eq!(progress(150, 100), 1.0);
        assert_eq!(progress(1, 3), 0.333);
    }
}

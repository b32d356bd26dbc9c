//! Lag and progress of a consumer group from offsets. Pure.

use std::collections::BTreeMap;

use super::Tp;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Figures {
    /// Records not yet consumed, over all input partitions.
    pub lag: i64,
    pub lag_by_topic: BTreeMap<String, i64>,
    /// Records consumed since the start of the log.
    pub consumed: i64,
    /// Records in the log now (end minus start, summed).
    pub available: i64,
}

/// `offsets`: (first, next) per partition; `committed`: the group's
/// committed offsets. A partition the group has not committed on counts from
/// its first offset (the group starts from the earliest).
pub fn figures(inputs: &[String], offsets: &BTreeMap<Tp, (i64, i64)>, committed: &BTreeMap<Tp, i64>) -> Figures {
    let mut f = Figures::default();
    for (tp, (start, end)) in offsets.iter().filter(|(tp, _)| inputs.contains(&tp.0)) {
        let position = committed.get(tp).copied().unwrap_or(*start).clamp(*start, (*end).max(*start));
        let lag = end - position;
        f.lag += lag;
        *f.lag_by_topic.entry(tp.0.clone()).or_default() += lag;
        f.consumed += position - start;
        f.available += end - start;
    }
    for t in inputs {
        f.lag_by_topic.entry(t.clone()).or_default();
    }
    f
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

    fn tp(t: &str, p: i32) -> Tp {
        (t.to_string(), p)
    }

    #[test]
    fn lag_is_end_minus_committed_summed() {
        let offsets = [(tp("a", 0), (0, 100)), (tp("a", 1), (0, 50)), (tp("b", 0), (10, 20)), (tp("other", 0), (0, 9))].into();
        let committed = [(tp("a", 0), 90), (tp("b", 0), 20)].into();
        let f = figures(&["a".into(), "b".into()], &offsets, &committed);
        assert_eq!(f.lag, 10 + 50);
        assert_eq!(f.lag_by_topic, [("a".to_string(), 60), ("b".to_string(), 0)].into());
        assert_eq!(f.consumed, 90 + 10);
        assert_eq!(f.available, 160);
    }

    #[test]
    fn truncated_partitions_count_from_their_first_offset() {
        let offsets = [(tp("a", 0), (40, 50))].into();
        let f = figures(&["a".into()], &offsets, &BTreeMap::new());
        assert_eq!((f.lag, f.consumed), (10, 0));
    }

    #[test]
    fn progress_is_bounded_and_stable() {
        assert_eq!(progress(0, 0), 1.0);
        assert_eq!(progress(50, 100), 0.5);
        assert_eq!(progress(150, 100), 1.0);
        assert_eq!(progress(1, 3), 0.333);
    }
}

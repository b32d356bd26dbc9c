//! Retrying the items of a batched request, as a good Kafka client does:
//! the items Kafka answered with a retriable error (or did not answer for)
//! are sent again, after a metadata refresh and a back-off; the others keep
//! their answer. Pure.

use std::{collections::BTreeMap, time::Duration};

use super::ItemError;

/// How many times a batched call is sent, at most, for its retriable items.
pub const ATTEMPTS: usize = 4;

/// The wait before sending again after attempt `n` (0-based): 100 ms
/// doubling, at most 2 s, and never less than what Kafka asked to be
/// throttled for.
pub fn backoff(n: usize, throttle_ms: i32) -> Duration {
    let doubling = Duration::from_millis(100 * (1u64 << n.min(5))).min(Duration::from_secs(2));
    doubling.max(Duration::from_millis(throttle_ms.max(0) as u64))
}

/// Splits one attempt's answers into what is settled and the items to send
/// again. An item the answer does not mention counts as unanswered; on the
/// last attempt everything is settled, an unanswered item with why.
pub fn split<T>(
    asked: &[String],
    mut answers: BTreeMap<String, Result<T, ItemError>>,
    last: bool,
    api: &str,
) -> (BTreeMap<String, Result<T, ItemError>>, Vec<String>) {
    let mut settled = BTreeMap::new();
    let mut again = Vec::new();
    for item in asked {
        match answers.remove(item) {
            Some(Err(e)) if e.retriable() && !last => again.push(item.clone()),
            Some(answer) => {
                settled.insert(item.clone(), answer);
            }
            None if !last => again.push(item.clone()),
            None => {
                settled.insert(item.clone(), Err(ItemError::no_answer(format!("{api} did not answer for it"))));
            }
        }
    }
    (settled, again)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::ResponseError;

    fn items(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn retriable_and_unanswered_items_go_again_the_rest_is_settled() {
        let answers: BTreeMap<String, Result<(), ItemError>> = [
            ("a".to_string(), Ok(())),
            ("b".to_string(), Err(ItemError::kafka(ResponseError::NotController, "moved"))),
            ("c".to_string(), Err(ItemError::kafka(ResponseError::InvalidConfig, "x.y"))),
            ("d".to_string(), Err(ItemError::kafka(ResponseError::RequestTimedOut, ""))),
            ("e".to_string(), Err(ItemError::kafka(ResponseError::ThrottlingQuotaExceeded, ""))),
        ]
        .into();
        let (settled, again) = split(&items(&["a", "b", "c", "d", "e", "f"]), answers, false, "CreateTopics");
        assert_eq!(again, items(&["b", "d", "e", "f"]), "NotController, RequestTimedOut, throttling and no answer are retried");
        assert_eq!(settled.keys().cloned().collect::<Vec<_>>(), items(&["a", "c"]));
        assert!(settled["c"].as_ref().unwrap_err().is(ResponseError::InvalidConfig), "a refusal is not retried");
    }

    #[test]
    fn the_last_attempt_settles_everything_saying_what_was_not_answered() {
        let answers: BTreeMap<String, Result<(), ItemError>> =
            [("b".to_string(), Err(ItemError::kafka(ResponseError::NotController, "")))].into();
        let (settled, again) = split(&items(&["b", "f"]), answers, true, "DeleteTopics");
        assert!(again.is_empty());
        assert!(settled["b"].as_ref().unwrap_err().is(ResponseError::NotController));
        assert_eq!(settled["f"].as_ref().unwrap_err().to_string(), "NoAnswer: DeleteTopics did not answer for it");
    }

    #[test]
    fn back_off_doubles_to_two_seconds_and_honours_throttling() {
        assert_eq!(backoff(0, 0), Duration::from_millis(100));
        assert_eq!(backoff(2, 0), Duration::from_millis(400));
        assert_eq!(backoff(9, 0), Duration::from_secs(2));
        assert_eq!(backoff(0, 1500), Duration::from_millis(1500));
    }
}

//! The reprocessing rollout against the lab, with the reference processor:
//! replay beside the live version, gate, verification, promotion, failure,
//! rollback, truncated history. (Faults and operator crashes at every phase:
//! `e2e_safety`.)

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kappa_operator::api::{Processor, Topic};
use kube::{ResourceExt, api::ListParams};
use serde_json::json;
use support::{
    TestNs, patch,
    pipeline::{
        WAIT, active_is, caught_up, check, events_reaching, first_version_live, logic_patch, phase_is, pipeline, processor_json, produce,
        served, versions,
    },
    wait_for,
};

#[tokio::test]
async fn a_logic_change_replays_beside_the_live_version_and_cuts_over_exactly() {
    let s = pipeline("rollout", &[]).await;
    let mut p = processor_json("sum", 1);
    p["spec"]["rollout"]["stableForSeconds"] = json!(5);
    let (v1, vv1) = first_version_live(&s, p, 100_000).await;
    check(&s.input, &vv1, "sum").unwrap();

    patch::<Processor>(&s.ns, "totals", logic_patch("count")).await.unwrap();
    let replaying = phase_is(&s.ns, "Replaying").await;
    let v2 = replaying.status.unwrap().candidate_version.unwrap();
    assert_ne!(v1, v2);
    // While v2 replays, readers stay on v1, whose view still holds v1's results.
    assert_eq!(served(&s.ns).await, (v1.clone(), v1.clone()));
    check(&s.input, &vv1, "sum").expect("v1's view keeps serving v1's results during the replay");

    // Events keep arriving during the replay.
    let input = s.input.clone();
    let background = std::thread::spawn(move || produce(&input, 20_000, 2));
    active_is(&s.ns, &v2).await;
    background.join().unwrap();
    let (_, vv2) = caught_up(&s.ns).await;
    assert_eq!(vv2.spec.version, v2);
    let out = check(&s.input, &vv2, "count").expect("v2's view is exact over every event, old and new");
    assert!(out.contains("120000 input events"), "{out}");
    assert!(check(&s.input, &vv2, "max").is_err(), "and it is v2's computation, not v1's");

    let phases: Vec<_> = versions(&s.ns).await.into_iter().map(|v| (v.spec.version.clone(), v.status.unwrap().phase)).collect();
    assert!(phases.contains(&(v1.clone(), Some(kappa_operator::api::VersionPhase::Standby))), "{phases:?}");
    assert_eq!(events_reaching(&s.ns, "CutOver", 1).await, 1);
}

#[tokio::test]
async fn manual_promotion_waits_for_the_spec_to_name_the_version() {
    let s = pipeline("manual", &[]).await;
    let mut p = processor_json("sum", 1);
    p["spec"]["rollout"]["promotion"] = json!("Manual");
    let (v1, _) = first_version_live(&s, p, 5_000).await;
    patch::<Processor>(&s.ns, "totals", logic_patch("count")).await.unwrap();
    let waiting = phase_is(&s.ns, "AwaitingPromotion").await;
    let v2 = waiting.status.clone().unwrap().candidate_version.unwrap();
    let progressing = waiting.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Progressing").unwrap();
    assert!(progressing.message.contains(&format!("promote: \"{v2}\"")), "{}", progressing.message);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(served(&s.ns).await, (v1.clone(), v1.clone()), "no cutover without the promote field");
    patch::<Processor>(&s.ns, "totals", json!({"spec": {"rollout": {"promote": v2}}})).await.unwrap();
    active_is(&s.ns, &v2).await;
}

#[tokio::test]
async fn verification_blocks_a_wrong_view_and_lets_a_right_one_through() {
    let s = pipeline("verify", &[]).await;
    let verify = |logic: &str| {
        json!({"image": "ghcr.io/kappa-dev/kappa-processor:0.1.0",
               "args": ["check", "--bootstrap", "$(KAPPA_BOOTSTRAP_SERVERS)", "--input", "$(KAPPA_INPUT_TOPICS)", "--view", "$(KAPPA_OUTPUT_TOPIC)", "--logic", logic]})
    };
    let mut p = processor_json("sum", 1);
    // Checking the count view as maxima must fail.
    p["spec"]["rollout"]["verify"] = verify("max");
    let (v1, _) = first_version_live(&s, p, 5_000).await;
    patch::<Processor>(&s.ns, "totals", logic_patch("count")).await.unwrap();
    let failed = phase_is(&s.ns, "Failed").await;
    let stalled = failed.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Stalled").unwrap();
    assert_eq!((stalled.status.as_str(), stalled.reason.as_str()), ("True", "VerificationFailed"));
    assert_eq!(served(&s.ns).await, (v1.clone(), v1.clone()), "the old version stays active");
    assert_eq!(events_reaching(&s.ns, "VerificationFailed", 1).await, 1);

    // A right check, in a new attempt (a spec change), lets the version through.
    patch::<Processor>(&s.ns, "totals", json!({"spec": {"rollout": {"verify": verify("count")}, "reprocessNonce": "2"}})).await.unwrap();
    let v3 = phase_is(&s.ns, "Verifying").await.status.unwrap().candidate_version.unwrap();
    active_is(&s.ns, &v3).await;
}

/// The names of a version's pods.
async fn pod_names(ns: &TestNs, version: &str) -> Vec<String> {
    let selector = format!("kappa.dev/version={version}");
    ns.api::<Pod>().list(&ListParams::default().labels(&selector)).await.unwrap().items.iter().map(|p| p.name_any()).collect()
}

#[tokio::test]
async fn a_crash_looping_version_fails_and_the_active_one_stays_untouched() {
    let s = pipeline("crash", &[]).await;
    let (v1, _) = first_version_live(&s, processor_json("sum", 1), 2_000).await;
    let pods_before = pod_names(&s.ns, &v1).await;
    patch::<Processor>(&s.ns, "totals", logic_patch("no-such-logic")).await.unwrap();
    let failed = phase_is(&s.ns, "Failed").await;
    let st = failed.status.unwrap();
    assert_eq!(st.active_version.as_deref(), Some(v1.as_str()));
    let stalled = st.conditions.iter().find(|c| c.type_ == "Stalled").unwrap();
    assert!(stalled.message.contains("crash-looping"), "{}", stalled.message);
    assert_eq!(served(&s.ns).await, (v1.clone(), v1.clone()));
    let pods_after = pod_names(&s.ns, &v1).await;
    assert_eq!(pods_before, pods_after, "the active version's pods were not touched");
    let failed_v = versions(&s.ns).await.into_iter().find(|v| v.spec.version != v1).unwrap();
    assert_eq!(failed_v.status.unwrap().phase, Some(kappa_operator::api::VersionPhase::Failed));
}

#[tokio::test]
async fn rollback_to_the_standby_catches_up_without_a_full_replay() {
    let s = pipeline("rollback", &[]).await;
    let mut p = processor_json("sum", 1);
    p["spec"]["rollout"]["scaleDownDelaySeconds"] = json!(2);
    let (v1, vv1) = first_version_live(&s, p, 20_000).await;
    patch::<Processor>(&s.ns, "totals", logic_patch("count")).await.unwrap();
    let v2 = phase_is(&s.ns, "Replaying").await.status.unwrap().candidate_version.unwrap();
    active_is(&s.ns, &v2).await;
    wait_for("v1 to stand by at zero replicas", WAIT, || async {
        let pods =
            s.ns.api::<Pod>().list(&ListParams::default().labels(&format!("kappa.dev/version={v1}"))).await.map_err(|e| e.to_string())?;
        if pods.items.is_empty() { Ok(()) } else { Err(format!("{} pods", pods.items.len())) }
    })
    .await;
    // v1 falls 10,000 records behind while it stands by.
    produce(&s.input, 10_000, 2);
    caught_up(&s.ns).await;

    patch::<Processor>(&s.ns, "totals", logic_patch("sum")).await.unwrap();
    active_is(&s.ns, &v1).await;
    let (_, back) = caught_up(&s.ns).await;
    assert_eq!(back.uid(), vv1.uid(), "the same ViewVersion, revived: no new version");
    assert_eq!(versions(&s.ns).await.len(), 2);
    check(&s.input, &back, "sum").expect("the revived view is exact");
    // The revived process read only what it had missed.
    let pod = s.ns.api::<Pod>().list(&ListParams::default().labels(&format!("kappa.dev/version={v1}"))).await.unwrap().items.remove(0);
    let metrics = support::pipeline::http_get(&pod.status.unwrap().pod_ip.unwrap(), 8080, "/metrics").await;
    let processed: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("kappa_processor_records_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the processor's record counter");
    assert!(processed <= 10_000, "a rollback must not replay the log: the revived pod processed {processed} records");
    assert_eq!(events_reaching(&s.ns, "RolledBack", 1).await, 1);
}

#[tokio::test]
async fn truncated_input_history_blocks_the_rollout_naming_the_partitions() {
    let s = pipeline("truncated", &["--resync-seconds", "2"]).await;
    let (v1, _) = first_version_live(&s, processor_json("sum", 1), 3_000).await;
    // Delete the first 10 records of partition 0, as retention would.
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        rdkafka::ClientConfig::new().set("bootstrap.servers", support::required("KAPPA_KAFKA_BOOTSTRAP")).create().unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(&s.input, 0, rdkafka::Offset::Offset(10)).unwrap();
    admin.delete_records(&tpl, &rdkafka::admin::AdminOptions::new()).await.unwrap();
    wait_for("the Topic to report the lost history", WAIT, || async {
        let t: Topic = s.ns.api().get("orders").await.map_err(|e| e.to_string())?;
        let st = t.status.unwrap_or_default();
        if st.replayable_from_zero == Some(false) { Ok(()) } else { Err(format!("{:?}", st.truncated_partitions)) }
    })
    .await;
    patch::<Processor>(&s.ns, "totals", logic_patch("count")).await.unwrap();
    let blocked = phase_is(&s.ns, "Blocked").await;
    let st = blocked.status.unwrap();
    let cond = st.conditions.iter().find(|c| c.type_ == "ReprocessingBlocked").unwrap();
    assert_eq!(cond.status, "True");
    assert!(cond.message.contains(&format!("{} partition 0 (first offset still held: 10)", s.input)), "{}", cond.message);
    assert_eq!(st.active_version.as_deref(), Some(v1.as_str()));
    assert_eq!(versions(&s.ns).await.len(), 1, "no replay was started");
    assert_eq!(served(&s.ns).await, (v1.clone(), v1.clone()));
}

#[tokio::test]
async fn a_candidate_replays_wide_then_cuts_over_at_its_final_size() {
    use k8s_openapi::api::apps::v1::Deployment;
    let s = pipeline("replaywide", &[]).await;
    let (v1, _) = first_version_live(&s, processor_json("sum", 1), 50_000).await;
    // 5 asked, 3 input partitions: 3 replay pods.
    let mut change = logic_patch("count");
    change["spec"]["rollout"] = json!({"replayReplicas": 5, "stableForSeconds": 3});
    patch::<Processor>(&s.ns, "totals", change).await.unwrap();
    let v2 = phase_is(&s.ns, "Replaying").await.status.unwrap().candidate_version.unwrap();
    assert_ne!(v1, v2);
    // (when, candidate's Deployment replicas, active version), every 100 ms until v2 serves.
    let mut samples: Vec<(std::time::Instant, i32, String)> = Vec::new();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let d = s.ns.api::<Deployment>().get_opt(&format!("totals-{v2}")).await.unwrap();
        let replicas = d.and_then(|d| d.spec?.replicas).unwrap_or(0);
        let active = s.ns.api::<Processor>().get("totals").await.unwrap().status.and_then(|st| st.active_version).unwrap_or_default();
        samples.push((std::time::Instant::now(), replicas, active.clone()));
        if active == v2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "v2 not active in time: {samples:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(samples.iter().any(|(_, r, a)| *r == 3 && *a == v1), "replayed with 3 pods: {samples:?}");
    assert!(samples.iter().all(|(_, r, _)| *r <= 3), "never more pods than input partitions: {samples:?}");
    assert_eq!(samples.last().map(|(_, r, _)| *r), Some(1), "cut over at its final size: {samples:?}");
    // The final size held for stableFor (3 s) before the cutover: measured
    // in time, not in samples, which a loaded API server spaces out.
    let cutover = samples.last().map(|(at, ..)| *at).unwrap();
    let first_at_final = samples.iter().rev().skip(1).take_while(|(_, r, _)| *r == 1).last().map_or(cutover, |(at, ..)| *at);
    let held = cutover.duration_since(first_at_final);
    assert!(held >= Duration::from_secs(2), "at the final size for {held:?} before the cutover (stableFor 3 s): {samples:?}");
    let (_, vv2) = caught_up(&s.ns).await;
    check(&s.input, &vv2, "count").expect("the view replayed by 3 pods then served by 1 is exact");
    assert_eq!(events_reaching(&s.ns, "CutOver", 1).await, 1);
}

#[tokio::test]
async fn a_replay_budget_throttles_the_candidate_with_a_kafka_quota_removed_when_lifted() {
    use kappa_operator::kafka::Kafka;
    let s = pipeline("budget", &[]).await;
    let (v1, _) = first_version_live(&s, processor_json("sum", 1), 100_000).await;
    // The smallest budget: the replay crawls.
    let mut change = logic_patch("count");
    change["spec"]["rollout"] = json!({"replayByteRate": 1024});
    patch::<Processor>(&s.ns, "totals", change).await.unwrap();
    let v2 = phase_is(&s.ns, "Replaying").await.status.unwrap().candidate_version.unwrap();
    assert_ne!(v1, v2);
    let client = versions(&s.ns).await.into_iter().find(|v| v.spec.version == v2).unwrap().spec.consumer_group;
    let k = support::kafka();
    let ns = s.ns.name.clone();
    let quotas = || {
        let k = &k;
        let prefix = format!("kappa.{ns}.");
        async move { k.consumer_quotas(&prefix).await.map_err(|e| e.to_string()) }
    };
    wait_for("the candidate's quota in Kafka, and status.replay to say it is throttled", WAIT, || async {
        let held = quotas().await?;
        let replay = s.ns.api::<Processor>().get("totals").await.map_err(|e| e.to_string())?.status.and_then(|st| st.replay);
        match (held.get(&client), &replay) {
            (Some(1024), Some(r)) if r.throttled && r.byte_rate == Some(1024) && r.version == v2 && held.len() == 1 => Ok(()),
            _ => Err(format!("quotas {held:?}, status.replay {replay:?}")),
        }
    })
    .await;
    // Throttled, it is still far from done after 10 s (unthrottled, 100,000
    // records replay in a few seconds).
    tokio::time::sleep(Duration::from_secs(10)).await;
    let vv2 = versions(&s.ns).await.into_iter().find(|v| v.spec.version == v2).unwrap();
    let progress = vv2.status.and_then(|st| st.progress).unwrap_or(0.0);
    eprintln!("throttled replay: progress {progress:.3} after 10 s");
    assert!(progress < 0.9, "a replay held to 1 KiB/s per broker is not nearly done after 10 s: progress {progress}");
    assert_eq!(served(&s.ns).await.0, v1, "readers stay on v1");

    // Lifting the budget removes the quota; the replay completes and cuts over.
    patch::<Processor>(&s.ns, "totals", json!({"spec": {"rollout": {"replayByteRate": null}}})).await.unwrap();
    wait_for("the quota to go", WAIT, || async {
        let held = quotas().await?;
        if held.is_empty() { Ok(()) } else { Err(format!("{held:?}")) }
    })
    .await;
    active_is(&s.ns, &v2).await;
    let (p, vv2) = caught_up(&s.ns).await;
    assert!(p.status.unwrap().replay.is_none(), "no replay once promoted");
    check(&s.input, &vv2, "count").expect("the throttled, then freed replay is exact");
}

#[tokio::test]
async fn a_budget_is_removed_when_the_candidate_catches_up_and_cuts_over() {
    use kappa_operator::kafka::Kafka;
    let s = pipeline("budgetdone", &[]).await;
    let mut p = processor_json("sum", 1);
    p["spec"]["rollout"]["replayByteRate"] = json!(10_000_000);
    let (v1, _) = first_version_live(&s, p, 5_000).await;
    patch::<Processor>(&s.ns, "totals", logic_patch("count")).await.unwrap();
    let v2 = phase_is(&s.ns, "Replaying").await.status.unwrap().candidate_version.unwrap();
    assert_ne!(v1, v2);
    let k = support::kafka();
    let prefix = format!("kappa.{}.", s.ns.name);
    // The first version was never throttled (it serves readers as it
    // replays); the candidate was, until it caught up.
    active_is(&s.ns, &v2).await;
    wait_for("no quota left once the candidate has cut over", WAIT, || async {
        let held = k.consumer_quotas(&prefix).await.map_err(|e| e.to_string())?;
        if held.is_empty() { Ok(()) } else { Err(format!("{held:?}")) }
    })
    .await;
    let (_, vv2) = caught_up(&s.ns).await;
    check(&s.input, &vv2, "count").unwrap();
}

//! Processors against the lab: one version running for real under the
//! contract, with the reference processor, reporting lag and progress.

mod support;

use std::time::Duration;

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod};
use kappa_operator::api::{Processor, Topic, ViewVersion};
use kube::{ResourceExt, api::ListParams};
use serde_json::json;
use support::{
    create, patch,
    pipeline::{caught_up, check, http_get, pipeline, processor_json, processor_state},
    processor, unique, wait_for,
};

const WAIT: Duration = Duration::from_secs(120);

#[tokio::test]
async fn one_version_converges_to_exact_aggregates_and_stays_exact() {
    let s = pipeline("proc", &[]).await;
    create::<Processor>(&s.ns, processor_json("sum", 1)).await;
    processor(&["produce", "--topic", &s.input, "--count", "100000", "--seed", "7", "--keys", "500"]).unwrap();
    let (p, vv) = caught_up(&s.ns).await;
    assert_eq!(p.status.as_ref().unwrap().phase.as_deref(), Some("Live"));
    // The replay target is the log end when the version started (events
    // were still arriving then).
    let target = vv.status.as_ref().unwrap().replay_target.unwrap();
    assert!(target > 0 && target <= 100_000, "replay target {target}");
    let out = check(&s.input, &vv, "sum").expect("the view equals the expected aggregates");
    assert!(out.contains("500 keys match (100000 input events"), "{out}");
    assert!(check(&s.input, &vv, "max").is_err(), "check must be able to fail: the view holds sums, not maxima");

    // The contract: what the processor was given, and what readers are told.
    let d: Deployment = s.ns.api().get(&vv.name_any()).await.unwrap();
    let env = d.spec.unwrap().template.spec.unwrap().containers[0].env.clone().unwrap();
    let value = |n: &str| env.iter().find(|e| e.name == n).and_then(|e| e.value.clone());
    assert_eq!(value("KAPPA_INPUT_TOPICS"), Some(s.input.clone()));
    // Names as the design table gives them, with the version's incarnation last.
    let incarnation = vv.spec.output_topic.rsplit('.').next().unwrap().to_string();
    assert_eq!(value("KAPPA_OUTPUT_TOPIC"), Some(format!("{}.totals.{}.{incarnation}", s.ns.name, vv.spec.version)));
    assert_eq!(value("KAPPA_CONSUMER_GROUP"), Some(format!("kappa.{}.totals.{}.{incarnation}", s.ns.name, vv.spec.version)));
    let cm: k8s_openapi::api::core::v1::ConfigMap = s.ns.api().get("totals-view").await.unwrap();
    assert_eq!(cm.data.unwrap().get("topic"), Some(&vv.spec.output_topic));
    let svc: k8s_openapi::api::core::v1::Service = s.ns.api().get("totals").await.unwrap();
    assert_eq!(svc.spec.unwrap().selector.unwrap().get("kappa.dev/version"), Some(&vv.spec.version));

    // More events keep it exact.
    processor(&["produce", "--topic", &s.input, "--count", "10000", "--seed", "8", "--keys", "500"]).unwrap();
    let (_, vv) = caught_up(&s.ns).await;
    check(&s.input, &vv, "sum").expect("still exact after more events");
}

#[tokio::test]
async fn replicas_change_in_place_and_a_killed_pod_resumes_exactly() {
    let s = pipeline("scale", &[]).await;
    create::<Processor>(&s.ns, processor_json("sum", 1)).await;
    processor(&["produce", "--topic", &s.input, "--count", "20000", "--seed", "1"]).unwrap();
    let (_, vv) = caught_up(&s.ns).await;
    let version = vv.spec.version.clone();

    patch::<Processor>(&s.ns, "totals", json!({"spec": {"replicas": 2}})).await.unwrap();
    wait_for("the Deployment to scale to 2 in place", WAIT, || async {
        let d: Deployment = s.ns.api().get(&vv.name_any()).await.map_err(|e| e.to_string())?;
        let ready = d.status.and_then(|s| s.ready_replicas).unwrap_or(0);
        if d.spec.and_then(|s| s.replicas) == Some(2) && ready == 2 { Ok(()) } else { Err(format!("ready {ready}")) }
    })
    .await;
    let versions = s.ns.api::<ViewVersion>().list(&ListParams::default()).await.unwrap().items;
    assert_eq!(versions.len(), 1, "replicas do not make a new version");
    assert_eq!(processor_state(&s.ns).await.unwrap().status.unwrap().active_version, Some(version.clone()));

    // Kill one processor process hard; the pod restarts and resumes from
    // its committed offsets.
    let pods = s.ns.api::<Pod>().list(&ListParams::default().labels("kappa.dev/processor=totals")).await.unwrap().items;
    let pod = &pods[0];
    let pid: i32 = pod.status.as_ref().unwrap().container_statuses.as_ref().unwrap()[0]
        .container_id
        .as_deref()
        .and_then(|c| c.strip_prefix("process://"))
        .and_then(|p| p.parse().ok())
        .expect("the lab kubelet reports process:// container ids");
    processor(&["produce", "--topic", &s.input, "--count", "30000", "--seed", "2"]).unwrap();
    // SAFETY: kill(2) of a process of this test's pod.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait_for("the killed container to restart", WAIT, || async {
        let p: Pod = s.ns.api().get(&pod.name_any()).await.map_err(|e| e.to_string())?;
        let cs = p.status.unwrap().container_statuses.unwrap().remove(0);
        if cs.restart_count >= 1 && cs.ready { Ok(()) } else { Err(format!("restarts {} ready {}", cs.restart_count, cs.ready)) }
    })
    .await;
    processor(&["produce", "--topic", &s.input, "--count", "10000", "--seed", "3"]).unwrap();
    let (_, vv) = caught_up(&s.ns).await;
    let out = check(&s.input, &vv, "sum").expect("exact after a kill and a rebalance");
    assert!(out.contains("60000 input events"), "{out}");
}

#[tokio::test]
async fn invalid_events_are_counted_as_rejected_and_never_stop_the_view() {
    let s = pipeline("reject", &[]).await;
    create::<Processor>(&s.ns, processor_json("sum", 1)).await;
    processor(&["produce", "--topic", &s.input, "--count", "5000", "--invalid-every", "100"]).unwrap();
    let (_, vv) = caught_up(&s.ns).await;
    let out = check(&s.input, &vv, "sum").unwrap();
    assert!(out.contains("50 rejected"), "{out}");
    let pod = s.ns.api::<Pod>().list(&ListParams::default().labels("kappa.dev/processor=totals")).await.unwrap().items.remove(0);
    let ip = pod.status.clone().unwrap().pod_ip.unwrap();
    let metrics = http_get(&ip, 8080, "/metrics").await;
    assert!(metrics.contains("kappa_processor_rejected_total 50"), "{metrics}");
    let logs = s.ns.logs(&pod, "processor").await;
    assert!(logs.contains("rejected event at") && !logs.contains("not json"), "rejections are logged without content:\n{logs}");
}

#[tokio::test]
async fn a_missing_input_is_named_and_nothing_is_created() {
    let s = pipeline("missing", &[]).await;
    let mut p = processor_json("sum", 1);
    p["spec"]["inputs"] = json!(["orders", "refunds"]);
    create::<Processor>(&s.ns, p).await;
    let p = wait_for("the Processor to name the missing input", WAIT, || async {
        let p = processor_state(&s.ns).await?;
        let ready = p.status.clone().unwrap_or_default().conditions.into_iter().find(|c| c.type_ == "Ready");
        match ready {
            Some(c) if c.message.contains("Topic refunds") => Ok(c),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(p.status, "False");
    assert!(p.message.contains("does not exist"), "{}", p.message);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(s.ns.api::<ViewVersion>().list(&ListParams::default()).await.unwrap().items.is_empty(), "no version is created");
    assert!(s.ns.api::<Deployment>().list(&ListParams::default()).await.unwrap().items.is_empty(), "no Deployment is created");

    let refunds = unique("e2e-refunds");
    create::<Topic>(
        &s.ns,
        json!({"metadata": {"name": "refunds"}, "spec": {"topicName": refunds, "partitions": 1, "deletionPolicy": "Delete"}}),
    )
    .await;
    processor(&["produce", "--topic", &refunds, "--count", "100"]).unwrap();
    let (_, vv) = caught_up(&s.ns).await;
    assert_eq!(vv.spec.input_topics, vec![s.input.clone(), refunds.clone()]);
    check(&format!("{},{refunds}", s.input), &vv, "sum").unwrap();
}

#[tokio::test]
async fn an_image_that_cannot_run_is_reported() {
    let s = pipeline("badimage", &[]).await;
    let mut p = processor_json("sum", 1);
    p["spec"]["template"]["image"] = json!("ghcr.io/kappa-dev/no-such-image:1");
    create::<Processor>(&s.ns, p).await;
    let ready = wait_for("the Processor to say its pods cannot run", WAIT, || async {
        let p = processor_state(&s.ns).await?;
        let ready = p.status.clone().unwrap_or_default().conditions.into_iter().find(|c| c.type_ == "Ready");
        match ready {
            Some(c) if c.reason == "PodsFailing" => Ok(c),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(ready.message.contains("no-such-image") && ready.message.contains("cannot start"), "{}", ready.message);
}

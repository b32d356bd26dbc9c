//! Pipelines on the lab: a Processor that reads another's view
//! (`processor/NAME` in spec.inputs) converges to an exact view and follows
//! its upstream's cutovers with a replay of its own (Independent); a
//! Together cascade cuts two and three stages over as one, last stage
//! first, through a kill of the operator at its commit, and rolls back as
//! one; a committed chain cuts over even when its first stage's candidate
//! crash-loops after the commit; a cycle or a missing upstream is refused with nothing created.

mod support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ConfigMap, Event, Pod},
};
use kappa_operator::{
    api::{KafkaCluster, Processor, ViewVersion, conditions},
    rollout::OUTAGE_GRACE,
};
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use serde_json::json;
use support::{
    TestNs, create, patch,
    pipeline::{Pipeline, WAIT, caught_up, check, first_version_live, pipeline, processor_json},
    processor, wait_for,
};

/// Stage two of `examples/pipeline-two-stage.yaml` (per customer, the
/// highest total stage one's view has shown, which is the total), named
/// `name` and reading `upstream`.
fn peaks(name: &str, upstream: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/pipeline-two-stage.yaml")).unwrap();
    let mut stage_two = serde_yaml::Deserializer::from_str(&text)
        .map(|d| <serde_json::Value as serde::Deserialize>::deserialize(d).unwrap())
        .find(|d| d["metadata"]["name"] == "customer-peaks")
        .expect("customer-peaks in the example");
    assert_eq!(stage_two["spec"]["inputs"], json!(["processor/order-totals"]));
    stage_two["metadata"] = json!({"name": name});
    stage_two["spec"]["inputs"] = json!([format!("processor/{upstream}")]);
    stage_two["spec"]["rollout"] = json!({"stableForSeconds": 2, "scaleDownDelaySeconds": 5});
    stage_two
}

async fn get(ns: &TestNs, name: &str) -> Result<Processor, String> {
    ns.api::<Processor>().get(name).await.map_err(|e| e.to_string())
}

async fn version_of(ns: &TestNs, processor: &str, version: &str) -> ViewVersion {
    ns.api::<ViewVersion>().get(&format!("{processor}-{version}")).await.unwrap()
}

/// `downstream`'s active version is built on `upstream_version`, has
/// caught up, and its view is exactly what the logic makes of that
/// upstream version's view.
async fn serves_on(ns: &TestNs, downstream: &str, upstream: &str, upstream_version: &str) -> (String, ViewVersion) {
    serves_on_field(ns, downstream, upstream, upstream_version, "sum").await
}

/// The same, for a stage that keeps the highest `field` of its upstream's values.
async fn serves_on_field(ns: &TestNs, downstream: &str, upstream: &str, upstream_version: &str, field: &str) -> (String, ViewVersion) {
    let up = version_of(ns, upstream, upstream_version).await;
    wait_for(&format!("{downstream} to serve a view built on {upstream} {upstream_version}"), WAIT, || async {
        let p = get(ns, downstream).await?;
        let st = p.status.clone().unwrap_or_default();
        let active = st.active_version.clone().ok_or("no active version")?;
        let vv = ns.api::<ViewVersion>().get(&format!("{downstream}-{active}")).await.map_err(|e| e.to_string())?;
        if vv.spec.upstreams.get(upstream).map(String::as_str) != Some(upstream_version) {
            return Err(format!("active {active} is built on {:?}", vv.spec.upstreams));
        }
        if st.phase.as_deref() != Some("Live") || st.lag != Some(0) {
            return Err(format!("phase {:?} lag {:?}", st.phase, st.lag));
        }
        let checked =
            processor(&["check", "--input", &up.spec.output_topic, "--view", &vv.spec.output_topic, "--logic", "max", "--field", field])?;
        Ok((active, vv)).inspect(|_| println!("{downstream}: {checked}"))
    })
    .await
}

#[tokio::test]
async fn a_two_stage_chain_converges_and_follows_an_upstream_cutover() {
    let s = pipeline("pipes", &[]).await;
    let (t1, _) = first_version_live(&s, processor_json("sum", 1), 3_000).await;
    create::<Processor>(&s.ns, peaks("peaks", "totals")).await;
    let (p1, vv1) = serves_on(&s.ns, "peaks", "totals", &t1).await;
    let stage_one = version_of(&s.ns, "totals", &t1).await;
    check(&s.input, &stage_one, "sum").expect("stage one's view is exact");
    assert_eq!(vv1.spec.input_topics, vec![stage_one.spec.output_topic]);

    // Status: who reads whom, and what the active version is built on.
    let totals = get(&s.ns, "totals").await.unwrap().status.unwrap();
    assert_eq!(totals.downstreams, ["peaks"]);
    let st = get(&s.ns, "peaks").await.unwrap().status.unwrap();
    assert_eq!(st.built_on.as_deref(), Some(format!("totals@{t1}").as_str()));
    assert_eq!(
        (st.upstreams[0].processor.as_str(), st.upstreams[0].active_version.as_deref(), st.upstreams[0].built_on.as_deref()),
        ("totals", Some(t1.as_str()), Some(t1.as_str()))
    );

    // ... as the plugin and kubectl show it.
    let plugin =
        std::process::Command::new(env!("CARGO_BIN_EXE_kubectl-kappa")).args(["status", "peaks", "-n", &s.ns.name]).output().unwrap();
    let plugin = String::from_utf8_lossy(&plugin.stdout);
    assert!(plugin.contains(&format!("upstream   totals  active {t1}  built on {t1}")), "{plugin}");
    let listed = std::process::Command::new("kubectl").args(["get", "processors", "-n", &s.ns.name]).output().unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.contains("BUILT-ON") && listed.contains(&format!("totals@{t1}")), "{listed}");

    // Stage one replays (Independent): when it cuts over, stage two replays
    // the new view into a version of its own and cuts over too.
    patch::<Processor>(&s.ns, "totals", json!({"spec": {"reprocessNonce": "again"}})).await.unwrap();
    wait_for("stage one to cut over", WAIT, || async {
        let active = get(&s.ns, "totals").await?.status.and_then(|s| s.active_version);
        if active.as_deref() != Some(t1.as_str()) { Ok(()) } else { Err(format!("active {active:?}")) }
    })
    .await;
    let (p, _) = caught_up(&s.ns).await;
    let t2 = p.status.unwrap().active_version.unwrap();
    let (p2, _) = serves_on(&s.ns, "peaks", "totals", &t2).await;
    assert_ne!(p2, p1, "a new upstream version is a new downstream version");
    let cascade =
        s.ns.api::<k8s_openapi::api::core::v1::Event>()
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|e| e.message)
            .find(|m| m.contains(&format!("version {p2} replays")));
    let cascade = cascade.expect("an event for the new downstream version");
    assert!(cascade.contains(&format!("a cascade: Processor totals cut over to version {t2}")), "{cascade}");

    // The upstream version the old downstream version read is released
    // once no one reads it: retainVersions 1 keeps t1 as the standby.
    wait_for("stage one to keep only its active version and one standby", WAIT, || async {
        let vs = s.ns.api::<ViewVersion>().list(&Default::default()).await.map_err(|e| e.to_string())?;
        let of_totals: Vec<String> = vs.items.iter().filter(|v| v.spec.processor == "totals").map(|v| v.spec.version.clone()).collect();
        if of_totals.len() == 2 { Ok(()) } else { Err(format!("{of_totals:?}")) }
    })
    .await;
}

/// The versions readers are told, stage by stage (ConfigMap `P-view`).
async fn served(ns: &TestNs, stages: &[&str]) -> Vec<String> {
    served_from(&ns.api(), stages).await
}

async fn served_from(maps: &Api<ConfigMap>, stages: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for s in stages {
        let cm = maps.get_opt(&format!("{s}-view")).await.ok().flatten();
        out.push(cm.and_then(|c| c.data?.get("version").cloned()).unwrap_or_default());
    }
    out
}

/// Samples what readers are told every 100 ms until `stop` is set.
fn sample_readers(ns: &TestNs, stages: &'static [&'static str], stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Vec<Vec<String>>> {
    let maps = ns.api::<ConfigMap>();
    tokio::spawn(async move {
        let mut seen: Vec<Vec<String>> = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            let now = served_from(&maps, stages).await;
            if seen.last() != Some(&now) {
                seen.push(now);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        seen
    })
}

/// Per Processor: how many events with this reason it has.
async fn events_of(ns: &TestNs, processor: &str, reason: &str) -> usize {
    ns.api::<Event>()
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(processor) && e.reason.as_deref() == Some(reason))
        .count()
}

/// What each stage says it waits for (for a wait's timeout message: CI
/// shows the panic, not always the diagnostics after it).
async fn stage_report(ns: &TestNs, stages: &[&str]) -> String {
    let mut out = Vec::new();
    for s in stages {
        let st = get(ns, s).await.ok().and_then(|p| p.status).unwrap_or_default();
        let progressing = conditions::find(&st.conditions, conditions::types::PROGRESSING).map(|c| c.message.clone()).unwrap_or_default();
        out.push(format!(
            "{s}: {} active {} candidate {}: {progressing}",
            st.phase.unwrap_or_default(),
            st.active_version.unwrap_or_default(),
            st.candidate_version.unwrap_or_default()
        ));
    }
    out.join("; ")
}

/// Every stage's active version, in order.
async fn actives(ns: &TestNs, stages: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for s in stages {
        out.push(get(ns, s).await.ok().and_then(|p| p.status?.active_version).unwrap_or_default());
    }
    out
}

/// Stage one, `totals`, cutting over `Together` and live on its first
/// version (returned), and stage two, `peaks`, reading it.
async fn together_chain(s: &Pipeline) -> String {
    let mut totals = processor_json("sum", 1);
    totals["spec"]["rollout"]["cascade"] = json!("Together");
    let (t1, _) = first_version_live(s, totals, 3_000).await;
    create::<Processor>(&s.ns, peaks("peaks", "totals")).await;
    t1
}

/// Restarts the operator so that it pauses, to be killed, right after the
/// next cascade commit record.
fn pause_at_cascade_commit(s: &mut Pipeline) {
    s.op.env = vec![("KAPPA_FAULT_PAUSE_AT".into(), "cascade-committed".into()), ("KAPPA_FAULT_PAUSE_SECONDS".into(), "300".into())];
    s.op.restart();
}

/// Changes stage one and waits for the operator to pause at the chain's commit.
async fn change_stage_one_until_paused(s: &Pipeline) {
    patch::<Processor>(&s.ns, "totals", json!({"spec": {"reprocessNonce": "again"}})).await.unwrap();
    wait_for("the operator to pause after the commit", WAIT, || async {
        if s.op.logs().contains("fault: pausing at cascade-committed") { Ok(()) } else { Err("not yet".into()) }
    })
    .await;
}

#[tokio::test]
async fn a_together_cascade_cuts_the_chain_over_last_stage_first() {
    let s = pipeline("together", &[]).await;
    let t1 = together_chain(&s).await;
    let (p1, _) = serves_on(&s.ns, "peaks", "totals", &t1).await;

    const STAGES: &[&str] = &["totals", "peaks"];
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_readers(&s.ns, STAGES, stop.clone());
    patch::<Processor>(&s.ns, "totals", json!({"spec": {"reprocessNonce": "again"}})).await.unwrap();
    // Stage two builds on stage one's candidate before stage one cuts over.
    let (t2, p2) = wait_for("stage two to build on stage one's offered candidate", WAIT, || async {
        let st = get(&s.ns, "totals").await?.status.unwrap_or_default();
        let offered = st.cascade_candidate.ok_or("nothing offered")?;
        let peaks = get(&s.ns, "peaks").await?.status.unwrap_or_default();
        let c = peaks.candidate_version.ok_or("no stage-two candidate")?;
        if st.active_version.as_deref() == Some(t1.as_str()) && version_of(&s.ns, "peaks", &c).await.spec.upstreams["totals"] == offered {
            Ok((offered, c))
        } else {
            Err(format!("stage one active {:?}", st.active_version))
        }
    })
    .await;
    serves_on(&s.ns, "peaks", "totals", &t2).await;
    wait_for("both stages to be live on the new chain", WAIT, || async {
        let now = served(&s.ns, STAGES).await;
        if now == [t2.clone(), p2.clone()] { Ok(()) } else { Err(format!("{now:?}")) }
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let seen = sampler.await.unwrap();
    println!("readers saw {seen:?}");
    assert_eq!(seen.first(), Some(&vec![t1.clone(), p1.clone()]));
    assert!(!seen.contains(&vec![t2.clone(), p1.clone()]), "a new stage one with an old stage two: {seen:?}");
    assert_eq!(events_of(&s.ns, "totals", "CascadeCommitted").await, 1);
    assert_eq!((events_of(&s.ns, "totals", "CutOver").await, events_of(&s.ns, "peaks", "CutOver").await), (1, 1));
    let (_, vv) = serves_on(&s.ns, "peaks", "totals", &t2).await;
    assert_eq!(vv.spec.version, p2);
}

#[tokio::test]
async fn a_three_stage_chain_survives_a_kill_at_its_commit_and_rolls_back_as_one() {
    let mut s = pipeline("chain3", &[]).await;
    let t1 = together_chain(&s).await;
    let mut third = peaks("tops", "peaks");
    third["spec"]["template"]["args"] = json!(["run", "--logic", "max", "--field", "max"]);
    create::<Processor>(&s.ns, third).await;
    const STAGES: &[&str] = &["totals", "peaks", "tops"];
    let p1 = serves_on(&s.ns, "peaks", "totals", &t1).await.0;
    let q1 = serves_on_field(&s.ns, "tops", "peaks", &p1, "max").await.0;

    // The operator is killed right after the chain's commit record.
    pause_at_cascade_commit(&mut s);
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_readers(&s.ns, STAGES, stop.clone());
    change_stage_one_until_paused(&s).await;
    s.op.kill();
    assert_eq!(served(&s.ns, STAGES).await, [t1.clone(), p1.clone(), q1.clone()], "nothing switched before the kill");
    s.op.env.clear();
    s.op.restart();
    let new = wait_for("the chain to cut over after the restart", WAIT, || async {
        let a = actives(&s.ns, STAGES).await;
        let now = served(&s.ns, STAGES).await;
        if a[0] != t1 && a[1] != p1 && a[2] != q1 && now == a {
            Ok(a)
        } else {
            Err(format!("active {a:?} served {now:?}; {}", stage_report(&s.ns, STAGES).await))
        }
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let seen = sampler.await.unwrap();
    println!("readers saw {seen:?}");
    for w in &seen {
        for i in 0..2 {
            // A stage never serves a new version over an older stage below it.
            assert!(!(w[i] == new[i] && w[i + 1] != new[i + 1]), "stage {i} new over stage {} old: {seen:?}", i + 1);
        }
    }
    for (stage, v) in STAGES.iter().zip(&new) {
        assert_eq!(events_of(&s.ns, stage, "CutOver").await, 1, "{stage}: one cutover");
        let created = s.op.logs().lines().filter(|l| l.contains("created version") && l.contains(v.as_str())).count();
        assert!(created <= 1, "{stage}: version {v} created once");
    }
    assert_eq!(events_of(&s.ns, "totals", "CascadeCommitted").await, 1);
    let (_, vv) = serves_on(&s.ns, "peaks", "totals", &new[0]).await;
    assert_eq!(vv.spec.version, new[1]);
    assert_eq!(serves_on_field(&s.ns, "tops", "peaks", &new[1], "max").await.0, new[2]);

    // Reverting stage one returns every stage to its standby, without a
    // replay, as one chain.
    let before: usize = s.op.logs().lines().filter(|l| l.contains("created version")).count();
    patch::<Processor>(&s.ns, "totals", json!({"spec": {"reprocessNonce": null}})).await.unwrap();
    wait_for("the chain to roll back", WAIT, || async {
        let now = served(&s.ns, STAGES).await;
        if now == [t1.clone(), p1.clone(), q1.clone()] {
            Ok(())
        } else {
            Err(format!("served {now:?}; {}", stage_report(&s.ns, STAGES).await))
        }
    })
    .await;
    assert_eq!(s.op.logs().lines().filter(|l| l.contains("created version")).count(), before, "no version made: no replay");
    for stage in STAGES {
        assert_eq!(events_of(&s.ns, stage, "RolledBack").await, 1, "{stage} rolled back once");
    }
    serves_on(&s.ns, "peaks", "totals", &t1).await;
    serves_on_field(&s.ns, "tops", "peaks", &p1, "max").await;
}

#[tokio::test]
async fn a_committed_chain_cuts_over_even_if_its_first_stage_crashes_after_the_commit() {
    let mut s = pipeline("chaincrash", &[]).await;
    let t1 = together_chain(&s).await;
    const STAGES: &[&str] = &["totals", "peaks"];
    let p1 = serves_on(&s.ns, "peaks", "totals", &t1).await.0;

    // The operator stops right after the chain's commit record...
    pause_at_cascade_commit(&mut s);
    change_stage_one_until_paused(&s).await;
    s.op.kill();
    let t2 = get(&s.ns, "totals").await.unwrap().status.unwrap().candidate_version.unwrap();
    // ...and meanwhile the first stage's candidate crash-loops, for a reason
    // the operator does not undo (as a processor failing on a record at the
    // tail of its input would): a command it does not own, which exits.
    let crash = json!({"spec": {"template": {"spec": {"containers": [{"name": "processor", "command": ["false"]}]}}}});
    s.ns.api::<Deployment>().patch(&format!("totals-{t2}"), &PatchParams::default(), &Patch::Strategic(&crash)).await.unwrap();
    // Long enough that the restarted operator counts it against the
    // version at once (a crash within OUTAGE_GRACE of Kafka's last return
    // does not count), before the stage below has switched.
    let kafka = s.ns.api::<KafkaCluster>().get("default").await.unwrap().status.unwrap();
    let kafka_up = conditions::find(&kafka.conditions, conditions::types::READY).unwrap().last_transition_time.0;
    let counts_after = kafka_up + OUTAGE_GRACE + Duration::from_secs(5);
    wait_for("the candidate to crash-loop", WAIT, || async {
        let pods = s.ns.api::<Pod>().list(&Default::default()).await.map_err(|e| e.to_string())?;
        let stops = pods
            .items
            .iter()
            .filter(|p| p.metadata.name.as_deref().is_some_and(|n| n.starts_with(&format!("totals-{t2}-"))))
            .flat_map(|p| p.status.iter().flat_map(|s| s.container_statuses.iter().flatten()))
            .filter(|c| c.restart_count >= 3)
            .filter_map(|c| c.last_state.as_ref()?.terminated.as_ref()?.finished_at.as_ref().map(|t| t.0));
        if stops.into_iter().any(|at| at > counts_after) { Ok(()) } else { Err("no counted crash yet".into()) }
    })
    .await;

    // The commit decided the cutover: the stage below switches, then the
    // first stage, instead of the first stage failing under it.
    s.op.env.clear();
    s.op.restart();
    let new = wait_for("the chain to cut over after the restart", WAIT, || async {
        let a = actives(&s.ns, STAGES).await;
        let now = served(&s.ns, STAGES).await;
        if a[0] == t2 && a[1] != p1 && now == a {
            Ok(a)
        } else {
            Err(format!("active {a:?} served {now:?}; {}", stage_report(&s.ns, STAGES).await))
        }
    })
    .await;
    assert_eq!(version_of(&s.ns, "peaks", &new[1]).await.spec.upstreams.get("totals"), Some(&t2));
    for stage in STAGES {
        assert_eq!(events_of(&s.ns, stage, "RolloutFailed").await, 0, "{stage} never failed");
    }
}

#[tokio::test]
async fn a_cycle_and_a_missing_upstream_are_refused_and_nothing_is_created() {
    let s = pipeline("pipecycle", &[]).await;
    create::<Processor>(&s.ns, peaks("a", "b")).await;
    create::<Processor>(&s.ns, peaks("b", "a")).await;
    create::<Processor>(&s.ns, peaks("c", "ghost")).await;
    for (name, reason, path) in
        [("a", "UpstreamCycle", "a → b → a"), ("b", "UpstreamCycle", "b → a → b"), ("c", "UpstreamMissing", "c → ghost")]
    {
        wait_for(&format!("{name} refused with {reason}"), WAIT, || async {
            let st = get(&s.ns, name).await?.status.unwrap_or_default();
            let stalled = st.conditions.iter().find(|c| c.type_ == "Stalled").ok_or("no Stalled condition")?;
            if stalled.status == "True" && stalled.reason == reason && stalled.message.contains(path) {
                Ok(())
            } else {
                Err(format!("{stalled:?}"))
            }
        })
        .await;
    }
    // A Processor of another namespace cannot be an input: admission says so.
    let elsewhere: Processor = serde_json::from_value(peaks("e", "other-namespace/totals")).unwrap();
    let refused = s.ns.api::<Processor>().create(&Default::default(), &elsewhere).await.unwrap_err().to_string();
    assert!(refused.contains("a Processor in another namespace cannot be an input"), "{refused}");
    let versions = s.ns.api::<ViewVersion>().list(&Default::default()).await.unwrap();
    assert!(
        versions.items.is_empty(),
        "nothing is created: {:?}",
        versions.items.iter().map(|v| v.metadata.name.clone()).collect::<Vec<_>>()
    );
    // Reading from a refused Processor is not itself refused: it waits.
    create::<Processor>(&s.ns, peaks("d", "a")).await;
    wait_for("d waits for a", WAIT, || async {
        let st = get(&s.ns, "d").await?.status.unwrap_or_default();
        let stalled = st.conditions.iter().any(|c| c.type_ == "Stalled" && c.status == "True");
        let waits = st.conditions.iter().any(|c| c.message.contains("waiting for Processor a"));
        if waits && !stalled { Ok(()) } else { Err(format!("{:?}", st.conditions)) }
    })
    .await;
    // Breaking the cycle lets both through.
    patch::<Processor>(&s.ns, "b", json!({"spec": {"inputs": ["orders"], "template": {"args": ["run", "--logic", "sum"]}}})).await.unwrap();
    wait_for("a and b to have active versions", WAIT, || async {
        for name in ["a", "b"] {
            get(&s.ns, name).await?.status.and_then(|s| s.active_version).ok_or(format!("{name} has no active version"))?;
        }
        Ok(())
    })
    .await;
}

//! Pipelines on the lab: a Processor that reads another's view
//! (`processor/NAME` in spec.inputs) converges to an exact view, follows
//! its upstream's cutovers with a replay of its own, and a cycle or a
//! missing upstream is refused with nothing created.

mod support;

use kappa_operator::api::{Processor, ViewVersion};
use serde_json::json;
use support::{
    TestNs, create, patch,
    pipeline::{WAIT, caught_up, first_version_live, pipeline, processor_json},
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
            processor(&["check", "--input", &up.spec.output_topic, "--view", &vv.spec.output_topic, "--logic", "max", "--field", "sum"])?;
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
    assert_eq!(vv1.spec.input_topics, vec![version_of(&s.ns, "totals", &t1).await.spec.output_topic]);

    // Status: who reads whom, and what the active version is built on.
    let totals = get(&s.ns, "totals").await.unwrap().status.unwrap();
    assert_eq!(totals.downstreams, ["peaks"]);
    let st = get(&s.ns, "peaks").await.unwrap().status.unwrap();
    assert_eq!(st.built_on.as_deref(), Some(format!("totals@{t1}").as_str()));
    assert_eq!(
        (st.upstreams[0].processor.as_str(), st.upstreams[0].active_version.as_deref(), st.upstreams[0].built_on.as_deref()),
        ("totals", Some(t1.as_str()), Some(t1.as_str()))
    );

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

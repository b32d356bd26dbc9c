//! `rollout --stages N`: a chain of N Processors over `records` input
//! records (stage one sums per customer, each further stage keeps the
//! highest value of the stage before). Stage one replays; measured: the
//! time from the change to the whole chain serving versions built on it,
//! and the API writes that takes, once with `cascade: Together` (the chain
//! cuts over as one) and once with `Independent` (each stage as soon as it
//! is ready).

use std::{
    path::Path,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::ConfigMap;
use kappa_operator::api::{Processor, ViewVersion};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;

use crate::common::{self, progress};

const STABLE_FOR: u64 = 5;
const SCALE_DOWN_DELAY: u64 = 5;
const KINDS: [(&str, &str); 4] = [("kappa.dev", "*"), ("apps", "deployments"), ("", "services"), ("", "configmaps")];

fn stage(i: usize) -> String {
    format!("s{i}")
}

fn stage_json(i: usize) -> serde_json::Value {
    let (inputs, args) = match i {
        1 => (json!(["orders"]), json!(["run", "--logic", "sum"])),
        2 => (json!(["processor/s1"]), json!(["run", "--logic", "max", "--field", "sum"])),
        _ => (json!([format!("processor/{}", stage(i - 1))]), json!(["run", "--logic", "max", "--field", "max"])),
    };
    json!({"metadata": {"name": stage(i)}, "spec": {
        "inputs": inputs, "replicas": 1,
        "template": {"image": "ghcr.io/kappa-dev/kappa-processor:bench", "args": args},
        "view": {"partitions": 3},
        "rollout": {"stableForSeconds": STABLE_FOR, "scaleDownDelaySeconds": SCALE_DOWN_DELAY, "retainVersions": 1, "cascade": "Together"}
    }})
}

/// Every stage Live, each built on the active version of the one before,
/// and every reader-facing ConfigMap naming the active version: the active
/// versions, stage by stage.
async fn chain_live(client: &Client, ns: &str, stages: usize) -> anyhow::Result<Option<Vec<String>>> {
    let processors: Api<Processor> = Api::namespaced(client.clone(), ns);
    let versions: Api<ViewVersion> = Api::namespaced(client.clone(), ns);
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let mut actives: Vec<String> = Vec::new();
    for i in 1..=stages {
        let st = processors.get(&stage(i)).await?.status.unwrap_or_default();
        let (Some("Live"), Some(active)) = (st.phase.as_deref(), st.active_version) else { return Ok(None) };
        let served = maps.get_opt(&format!("{}-view", stage(i))).await?.and_then(|c| c.data?.get("version").cloned());
        if served.as_deref() != Some(active.as_str()) {
            return Ok(None);
        }
        if i > 1 {
            let vv = versions.get(&format!("{}-{active}", stage(i))).await?;
            if vv.spec.upstreams.get(&stage(i - 1)) != actives.last() {
                return Ok(None);
            }
        }
        actives.push(active);
    }
    Ok(Some(actives))
}

pub async fn run(operator: &Path, processor: &Path, records: u64, stages: usize) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(stages >= 2, "--stages must be at least 2");
    let (client, ns, bootstrap, input) = common::namespace_with_input("bench-chain").await?;
    let pp = PostParams::default();
    let op = common::Operator::start(operator, &ns, &[])?;
    let processors: Api<Processor> = Api::namespaced(client.clone(), &ns);
    for i in 1..=stages {
        processors.create(&pp, &serde_json::from_value(stage_json(i))?).await?;
    }
    crate::rollout::produce(processor, &bootstrap, &input, records, 1)?;
    let mut before = common::wait_until_some("the chain to be live", Duration::from_secs(600), || chain_live(&client, &ns, stages)).await?;
    progress(format!("{stages} stages live over {records} events: {before:?}"));

    let mut figures = serde_json::Map::new();
    for (round, mode) in ["Together", "Independent"].into_iter().enumerate() {
        let patch = json!({"spec": {"reprocessNonce": format!("bench-{round}"), "rollout": {"cascade": mode}}});
        let writes_before = common::operator_writes(&client, &KINDS, true).await?;
        let started = Instant::now();
        processors.patch(&stage(1), &PatchParams::default(), &Patch::Merge(&patch)).await?;
        let after = common::wait_until_some(&format!("the chain to cut over ({mode})"), Duration::from_secs(600), || async {
            Ok(chain_live(&client, &ns, stages).await?.filter(|now| now.iter().zip(&before).all(|(n, b)| n != b)))
        })
        .await?;
        let seconds = started.elapsed().as_secs_f64();
        progress(format!("{mode}: the chain serves {after:?} {seconds:.1} s after the change"));
        // The old versions scale down after the delay: part of the rollout.
        tokio::time::sleep(Duration::from_secs(SCALE_DOWN_DELAY + 5)).await;
        let writes = common::operator_writes(&client, &KINDS, true).await? - writes_before;
        progress(format!("{mode}: {writes} API writes (events included)"));
        let key = mode.to_lowercase();
        figures.insert(format!("{key}_chain_promoted_seconds"), json!((seconds * 10.0).round() / 10.0));
        figures.insert(format!("{key}_writes_per_chain_rollout"), json!(writes));
        before = after;
    }
    progress("cleaning up");
    common::delete_namespace(&client, &ns, Duration::from_secs(180)).await?;
    drop(op);
    figures.insert("stages".into(), json!(stages));
    figures.insert("records".into(), json!(records));
    figures.insert("stable_for_seconds".into(), json!(STABLE_FOR));
    Ok(serde_json::Value::Object(figures))
}

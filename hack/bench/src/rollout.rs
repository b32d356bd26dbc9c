//! `rollout`: one complete v1 -> v2 rollout on the lab over `records` input
//! records: how long after the candidate has consumed everything the
//! Service switches (stableFor subtracted), how many API writes the whole
//! rollout takes (it must not grow with the replay's length), and a rollback
//! to a standby that is 10,000 records behind.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::{Event, Service};
use kappa_operator::{
    api::Processor,
    kafka::{Settings, client::WireKafka},
};
use kube::{
    Api,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;

use crate::common::{self, Operator, progress};

const STABLE_FOR: u64 = 5;
/// What the operator writes besides Events: (API group, resource).
const KINDS: [(&str, &str); 5] = [("kappa.dev", "*"), ("apps", "deployments"), ("batch", "jobs"), ("", "services"), ("", "configmaps")];

pub async fn run(operator: &Path, processor: &Path, records: u64) -> anyhow::Result<serde_json::Value> {
    let (client, ns, bootstrap, input) = common::namespace_with_input("bench-rollout").await?;
    let kafka = WireKafka::new(Settings::plaintext(&bootstrap));
    let pp = PostParams::default();
    let op = Operator::start(operator, &ns, &[])?;
    let processors: Api<Processor> = Api::namespaced(client.clone(), &ns);
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    processors
        .create(
            &pp,
            &serde_json::from_value(json!({"metadata": {"name": "totals"}, "spec": {
                "inputs": ["orders"], "replicas": 1,
                "template": {"image": "ghcr.io/kappa-dev/kappa-processor:bench", "args": ["run", "--logic", "sum"]},
                "view": {"partitions": 3},
                "rollout": {"stableForSeconds": STABLE_FOR, "scaleDownDelaySeconds": 5, "retainVersions": 1},
                "serving": {"port": 8080}
            }}))?,
        )
        .await?;
    produce(processor, &bootstrap, &input, records, 1)?;
    let v1 = live(&processors, &kafka, &input, None).await?;
    progress(format!("v1 ({v1}) is live over {records} events"));

    // The rollout: writes counted from the spec change to the old version's scale-down.
    let writes_before = common::operator_writes_by(&client, &KINDS, false).await?;
    let events_before = operator_events(&client, &ns).await?;
    let logic = |l: &str| json!({"spec": {"template": {"args": ["run", "--logic", l]}}});
    processors.patch("totals", &PatchParams::default(), &Patch::Merge(logic("count"))).await?;
    let (v2, to_switch) = time_to_switch(&processors, &kafka, &input, "totals", |v2| {
        let services = services.clone();
        async move { Ok(selected_version(&services).await?.as_deref() == Some(v2.as_str())) }
    })
    .await?;
    let promote_latency = (to_switch - STABLE_FOR as f64).max(0.0);
    progress(format!("Service switched to v2 {to_switch:.1} s after the gate ({promote_latency:.1} s beyond stableFor)"));
    common::wait_until("v1 to scale down to a standby", Duration::from_secs(120), || async {
        let deploy: k8s_openapi::api::apps::v1::Deployment = Api::namespaced(client.clone(), &ns).get(&format!("totals-{v1}")).await?;
        Ok(deploy.status.and_then(|s| s.replicas).unwrap_or(0) == 0)
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let writes_after = common::operator_writes_by(&client, &KINDS, false).await?;
    let mut writes = 0.0;
    for (kind, n) in &writes_after {
        let n = n - writes_before.get(kind).copied().unwrap_or(0.0);
        if n > 0.0 {
            progress(format!("  {n:>3} {kind}"));
            writes += n;
        }
    }
    let events = operator_events(&client, &ns).await? - events_before;
    let writes_per_rollout = writes + events as f64;
    progress(format!("the rollout took {writes} create/update/patch requests and {events} events"));

    // Rollback to the standby, 10,000 records behind.
    produce(processor, &bootstrap, &input, 10_000, 2)?;
    live(&processors, &kafka, &input, Some(&v2)).await?;
    let rollback_start = Instant::now();
    processors.patch("totals", &PatchParams::default(), &Patch::Merge(logic("sum"))).await?;
    common::wait_until("the Service to switch back to v1", Duration::from_secs(300), || async {
        Ok(selected_version(&services).await?.as_deref() == Some(v1.as_str()))
    })
    .await?;
    let rollback_seconds = rollback_start.elapsed().as_secs_f64();
    progress(format!("rolled back to v1 in {rollback_seconds:.1} s"));

    progress("cleaning up");
    common::delete_namespace(&client, &ns, Duration::from_secs(120)).await?;
    drop(op);
    Ok(json!({
        "promote_latency_seconds": (promote_latency * 10.0).round() / 10.0,
        "stable_for_seconds": STABLE_FOR,
        "writes_per_rollout": writes_per_rollout,
        "events_per_rollout": events,
        "rollback_seconds": (rollback_seconds * 10.0).round() / 10.0,
        "records": records + 10_000,
    }))
}

/// Waits for Processor `name`'s candidate to meet the gate (its group's lag
/// 0, read from Kafka), then for `switched(candidate)`: the candidate and
/// the seconds from the gate to the switch.
pub(crate) async fn time_to_switch<F, Fut>(
    processors: &Api<Processor>,
    kafka: &WireKafka,
    input: &str,
    name: &str,
    switched: F,
) -> anyhow::Result<(String, f64)>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let client = kube::Client::from(processors.clone());
    let ns = processors.namespace().unwrap_or_default();
    let started = Instant::now();
    let (mut candidate, mut gate_met) = (None::<String>, None::<Instant>);
    loop {
        if candidate.is_none() {
            candidate = processors.get(name).await?.status.and_then(|s| s.candidate_version);
        }
        if let Some(c) = &candidate {
            if gate_met.is_none() && kafka.group_lag(&common::consumer_group(&client, ns, name, c).await?, input).await? == Some(0) {
                gate_met = Some(Instant::now());
                progress(format!("{name}'s candidate {c} met the gate (lag 0) after {:.1} s", started.elapsed().as_secs_f64()));
            }
            if switched(c.clone()).await? {
                let gate = gate_met.unwrap_or_else(Instant::now);
                return Ok((c.clone(), gate.elapsed().as_secs_f64()));
            }
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(300), "no cutover of {name} within 5 minutes");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) fn produce(processor: &Path, bootstrap: &str, topic: &str, count: u64, seed: u64) -> anyhow::Result<()> {
    let out = std::process::Command::new(processor)
        .args(["produce", "--bootstrap", bootstrap, "--topic", topic, "--count", &count.to_string(), "--seed", &seed.to_string()])
        .output()?;
    anyhow::ensure!(out.status.success(), "produce failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// Waits until the Processor is Live (on `version`, if given) and its
/// active version has committed everything (read from Kafka).
async fn live(processors: &Api<Processor>, kafka: &WireKafka, input: &str, version: Option<&str>) -> anyhow::Result<String> {
    let start = Instant::now();
    let ns = processors.namespace().unwrap_or_default();
    loop {
        let st = processors.get("totals").await?.status.unwrap_or_default();
        let active = st.active_version.clone().unwrap_or_default();
        if st.phase.as_deref() == Some("Live")
            && version.is_none_or(|v| v == active)
            && kafka
                .group_lag(&common::consumer_group(&kube::Client::from(processors.clone()), ns, "totals", &active).await?, input)
                .await?
                == Some(0)
        {
            return Ok(active);
        }
        anyhow::ensure!(start.elapsed() < Duration::from_secs(300), "not live after 300 s: {:?}", st.phase);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn selected_version(services: &Api<Service>) -> anyhow::Result<Option<String>> {
    Ok(services.get_opt("totals").await?.and_then(|s| s.spec?.selector?.get("kappa.dev/version").cloned()))
}

/// Events the operator recorded in the namespace (counting repeats).
async fn operator_events(client: &kube::Client, ns: &str) -> anyhow::Result<i64> {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    Ok(events
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter(|e| e.reporting_component.as_deref() == Some("kappa-operator"))
        .map(|e| e.count.unwrap_or(1).max(1) as i64)
        .sum())
}

//! `kubectl kappa`: a kubectl plugin for Kappa Operator's Processors.
//!
//! ```text
//! kubectl kappa status P          phase, active and candidate, replay progress and ETA, conditions, recent events
//! kubectl kappa history P         every version: when it was created, promoted, retired
//! kubectl kappa promote P [V]     promote the version awaiting a manual promotion (or V)
//! kubectl kappa rollback P        return readers to the newest standby, without a replay
//! kubectl kappa reprocess P       replay the same code from offset zero into a new version
//! kubectl kappa plan -f FILE      what applying FILE would do to each Processor
//! ```
//!
//! `-n NAMESPACE` as kubectl (default: the kubeconfig's), `-o json|yaml` for
//! machines. The decisions (what a plan means, which version a rollback
//! names) are the operator's own: the same version id function and the
//! Processor's `status.rollback`.

use std::{path::PathBuf, time::Duration};

use anyhow::{Context as _, anyhow, bail};
use clap::{Parser, Subcommand, ValueEnum};
use k8s_openapi::{api::core::v1::Event, jiff::Timestamp};
use kappa_operator::{
    api::{KafkaCluster, Processor, Topic, VersionPhase, ViewVersion, labels},
    controller::kafka_cluster::resolve,
    kafka::{Kafka, client::WireKafka},
    naming,
};
use kube::{
    Api, Client,
    api::{ListParams, Patch, PatchParams},
};
use serde_json::{Value, json};

#[derive(Parser)]
#[command(name = "kubectl-kappa", about = "Kappa Operator's Processors: status, history, promote, rollback, reprocess, plan")]
struct Cli {
    /// Namespace (default: the kubeconfig context's).
    #[arg(short, long, global = true)]
    namespace: Option<String>,
    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value_t = Output::Human)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Human,
    Json,
    Yaml,
}

#[derive(Subcommand)]
enum Command {
    /// Phase, active and candidate versions, replay progress and ETA, conditions, recent events.
    Status { processor: String },
    /// Every version of the Processor: when it was created, promoted, demoted, retired.
    History { processor: String },
    /// Promote the version awaiting a manual promotion (or the one named).
    Promote { processor: String, version: Option<String> },
    /// Return readers to the newest retained standby, without a replay.
    Rollback { processor: String },
    /// Replay the same code from offset zero into a new version.
    Reprocess { processor: String },
    /// What applying a manifest would do to each Processor in it (a server-side dry run).
    Plan {
        #[arg(short, long)]
        filename: PathBuf,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = kube::Config::infer().await.context("no Kubernetes configuration (KUBECONFIG or ~/.kube/config)")?;
    let ns = cli.namespace.clone().unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config)?;
    let (human, value) = match &cli.command {
        Command::Status { processor } => status(&client, &ns, processor).await?,
        Command::History { processor } => history(&client, &ns, processor).await?,
        Command::Promote { processor, version } => promote(&client, &ns, processor, version.as_deref()).await?,
        Command::Rollback { processor } => rollback(&client, &ns, processor).await?,
        Command::Reprocess { processor } => reprocess(&client, &ns, processor).await?,
        Command::Plan { filename } => plan(&client, &ns, filename).await?,
    };
    match cli.output {
        Output::Human => print!("{human}"),
        Output::Json => println!("{}", serde_json::to_string_pretty(&value)?),
        Output::Yaml => print!("{}", serde_yaml::to_string(&value)?),
    }
    Ok(())
}

async fn processor(client: &Client, ns: &str, name: &str) -> anyhow::Result<Processor> {
    Api::<Processor>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await?
        .ok_or_else(|| anyhow!("Processor {name:?} not found in namespace {ns:?}"))
}

async fn versions(client: &Client, ns: &str, name: &str) -> anyhow::Result<Vec<ViewVersion>> {
    let selector = format!("{}={name}", labels::PROCESSOR);
    let mut vs = Api::<ViewVersion>::namespaced(client.clone(), ns).list(&ListParams::default().labels(&selector)).await?.items;
    vs.sort_by_key(|v| v.metadata.creation_timestamp.clone().map(|t| t.0));
    Ok(vs)
}

fn when(t: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>) -> String {
    t.as_ref().map_or("-".into(), |t| t.0.strftime("%Y-%m-%d %H:%M:%S").to_string())
}

/// `[#######-------------]` for a share between 0 and 1.
fn bar(share: f64) -> String {
    let filled = (share.clamp(0.0, 1.0) * 20.0).round() as usize;
    format!("[{}{}]", "#".repeat(filled), "-".repeat(20 - filled))
}

fn duration(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// Records left over the version's recent rate, while it replays.
fn eta(v: &ViewVersion) -> Option<i64> {
    let st = v.status.as_ref()?;
    let (lag, rate) = (st.lag?, st.records_per_second?);
    (lag > 0 && rate > 0).then(|| (lag as f64 / rate as f64).ceil() as i64)
}

async fn status(client: &Client, ns: &str, name: &str) -> anyhow::Result<(String, Value)> {
    let p = processor(client, ns, name).await?;
    let st = p.status.clone().unwrap_or_default();
    let vs = versions(client, ns, name).await?;
    let find = |id: &Option<String>| id.as_ref().and_then(|id| vs.iter().find(|v| &v.spec.version == id));
    let mut out = format!("Processor {ns}/{name}: {}\n", st.phase.as_deref().unwrap_or("not yet observed"));
    let mut value = json!({"namespace": ns, "processor": name, "phase": st.phase, "desiredVersion": st.desired_version});
    if let Some(a) = &st.active_version {
        out += &format!("  active     {a}  lag {}\n", st.lag.map_or("unknown".into(), |l| l.to_string()));
        value["active"] = json!({"version": a, "lag": st.lag, "viewTopic": st.view_topic});
    }
    if let Some(c) = &st.candidate_version {
        let v = find(&st.candidate_version);
        let vst = v.and_then(|v| v.status.clone()).unwrap_or_default();
        let share = vst.progress.unwrap_or(0.0);
        let eta = v.and_then(eta);
        out += &format!(
            "  candidate  {c}  {} {:5.1}%  lag {}  {} rec/s  ETA {}\n",
            bar(share),
            share * 100.0,
            vst.lag.map_or("unknown".into(), |l| l.to_string()),
            vst.records_per_second.unwrap_or(0),
            eta.map_or("-".into(), duration)
        );
        value["candidate"] = json!({
            "version": c, "phase": vst.phase, "progress": vst.progress, "lag": vst.lag,
            "recordsPerSecond": vst.records_per_second, "etaSeconds": eta,
        });
    }
    out += "conditions\n";
    for c in &st.conditions {
        out += &format!("  {:<20} {:<6} {:<20} {}\n", c.type_, c.status, c.reason, c.message);
    }
    value["conditions"] = serde_json::to_value(&st.conditions)?;
    let fields = format!("involvedObject.kind=Processor,involvedObject.name={name}");
    let mut events = Api::<Event>::namespaced(client.clone(), ns).list(&ListParams::default().fields(&fields)).await?.items;
    let at = |e: &Event| {
        e.event_time.as_ref().map(|t| t.0).or(e.last_timestamp.as_ref().map(|t| t.0)).or(e
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0))
    };
    events.sort_by_key(|e| at(e));
    let recent: Vec<&Event> = events.iter().rev().take(8).rev().collect();
    out += "recent events\n";
    for e in &recent {
        let t = at(e).map_or("-".into(), |t| t.strftime("%H:%M:%S").to_string());
        out += &format!(
            "  {t}  {:<8} {:<20} {}\n",
            e.type_.as_deref().unwrap_or(""),
            e.reason.as_deref().unwrap_or(""),
            e.message.as_deref().unwrap_or("")
        );
    }
    value["events"] = json!(
        recent
            .iter()
            .map(|e| json!({"time": at(e).map(|t| t.to_string()), "type": e.type_, "reason": e.reason, "message": e.message}))
            .collect::<Vec<_>>()
    );
    Ok((out, value))
}

async fn history(client: &Client, ns: &str, name: &str) -> anyhow::Result<(String, Value)> {
    let p = processor(client, ns, name).await?;
    let active = p.status.as_ref().and_then(|s| s.active_version.clone());
    let vs = versions(client, ns, name).await?;
    let mut out =
        format!("{:<12} {:<10} {:<20} {:<20} {:<20} {:<20}\n", "VERSION", "PHASE", "CREATED", "PROMOTED", "DEMOTED", "RETIRED/FAILED");
    let mut rows = Vec::new();
    for v in &vs {
        let st = v.status.clone().unwrap_or_default();
        let phase = st.phase.map(|p| format!("{p:?}")).unwrap_or_else(|| "Pending".into());
        let mark = if active.as_deref() == Some(v.spec.version.as_str()) { "*" } else { "" };
        out += &format!(
            "{:<12} {:<10} {:<20} {:<20} {:<20} {:<20}\n",
            format!("{}{mark}", v.spec.version),
            phase,
            when(&v.metadata.creation_timestamp),
            when(&st.promoted_at),
            when(&st.demoted_at),
            when(&st.finished_at)
        );
        rows.push(json!({
            "version": v.spec.version, "phase": phase, "active": !mark.is_empty(),
            "created": v.metadata.creation_timestamp, "promoted": st.promoted_at, "demoted": st.demoted_at, "finished": st.finished_at,
            "message": st.message,
        }));
    }
    out += "(* active)\n";
    Ok((out, json!({"namespace": ns, "processor": name, "versions": rows})))
}

async fn patch_spec(client: &Client, ns: &str, name: &str, spec: Value) -> anyhow::Result<Processor> {
    let api = Api::<Processor>::namespaced(client.clone(), ns);
    Ok(api.patch(name, &PatchParams::default(), &Patch::Merge(&json!({"spec": spec}))).await?)
}

async fn promote(client: &Client, ns: &str, name: &str, version: Option<&str>) -> anyhow::Result<(String, Value)> {
    let p = processor(client, ns, name).await?;
    let st = p.status.clone().unwrap_or_default();
    if p.spec.rollout.promotion != kappa_operator::api::PromotionMode::Manual {
        bail!("Processor {ns}/{name} promotes by itself (spec.rollout.promotion: Auto): nothing to promote by hand");
    }
    let target = match version {
        Some(v) => v.to_string(),
        None if st.phase.as_deref() == Some("AwaitingPromotion") => st.candidate_version.clone().unwrap_or_default(),
        None => bail!(
            "Processor {ns}/{name} has no version awaiting promotion (phase {}); name one: kubectl kappa promote {name} VERSION",
            st.phase.as_deref().unwrap_or("unknown")
        ),
    };
    patch_spec(client, ns, name, json!({"rollout": {"promote": target}})).await?;
    Ok((
        format!("Processor {ns}/{name}: spec.rollout.promote = {target}; readers switch once it has caught up\n"),
        json!({"namespace": ns, "processor": name, "promote": target}),
    ))
}

async fn rollback(client: &Client, ns: &str, name: &str) -> anyhow::Result<(String, Value)> {
    let p = processor(client, ns, name).await?;
    let target =
        p.status.as_ref().and_then(|s| s.rollback.clone()).ok_or_else(|| {
            anyhow!("Processor {ns}/{name} has no retained standby to roll back to (spec.rollout.retainVersions keeps them)")
        })?;
    let t = &target.template;
    let mut spec = json!({
        "template": {"image": t.image, "command": t.command, "args": t.args, "env": if t.env.is_empty() { Value::Null } else { json!(t.env) }},
        "inputs": target.inputs,
        "view": target.view,
        "reprocessNonce": target.reprocess_nonce,
    });
    if p.spec.version.is_some() {
        spec["version"] = json!(target.version);
    }
    if p.spec.rollout.promotion == kappa_operator::api::PromotionMode::Manual {
        spec["rollout"] = json!({"promote": target.version});
    }
    patch_spec(client, ns, name, spec).await?;
    Ok((
        format!(
            "Processor {ns}/{name}: the spec names standby {} again; it catches up from its own offsets and takes over without a replay\n\
             (commit the same change to Git if a GitOps tool manages this Processor)\n",
            target.version
        ),
        json!({"namespace": ns, "processor": name, "rollbackTo": target.version}),
    ))
}

async fn reprocess(client: &Client, ns: &str, name: &str) -> anyhow::Result<(String, Value)> {
    processor(client, ns, name).await?;
    let nonce = format!("kubectl-kappa-{}", Timestamp::now().as_second());
    let p = patch_spec(client, ns, name, json!({"reprocessNonce": nonce})).await?;
    let id = naming::version_id(&p.spec);
    Ok((
        format!("Processor {ns}/{name}: reprocessNonce = {nonce}; version {id} replays from offset zero\n"),
        json!({"namespace": ns, "processor": name, "reprocessNonce": nonce, "version": id}),
    ))
}

/// Records a replay from offset zero would read: the inputs' retained
/// records, as Kafka reports them now.
async fn replay_size(client: &Client, ns: &str, p: &Processor) -> Result<i64, String> {
    let kc = Api::<KafkaCluster>::namespaced(client.clone(), ns)
        .get_opt(&p.spec.cluster_ref)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("KafkaCluster {} not found", p.spec.cluster_ref))?;
    let settings = resolve(client, ns, &kc.spec).await.map_err(|(reason, message)| format!("{reason}: {message}"))?;
    let topics_api = Api::<Topic>::namespaced(client.clone(), ns);
    let mut topics = Vec::new();
    for input in &p.spec.inputs {
        let t = topics_api.get_opt(input).await.map_err(|e| e.to_string())?.ok_or_else(|| format!("Topic {input} not found"))?;
        topics.push(t.kafka_name());
    }
    let kafka = WireKafka::new(settings);
    let offsets = tokio::time::timeout(Duration::from_secs(15), kafka.log_offsets(&topics))
        .await
        .map_err(|_| "Kafka did not answer within 15 s".to_string())?
        .map_err(|e| e.to_string())?;
    Ok(offsets.values().map(|(start, end)| end - start).sum())
}

/// Why a replay would be refused by the retention guard, if it would.
async fn retention_refusal(client: &Client, ns: &str, p: &Processor) -> anyhow::Result<Option<String>> {
    if p.spec.rollout.allow_truncated_history {
        return Ok(None);
    }
    let api = Api::<Topic>::namespaced(client.clone(), ns);
    let mut lost = Vec::new();
    for input in &p.spec.inputs {
        if let Some(st) = api.get_opt(input).await?.and_then(|t| t.status) {
            for tp in &st.truncated_partitions {
                lost.push(format!("{input} partition {} (log starts at {})", tp.partition, tp.log_start_offset));
            }
        }
    }
    Ok((!lost.is_empty()).then(|| format!("inputs lost history: {}", lost.join(", "))))
}

async fn plan(client: &Client, default_ns: &str, file: &PathBuf) -> anyhow::Result<(String, Value)> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let mut out = String::new();
    let mut rows = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let doc: Value = serde::Deserialize::deserialize(doc).with_context(|| format!("parsing {}", file.display()))?;
        if doc.is_null() || doc["kind"] != "Processor" {
            continue;
        }
        let name = doc["metadata"]["name"].as_str().ok_or_else(|| anyhow!("a Processor in {} has no metadata.name", file.display()))?;
        let ns = doc["metadata"]["namespace"].as_str().unwrap_or(default_ns);
        let (what, detail) = plan_one(client, ns, name, &doc).await?;
        out += &format!("Processor {ns}/{name}: {what}\n");
        if !detail.is_empty() {
            out += &format!("  {detail}\n");
        }
        rows.push(json!({"namespace": ns, "processor": name, "change": what, "detail": detail}));
    }
    if rows.is_empty() {
        out += &format!("no Processor in {}\n", file.display());
    }
    Ok((out, json!({"processors": rows})))
}

async fn plan_one(client: &Client, ns: &str, name: &str, doc: &Value) -> anyhow::Result<(String, String)> {
    let api = Api::<Processor>::namespaced(client.clone(), ns);
    let live = api.get_opt(name).await?;
    let mut doc = doc.clone();
    doc["metadata"]["namespace"] = json!(ns);
    let dry = api.patch(name, &PatchParams::apply("kubectl-kappa-plan").dry_run().force(), &Patch::Apply(&doc)).await;
    let after = match dry {
        Ok(p) => p,
        Err(kube::Error::Api(e)) => return Ok(("refused by admission".into(), e.message)),
        Err(e) => return Err(e.into()),
    };
    let id = naming::version_id(&after.spec);
    let size = |p: &Processor| {
        let p = p.clone();
        async move {
            match replay_size(client, ns, &p).await {
                Ok(n) => format!("{n} records"),
                Err(why) => format!("size unknown: {why}"),
            }
        }
    };
    let Some(live) = live else {
        return Ok((format!("created: version {id} replays from offset zero"), size(&after).await));
    };
    let st = live.status.clone().unwrap_or_default();
    let current = st.desired_version.clone().unwrap_or_else(|| naming::version_id(&live.spec));
    if id == current {
        let same = serde_json::to_value(&live.spec)? == serde_json::to_value(&after.spec)?;
        return Ok(if same {
            ("unchanged".into(), String::new())
        } else {
            (format!("in-place change of version {id} (no replay)"), String::new())
        });
    }
    let vs = versions(client, ns, name).await?;
    if let Some(v) = vs.iter().find(|v| v.spec.version == id && v.metadata.deletion_timestamp.is_none()) {
        let phase = v.status.as_ref().and_then(|s| s.phase);
        if phase == Some(VersionPhase::Standby) {
            return Ok((format!("returns to standby {id}: no replay, it catches up from its own offsets"), String::new()));
        }
        if phase != Some(VersionPhase::Failed) && phase != Some(VersionPhase::Retired) {
            return Ok((
                format!("version {id} exists ({}); the rollout goes on", phase.map_or("Pending".into(), |p| format!("{p:?}"))),
                String::new(),
            ));
        }
    }
    if let Some(why) = retention_refusal(client, ns, &after).await? {
        return Ok((
            "refused by the retention guard (ReprocessingBlocked)".into(),
            format!("{why}; raise retention or set spec.rollout.allowTruncatedHistory"),
        ));
    }
    let beside = st.active_version.clone().unwrap_or_else(|| current.clone());
    let superseded = match &st.candidate_version {
        Some(c) if c != &id => format!("; candidate {c} is superseded"),
        _ => String::new(),
    };
    Ok((format!("new version {id}: replays from offset zero beside {beside}{superseded}"), size(&after).await))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_bars_and_durations_read_well() {
        assert_eq!(bar(0.0), "[--------------------]");
        assert_eq!(bar(0.42), "[########------------]");
        assert_eq!(bar(1.5), "[####################]");
        assert_eq!(duration(42), "42s");
        assert_eq!(duration(600), "10m00s");
        assert_eq!(duration(7300), "2h01m");
    }
}

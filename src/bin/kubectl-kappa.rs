//! `kubectl kappa`: a kubectl plugin for Kappa Operator's Processors.
//!
//! ```text
//! kubectl kappa status P          phase, active and candidate, replay progress and ETA, conditions, recent events
//! kubectl kappa history P         every version: when it was created, promoted, retired
//! kubectl kappa promote P [V]     promote the version awaiting a manual promotion (or V)
//! kubectl kappa rollback P        return readers to the newest standby, without a replay
//! kubectl kappa reprocess P       replay the same code from offset zero into a new version
//! kubectl kappa plan -f FILE      what applying FILE would do to each Processor
//! kubectl kappa views P           sample keys whose values differ between the active and the candidate view
//! ```
//!
//! `-n NAMESPACE` as kubectl (default: the kubeconfig's), `-o json|yaml` for
//! machines. The decisions (what a plan means, which version a rollback
//! names) are the operator's own: the same version id function and the
//! Processor's `status.rollback`.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use bytes::Bytes;

use anyhow::{Context as _, anyhow, bail};
use clap::{Parser, Subcommand, ValueEnum};
use k8s_openapi::{api::core::v1::Event, jiff::Timestamp};
use kappa_operator::{
    api::{KafkaCluster, Processor, Topic, VersionPhase, ViewVersion, labels},
    controller::kafka_cluster::resolve,
    kafka::{
        Kafka,
        client::{TopicRead, WireKafka},
    },
    naming,
};
use kube::{
    Api, Client,
    api::{ListParams, Patch, PatchParams},
};
use serde_json::{Value, json};

#[derive(Parser)]
#[command(name = "kubectl-kappa", about = "Kappa Operator's Processors: status, history, promote, rollback, reprocess, plan, views")]
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
    /// Sample keys whose values differ between the active view and the candidate's (or another version's).
    Views {
        processor: String,
        /// Compare the active view with this version instead of the candidate.
        #[arg(long)]
        against: Option<String>,
        /// Keys to show of each kind of difference.
        #[arg(long, default_value_t = 10)]
        sample: usize,
        /// Records to read at most from each view.
        #[arg(long, default_value_t = 1_000_000)]
        max_records: usize,
        /// A top-level JSON field of the values to leave out of the comparison
        /// (a version stamp, a timestamp); repeatable.
        #[arg(long = "ignore", value_name = "FIELD")]
        ignored: Vec<String>,
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
        Command::Views { processor, against, sample, max_records, ignored } => {
            views(
                &client,
                &ns,
                processor,
                ViewsOptions { against: against.as_deref(), sample: *sample, max_records: *max_records, ignored },
            )
            .await?
        }
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
    if !st.upstreams.is_empty() || !st.downstreams.is_empty() {
        for u in &st.upstreams {
            out += &format!(
                "  upstream   {}  active {}  built on {}\n",
                u.processor,
                u.active_version.as_deref().unwrap_or("none"),
                u.built_on.as_deref().unwrap_or("-")
            );
        }
        if !st.downstreams.is_empty() {
            out += &format!("  downstream {}\n", st.downstreams.join(", "));
        }
        if let Some(c) = &st.cascade_candidate {
            out += &format!("  cascade    offers {c} to the downstream stages (cut over together)\n");
        }
        value["upstreams"] = serde_json::to_value(&st.upstreams)?;
        value["downstreams"] = json!(st.downstreams);
        value["cascadeCandidate"] = json!(st.cascade_candidate);
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
    let id = naming::version_id(&p.spec, &upstream_versions(client, ns, &p).await?);
    Ok((
        format!("Processor {ns}/{name}: reprocessNonce = {nonce}; version {id} replays from offset zero\n"),
        json!({"namespace": ns, "processor": name, "reprocessNonce": nonce, "version": id}),
    ))
}

/// What a new version would be built on, as the operator chooses it: of
/// each upstream Processor (`processor/NAME` inputs), the candidate a
/// Together cascade offers, else its active version.
async fn upstream_versions(client: &Client, ns: &str, p: &Processor) -> anyhow::Result<BTreeMap<String, String>> {
    let api = Api::<Processor>::namespaced(client.clone(), ns);
    let mut out = BTreeMap::new();
    for up in p.spec.upstreams() {
        if let Some(v) = api.get_opt(up).await?.and_then(|u| u.status?.offered_version().cloned()) {
            out.insert(up.to_string(), v);
        }
    }
    Ok(out)
}

/// A client for the Processor's Kafka cluster, as the operator reaches it.
async fn kafka_of(client: &Client, ns: &str, p: &Processor) -> Result<WireKafka, String> {
    let kc = Api::<KafkaCluster>::namespaced(client.clone(), ns)
        .get_opt(&p.spec.cluster_ref)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("KafkaCluster {} not found", p.spec.cluster_ref))?;
    let settings = resolve(client, ns, &kc.spec).await.map_err(|(reason, message)| format!("{reason}: {message}"))?;
    Ok(WireKafka::new(settings))
}

/// Records a replay from offset zero would read: the inputs' retained
/// records, as Kafka reports them now.
async fn replay_size(client: &Client, ns: &str, p: &Processor) -> Result<i64, String> {
    let kafka = kafka_of(client, ns, p).await?;
    let topics_api = Api::<Topic>::namespaced(client.clone(), ns);
    let mut topics = Vec::new();
    for input in p.spec.topic_inputs() {
        let t = topics_api.get_opt(input).await.map_err(|e| e.to_string())?.ok_or_else(|| format!("Topic {input} not found"))?;
        topics.push(t.kafka_name().to_owned());
    }
    let versions = Api::<ViewVersion>::namespaced(client.clone(), ns);
    for (up, v) in upstream_versions(client, ns, p).await.map_err(|e| e.to_string())? {
        let object = naming::version_object(&up, &v);
        let vv = versions.get_opt(&object).await.map_err(|e| e.to_string())?.ok_or_else(|| format!("ViewVersion {object} not found"))?;
        topics.push(vv.spec.output_topic);
    }
    let offsets = tokio::time::timeout(KAFKA_TIMEOUT, kafka.log_offsets(&topics))
        .await
        .map_err(|_| format!("Kafka did not answer within {} s", KAFKA_TIMEOUT.as_secs()))?
        .map_err(|e| e.to_string())?;
    Ok(offsets.values().map(|(start, end)| end - start).sum())
}

const KAFKA_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a replay would be refused by the retention guard, if it would.
async fn retention_refusal(client: &Client, ns: &str, p: &Processor) -> anyhow::Result<Option<String>> {
    if p.spec.rollout.allow_truncated_history {
        return Ok(None);
    }
    let api = Api::<Topic>::namespaced(client.clone(), ns);
    let mut lost = Vec::new();
    for input in p.spec.topic_inputs() {
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
    let id = naming::version_id(&after.spec, &upstream_versions(client, ns, &after).await?);
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
    let current = match st.desired_version.clone() {
        Some(d) => d,
        None => naming::version_id(&live.spec, &upstream_versions(client, ns, &live).await?),
    };
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

/// A view as its readers see it: each key's latest value (a tombstone
/// removes the key), from records in offset order per partition.
#[derive(Debug, Default)]
struct View {
    values: BTreeMap<Bytes, Bytes>,
    records: usize,
    /// Records without a key, which no reader can look up.
    unkeyed: usize,
    truncated: bool,
}

fn latest_values(read: TopicRead) -> View {
    let mut view = View { records: read.records.len(), truncated: read.truncated, ..Default::default() };
    for r in read.records {
        match (r.key, r.value) {
            (None, _) => view.unkeyed += 1,
            (Some(k), Some(v)) => {
                view.values.insert(k, v);
            }
            (Some(k), None) => {
                view.values.remove(&k);
            }
        }
    }
    view
}

/// The same value: equal bytes, or equal JSON (key order and spacing
/// aside) once the `ignored` top-level fields are left out.
fn same_value(a: &[u8], b: &[u8], ignored: &[String]) -> bool {
    let json = |bytes: &[u8]| {
        let mut v = serde_json::from_slice::<Value>(bytes).ok()?;
        if let Some(o) = v.as_object_mut() {
            o.retain(|k, _| !ignored.contains(k));
        }
        Some(v)
    };
    (a == b && ignored.is_empty()) || matches!((json(a), json(b)), (Some(x), Some(y)) if x == y) || (a == b && json(a).is_none())
}

/// The keys on which two views disagree, in key order.
#[derive(Debug, Default, PartialEq)]
struct ViewDiff {
    differing: Vec<Bytes>,
    only_active: Vec<Bytes>,
    only_other: Vec<Bytes>,
}

fn diff_views(active: &View, other: &View, ignored: &[String]) -> ViewDiff {
    let mut d = ViewDiff::default();
    for (k, v) in &active.values {
        match other.values.get(k) {
            None => d.only_active.push(k.clone()),
            Some(o) if !same_value(v, o, ignored) => d.differing.push(k.clone()),
            Some(_) => {}
        }
    }
    d.only_other = other.values.keys().filter(|k| !active.values.contains_key(*k)).cloned().collect();
    d
}

/// Bytes as text for people: UTF-8 (lossy), cut at `max` characters.
fn shown(bytes: Option<&Bytes>, max: usize) -> String {
    let Some(bytes) = bytes else { return "(absent)".into() };
    let text = String::from_utf8_lossy(bytes);
    if text.chars().count() > max { format!("{}…", text.chars().take(max).collect::<String>()) } else { text.into_owned() }
}

struct ViewsOptions<'a> {
    against: Option<&'a str>,
    sample: usize,
    max_records: usize,
    ignored: &'a [String],
}

async fn views(client: &Client, ns: &str, name: &str, opts: ViewsOptions<'_>) -> anyhow::Result<(String, Value)> {
    let ViewsOptions { against, sample, max_records, ignored } = opts;
    let p = processor(client, ns, name).await?;
    let st = p.status.clone().unwrap_or_default();
    let active = st.active_version.clone().ok_or_else(|| anyhow!("Processor {ns}/{name} has no active version yet"))?;
    let other = match against {
        Some(v) => v.to_string(),
        None => st.candidate_version.clone().ok_or_else(|| {
            anyhow!(
                "Processor {ns}/{name} has no candidate version; name one to compare with: kubectl kappa views {name} --against VERSION"
            )
        })?,
    };
    let vs = versions(client, ns, name).await?;
    let find = |id: &str| {
        vs.iter().find(|v| v.spec.version == id).ok_or_else(|| {
            let known: Vec<&str> = vs.iter().map(|v| v.spec.version.as_str()).collect();
            anyhow!("Processor {ns}/{name} has no version {id:?} (it has: {})", known.join(", "))
        })
    };
    let (a, o) = (find(&active)?, find(&other)?);
    let kafka = kafka_of(client, ns, &p).await.map_err(|e| anyhow!("Processor {ns}/{name}: {e}"))?;
    let read = |v: &ViewVersion| {
        let (kafka, topic) = (&kafka, v.spec.output_topic.clone());
        async move {
            let read = tokio::time::timeout(KAFKA_TIMEOUT * 4, kafka.read_topic(&topic, max_records))
                .await
                .map_err(|_| anyhow!("reading view topic {topic} took more than {} s", KAFKA_TIMEOUT.as_secs() * 4))?
                .with_context(|| format!("reading view topic {topic}"))?;
            anyhow::Ok(latest_values(read))
        }
    };
    let (av, ov) = (read(a).await?, read(o).await?);
    let d = diff_views(&av, &ov, ignored);
    let o_st = o.status.clone().unwrap_or_default();
    let mut notes = Vec::new();
    if let Some(lag) = o_st.lag.filter(|l| *l > 0) {
        notes.push(format!("version {other} has not caught up (lag {lag}): some differences are records it has not read yet"));
    }
    for (v, view) in [(&active, &av), (&other, &ov)] {
        if view.truncated {
            notes.push(format!("only the first {max_records} records of version {v}'s view were read (--max-records)"));
        }
        if view.unkeyed > 0 {
            notes.push(format!("version {v}'s view has {} records without a key, left out", view.unkeyed));
        }
    }
    let describe = |role: &str, id: &str, v: &ViewVersion, view: &View| {
        let phase = v.status.as_ref().and_then(|s| s.phase).map_or("Pending".into(), |p| format!("{p:?}"));
        (
            format!("  {role:<10} {id}  {phase:<10} {} keys ({} records) in {}\n", view.values.len(), view.records, v.spec.output_topic),
            json!({"version": id, "phase": phase, "topic": v.spec.output_topic, "keys": view.values.len(), "records": view.records}),
        )
    };
    let (a_line, a_json) = describe("active", &active, a, &av);
    let (o_line, o_json) = describe(if against.is_some() { "compared" } else { "candidate" }, &other, o, &ov);
    let mut out = format!("Processor {ns}/{name}: views\n{a_line}{o_line}");
    let total = d.differing.len() + d.only_active.len() + d.only_other.len();
    out += &if total == 0 {
        "the views agree on every key\n".to_string()
    } else {
        format!(
            "{} keys differ: {} with other values, {} only in {active}, {} only in {other}\n",
            total,
            d.differing.len(),
            d.only_active.len(),
            d.only_other.len()
        )
    };
    let mut samples = Vec::new();
    for (kind, keys) in [("differs", &d.differing), ("onlyActive", &d.only_active), ("onlyCompared", &d.only_other)] {
        for k in keys.iter().take(sample) {
            let (x, y) = (av.values.get(k), ov.values.get(k));
            out += &format!("  {:<24} {active}: {:<30} {other}: {}\n", shown(Some(k), 24), shown(x, 30), shown(y, 30));
            samples.push(json!({"kind": kind, "key": shown(Some(k), usize::MAX), "active": x.map(|x| shown(Some(x), usize::MAX)), "compared": y.map(|y| shown(Some(y), usize::MAX))}));
        }
    }
    for n in &notes {
        out += &format!("note: {n}\n");
    }
    Ok((
        out,
        json!({
            "namespace": ns, "processor": name, "active": a_json, "compared": o_json,
            "differing": d.differing.len(), "onlyActive": d.only_active.len(), "onlyCompared": d.only_other.len(),
            "samples": samples, "notes": notes,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kappa_operator::kafka::client::LogRecord;

    #[test]
    fn progress_bars_and_durations_read_well() {
        assert_eq!(bar(0.0), "[--------------------]");
        assert_eq!(bar(0.42), "[########------------]");
        assert_eq!(bar(1.5), "[####################]");
        assert_eq!(duration(42), "42s");
        assert_eq!(duration(600), "10m00s");
        assert_eq!(duration(7300), "2h01m");
    }

    fn rec(partition: i32, offset: i64, key: Option<&str>, value: Option<&str>) -> LogRecord {
        let b = |s: &str| Bytes::copy_from_slice(s.as_bytes());
        LogRecord { partition, offset, key: key.map(b), value: value.map(b) }
    }

    #[test]
    fn a_view_is_the_latest_value_of_each_key_and_tombstones_remove_keys() {
        let read = TopicRead {
            records: vec![
                rec(0, 0, Some("a"), Some("1")),
                rec(0, 1, Some("b"), Some("1")),
                rec(0, 2, Some("a"), Some("2")),
                rec(0, 3, Some("b"), None),
                rec(1, 0, None, Some("x")),
                rec(1, 1, Some("c"), Some("3")),
            ],
            truncated: false,
        };
        let v = latest_values(read);
        assert_eq!(v.values.keys().map(|k| k.as_ref()).collect::<Vec<_>>(), vec![b"a".as_ref(), b"c"]);
        assert_eq!(v.values[b"a".as_ref()].as_ref(), b"2");
        assert_eq!((v.records, v.unkeyed), (6, 1));
    }

    #[test]
    fn views_differ_on_values_and_on_keys_only_one_has_but_not_on_json_layout() {
        let view = |pairs: &[(&str, &str)]| View {
            values: pairs.iter().map(|(k, v)| (Bytes::copy_from_slice(k.as_bytes()), Bytes::copy_from_slice(v.as_bytes()))).collect(),
            ..Default::default()
        };
        let a = view(&[("same", r#"{"count":1,"sum":2}"#), ("changed", "1"), ("gone", "1")]);
        let b = view(&[("same", r#"{ "sum": 2, "count": 1 }"#), ("changed", "2"), ("new", "1")]);
        let d = diff_views(&a, &b, &[]);
        let names = |ks: &[Bytes]| ks.iter().map(|k| String::from_utf8_lossy(k).into_owned()).collect::<Vec<_>>();
        assert_eq!(names(&d.differing), ["changed"]);
        assert_eq!(names(&d.only_active), ["gone"]);
        assert_eq!(names(&d.only_other), ["new"]);
        assert_eq!(diff_views(&a, &a, &[]), ViewDiff::default());
        let stamped = |v: &str| view(&[("k", &format!(r#"{{"sum":2,"version":"{v}"}}"#)), ("raw", "\u{1}")]);
        assert_eq!(names(&diff_views(&stamped("a"), &stamped("b"), &[]).differing), ["k"]);
        assert_eq!(diff_views(&stamped("a"), &stamped("b"), &["version".into()]), ViewDiff::default());
        assert_eq!(shown(Some(&Bytes::from_static(b"abcdef")), 3), "abc…");
    }
}

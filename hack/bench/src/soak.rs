//! `soak --minutes M`: 1,000 Topics and 100 Processors under churn for M
//! minutes. Every 10 s: the operator's RSS is sampled, and some Topics are
//! deleted and others created, some Processors change their logic (a
//! rollout, or a rollback to a standby), and some are deleted and created
//! again. At the end: RSS after the warm-up against RSS at the end, the
//! errors in the operator's log, and whether every rollout completed.

use std::{
    collections::BTreeMap,
    path::Path,
    time::{Duration, Instant},
};

use kappa_operator::api::{Processor, Topic};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};
use serde_json::json;

use crate::common::{self, Operator, progress};

const TOPICS: usize = 1_000;
const PROCESSORS: usize = 100;
const STEP: Duration = Duration::from_secs(10);
/// Per step: Topics deleted and as many created; Processors whose logic
/// changes; Processors deleted and created again.
const TOPIC_CHURN: usize = 20;
const LOGIC_CHANGES: usize = 5;
const PROCESSOR_CHURN: usize = 2;
const LOGICS: [&str; 3] = ["sum", "count", "max"];

pub async fn run(operator: &Path, minutes: u64) -> anyhow::Result<serde_json::Value> {
    // An input with no records: a candidate (replicas 0) is caught up as
    // soon as it exists, so a rollout completes without pods.
    let (client, ns, _, _) = common::namespace_with_input("bench-soak").await?;
    let op = Operator::start(operator, &ns, &["--lag-poll-seconds", "5"])?;
    let topics: Api<Topic> = Api::namespaced(client.clone(), &ns);
    let processors: Api<Processor> = Api::namespaced(client.clone(), &ns);
    progress(format!("namespace {ns}: {TOPICS} Topics, {PROCESSORS} Processors, churn every {STEP:?} for {minutes} min"));
    let mut next_topic = 0;
    create_topics(&topics, next_topic..TOPICS).await?;
    next_topic += TOPICS;
    let mut next_processor = 0;
    create_processors(&processors, next_processor..PROCESSORS).await?;
    next_processor += PROCESSORS;
    settled(&topics, &processors, Duration::from_secs(600)).await?;
    progress("all Ready and Live; churning");

    let warm_up = Duration::from_secs((minutes * 60 / 3).min(600));
    let (mut rss_warm, mut rss_max) = (None::<f64>, 0.0f64);
    let mut samples = Vec::new();
    let mut counts = BTreeMap::<&str, u64>::new();
    let start = Instant::now();
    let mut step = 0u64;
    while start.elapsed() < Duration::from_secs(minutes * 60) {
        let tick = Instant::now();
        step += 1;
        let rss = op.rss_mib()?;
        rss_max = rss_max.max(rss);
        samples.push((start.elapsed().as_secs(), rss));
        if rss_warm.is_none() && start.elapsed() >= warm_up {
            rss_warm = Some(rss);
            progress(format!("RSS after the warm-up ({} s): {rss:.1} MiB", warm_up.as_secs()));
        }

        // The oldest Topics go, new ones come.
        let mut names: Vec<String> = topics.list_metadata(&ListParams::default()).await?.items.iter().map(|t| t.name_any()).collect();
        names.retain(|n| n.starts_with('t') && n[1..].parse::<usize>().is_ok());
        names.sort_by_key(|n| n[1..].parse::<usize>().unwrap_or(0));
        for name in names.iter().take(TOPIC_CHURN) {
            ignore_gone(topics.delete(name, &DeleteParams::default()).await.map(|_| ()))?;
        }
        create_topics(&topics, next_topic..next_topic + TOPIC_CHURN).await?;
        next_topic += TOPIC_CHURN;
        *counts.entry("topics_deleted").or_default() += TOPIC_CHURN as u64;
        *counts.entry("topics_created").or_default() += TOPIC_CHURN as u64;

        // Logic changes, spread over the Processors; then the oldest go and new ones come.
        let live: Vec<Processor> = processors.list(&ListParams::default()).await?.items;
        let mut live: Vec<&Processor> = live.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
        live.sort_by_key(|p| p.name_any()[1..].parse::<usize>().unwrap_or(0));
        for i in 0..LOGIC_CHANGES.min(live.len()) {
            let p = live[(step as usize * LOGIC_CHANGES + i) % live.len()];
            let logic = LOGICS[(step as usize + i) % LOGICS.len()];
            let patch = json!({"spec": {"template": {"args": ["run", "--logic", logic]}}});
            processors.patch(&p.name_any(), &PatchParams::default(), &Patch::Merge(patch)).await?;
            *counts.entry("logic_changes").or_default() += 1;
        }
        for p in live.iter().take(PROCESSOR_CHURN) {
            ignore_gone(processors.delete(&p.name_any(), &DeleteParams::default()).await.map(|_| ()))?;
        }
        create_processors(&processors, next_processor..next_processor + PROCESSOR_CHURN).await?;
        next_processor += PROCESSOR_CHURN;
        *counts.entry("processors_deleted").or_default() += PROCESSOR_CHURN as u64;
        *counts.entry("processors_created").or_default() += PROCESSOR_CHURN as u64;

        if step.is_multiple_of(6) {
            progress(format!("{:>5} s: RSS {rss:.1} MiB; {counts:?}", start.elapsed().as_secs()));
        }
        tokio::time::sleep(STEP.saturating_sub(tick.elapsed())).await;
    }
    let rss_end = op.rss_mib()?;
    let rss_warm = rss_warm.unwrap_or(rss_end);
    progress(format!("churn over; RSS {rss_end:.1} MiB (after the warm-up {rss_warm:.1}); waiting for every rollout to complete"));
    let completed = settled(&topics, &processors, Duration::from_secs(300)).await;
    if let Err(e) = &completed {
        progress(format!("not settled: {e:#}"));
    }
    let log = std::fs::read_to_string(op.log_path())?;
    let errors: Vec<&str> = log.lines().filter(|l| l.contains(" ERROR ") || l.contains("\"level\":\"ERROR\"")).collect();
    for e in errors.iter().take(5) {
        progress(format!("error in the log: {e}"));
    }
    let warnings = log.lines().filter(|l| l.contains(" WARN ")).count();

    progress("cleaning up");
    common::delete_namespace(&client, &ns, Duration::from_secs(300)).await?;
    drop(op);
    let round = |x: f64| (x * 10.0).round() / 10.0;
    Ok(json!({
        "minutes": minutes,
        "rss_after_warm_up_mib": round(rss_warm),
        "warm_up_seconds": warm_up.as_secs(),
        "rss_end_mib": round(rss_end),
        "rss_end_over_warm_up": (rss_end / rss_warm * 100.0).round() / 100.0,
        "rss_max_mib": round(rss_max),
        "rss_samples": samples.len(),
        "log_errors": errors.len(),
        "log_warnings": warnings,
        "all_rollouts_completed": completed.is_ok(),
        "churn": counts,
    }))
}

async fn create_topics(topics: &Api<Topic>, range: std::ops::Range<usize>) -> anyhow::Result<()> {
    let ns = topics.namespace().unwrap_or_default().to_string();
    let topic = |i| {
        json!({"metadata": {"name": format!("t{i}")},
            "spec": {"topicName": format!("{ns}-t{i}"), "partitions": 1, "deletionPolicy": "Delete"}})
    };
    common::create_each(topics, range, 16, topic, &Default::default()).await
}

async fn create_processors(processors: &Api<Processor>, range: std::ops::Range<usize>) -> anyhow::Result<()> {
    let processor = |i| {
        json!({"metadata": {"name": format!("p{i}")}, "spec": {
            "inputs": ["orders"], "replicas": 0, "deletionPolicy": "Delete",
            "template": {"image": "ghcr.io/kappa-dev/kappa-processor:bench", "args": ["run", "--logic", "sum"]},
            "view": {"partitions": 1},
            "rollout": {"stableForSeconds": 1, "scaleDownDelaySeconds": 1, "retainVersions": 1}
        }})
    };
    common::create_each(processors, range, 16, processor, &Default::default()).await
}

/// Waits until every Topic is Ready and every Processor is Live on its
/// latest spec with no rollout in progress.
async fn settled(topics: &Api<Topic>, processors: &Api<Processor>, limit: Duration) -> anyhow::Result<()> {
    let told = std::cell::Cell::new(Instant::now());
    common::wait_until("every Topic Ready and every Processor Live with no rollout in progress", limit, || async {
        let ts = topics.list(&ListParams::default()).await?.items;
        let unready = ts.iter().filter(|t| t.metadata.deletion_timestamp.is_none() && !ready(t)).count();
        let ps = processors.list(&ListParams::default()).await?.items;
        let busy: Vec<String> = ps
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| {
                let st = p.status.clone().unwrap_or_default();
                st.phase.as_deref() != Some("Live") || st.observed_generation != p.metadata.generation || st.candidate_version.is_some()
            })
            .map(|p| p.name_any())
            .collect();
        if (unready > 0 || !busy.is_empty()) && told.get().elapsed() > Duration::from_secs(10) {
            told.set(Instant::now());
            progress(format!("  {unready} Topics not Ready; Processors not settled: {busy:?}"));
        }
        Ok(unready == 0 && busy.is_empty())
    })
    .await
}

fn ready(t: &Topic) -> bool {
    t.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn ignore_gone(r: kube::Result<()>) -> anyhow::Result<()> {
    match r {
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        r => Ok(r?),
    }
}

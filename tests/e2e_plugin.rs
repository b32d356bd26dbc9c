//! `kubectl kappa` (src/bin/kubectl-kappa.rs) against the lab: every command
//! on a real Processor through a manual-promotion rollout, a rollback and a
//! reprocess, the plan of manifests that change it in every way, and the
//! views of versions with other logic and with the same.

mod support;

use std::process::Command;

use kappa_operator::api::Processor;
use serde_json::{Value, json};
use support::{
    patch,
    pipeline::{Pipeline, active_is, first_version_live, logic_patch, phase_is, pipeline, processor_json},
};

/// Runs the plugin in the test's namespace: (success, stdout, stderr).
fn kappa(s: &Pipeline, args: &[&str]) -> (bool, String, String) {
    let out =
        Command::new(env!("CARGO_BIN_EXE_kubectl-kappa")).args(args).args(["-n", &s.ns.name]).output().expect("running kubectl-kappa");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn ok(s: &Pipeline, args: &[&str]) -> String {
    let (success, out, err) = kappa(s, args);
    assert!(success, "kubectl kappa {args:?} failed: {err}{out}");
    out
}

fn json_of(s: &Pipeline, args: &[&str]) -> Value {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&ok(s, &all)).unwrap()
}

/// `plan -f` of the Processor as `processor_json` makes it, changed by `edit`.
fn plan(s: &Pipeline, name: &str, edit: impl FnOnce(&mut Value)) -> String {
    let mut p = processor_json("sum", 1);
    p["apiVersion"] = json!("kappa.dev/v1alpha1");
    p["kind"] = json!("Processor");
    p["metadata"]["name"] = json!(name);
    p["spec"]["rollout"]["promotion"] = json!("Manual");
    edit(&mut p);
    let file = std::env::temp_dir().join(format!("kappa-plan-{}-{name}.yaml", s.ns.name));
    let docs = format!(
        "---\n{}---\n{}",
        serde_yaml::to_string(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "other"}})).unwrap(),
        serde_yaml::to_string(&p).unwrap()
    );
    std::fs::write(&file, docs).unwrap();
    let out = ok(s, &["plan", "-f", file.to_str().unwrap()]);
    std::fs::remove_file(&file).ok();
    out
}

#[tokio::test]
async fn every_command_on_a_manual_rollout_a_rollback_and_a_reprocess() {
    let s = pipeline("plugin", &[]).await;
    let mut p = processor_json("sum", 1);
    p["spec"]["rollout"]["promotion"] = json!("Manual");
    let (v1, _) = first_version_live(&s, p, 5_000).await;

    let status = ok(&s, &["status", "totals"]);
    assert!(status.starts_with(&format!("Processor {}/totals: Live\n", s.ns.name)), "{status}");
    assert!(status.contains(&format!("active     {v1}  lag 0")), "{status}");
    assert!(status.contains("Ready") && status.contains("FirstVersion"), "conditions and events: {status}");
    let st = json_of(&s, &["status", "totals"]);
    assert_eq!((st["phase"].as_str(), st["active"]["version"].as_str()), (Some("Live"), Some(v1.as_str())));

    // plan: every kind of change, against the live Processor, without changing it.
    let unchanged = plan(&s, "totals", |_| {});
    assert!(unchanged.contains("totals: unchanged"), "{unchanged}");
    let in_place = plan(&s, "totals", |p| p["spec"]["replicas"] = json!(2));
    assert!(in_place.contains(&format!("in-place change of version {v1} (no replay)")), "{in_place}");
    let new = plan(&s, "totals", |p| p["spec"]["template"]["args"] = json!(["run", "--logic", "count"]));
    assert!(new.contains("new version") && new.contains(&format!("replays from offset zero beside {v1}")), "{new}");
    assert!(new.contains("5000 records"), "the replay's size, from Kafka: {new}");
    let created = plan(&s, "fresh", |_| {});
    assert!(created.contains("fresh: created: version") && created.contains("5000 records"), "{created}");
    let refused = plan(&s, "totals", |p| p["spec"]["template"]["volumes"] = json!([{"name": "kappa-x", "emptyDir": {}}]));
    assert!(refused.contains("refused by admission") && refused.contains("kappa-"), "{refused}");
    assert_eq!(ok(&s, &["history", "totals"]).lines().count(), 3, "the plans changed nothing");

    let (success, _, err) = kappa(&s, &["promote", "totals"]);
    assert!(!success && err.contains("no version awaiting promotion (phase Live)"), "{err}");
    let (success, _, err) = kappa(&s, &["views", "totals"]);
    assert!(!success && err.contains("has no candidate version") && err.contains("--against"), "{err}");

    // A logic change waits for a promotion; the plugin promotes it.
    patch::<Processor>(&s.ns, "totals", logic_patch("count")).await.unwrap();
    let waiting = phase_is(&s.ns, "AwaitingPromotion").await;
    let v2 = waiting.status.unwrap().candidate_version.unwrap();
    let status = ok(&s, &["status", "totals"]);
    assert!(status.contains(&format!("candidate  {v2}  [####################] 100.0%")), "{status}");
    // views: counts instead of sums, so every key's value differs, and the
    // sample shows both values.
    let views = json_of(&s, &["views", "totals", "--sample", "3"]);
    let keys = views["active"]["keys"].as_u64().unwrap();
    assert!(keys > 0 && views["compared"]["keys"].as_u64() == Some(keys), "{views}");
    assert_eq!((views["differing"].as_u64(), views["onlyActive"].as_u64(), views["onlyCompared"].as_u64()), (Some(keys), Some(0), Some(0)));
    let sample = &views["samples"].as_array().unwrap()[0];
    assert!(sample["active"].as_str().unwrap().contains("sum") && !sample["compared"].as_str().unwrap().contains("sum"), "{sample}");
    let human = ok(&s, &["views", "totals", "--sample", "2"]);
    println!("{human}");
    assert!(human.contains(&format!("{keys} keys differ: {keys} with other values")), "{human}");
    assert_eq!(views["samples"].as_array().unwrap().len(), 3);
    let promoted = ok(&s, &["promote", "totals"]);
    assert!(promoted.contains(&format!("spec.rollout.promote = {v2}")), "{promoted}");
    active_is(&s.ns, &v2).await;

    let history = json_of(&s, &["history", "totals"]);
    let rows: Vec<(String, String, bool)> = history["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["version"].as_str().unwrap().into(), r["phase"].as_str().unwrap().into(), r["active"].as_bool().unwrap()))
        .collect();
    assert_eq!(rows, vec![(v1.clone(), "Standby".into(), false), (v2.clone(), "Active".into(), true)]);
    assert!(history["versions"][1]["promoted"].is_string());

    let back = plan(&s, "totals", |_| {});
    assert!(back.contains(&format!("returns to standby {v1}: no replay")), "{back}");

    // Rollback names the standby again; with manual promotion it promotes it too.
    let rolled = ok(&s, &["rollback", "totals"]);
    assert!(rolled.contains(&format!("standby {v1}")), "{rolled}");
    active_is(&s.ns, &v1).await;

    // Reprocess: the same code, a new version from offset zero.
    let reprocessed = json_of(&s, &["reprocess", "totals"]);
    let v3 = reprocessed["version"].as_str().unwrap().to_string();
    assert!(v3 != v1 && v3 != v2);
    let waiting = phase_is(&s.ns, "AwaitingPromotion").await;
    assert_eq!(waiting.status.unwrap().candidate_version.as_deref(), Some(v3.as_str()));

    // The same code replayed makes the same view, but for the version
    // stamp the reference processor writes into each value.
    let stamped = json_of(&s, &["views", "totals"]);
    assert!(stamped["differing"].as_u64().unwrap() > 0, "{stamped}");
    let same = ok(&s, &["views", "totals", "--ignore", "version"]);
    assert!(same.contains("the views agree on every key"), "{same}");
    let (success, _, err) = kappa(&s, &["views", "totals", "--against", "nosuch"]);
    assert!(!success && err.contains("has no version \"nosuch\"") && err.contains(&v2), "{err}");

    let yaml: Value = serde_yaml::from_str(&ok(&s, &["status", "totals", "-o", "yaml"])).unwrap();
    assert_eq!(yaml["candidate"]["version"].as_str(), Some(v3.as_str()));

    let (success, _, err) = kappa(&s, &["status", "nosuch"]);
    assert!(!success && err.contains(&format!("Processor \"nosuch\" not found in namespace \"{}\"", s.ns.name)), "{err}");
}

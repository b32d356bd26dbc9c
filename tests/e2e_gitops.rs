//! What GitOps tools read from our objects, with their own code on objects
//! recorded from real rollouts on the lab: Flux's status library (kstatus,
//! `sigs.k8s.io/cli-utils`) and health check expressions
//! (`github.com/fluxcd/pkg/runtime/cel`), and Argo CD's health checks and resource actions
//! (`charts/kappa-operator/resource_customizations`, run by gopher-lua in
//! Argo CD's sandbox). Both programs are built by the lab (`hack/lab/gitops`).
//!
//! `KAPPA_RECORD_FIXTURES=DIR` also writes one recorded object per kind and
//! state to DIR, the source of the Lua tests' test data.

mod support;

use std::{
    collections::BTreeMap,
    io::Write,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use kappa_operator::api::{KafkaCluster, Processor, Topic, ViewVersion};
use kube::{
    Api, Resource,
    api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams},
};
use serde_json::{Value, json};
use support::{
    Env, Ns, Operator, TestNs, create, lab_bin, patch,
    pipeline::{WAIT, active_is, first_version_live, http_get, logic_patch, phase_is, pipeline, processor_json},
    wait_for,
};

fn customizations() -> String {
    format!("{}/charts/kappa-operator/resource_customizations", env!("CARGO_MANIFEST_DIR"))
}

/// Runs a lab tool with JSON objects on stdin: its stdout, one JSON value per line.
fn tool(name: &str, args: &[&str], input: &[Value]) -> Vec<Value> {
    let mut child = Command::new(lab_bin(name))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {name} (built by hack/lab.sh up): {e}"));
    let mut stdin = child.stdin.take().unwrap();
    for v in input {
        writeln!(stdin, "{v}").unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{name} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// (status, message) per line of a tool's output.
fn statuses(out: Vec<Value>) -> Vec<(String, String)> {
    out.iter().map(|v| (v["status"].as_str().unwrap().to_string(), v["message"].as_str().unwrap_or_default().to_string())).collect()
}

fn kstatus(objects: &[Value]) -> Vec<(String, String)> {
    statuses(tool("kstatus", &[], objects))
}

fn argo_health(objects: &[Value]) -> Vec<(String, String)> {
    statuses(tool("argocd-lua", &["health", &customizations()], objects))
}

/// What Flux's evaluator says with the healthCheckExprs of
/// examples/flux/kustomization.yaml.
fn flux_cel(objects: &[Value]) -> Vec<String> {
    let path = format!("{}/examples/flux/kustomization.yaml", env!("CARGO_MANIFEST_DIR"));
    let k: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let exprs = &k["spec"]["healthCheckExprs"][0];
    assert_eq!(exprs["kind"].as_str(), Some("Processor"));
    let mut args = Vec::new();
    for (field, flag) in [("current", "--current"), ("failed", "--failed"), ("inProgress", "--in-progress")] {
        if let Some(e) = exprs[field].as_str() {
            args.extend([flag.to_string(), e.to_string()]);
        }
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    tool("flux-cel", &args, objects).iter().map(|v| v["status"].as_str().unwrap().to_string()).collect()
}

/// The actions Argo CD offers for the object: name → enabled.
fn argo_actions(object: &Value) -> BTreeMap<String, bool> {
    let out = tool("argocd-lua", &["discover", &customizations()], std::slice::from_ref(object));
    out[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["name"].as_str().unwrap().to_string(), !a["disabled"].as_bool().unwrap_or(false)))
        .collect()
}

/// Runs an Argo CD action and applies its result as Argo CD does (a merge
/// patch from the object to what the action returned).
async fn argo_action(ns: &Ns, name: &str, action: &str) {
    let before = raw::<Processor>(ns, name).await.expect("the Processor exists");
    let after = tool("argocd-lua", &["action", &customizations(), action], std::slice::from_ref(&before)).remove(0);
    let diff = merge_patch(&before, &after);
    ns.api::<Processor>().patch(name, &PatchParams::default(), &Patch::Merge(&diff)).await.unwrap();
}

/// RFC 7386: what to send to turn `from` into `to`.
fn merge_patch(from: &Value, to: &Value) -> Value {
    match (from, to) {
        (Value::Object(a), Value::Object(b)) => {
            let mut out = serde_json::Map::new();
            for (k, v) in b {
                match a.get(k) {
                    Some(old) if old == v => {}
                    Some(old) => {
                        out.insert(k.clone(), merge_patch(old, v));
                    }
                    None => {
                        out.insert(k.clone(), v.clone());
                    }
                }
            }
            for k in a.keys().filter(|k| !b.contains_key(*k)) {
                out.insert(k.clone(), Value::Null);
            }
            Value::Object(out)
        }
        _ => to.clone(),
    }
}

/// The object as the API server returns it (no typed round trip).
async fn raw<K: Resource<DynamicType = ()>>(ns: &Ns, name: &str) -> Option<Value> {
    let api: Api<DynamicObject> = Api::namespaced_with(ns.client.clone(), &ns.name, &ApiResource::erase::<K>(&()));
    let mut v = serde_json::to_value(api.get_opt(name).await.ok()??).unwrap();
    v["metadata"].as_object_mut().unwrap().remove("managedFields");
    Some(v)
}

async fn raw_list<K: Resource<DynamicType = ()>>(ns: &Ns) -> Vec<Value> {
    let api: Api<DynamicObject> = Api::namespaced_with(ns.client.clone(), &ns.name, &ApiResource::erase::<K>(&()));
    let list = api.list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default();
    list.into_iter()
        .map(|o| {
            let mut v = serde_json::to_value(o).unwrap();
            v["metadata"].as_object_mut().unwrap().remove("managedFields");
            v
        })
        .collect()
}

/// Samples every object of the namespace's pipeline every 200 ms, as a
/// GitOps tool polling them would see them (the Processors, as a tool
/// watching them would: every write).
struct Recorder {
    samples: Arc<Mutex<Vec<Value>>>,
    task: tokio::task::JoinHandle<()>,
    watch: tokio::task::JoinHandle<()>,
}

impl Recorder {
    fn start(ns: &Ns) -> Recorder {
        let samples = Arc::new(Mutex::new(Vec::new()));
        // The Processors from a watch: every status write is a sample, so a
        // phase as short as CuttingOver (one reconcile) is never missed.
        let watch = {
            use futures::StreamExt;
            let (api, into) = (
                Api::<DynamicObject>::namespaced_with(ns.client.clone(), &ns.name, &ApiResource::erase::<Processor>(&())),
                samples.clone(),
            );
            tokio::spawn(async move {
                let mut events = kube::runtime::watcher(api, kube::runtime::watcher::Config::default()).boxed();
                while let Some(event) = events.next().await {
                    if let Ok(kube::runtime::watcher::Event::Apply(o) | kube::runtime::watcher::Event::InitApply(o)) = event {
                        let mut v = serde_json::to_value(o).unwrap();
                        v["metadata"].as_object_mut().unwrap().remove("managedFields");
                        into.lock().unwrap().push(v);
                    }
                }
            })
        };
        let (ns, into) = (ns.clone(), samples.clone());
        let task = tokio::spawn(async move {
            loop {
                let mut batch: Vec<Value> = Vec::new();
                batch.extend(raw_list::<ViewVersion>(&ns).await);
                batch.extend(raw::<Topic>(&ns, "orders").await);
                batch.extend(raw::<KafkaCluster>(&ns, "default").await);
                into.lock().unwrap().extend(batch);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Recorder { samples, task, watch }
    }

    /// Waits until a sample of `kind_` in `phase_` is on the record: a
    /// phase the test itself ends (by acting) must not fall between samples.
    async fn has_seen(&self, kind_: &str, phase_: &str) {
        wait_for(&format!("the recorder to see a {kind_} in phase {phase_}"), WAIT, || async {
            let seen = self.samples.lock().unwrap().iter().any(|v| kind(v) == kind_ && phase(v) == phase_);
            if seen { Ok(()) } else { Err("not yet".to_string()) }
        })
        .await
    }

    fn stop(self) -> Vec<Value> {
        self.task.abort();
        self.watch.abort();
        let mut samples = self.samples.lock().unwrap().clone();
        // Identical readings say nothing new.
        samples.dedup();
        samples
    }
}

fn kind(v: &Value) -> &str {
    v["kind"].as_str().unwrap_or_default()
}

fn phase(v: &Value) -> &str {
    v["status"]["phase"].as_str().unwrap_or("")
}

fn condition<'a>(v: &'a Value, type_: &str) -> Option<&'a Value> {
    v["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_)
}

fn is_true(v: &Value, type_: &str) -> bool {
    condition(v, type_).is_some_and(|c| c["status"] == "True")
}

fn observed(v: &Value) -> bool {
    v["status"]["observedGeneration"] == v["metadata"]["generation"]
}

/// Writes one object per kind and state to `KAPPA_RECORD_FIXTURES`, when set.
fn record_fixtures(samples: &[Value], state: impl Fn(&Value) -> String) {
    let Ok(dir) = std::env::var("KAPPA_RECORD_FIXTURES") else { return };
    for v in samples {
        let state = if observed(v) { state(v) } else { "unobserved".into() };
        let path = format!("{dir}/{}-{state}.yaml", kind(v).to_lowercase());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(path, serde_yaml::to_string(v).unwrap()).unwrap();
    }
}

#[tokio::test]
async fn a_rollout_reads_in_progress_until_the_new_version_serves_and_argo_cd_actions_drive_it() {
    let s = pipeline("gitops", &[]).await;
    let recorder = Recorder::start(&s.ns);
    let mut p = processor_json("sum", 1);
    p["spec"]["rollout"]["promotion"] = json!("Manual");
    let (v1, _) = first_version_live(&s, p, 20_000).await;

    // A logic change from Git: the new version replays, then waits for a promotion.
    patch::<Processor>(&s.ns, "totals", logic_patch("count")).await.unwrap();
    let waiting = phase_is(&s.ns, "AwaitingPromotion").await;
    let v2 = waiting.status.unwrap().candidate_version.unwrap();
    let obj = raw::<Processor>(&s.ns, "totals").await.unwrap();
    let offered = argo_actions(&obj);
    assert_eq!(offered, BTreeMap::from([("promote".into(), true), ("reprocess".into(), true), ("rollback".into(), false)]));
    recorder.has_seen("Processor", "AwaitingPromotion").await;
    // (the candidate's CaughtUp ends with the promotion: ViewVersions are
    // polled, and the poll must have caught it before the test acts)
    recorder.has_seen("ViewVersion", "CaughtUp").await;
    argo_action(&s.ns, "totals", "promote").await;
    active_is(&s.ns, &v2).await;
    phase_is(&s.ns, "Live").await;

    // Argo CD's rollback action returns readers to the standby, without a replay.
    let obj = wait_for("the Processor to name v1 as its rollback target", WAIT, || async {
        let v = raw::<Processor>(&s.ns, "totals").await.ok_or("no Processor")?;
        if v["status"]["rollback"]["version"] == v1.as_str() { Ok(v) } else { Err(format!("{}", v["status"]["rollback"])) }
    })
    .await;
    assert!(argo_actions(&obj)["rollback"], "rollback is offered once there is a standby");
    argo_action(&s.ns, "totals", "rollback").await;
    active_is(&s.ns, &v1).await;
    let live = phase_is(&s.ns, "Live").await;
    assert_eq!(live.status.unwrap().desired_version.as_deref(), Some(v1.as_str()), "the spec names v1 again");

    // A candidate that crash-loops fails; the active version keeps serving.
    patch::<Processor>(&s.ns, "totals", logic_patch("no-such-logic")).await.unwrap();
    phase_is(&s.ns, "Failed").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let samples = recorder.stop();

    let processors: Vec<Value> = samples.iter().filter(|v| kind(v) == "Processor").cloned().collect();
    let phases: Vec<&str> = processors.iter().map(phase).collect();
    for expected in ["Replaying", "AwaitingPromotion", "CuttingOver", "Live", "Failed"] {
        assert!(phases.contains(&expected), "a sample in phase {expected}: {phases:?}");
    }
    let ks = kstatus(&processors);
    let argo = argo_health(&processors);
    for ((obj, (k, k_msg)), (a, a_msg)) in processors.iter().zip(&ks).zip(&argo) {
        let (want_k, want_a) = match phase(obj) {
            _ if !observed(obj) => ("InProgress", "Progressing"),
            "Live" if is_true(obj, "Ready") => ("Current", "Healthy"),
            "Failed" => ("Failed", "Degraded"),
            "AwaitingPromotion" => ("InProgress", "Suspended"),
            _ => ("InProgress", "Progressing"),
        };
        let at = format!("phase {:?}, conditions {}", phase(obj), obj["status"]["conditions"]);
        assert_eq!(k, want_k, "kstatus: {k_msg}; {at}");
        assert_eq!(a, want_a, "Argo CD: {a_msg}; {at}");
        if phase(obj) == "AwaitingPromotion" && observed(obj) {
            assert!(k_msg.contains("spec.rollout.promote"), "kstatus says what to do: {k_msg}");
            assert!(a_msg.contains("spec.rollout.promote"), "Argo CD says what to do: {a_msg}");
        }
    }
    // The Flux example's healthCheckExprs, with Flux's evaluator: the same,
    // except that a version waiting for a promotion counts as done.
    let flux = flux_cel(&processors);
    for (obj, f) in processors.iter().zip(&flux) {
        let want = match phase(obj) {
            _ if !observed(obj) => "InProgress",
            "Live" if is_true(obj, "Ready") => "Current",
            "AwaitingPromotion" => "Current",
            "Failed" => "Failed",
            _ => "InProgress",
        };
        assert_eq!(f, want, "healthCheckExprs; phase {:?}, conditions {}", phase(obj), obj["status"]["conditions"]);
    }
    // The phases in between never read as done.
    let current_while: Vec<&str> =
        processors.iter().zip(&ks).filter(|(o, (k, _))| k == "Current" && phase(o) != "Live").map(|(o, _)| phase(o)).collect();
    assert!(current_while.is_empty(), "Current outside Live: {current_while:?}");

    let versions: Vec<Value> = samples.iter().filter(|v| kind(v) == "ViewVersion").cloned().collect();
    let ks = kstatus(&versions);
    let argo = argo_health(&versions);
    let mut seen = Vec::new();
    for ((obj, (k, k_msg)), (a, a_msg)) in versions.iter().zip(&ks).zip(&argo) {
        let caught_up = !obj["status"]["caughtUpAt"].is_null();
        let (want_k, want_a) = match phase(obj) {
            _ if !observed(obj) => ("InProgress", "Progressing"),
            "Active" | "Standby" | "CaughtUp" if caught_up => ("Current", "Healthy"),
            "Failed" => ("Failed", "Degraded"),
            _ => ("InProgress", "Progressing"),
        };
        seen.push(phase(obj).to_string());
        let at = format!("phase {:?}, conditions {}", phase(obj), obj["status"]["conditions"]);
        assert_eq!(k, want_k, "kstatus: {k_msg}; {at}");
        assert_eq!(a, want_a, "Argo CD: {a_msg}; {at}");
    }
    for expected in ["Replaying", "CaughtUp", "Active", "Standby", "Failed"] {
        assert!(seen.iter().any(|p| p == expected), "a ViewVersion sample in phase {expected}: {seen:?}");
    }

    let infra: Vec<Value> = samples.iter().filter(|v| matches!(kind(v), "Topic" | "KafkaCluster")).cloned().collect();
    let ready: Vec<&Value> = infra.iter().filter(|v| is_true(v, "Ready") && observed(v)).collect();
    assert!(ready.iter().any(|v| kind(v) == "Topic") && ready.iter().any(|v| kind(v) == "KafkaCluster"));
    for ((obj, (k, _)), (a, _)) in infra.iter().zip(kstatus(&infra)).zip(argo_health(&infra)) {
        if is_true(obj, "Ready") && observed(obj) {
            assert_eq!((k.as_str(), a.as_str()), ("Current", "Healthy"), "{obj}");
        }
    }

    // What the alerts and the dashboard read, as the rollout left it (the
    // names are checked against the registry by a unit test).
    let (ip, port) = s.op.metrics_addr.split_once(':').unwrap();
    let scraped = http_get(ip, port.parse().unwrap(), "/metrics").await;
    let value = |series: &str| scraped.lines().find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok());
    let ns = s.ns.name.as_str();
    let at = |outcome: &str| format!("{{namespace=\"{ns}\",processor=\"totals\",outcome=\"{outcome}\"}}");
    assert_eq!(
        value(&format!("kappa_processor_phase{{namespace=\"{ns}\",processor=\"totals\",phase=\"Failed\"}}")),
        Some(1.0),
        "{scraped}"
    );
    assert_eq!(value(&format!("kappa_cutovers_total{}", at("CutOver"))), Some(1.0), "{scraped}");
    assert_eq!(value(&format!("kappa_cutovers_total{}", at("RolledBack"))), Some(1.0), "{scraped}");
    assert_eq!(value(&format!("kappa_rollouts_total{}", at("failed"))), Some(1.0), "{scraped}");
    assert_eq!(value(&format!("kappa_rollouts_total{}", at("promoted"))), Some(2.0), "{scraped}");
    assert_eq!(value("kappa_leader"), Some(1.0));
    assert!(scraped.contains(&format!("kappa_processor_lag_records{{namespace=\"{ns}\",processor=\"totals\"}}")), "{scraped}");
    assert!(scraped.contains("api=\"OffsetFetch\""), "Kafka requests by API: {scraped}");
    // Its own requests to the API server, by the verbs the API server counts.
    for (verb, resource) in [("WATCH", "processors"), ("POST", "viewversions"), ("APPLY", "viewversions/status"), ("APPLY", "deployments")]
    {
        let series = format!("kappa_api_requests_total{{verb=\"{verb}\",resource=\"{resource}\"}}");
        assert!(value(&series).is_some_and(|n| n >= 1.0), "{series}: {scraped}");
    }

    record_fixtures(&samples, |v| match kind(v) {
        "Processor" | "ViewVersion" => phase(v).to_lowercase(),
        _ => {
            if is_true(v, "Ready") {
                "ready".into()
            } else {
                "notready".into()
            }
        }
    });
}

#[tokio::test]
async fn a_new_object_is_in_progress_until_observed_and_bad_settings_read_as_failed() {
    let env = Env::get().await;
    support::install_crds(&env.client).await;
    let ns = TestNs::new(&env, "gitops-fresh").await;
    // No operator yet: what a GitOps tool sees right after applying.
    create::<KafkaCluster>(
        &ns,
        json!({"metadata": {"name": "default"}, "spec": {
            "bootstrapServers": env.kafka_bootstrap,
            "sasl": {"mechanism": "SCRAM-SHA-512", "credentials": {"secretName": "no-such-secret"}}
        }}),
    )
    .await;
    create::<Processor>(&ns, processor_json("sum", 1)).await;
    let fresh = vec![raw::<KafkaCluster>(&ns, "default").await.unwrap(), raw::<Processor>(&ns, "totals").await.unwrap()];
    for ((k, msg), (a, _)) in kstatus(&fresh).into_iter().zip(argo_health(&fresh)) {
        assert_eq!(k, "InProgress", "a new object is not Current before the operator has looked at it: {msg}");
        assert!(msg.contains("observed generation is 0"), "{msg}");
        assert_eq!(a, "Progressing");
    }

    record_fixtures(&fresh, |_| "new".into());

    let _op = Operator::start(&ns.name, &[]);
    let stalled = wait_for("the KafkaCluster to stall on its missing Secret", WAIT, || async {
        let v = raw::<KafkaCluster>(&ns, "default").await.ok_or("gone")?;
        if is_true(&v, "Stalled") { Ok(v) } else { Err(format!("{}", v["status"])) }
    })
    .await;
    let (k, msg) = kstatus(std::slice::from_ref(&stalled)).remove(0);
    assert_eq!(k, "Failed", "{msg}");
    assert!(msg.contains("no-such-secret"), "the message names the Secret: {msg}");
    let (a, msg) = argo_health(std::slice::from_ref(&stalled)).remove(0);
    assert_eq!(a, "Degraded", "{msg}");
    assert!(msg.contains("no-such-secret"), "{msg}");
    record_fixtures(&[stalled], |_| "stalled".into());
}

/// One template of the chart, rendered with one value set.
fn helm_template(set: &str, template: &str) -> serde_yaml::Value {
    let chart = format!("{}/charts/kappa-operator", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(lab_bin("helm"))
        .args(["template", "kappa", &chart, "--set", set, "--show-only", template])
        .output()
        .expect("running helm");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_yaml::from_slice(&out.stdout).unwrap()
}

/// Argo CD's own kind of test: every `health_test.yaml` and
/// `action_test.yaml` under resource_customizations, in Argo CD's sandbox.
#[test]
fn argo_cd_health_and_action_tests_pass_in_its_lua_sandbox() {
    let out = Command::new(lab_bin("argocd-lua")).args(["test", &customizations()]).output().expect("running argocd-lua");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let passed: usize = text.lines().last().and_then(|l| l.split(' ').next()).and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(passed >= 25, "every kind's health states and every action are tested: {text}");
}

/// The chart's argocd-cm snippet carries the scripts as they are tested.
#[test]
fn the_chart_renders_the_scripts_as_argocd_cm_keys() {
    let cm = helm_template("argocd.resourceCustomizations=true", "templates/argocd-cm.yaml");
    let data = &cm["data"];
    let file = |path: &str| std::fs::read_to_string(format!("{}/kappa.dev/{path}", customizations())).unwrap();
    for kind in ["KafkaCluster", "Processor", "Topic", "ViewVersion"] {
        let key = format!("resource.customizations.health.kappa.dev_{kind}");
        assert_eq!(data[key.as_str()].as_str().map(str::trim), Some(file(&format!("{kind}/health.lua")).trim()), "{key}");
    }
    let actions: serde_yaml::Value =
        serde_yaml::from_str(data["resource.customizations.actions.kappa.dev_Processor"].as_str().expect("the actions key")).unwrap();
    assert_eq!(actions["discovery.lua"].as_str().map(str::trim), Some(file("Processor/actions/discovery.lua").trim()));
    let defined: Vec<&str> = actions["definitions"].as_sequence().unwrap().iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(defined, ["promote", "rollback", "reprocess"]);
    for d in actions["definitions"].as_sequence().unwrap() {
        let name = d["name"].as_str().unwrap();
        assert_eq!(d["action.lua"].as_str().map(str::trim), Some(file(&format!("Processor/actions/{name}/action.lua")).trim()), "{name}");
    }
}

fn monitoring(file: &str) -> String {
    format!("{}/charts/kappa-operator/monitoring/{file}", env!("CARGO_MANIFEST_DIR"))
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new(lab_bin("promtool")).args(args).output().expect("running promtool (built by hack/lab.sh up)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {args:?}: {text}");
    text
}

/// The alerting rules are valid, their unit tests pass, and the chart's
/// PrometheusRule carries them as they are.
#[test]
fn the_alerting_rules_pass_promtool_and_the_chart_ships_them() {
    let checked = promtool(&["check", "rules", &monitoring("rules.yaml")]);
    assert!(checked.contains("SUCCESS: 4 rules found"), "{checked}");
    let tested = promtool(&["test", "rules", &monitoring("rules_test.yaml")]);
    assert!(tested.contains("SUCCESS"), "{tested}");

    let rendered = helm_template("prometheusRule.enabled=true", "templates/prometheusrule.yaml");
    let file: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(monitoring("rules.yaml")).unwrap()).unwrap();
    assert_eq!(rendered["spec"]["groups"], file["groups"]);
}

/// Every dashboard query is valid PromQL (checked by promtool, as recording
/// rules, with Grafana's variables filled in).
#[test]
fn the_dashboard_queries_are_valid_promql() {
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(monitoring("dashboard.json")).unwrap()).unwrap();
    let mut rules = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {} has a query", panel["title"]);
        for t in targets {
            let expr = t["expr"].as_str().unwrap();
            let filled = [("$namespace", ".*"), ("$processor", ".*"), ("$__rate_interval", "5m"), ("$__range", "6h")]
                .iter()
                .fold(expr.to_string(), |e, (var, value)| e.replace(var, value));
            assert!(!filled.contains('$'), "a variable the test does not know: {expr}");
            rules.push(json!({"record": format!("kappa:dashboard:panel{}", panel["id"]), "expr": filled}));
        }
    }
    let path = std::env::temp_dir().join(format!("kappa-dashboard-rules-{}.yaml", std::process::id()));
    std::fs::write(&path, serde_yaml::to_string(&json!({"groups": [{"name": "dashboard", "rules": rules}]})).unwrap()).unwrap();
    let checked = promtool(&["check", "rules", path.to_str().unwrap()]);
    std::fs::remove_file(&path).ok();
    assert!(checked.contains(&format!("SUCCESS: {} rules found", rules.len())), "{checked}");
}

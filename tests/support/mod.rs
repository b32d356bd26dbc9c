//! What every end-to-end test shares: the lab's (or any cluster's)
//! environment, a fresh namespace per test that is deleted afterwards and
//! dumps what happened in it when the test fails, and waiting with a timeout
//! and a message that says what was awaited.
//!
//! Environment (from `eval "$(hack/lab.sh env)"`, or set by hand for another
//! cluster): `KUBECONFIG`, `KAPPA_KAFKA_BOOTSTRAP`, and for SCRAM tests
//! `KAPPA_KAFKA_SCRAM_BOOTSTRAP`, `KAPPA_KAFKA_SCRAM_USER`,
//! `KAPPA_KAFKA_SCRAM_PASSWORD_FILE`. `KAPPA_KEEP_NAMESPACES=1` keeps each
//! test's namespace for inspection.
#![allow(dead_code)] // each test binary uses a different part of this module

pub mod pipeline;

use std::{
    future::Future,
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::{Event, Namespace, Pod};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, PostParams},
};

pub struct Env {
    pub client: Client,
    pub kafka_bootstrap: String,
    /// Lab home: where the process kubelet keeps container logs. Unset on
    /// other clusters, where logs come through the API.
    pub lab_home: Option<PathBuf>,
}

pub fn required(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: end-to-end tests need the lab (eval \"$(hack/lab.sh env)\" after hack/lab.sh up) \
             or another cluster's settings (see README, \"Testing against another cluster\")"
        )
    })
}

impl Env {
    pub async fn get() -> Env {
        required("KUBECONFIG");
        let client = Client::try_default().await.expect("a kube client from KUBECONFIG");
        Env { client, kafka_bootstrap: required("KAPPA_KAFKA_BOOTSTRAP"), lab_home: std::env::var_os("KAPPA_LAB_HOME").map(PathBuf::from) }
    }
}

/// A namespace that lives as long as one test: deleted when dropped (unless
/// `KAPPA_KEEP_NAMESPACES=1`), and dumped to stderr first if the test failed.
pub struct TestNs(Ns);

/// A namespace and how to look into it.
#[derive(Clone)]
pub struct Ns {
    pub name: String,
    pub client: Client,
    lab_home: Option<PathBuf>,
}

impl std::ops::Deref for TestNs {
    type Target = Ns;
    fn deref(&self) -> &Ns {
        &self.0
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A short name unlikely to repeat across runs and threads.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let mut h: u64 = 0xcbf29ce484222325;
    for b in format!("{nanos}-{}-{n}", std::process::id()).bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    format!("{prefix}-{:06x}", h & 0xffffff)
}

impl TestNs {
    pub async fn new(env: &Env, prefix: &str) -> TestNs {
        let name = unique(&format!("e2e-{prefix}"));
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"kappa.dev/e2e": "true"}}
        }))
        .unwrap();
        Api::<Namespace>::all(env.client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        TestNs(Ns { name, client: env.client.clone(), lab_home: env.lab_home.clone() })
    }
}

impl Ns {
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Logs of a pod's container: from the API, or, on the lab, from the
    /// process kubelet's log files.
    pub async fn logs(&self, pod: &Pod, container: &str) -> String {
        if let (Some(home), Some(uid)) = (&self.lab_home, pod.metadata.uid.as_deref()) {
            let file = home.join("pods").join(format!("{}_{}_{uid}", self.name, pod.name_any())).join(format!("{container}.log"));
            if let Ok(text) = std::fs::read_to_string(&file) {
                return text;
            }
        }
        let lp = kube::api::LogParams { container: Some(container.into()), ..Default::default() };
        self.api::<Pod>().logs(&pod.name_any(), &lp).await.unwrap_or_default()
    }

    /// Events, pod states and the last lines of every container's log.
    pub async fn diagnostics(&self) -> String {
        let mut out = format!("==== diagnostics of namespace {} ====\n", self.name);
        let mut events = self.api::<Event>().list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default();
        // events.k8s.io events (the operator's) carry eventTime, core ones lastTimestamp.
        let when = |e: &Event| e.last_timestamp.as_ref().map(|t| t.0).or(e.event_time.as_ref().map(|t| t.0));
        events.sort_by_key(when);
        out.push_str("-- events\n");
        for e in events {
            out.push_str(&format!(
                "{} {} {}/{} {}: {}\n",
                when(&e).map(|t| t.strftime("%H:%M:%S%.3f").to_string()).unwrap_or_default(),
                e.type_.unwrap_or_default(),
                e.involved_object.kind.unwrap_or_default(),
                e.involved_object.name.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.message.unwrap_or_default()
            ));
        }
        // What the operator says of each Processor and version: the wait a
        // test timed out on is usually named here.
        out.push_str("-- processors\n");
        let processors = self.api::<kappa_operator::api::Processor>().list(&ListParams::default()).await.map(|l| l.items);
        for p in processors.unwrap_or_default() {
            let st = p.status.clone().unwrap_or_default();
            out.push_str(&format!(
                "processor {} phase={} desired={} active={} candidate={} cascade={}\n",
                p.name_any(),
                st.phase.unwrap_or_default(),
                st.desired_version.unwrap_or_default(),
                st.active_version.unwrap_or_default(),
                st.candidate_version.unwrap_or_default(),
                st.cascade_candidate.unwrap_or_default()
            ));
            for c in &st.conditions {
                out.push_str(&format!("  {}={} {}: {}\n", c.type_, c.status, c.reason, c.message));
            }
        }
        let versions = self.api::<kappa_operator::api::ViewVersion>().list(&ListParams::default()).await.map(|l| l.items);
        for v in versions.unwrap_or_default() {
            let st = v.status.clone().unwrap_or_default();
            out.push_str(&format!(
                "version {} phase={:?} gate={:?} lag={:?} annotations={:?}: {}\n",
                v.name_any(),
                st.phase,
                st.catch_up.as_ref().map(|c| &c.state),
                st.lag,
                v.annotations(),
                st.message.unwrap_or_default()
            ));
        }
        out.push_str("-- pods\n");
        let pods = self.api::<Pod>().list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default();
        for p in &pods {
            let st = p.status.clone().unwrap_or_default();
            out.push_str(&format!("pod {} phase={}\n", p.name_any(), st.phase.unwrap_or_default()));
            for cs in st.container_statuses.iter().flatten() {
                out.push_str(&format!(
                    "  container {} ready={} restarts={} state={}\n",
                    cs.name,
                    cs.ready,
                    cs.restart_count,
                    serde_json::to_string(&cs.state).unwrap_or_default()
                ));
            }
        }
        for p in &pods {
            for c in p.spec.iter().flat_map(|s| s.containers.iter()) {
                let logs = self.logs(p, &c.name).await;
                let lines: Vec<&str> = logs.lines().collect();
                out.push_str(&format!("-- log {}/{} (last 40 lines)\n", p.name_any(), c.name));
                for l in &lines[lines.len().saturating_sub(40)..] {
                    out.push_str(l);
                    out.push('\n');
                }
            }
        }
        out
    }
}

impl Ns {
    /// Deletes the namespace and waits for it to go, while the test's
    /// operator (dropped after the namespace) still runs to release its
    /// finalizers. A namespace still there after a minute has the kappa
    /// finalizers left in it removed (Topics', ViewVersions', Processors',
    /// KafkaClusters'),
    /// so no test leaves a namespace terminating forever.
    async fn delete(&self) {
        let namespaces = Api::<Namespace>::all(self.client.clone());
        if namespaces.delete(&self.name, &DeleteParams::background()).await.is_err() {
            return;
        }
        // Only the kappa kinds' finalizers hold a namespace up; wait while they do.
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if !(self.finalizers::<kappa_operator::api::Topic>(false).await
                || self.finalizers::<kappa_operator::api::ViewVersion>(false).await
                || self.finalizers::<kappa_operator::api::Processor>(false).await
                || self.finalizers::<kappa_operator::api::KafkaCluster>(false).await)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        eprintln!("namespace {} is stuck terminating; removing kappa finalizers", self.name);
        self.finalizers::<kappa_operator::api::Topic>(true).await;
        self.finalizers::<kappa_operator::api::ViewVersion>(true).await;
        self.finalizers::<kappa_operator::api::Processor>(true).await;
        self.finalizers::<kappa_operator::api::KafkaCluster>(true).await;
    }

    /// Whether any object of kind `K` still has a finalizer; with `remove`,
    /// removes them.
    async fn finalizers<K>(&self, remove: bool) -> bool
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), &self.name);
        let held: Vec<K> = api
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
            .into_iter()
            .filter(|o| !o.finalizers().is_empty())
            .collect();
        if remove {
            for o in &held {
                let patch = serde_json::json!({"metadata": {"finalizers": null}});
                let _ = api.patch(&o.name_any(), &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch)).await;
            }
        }
        !held.is_empty()
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        let keep = std::env::var("KAPPA_KEEP_NAMESPACES").is_ok_and(|v| v == "1");
        let mut ns = self.0.clone();
        // Drop cannot await, and the test's runtime is blocked here: use a
        // thread with its own runtime and its own client (a kube Client's
        // connection task lives on the runtime that created it).
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async {
                match Client::try_default().await {
                    Ok(c) => ns.client = c,
                    Err(e) => return eprintln!("cannot clean up namespace {}: {e}", ns.name),
                }
                if failed {
                    eprintln!("{}", ns.diagnostics().await);
                }
                if keep {
                    eprintln!("keeping namespace {} (KAPPA_KEEP_NAMESPACES=1)", ns.name);
                } else {
                    ns.delete().await;
                }
            });
        })
        .join();
    }
}

/// Polls `check` until it yields a value, or panics after `timeout` with a
/// message naming what was awaited and the last thing seen.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        let last = match check().await {
            Ok(v) => return v,
            Err(seen) => seen,
        };
        if start.elapsed() >= timeout {
            panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Installs (or updates) the CRDs from the Rust types and waits until the
/// API server serves them.
pub async fn install_crds(client: &Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in kappa_operator::api::crds() {
        let name = crd.metadata.name.clone().unwrap();
        api.patch(&name, &kube::api::PatchParams::apply("kappa-e2e").force(), &kube::api::Patch::Apply(&crd))
            .await
            .unwrap_or_else(|e| panic!("installing CRD {name}: {e}"));
        wait_for(&format!("CRD {name} to be established"), Duration::from_secs(30), || async {
            let c = api.get(&name).await.map_err(|e| e.to_string())?;
            let ok = c.status.and_then(|s| s.conditions).unwrap_or_default().iter().any(|c| c.type_ == "Established" && c.status == "True");
            if ok { Ok(()) } else { Err("not established".into()) }
        })
        .await;
    }
}

/// The operator binary of this build, run as a local process against the
/// test cluster and watching one namespace. Stopped (SIGTERM) when dropped.
pub struct Operator {
    child: Option<std::process::Child>,
    pub log: PathBuf,
    pub metrics_addr: String,
    args: Vec<String>,
    /// Extra environment for the next start (fault injection hooks).
    pub env: Vec<(String, String)>,
}

impl Operator {
    pub fn start(ns: &str, extra: &[&str]) -> Operator {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let metrics_addr = format!("127.0.0.1:{port}");
        let mut args: Vec<String> = vec!["run".into(), "--namespace".into(), ns.into(), "--http-addr".into(), metrics_addr.clone()];
        args.extend(extra.iter().map(|s| s.to_string()));
        let log = std::env::temp_dir().join(format!("kappa-operator-{ns}.log"));
        let mut op = Operator { child: None, log, metrics_addr, args, env: Vec::new() };
        op.spawn();
        op
    }

    fn spawn(&mut self) {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_kappa-operator"))
            .args(&self.args)
            .env("RUST_LOG", std::env::var("KAPPA_E2E_OPERATOR_LOG").unwrap_or_else(|_| "info,kube=warn".into()))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("starting the operator binary");
        self.child = Some(child);
    }

    /// SIGKILL: the operator gets no chance to clean up, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: SIGTERM to our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            let logs = self.logs();
            let lines: Vec<&str> = logs.lines().collect();
            eprintln!("==== operator log {} (last 60 lines) ====", self.log.display());
            for l in &lines[lines.len().saturating_sub(60)..] {
                eprintln!("{l}");
            }
        }
    }
}

/// Creates an object from JSON in the namespace, panicking with the API
/// server's message if refused.
pub async fn create<K>(ns: &Ns, value: serde_json::Value) -> K
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let obj: K = serde_json::from_value(value).expect("a valid object");
    ns.api::<K>().create(&PostParams::default(), &obj).await.unwrap_or_else(|e| panic!("creating {}: {e}", obj.name_any()))
}

/// Merge-patches an object's spec or metadata.
pub async fn patch<K>(ns: &Ns, name: &str, value: serde_json::Value) -> Result<K, kube::Error>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    ns.api::<K>().patch(name, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&value)).await
}

/// The reference processor binary (built by `hack/test.sh` through
/// `hack/images.sh`), for its `produce` and `check` subcommands.
pub fn processor_bin() -> PathBuf {
    if let Ok(p) = std::env::var("KAPPA_PROCESSOR_BIN") {
        return PathBuf::from(p);
    }
    // Integration tests run from target/<profile>/deps.
    let exe = std::env::current_exe().expect("the test binary's path");
    let bin = exe.parent().and_then(|d| d.parent()).map(|d| d.join("kappa-processor")).expect("target folder");
    assert!(bin.exists(), "{} is missing: build it with hack/images.sh (hack/test.sh does)", bin.display());
    bin
}

/// Runs the reference processor's `produce` or `check`; Ok(stdout) on exit 0.
pub fn processor(args: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new(processor_bin())
        .args(args)
        .env("KAPPA_BOOTSTRAP_SERVERS", required("KAPPA_KAFKA_BOOTSTRAP"))
        .output()
        .expect("running kappa-processor");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() { Ok(text) } else { Err(text) }
}

/// The operator's own Kafka client, plaintext, for the lab's (or another
/// cluster's) `KAPPA_KAFKA_BOOTSTRAP`.
pub fn kafka() -> kappa_operator::kafka::client::WireKafka {
    kappa_operator::kafka::client::WireKafka::new(kappa_operator::kafka::Settings::plaintext(&required("KAPPA_KAFKA_BOOTSTRAP")))
}

/// Runs `hack/lab.sh` (only on the lab: it takes components away and
/// brings them back), panicking with its output if it fails: its stdout.
pub fn lab(args: &[&str]) -> String {
    let home = required("KAPPA_LAB_HOME");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("hack/lab.sh");
    let out = std::process::Command::new(&script).args(args).env("KAPPA_LAB_HOME", &home).output().expect("running hack/lab.sh");
    assert!(out.status.success(), "hack/lab.sh {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The path of a lab tool (kubectl, helm), from the lab's PATH.
pub fn lab_bin(name: &str) -> String {
    std::env::var("KAPPA_LAB_HOME")
        .map(|h| format!("{h}/bin/{name}"))
        .ok()
        .filter(|p| std::path::Path::new(p).exists())
        .unwrap_or_else(|| name.to_string())
}

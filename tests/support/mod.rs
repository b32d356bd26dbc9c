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
        Env {
            client,
            kafka_bootstrap: required("KAPPA_KAFKA_BOOTSTRAP"),
            lab_home: std::env::var_os("KAPPA_LAB_HOME").map(PathBuf::from),
        }
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
        events.sort_by_key(|e| e.last_timestamp.clone().map(|t| t.0));
        out.push_str("-- events\n");
        for e in events {
            out.push_str(&format!(
                "{} {}/{} {}: {}\n",
                e.type_.unwrap_or_default(),
                e.involved_object.kind.unwrap_or_default(),
                e.involved_object.name.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.message.unwrap_or_default()
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
                    let _ = Api::<Namespace>::all(ns.client.clone()).delete(&ns.name, &DeleteParams::background()).await;
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

/// The path of a lab tool (kubectl, helm), from the lab's PATH.
pub fn lab_bin(name: &str) -> String {
    std::env::var("KAPPA_LAB_HOME")
        .map(|h| format!("{h}/bin/{name}"))
        .ok()
        .filter(|p| std::path::Path::new(p).exists())
        .unwrap_or_else(|| name.to_string())
}

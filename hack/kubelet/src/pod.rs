//! One worker per Pod: starts its containers as processes, restarts them per
//! the restart policy, probes them, stops them when the Pod is deleted, and
//! reports Pod status.

use std::{
    collections::{BTreeMap, HashSet},
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::{
    api::core::v1::{Container, Pod},
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams, Preconditions},
};
use serde_json::{Value, json};
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};
use tracing::{info, warn};

use crate::{
    Lab, probe,
    spec::{self, Launch, Volumes, Waiting},
};

/// Back-off between restarts of a failing container: 1 s doubling to 60 s
/// (a real kubelet starts at 10 s and caps at 5 min; the lab is impatient).
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A container that ran this long without failing starts its back-off anew.
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(120);
const RETRY_CONFIG: Duration = Duration::from_secs(3);

/// Process groups of every running container, so that a kubelet shutdown
/// stops them all.
static RUNNING: Mutex<Option<HashSet<i32>>> = Mutex::new(None);

fn track(pid: i32, running: bool) {
    let mut set = RUNNING.lock().expect("running lock");
    let set = set.get_or_insert_with(HashSet::new);
    if running {
        set.insert(pid);
    } else {
        set.remove(&pid);
    }
}

fn signal_group(pid: i32, sig: i32) {
    // SAFETY: kill(2) with a negative pid signals a process group; pid is one
    // we started with setsid, so the group is that container's process tree.
    unsafe {
        libc::kill(-pid, sig);
    }
}

pub async fn stop_all_processes() {
    let pids: Vec<i32> = RUNNING.lock().expect("running lock").iter().flatten().copied().collect();
    pids.iter().for_each(|p| signal_group(*p, libc::SIGTERM));
    for _ in 0..50 {
        // SAFETY: signal 0 only checks that the process exists.
        if pids.iter().all(|p| unsafe { libc::kill(*p, 0) } != 0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pids.iter().for_each(|p| signal_group(*p, libc::SIGKILL));
}

/// Processes a previous kubelet run left behind (it was killed hard): stop
/// them by the pid files it wrote.
pub fn kill_stale_processes(root: &Path) {
    let Ok(pods) = std::fs::read_dir(root) else { return };
    for pod in pods.flatten() {
        let Ok(files) = std::fs::read_dir(pod.path()) else { continue };
        for f in files.flatten().filter(|f| f.path().extension().is_some_and(|e| e == "pid")) {
            if let Some(pid) = std::fs::read_to_string(f.path()).ok().and_then(|s| s.trim().parse::<i32>().ok()) {
                signal_group(pid, libc::SIGKILL);
            }
            let _ = std::fs::remove_file(f.path());
        }
    }
}

struct Exit {
    idx: usize,
    generation: u64,
    code: i32,
    signal: Option<i32>,
}

#[derive(Clone)]
struct Term {
    exit_code: i32,
    signal: Option<i32>,
    reason: String,
    started: Time,
    finished: Time,
    container_id: String,
}

struct Run {
    pid: i32,
    generation: u64,
    started: Time,
    since: Instant,
    launch: Launch,
}

#[derive(Default)]
struct ProbeState {
    next: Option<Instant>,
    successes: i32,
    failures: i32,
}

struct Ctr {
    spec: Container,
    run: Option<Run>,
    waiting: Option<Waiting>,
    /// Final state: the container will not run again.
    done: Option<Term>,
    last: Option<Term>,
    restarts: i32,
    backoff: Duration,
    not_before: Instant,
    ready: bool,
    readiness: ProbeState,
    liveness: ProbeState,
    killed_by_liveness: bool,
}

struct Worker {
    lab: Arc<Lab>,
    pod: Pod,
    dir: PathBuf,
    ip: Option<Ipv4Addr>,
    volumes: Option<Volumes>,
    setup_error: Option<Waiting>,
    next_setup: Instant,
    ctrs: Vec<Ctr>,
    generation: u64,
    exits: mpsc::UnboundedSender<Exit>,
    start_time: Time,
    transitions: BTreeMap<&'static str, (bool, Time)>,
    last_report: Option<Value>,
    stopping: bool,
    delete_sent: bool,
}

pub async fn run(lab: Arc<Lab>, mut rx: watch::Receiver<Option<Pod>>) {
    let Some(pod) = rx.borrow_and_update().clone() else { return };
    let (tx, mut exits) = mpsc::unbounded_channel();
    let mut w = Worker::new(lab, pod, tx);
    info!(pod = %w.key(), "pod assigned");
    loop {
        let Some(latest) = rx.borrow_and_update().clone() else {
            w.stop_all(&mut exits).await;
            break;
        };
        w.pod = latest;
        if w.pod.metadata.deletion_timestamp.is_some() {
            w.stop_all(&mut exits).await;
            w.report().await;
            if !w.delete_sent {
                w.delete_sent = w.delete().await;
            }
        } else {
            if !w.terminal() {
                w.step().await;
            }
            w.report().await;
        }
        let wake = w.next_wakeup();
        tokio::select! {
            changed = rx.changed() => if changed.is_err() {
                w.stop_all(&mut exits).await;
                break;
            },
            Some(exit) = exits.recv() => w.on_exit(exit),
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
    w.finish();
}

impl Worker {
    fn new(lab: Arc<Lab>, pod: Pod, exits: mpsc::UnboundedSender<Exit>) -> Self {
        let m = &pod.metadata;
        let dir = lab.root.join(format!(
            "{}_{}_{}",
            m.namespace.as_deref().unwrap_or_default(),
            m.name.as_deref().unwrap_or_default(),
            m.uid.as_deref().unwrap_or_default()
        ));
        let now = Instant::now();
        // Restart counts survive a kubelet restart, as they do on a node.
        let prior: BTreeMap<String, i32> =
            pod.status.iter().flat_map(|s| s.container_statuses.iter().flatten()).map(|cs| (cs.name.clone(), cs.restart_count)).collect();
        let ctrs = pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .map(|c| Ctr {
                spec: c.clone(),
                run: None,
                waiting: Some(Waiting { reason: "ContainerCreating", message: String::new() }),
                done: None,
                last: None,
                restarts: prior.get(&c.name).copied().unwrap_or(0),
                backoff: Duration::ZERO,
                not_before: now,
                ready: false,
                readiness: ProbeState::default(),
                liveness: ProbeState::default(),
                killed_by_liveness: false,
            })
            .collect();
        let start_time = pod.status.as_ref().and_then(|s| s.start_time.clone()).unwrap_or_else(|| Time(Timestamp::now()));
        Worker {
            lab,
            pod,
            dir,
            ip: None,
            volumes: None,
            setup_error: None,
            next_setup: now,
            ctrs,
            generation: 0,
            exits,
            start_time,
            transitions: BTreeMap::new(),
            last_report: None,
            stopping: false,
            delete_sent: false,
        }
    }

    fn key(&self) -> String {
        format!("{}/{}", self.pod.metadata.namespace.as_deref().unwrap_or_default(), self.pod.metadata.name.as_deref().unwrap_or_default())
    }

    fn restart_policy(&self) -> &str {
        self.pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()).unwrap_or("Always")
    }

    /// Succeeded or Failed: every container is done and none will restart.
    fn terminal(&self) -> bool {
        !self.ctrs.is_empty() && self.ctrs.iter().all(|c| c.done.is_some())
    }

    async fn setup(&mut self) -> bool {
        if self.volumes.is_some() {
            return true;
        }
        if Instant::now() < self.next_setup {
            return false;
        }
        if let Err(e) = std::fs::create_dir_all(&self.dir) {
            self.setup_error = Some(Waiting { reason: "CreateContainerConfigError", message: e.to_string() });
            self.next_setup = Instant::now() + RETRY_CONFIG;
            return false;
        }
        if self.ip.is_none() {
            let prior = self.pod.status.as_ref().and_then(|s| s.pod_ip.as_deref()).and_then(|ip| ip.parse().ok());
            self.ip = Some(self.lab.allocate_ip(prior));
        }
        match spec::materialize_volumes(&self.lab, &self.pod, &self.dir).await {
            Ok(v) => {
                self.volumes = Some(v);
                self.setup_error = None;
                true
            }
            Err(e) => {
                self.setup_error = Some(e);
                self.next_setup = Instant::now() + RETRY_CONFIG;
                false
            }
        }
    }

    async fn step(&mut self) {
        if !self.setup().await {
            return;
        }
        let now = Instant::now();
        for idx in 0..self.ctrs.len() {
            let c = &self.ctrs[idx];
            if c.run.is_none() && c.done.is_none() && now >= c.not_before {
                self.start(idx).await;
            }
        }
        self.probe_all().await;
    }

    async fn start(&mut self, idx: usize) {
        let ip = self.ip.unwrap_or(Ipv4Addr::LOCALHOST);
        let volumes = self.volumes.as_ref().expect("volumes are set up before containers start");
        let spec = self.ctrs[idx].spec.clone();
        let launch = match spec::launch(&self.lab, &self.pod, &spec, ip, &self.dir, volumes).await {
            Ok(l) => l,
            Err(w) => {
                if self.ctrs[idx].waiting.as_ref() != Some(&w) {
                    warn!(pod = %self.key(), container = %spec.name, reason = w.reason, message = %w.message, "container cannot start");
                }
                let c = &mut self.ctrs[idx];
                c.waiting = Some(w);
                c.not_before = Instant::now() + RETRY_CONFIG;
                return;
            }
        };
        match spawn(&self.dir, &spec.name, &launch) {
            Ok((pid, child)) => {
                self.generation += 1;
                let generation = self.generation;
                let tx = self.exits.clone();
                tokio::spawn(async move {
                    let status = child.wait_with_output_status().await;
                    let _ = tx.send(Exit { idx, generation, code: status.0, signal: status.1 });
                });
                track(pid, true);
                info!(pod = %self.key(), container = %spec.name, pid, argv = ?launch.argv, "container started");
                let c = &mut self.ctrs[idx];
                if c.last.is_some() {
                    c.restarts += 1;
                }
                c.run = Some(Run { pid, generation, started: Time(Timestamp::now()), since: Instant::now(), launch });
                c.waiting = None;
                c.ready = false;
                c.readiness = ProbeState::default();
                c.liveness = ProbeState::default();
                c.killed_by_liveness = false;
            }
            Err(e) => {
                let c = &mut self.ctrs[idx];
                c.waiting = Some(Waiting { reason: "RunContainerError", message: format!("starting {}: {e}", launch.argv[0]) });
                c.backoff = next_backoff(c.backoff);
                c.not_before = Instant::now() + c.backoff;
            }
        }
    }

    async fn probe_all(&mut self) {
        let ip = self.ip.unwrap_or(Ipv4Addr::LOCALHOST);
        let now = Instant::now();
        for c in &mut self.ctrs {
            let Some(run) = &c.run else { continue };
            match &c.spec.readiness_probe {
                None => c.ready = true,
                Some(p) => {
                    let due = *c.readiness.next.get_or_insert(run.since + secs(p.initial_delay_seconds, 0));
                    if now >= due {
                        let ok = probe::check(p, &c.spec, ip, &run.launch).await;
                        count(&mut c.readiness, ok);
                        if ok && c.readiness.successes >= p.success_threshold.unwrap_or(1) {
                            c.ready = true;
                        } else if !ok && c.readiness.failures >= p.failure_threshold.unwrap_or(3) {
                            c.ready = false;
                        }
                        c.readiness.next = Some(Instant::now() + secs(p.period_seconds, 10));
                    }
                }
            }
            if let Some(p) = &c.spec.liveness_probe {
                let due = *c.liveness.next.get_or_insert(run.since + secs(p.initial_delay_seconds, 0));
                if now >= due {
                    let ok = probe::check(p, &c.spec, ip, &run.launch).await;
                    count(&mut c.liveness, ok);
                    if !ok && c.liveness.failures >= p.failure_threshold.unwrap_or(3) && !c.killed_by_liveness {
                        warn!(container = %c.spec.name, "liveness probe failed; killing the container");
                        c.killed_by_liveness = true;
                        signal_group(run.pid, libc::SIGKILL);
                    }
                    c.liveness.next = Some(Instant::now() + secs(p.period_seconds, 10));
                }
            }
        }
    }

    fn on_exit(&mut self, exit: Exit) {
        let policy = self.restart_policy().to_string();
        let key = self.key();
        let pod_name = self.pod.metadata.name.clone().unwrap_or_default();
        let stopping = self.stopping;
        let dir = self.dir.clone();
        let Some(c) = self.ctrs.get_mut(exit.idx) else { return };
        let Some(run) = c.run.take_if(|r| r.generation == exit.generation) else { return };
        track(run.pid, false);
        let _ = std::fs::remove_file(dir.join(format!("{}.pid", c.spec.name)));
        let term = Term {
            exit_code: exit.code,
            signal: exit.signal,
            reason: if c.killed_by_liveness {
                "Error".into()
            } else if exit.code == 0 {
                "Completed".into()
            } else {
                "Error".into()
            },
            started: run.started,
            finished: Time(Timestamp::now()),
            container_id: format!("process://{}", run.pid),
        };
        info!(pod = %key, container = %c.spec.name, code = exit.code, signal = ?exit.signal, "container exited");
        c.ready = false;
        let restart = !stopping && (policy == "Always" || (policy == "OnFailure" && exit.code != 0));
        if !restart {
            c.done = Some(term);
            c.waiting = None;
            return;
        }
        if run.since.elapsed() >= BACKOFF_RESET_AFTER {
            c.backoff = Duration::ZERO;
        }
        c.backoff = next_backoff(c.backoff);
        c.not_before = Instant::now() + c.backoff;
        c.waiting = Some(Waiting {
            reason: "CrashLoopBackOff",
            message: format!("back-off {}s restarting failed container={} pod={pod_name}", c.backoff.as_secs(), c.spec.name),
        });
        c.last = Some(term);
    }

    /// SIGTERM to every container, SIGKILL to those still running after the
    /// grace period.
    async fn stop_all(&mut self, exits: &mut mpsc::UnboundedReceiver<Exit>) {
        self.stopping = true;
        let grace = self
            .pod
            .metadata
            .deletion_grace_period_seconds
            .or_else(|| self.pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds))
            .unwrap_or(30)
            .max(0) as u64;
        for c in &mut self.ctrs {
            if c.run.is_none() && c.done.is_none() {
                // Never started, or waiting to restart: it is over now.
                c.done = c.last.clone();
                c.waiting = if c.done.is_none() { c.waiting.take() } else { None };
            }
        }
        let pids: Vec<i32> = self.ctrs.iter().filter_map(|c| c.run.as_ref().map(|r| r.pid)).collect();
        if pids.is_empty() {
            return;
        }
        info!(pod = %self.key(), grace, "stopping containers");
        pids.iter().for_each(|p| signal_group(*p, libc::SIGTERM));
        let deadline = Instant::now() + Duration::from_secs(grace);
        let mut killed = false;
        while self.ctrs.iter().any(|c| c.run.is_some()) {
            let until = if killed { Instant::now() + Duration::from_secs(10) } else { deadline };
            tokio::select! {
                Some(exit) = exits.recv() => self.on_exit(exit),
                _ = tokio::time::sleep_until(until) => {
                    if killed { break; }
                    self.ctrs.iter().filter_map(|c| c.run.as_ref()).for_each(|r| signal_group(r.pid, libc::SIGKILL));
                    killed = true;
                }
            }
        }
    }

    async fn delete(&self) -> bool {
        let api: Api<Pod> = Api::namespaced(self.lab.client.clone(), self.pod.metadata.namespace.as_deref().unwrap_or_default());
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions { uid: self.pod.metadata.uid.clone(), resource_version: None }),
            ..Default::default()
        };
        match api.delete(self.pod.metadata.name.as_deref().unwrap_or_default(), &dp).await {
            Ok(_) => true,
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => true,
            Err(e) => {
                warn!(pod = %self.key(), error = %e, "completing the pod's deletion failed");
                false
            }
        }
    }

    fn finish(&mut self) {
        if let Some(ip) = self.ip.take() {
            self.lab.release_ip(ip);
        }
        // Secrets and tokens do not outlive the pod; logs stay for debugging
        // until `hack/lab.sh down --purge`.
        let _ = std::fs::remove_dir_all(self.dir.join("volumes"));
        info!(pod = %self.key(), "pod gone");
    }

    fn next_wakeup(&self) -> Instant {
        let mut wake = Instant::now() + Duration::from_secs(30);
        if self.volumes.is_none() {
            wake = wake.min(self.next_setup);
        }
        for c in &self.ctrs {
            if c.run.is_none() && c.done.is_none() {
                wake = wake.min(c.not_before);
            }
            if c.run.is_some() {
                for next in [c.readiness.next, c.liveness.next].into_iter().flatten() {
                    wake = wake.min(next);
                }
                if c.spec.readiness_probe.is_some() && c.readiness.next.is_none()
                    || c.spec.liveness_probe.is_some() && c.liveness.next.is_none()
                {
                    wake = Instant::now();
                }
            }
        }
        wake.max(Instant::now() + Duration::from_millis(20))
    }

    fn condition(&mut self, type_: &'static str, ok: bool, reason: Option<&str>) -> Value {
        let now = Time(Timestamp::now());
        let entry = self.transitions.entry(type_).or_insert((ok, now.clone()));
        if entry.0 != ok {
            *entry = (ok, now);
        }
        let mut c =
            json!({"type": type_, "status": if ok { "True" } else { "False" }, "lastTransitionTime": entry.1, "lastProbeTime": null});
        if let Some(r) = reason.filter(|_| !ok) {
            c["reason"] = json!(r);
        }
        c
    }

    fn status(&mut self) -> Value {
        let policy_done = self.terminal();
        let all_ok = self.ctrs.iter().all(|c| c.done.as_ref().is_some_and(|t| t.exit_code == 0));
        let phase = if policy_done {
            if all_ok { "Succeeded" } else { "Failed" }
        } else if self.ctrs.iter().all(|c| c.run.is_some() || c.last.is_some() || c.done.is_some()) {
            "Running"
        } else {
            "Pending"
        };
        let statuses: Vec<Value> = self.ctrs.iter().map(container_status).collect();
        let all_ready = !policy_done && self.ctrs.iter().all(|c| c.run.is_some() && c.ready);
        let set_up = self.volumes.is_some();
        let not_ready_reason = if policy_done { "PodCompleted" } else { "ContainersNotReady" };
        let mut conditions = vec![
            self.condition("PodReadyToStartContainers", set_up, None),
            self.condition("Initialized", true, None),
            self.condition("Ready", all_ready, Some(not_ready_reason)),
            self.condition("ContainersReady", all_ready, Some(not_ready_reason)),
        ];
        // Keep what the scheduler wrote.
        if let Some(scheduled) =
            self.pod.status.as_ref().and_then(|s| s.conditions.as_ref()).and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"))
        {
            conditions.push(serde_json::to_value(scheduled).unwrap_or(Value::Null));
        }
        let mut status = json!({
            "phase": phase,
            "conditions": conditions,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "startTime": self.start_time,
            "containerStatuses": statuses,
        });
        if let Some(ip) = self.ip {
            status["podIP"] = json!(ip.to_string());
            status["podIPs"] = json!([{"ip": ip.to_string()}]);
        }
        // null removes the fields in a merge patch once the problem is gone.
        let problem = self.setup_error.as_ref().filter(|_| !set_up);
        status["message"] = json!(problem.map(|w| &w.message));
        status["reason"] = json!(problem.map(|w| w.reason));
        status
    }

    async fn report(&mut self) {
        let status = self.status();
        if self.last_report.as_ref() == Some(&status) {
            return;
        }
        let api: Api<Pod> = Api::namespaced(self.lab.client.clone(), self.pod.metadata.namespace.as_deref().unwrap_or_default());
        let name = self.pod.metadata.name.clone().unwrap_or_default();
        match api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&json!({"status": status}))).await {
            Ok(_) => self.last_report = Some(status),
            Err(kube::Error::Api(s)) if s.code == 404 => self.last_report = Some(status),
            Err(e) => warn!(pod = %self.key(), error = %e, "reporting pod status failed"),
        }
    }
}

fn container_status(c: &Ctr) -> Value {
    let term = |t: &Term| {
        let mut v = json!({"exitCode": t.exit_code, "reason": t.reason, "startedAt": t.started, "finishedAt": t.finished, "containerID": t.container_id});
        if let Some(s) = t.signal {
            v["signal"] = json!(s);
        }
        json!({"terminated": v})
    };
    let state = if let Some(r) = &c.run {
        json!({"running": {"startedAt": r.started}})
    } else if let Some(t) = &c.done {
        term(t)
    } else {
        let w = c.waiting.clone().unwrap_or(Waiting { reason: "ContainerCreating", message: String::new() });
        let mut v = json!({"reason": w.reason});
        if !w.message.is_empty() {
            v["message"] = json!(w.message);
        }
        json!({"waiting": v})
    };
    let image = c.spec.image.clone().unwrap_or_default();
    let mut s = json!({
        "name": c.spec.name,
        "image": image,
        "imageID": format!("process://{image}"),
        "ready": c.run.is_some() && c.ready,
        "started": c.run.is_some(),
        "restartCount": c.restarts,
        "state": state,
        "lastState": c.last.as_ref().map(term).unwrap_or_else(|| json!({})),
    });
    if let Some(r) = &c.run {
        s["containerID"] = json!(format!("process://{}", r.pid));
    } else if let Some(t) = c.done.as_ref().or(c.last.as_ref()) {
        s["containerID"] = json!(t.container_id);
    }
    s
}

fn next_backoff(b: Duration) -> Duration {
    if b.is_zero() { BACKOFF_START } else { (b * 2).min(BACKOFF_MAX) }
}

fn secs(v: Option<i32>, default: u64) -> Duration {
    Duration::from_secs(v.map(|s| s.max(0) as u64).unwrap_or(default))
}

fn count(p: &mut ProbeState, ok: bool) {
    if ok {
        p.successes += 1;
        p.failures = 0;
    } else {
        p.failures += 1;
        p.successes = 0;
    }
}

/// A started container: its process, and a future for its exit.
struct Child(tokio::process::Child);

impl Child {
    async fn wait_with_output_status(mut self) -> (i32, Option<i32>) {
        use std::os::unix::process::ExitStatusExt;
        match self.0.wait().await {
            Ok(s) => match (s.code(), s.signal()) {
                (Some(code), _) => (code, None),
                (None, Some(sig)) => (128 + sig, Some(sig)),
                _ => (255, None),
            },
            Err(_) => (255, None),
        }
    }
}

fn spawn(dir: &Path, name: &str, launch: &Launch) -> std::io::Result<(i32, Child)> {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join(format!("{name}.log")))?;
    let mut cmd = tokio::process::Command::new(&launch.argv[0]);
    cmd.args(&launch.argv[1..])
        .env_clear()
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&launch.cwd)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            // Own process group, so signals reach the container's whole tree;
            // and die with the kubelet, so a crashed lab leaves no orphans.
            libc::setsid();
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    let pid = child.id().map(|p| p as i32).unwrap_or_default();
    std::fs::write(dir.join(format!("{name}.pid")), pid.to_string())?;
    Ok((pid, Child(child)))
}

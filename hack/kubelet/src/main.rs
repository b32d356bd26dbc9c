//! The lab's process kubelet.
//!
//! It registers Node `lab-node`, keeps its heartbeat Lease fresh, and runs
//! every Pod bound to the node as local processes: each container image maps
//! to a local executable through the lab's image map. It reports Pod status
//! honestly (phase, conditions, container states, exit codes, restarts), runs
//! readiness and liveness probes, restarts per the Pod's restart policy with
//! back-off, and stops processes with SIGTERM then SIGKILL when a Pod goes.
//!
//! Lab only: it stands in for a kubelet plus a container runtime, which cannot
//! run on the lab's machines. There is no isolation: every Pod shares the
//! host's filesystem and network, each on its own loopback address.

mod node;
mod pod;
mod probe;
mod spec;

use std::{collections::HashMap, net::Ipv4Addr, path::PathBuf, sync::Arc, sync::Mutex};

use anyhow::Context as _;
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
    runtime::watcher,
};
use tokio::sync::watch;
use tracing::{info, warn};

#[derive(Parser, Debug)]
#[command(about = "Lab only: a kubelet that runs pods as local processes")]
struct Args {
    /// Kubeconfig with the node's credentials (system:node:NAME).
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Name of the Node to register.
    #[arg(long, default_value = "lab-node")]
    node_name: String,
    /// Folder for per-pod working folders, logs and pid files.
    #[arg(long)]
    root: PathBuf,
    /// Image map: lines `IMAGE=EXECUTABLE`.
    #[arg(long)]
    image_map: PathBuf,
}

/// What every pod worker shares.
pub struct Lab {
    pub client: Client,
    pub node_name: String,
    pub root: PathBuf,
    pub image_map: PathBuf,
    /// API server URL and CA, for the kubeconfigs handed to pods.
    pub server: String,
    pub ca_pem: Vec<u8>,
    ips: Mutex<IpPool>,
}

impl Lab {
    pub fn allocate_ip(&self, wanted: Option<Ipv4Addr>) -> Ipv4Addr {
        self.ips.lock().expect("ip pool lock").allocate(wanted)
    }
    pub fn release_ip(&self, ip: Ipv4Addr) {
        self.ips.lock().expect("ip pool lock").release(ip);
    }
}

/// Every pod gets its own loopback address (127.0.1.1 upwards), so that two
/// pods can listen on the same port, as they can on a real cluster.
#[derive(Default)]
struct IpPool {
    used: std::collections::HashSet<Ipv4Addr>,
}

impl IpPool {
    fn allocate(&mut self, wanted: Option<Ipv4Addr>) -> Ipv4Addr {
        if let Some(ip) = wanted.filter(|ip| ip.octets()[0] == 127 && !self.used.contains(ip)) {
            self.used.insert(ip);
            return ip;
        }
        for i in 0u32..(254 * 254) {
            let ip = Ipv4Addr::new(127, 0, (1 + i / 254) as u8, (1 + i % 254) as u8);
            if self.used.insert(ip) {
                return ip;
            }
        }
        Ipv4Addr::LOCALHOST
    }
    fn release(&mut self, ip: Ipv4Addr) {
        self.used.remove(&ip);
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,kube=warn".into()))
        .init();
    let args = Args::parse();
    // One thread: child processes get PR_SET_PDEATHSIG, which fires when the
    // thread that forked them exits, so all forks must come from a thread that
    // lives as long as the kubelet.
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let kubeconfig = Kubeconfig::read_from(&args.kubeconfig).with_context(|| format!("reading {}", args.kubeconfig.display()))?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    let ca_pem = config
        .root_cert
        .as_ref()
        .and_then(|certs| certs.first())
        .map(|der| pem_encode(der))
        .context("the kubelet's kubeconfig has no certificate authority")?;
    let server = config.cluster_url.to_string().trim_end_matches('/').to_string();
    let client = Client::try_from(config)?;
    std::fs::create_dir_all(&args.root)?;
    pod::kill_stale_processes(&args.root);

    let lab = Arc::new(Lab {
        client: client.clone(),
        node_name: args.node_name.clone(),
        root: args.root,
        image_map: args.image_map,
        server,
        ca_pem,
        ips: Mutex::new(IpPool::default()),
    });
    node::register(&lab).await.context("registering the node")?;
    tokio::spawn(node::heartbeat(lab.clone()));
    info!(node = %lab.node_name, "node registered; watching pods");

    let pods: Api<Pod> = Api::all(client);
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={}", lab.node_name));
    let mut events = watcher(pods, cfg).boxed();
    let mut workers: HashMap<String, watch::Sender<Option<Pod>>> = HashMap::new();
    let mut listed: Option<Vec<String>> = None;
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;

    loop {
        tokio::select! {
            _ = sigterm.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            ev = events.next() => match ev {
                None => break,
                Some(Err(e)) => warn!(error = %e, "pod watch failed; retrying"),
                Some(Ok(watcher::Event::Init)) => listed = Some(Vec::new()),
                Some(Ok(watcher::Event::InitApply(p))) => {
                    if let Some(l) = listed.as_mut() { l.push(uid(&p)); }
                    dispatch(&lab, &mut workers, p);
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    // Pods that vanished while the watch was down.
                    let seen = listed.take().unwrap_or_default();
                    workers.retain(|k, tx| {
                        let keep = seen.contains(k);
                        if !keep { let _ = tx.send(None); }
                        keep
                    });
                }
                Some(Ok(watcher::Event::Apply(p))) => dispatch(&lab, &mut workers, p),
                Some(Ok(watcher::Event::Delete(p))) => {
                    // The last state carries the deletion's grace period (0
                    // for a forced deletion); the worker stops the processes
                    // accordingly, then sees its channel close.
                    if let Some(tx) = workers.remove(&uid(&p)) {
                        let _ = tx.send(if p.metadata.deletion_timestamp.is_some() { Some(p) } else { None });
                    }
                }
            }
        }
        workers.retain(|_, tx| !tx.is_closed());
    }
    info!("shutting down: stopping every pod's processes");
    pod::stop_all_processes().await;
    Ok(())
}

fn uid(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap_or_default()
}

fn dispatch(lab: &Arc<Lab>, workers: &mut HashMap<String, watch::Sender<Option<Pod>>>, p: Pod) {
    let key = uid(&p);
    if let Some(tx) = workers.get(&key)
        && tx.send(Some(p.clone())).is_ok()
    {
        return;
    }
    let (tx, rx) = watch::channel(Some(p));
    tokio::spawn(pod::run(lab.clone(), rx));
    workers.insert(key, tx);
}

fn pem_encode(der: &[u8]) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::new();
    for chunk in der.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ascii"));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out.into_bytes()
}

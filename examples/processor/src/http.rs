//! `/healthz`, `/metrics` and `/view/KEY` on the pod's address.

use std::{
    io::{BufRead, BufReader, Write},
    net::TcpListener,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use crate::{logic::Logic, run::State};

#[derive(Default)]
pub struct Stats {
    pub records: AtomicU64,
    pub rejected: AtomicU64,
    pub view_writes: AtomicU64,
    pub commits: AtomicU64,
    pub restores: AtomicU64,
}

impl Stats {
    fn metrics(&self) -> String {
        let line = |name: &str, help: &str, v: &AtomicU64| {
            format!("# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n", v.load(Ordering::Relaxed))
        };
        [
            line("kappa_processor_records_total", "Events applied to the view", &self.records),
            line("kappa_processor_rejected_total", "Events that were not JSON or lacked the key or numeric field", &self.rejected),
            line("kappa_processor_view_writes_total", "Aggregates written to the view topic", &self.view_writes),
            line("kappa_processor_commits_total", "Offset commits", &self.commits),
            line("kappa_processor_restores_total", "State rebuilds from the view topic", &self.restores),
        ]
        .concat()
    }
}

/// Serves in a background thread; a port that cannot be bound is logged and
/// the processor goes on without HTTP.
pub fn serve(port: u16, stats: Arc<Stats>, state: State, logic: Logic, version: String) {
    let ip = std::env::var("POD_IP").unwrap_or_else(|_| "127.0.0.1".into());
    let listener = match TcpListener::bind((ip.as_str(), port)) {
        Ok(l) => l,
        Err(e) => return eprintln!("not serving HTTP on {ip}:{port}: {e}"),
    };
    eprintln!("serving /healthz, /metrics and /view/KEY on {ip}:{port}");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(&stream);
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
            let (status, body) = if path == "/healthz" {
                ("200 OK", "ok\n".to_string())
            } else if path == "/metrics" {
                ("200 OK", stats.metrics())
            } else if let Some(key) = path.strip_prefix("/view/") {
                match state.lock().expect("state lock").get(key) {
                    Some(agg) => {
                        let mut json = Vec::new();
                        agg.write_json(logic, &version, &mut json);
                        ("200 OK", format!("{}\n", String::from_utf8_lossy(&json)))
                    }
                    None => ("404 Not Found", "no such key\n".to_string()),
                }
            } else {
                ("404 Not Found", "try /healthz, /metrics or /view/KEY\n".to_string())
            };
            let mut s = &stream;
            let _ = write!(s, "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        }
    });
}

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
    pub latency: Latency,
}

/// Buckets of the latency histogram: upper bounds 1 ms x 1.1^i, up to
/// about 30 s; a percentile read from them is within 10%.
const BUCKETS: usize = 109;
static BOUNDS: std::sync::LazyLock<[f64; BUCKETS]> = std::sync::LazyLock::new(|| {
    let mut b = [0.0; BUCKETS];
    for (i, x) in b.iter_mut().enumerate() {
        // (rounded to the microsecond: the labels stay short)
        *x = (0.001 * 1.1f64.powi(i as i32) * 1e6).round() / 1e6;
    }
    b
});

/// End-to-end latency: from a record's timestamp (when it was produced) to
/// the acknowledgement of the view write that carries it. A histogram, so
/// percentiles over any window come from two readings.
pub struct Latency {
    /// Per bucket (the last is above every bound), not cumulative.
    counts: [AtomicU64; BUCKETS + 1],
    sum_ms: AtomicU64,
}

impl Default for Latency {
    fn default() -> Self {
        Latency { counts: std::array::from_fn(|_| AtomicU64::new(0)), sum_ms: AtomicU64::new(0) }
    }
}

impl Latency {
    /// Records the batch of records produced at `stamps` (milliseconds
    /// since the epoch) as acknowledged at `now_ms`.
    pub fn observe(&self, now_ms: i64, stamps: &[i64]) {
        let mut local = [0u64; BUCKETS + 1];
        let mut sum = 0u64;
        for &t in stamps {
            let ms = (now_ms - t).max(0) as u64;
            sum += ms;
            local[BOUNDS.partition_point(|b| b * 1000.0 < ms as f64)] += 1;
        }
        for (c, n) in self.counts.iter().zip(local).filter(|(_, n)| *n > 0) {
            c.fetch_add(n, Ordering::Relaxed);
        }
        self.sum_ms.fetch_add(sum, Ordering::Relaxed);
    }

    fn metrics(&self) -> String {
        let name = "kappa_processor_latency_seconds";
        let mut out = format!("# HELP {name} From a record's timestamp to its view write acknowledged\n# TYPE {name} histogram\n");
        let mut cumulative = 0;
        for (i, c) in self.counts.iter().enumerate() {
            cumulative += c.load(Ordering::Relaxed);
            let le = BOUNDS.get(i).map_or("+Inf".to_string(), |b| b.to_string());
            out.push_str(&format!("{name}_bucket{{le=\"{le}\"}} {cumulative}\n"));
        }
        out.push_str(&format!("{name}_sum {}\n{name}_count {cumulative}\n", self.sum_ms.load(Ordering::Relaxed) as f64 / 1000.0));
        out
    }
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
            self.latency.metrics(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_fall_in_cumulative_buckets() {
        let l = Latency::default();
        l.observe(10_000, &[10_000, 9_999, 9_990, 9_000, 0]);
        let text = l.metrics();
        // Bounds 1 ms x 1.1^i: 9.85 ms (24), 10.8 ms (25), 1.05 s (73), 9.4 s (96), 10.4 s (97).
        let le = |i: usize| BOUNDS[i].to_string();
        for (le, n) in [(le(0), 2), (le(24), 2), (le(25), 3), (le(73), 4), (le(96), 4), (le(97), 5), ("+Inf".to_string(), 5)] {
            assert!(text.contains(&format!("kappa_processor_latency_seconds_bucket{{le=\"{le}\"}} {n}\n")), "le {le}: {text}");
        }
        assert!(text.contains("kappa_processor_latency_seconds_count 5\n"));
    }
}

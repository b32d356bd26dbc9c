//! The reference processor of the Kappa Operator.
//!
//!   kappa-processor run [--logic sum|count|max] [--field amount] [--port 8080]
//!       the processor (reads the KAPPA_* contract from the environment)
//!   kappa-processor produce --topic T --count N [--seed S] [--keys K] [--invalid-every M]
//!       writes N deterministic JSON events
//!   kappa-processor check --input T[,T] --view V [--logic sum]
//!       recomputes the aggregates from the input and compares them with the view
mod aggregate;
mod http;
mod kafka;
mod logic;
mod run;

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use clap::{Parser, Subcommand};
use logic::{Agg, Logic};
use rdkafka::producer::BaseRecord;

pub static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

#[derive(Parser)]
#[command(about = "The Kappa Operator's reference processor: per-key aggregates of JSON events")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run as a processor under the Kappa contract (KAPPA_* variables).
    Run {
        /// What to compute per key.
        #[arg(long, env = "KAPPA_LOGIC", value_enum, default_value = "sum")]
        logic: Logic,
        /// The numeric field of each event.
        #[arg(long, default_value = "amount")]
        field: String,
        /// Port of /healthz, /metrics and /view/KEY (on $POD_IP).
        #[arg(long, env = "KAPPA_HTTP_PORT", default_value_t = 8080)]
        port: u16,
        /// Commit offsets only every this many seconds, as Kafka Streams does
        /// (default: within a second, and whenever caught up).
        #[arg(long)]
        commit_every: Option<u64>,
    },
    /// Write deterministic events to a topic.
    Produce {
        #[arg(long, env = "KAPPA_BOOTSTRAP_SERVERS")]
        bootstrap: String,
        #[arg(long)]
        topic: String,
        #[arg(long)]
        count: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Distinct keys.
        #[arg(long, default_value_t = 1000)]
        keys: u64,
        /// Make every M-th event invalid (alternately not JSON, and without the field).
        #[arg(long)]
        invalid_every: Option<u64>,
        /// Events per second (default: as fast as the broker takes them).
        #[arg(long)]
        rate: Option<u64>,
    },
    /// Compare the view with aggregates recomputed from the inputs; exit 0 only if every key matches.
    Check {
        #[arg(long, env = "KAPPA_BOOTSTRAP_SERVERS")]
        bootstrap: String,
        /// Input topics, comma-separated.
        #[arg(long, value_delimiter = ',')]
        input: Vec<String>,
        /// The view topic.
        #[arg(long)]
        view: String,
        #[arg(long, value_enum, default_value = "sum")]
        logic: Logic,
        #[arg(long, default_value = "amount")]
        field: String,
    },
}

fn main() {
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
    let result = match Cli::parse().command {
        Command::Run { logic, field, port, commit_every } => {
            let cadence = commit_every.map_or(run::Cadence::PROMPT, run::Cadence::every);
            run(run::Options { logic, cadence }, &field, port)
        }
        Command::Produce { bootstrap, topic, count, seed, keys, invalid_every, rate } => {
            produce(&bootstrap, &topic, count, seed, keys, invalid_every, rate)
        }
        Command::Check { bootstrap, input, view, logic, field } => check(&bootstrap, &input, &view, logic, &field),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(options: run::Options, field: &str, port: u16) -> Result<(), String> {
    let contract = run::Contract::from_env()?;
    let stats = Arc::new(http::Stats::default());
    let state: run::State = Default::default();
    http::serve(port, stats.clone(), state.clone(), options.logic, contract.version.clone());
    run::run(&contract, options, field, state, stats)
}

fn produce(
    bootstrap: &str,
    topic: &str,
    count: u64,
    seed: u64,
    keys: u64,
    invalid_every: Option<u64>,
    rate: Option<u64>,
) -> Result<(), String> {
    let producer: kafka::CheckedProducer = kafka::config(bootstrap)
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .create_with_context(Default::default())
        .map_err(|e| e.to_string())?;
    let mut rng = logic::Rng::new(seed);
    let started = std::time::Instant::now();
    for i in 1..=count {
        let (key, mut payload) = logic::event(&mut rng, keys);
        if invalid_every.is_some_and(|m| i % m == 0) {
            payload =
                if (i / invalid_every.unwrap_or(1)).is_multiple_of(2) { "{not json".into() } else { r#"{"note":"no amount"}"#.into() };
        }
        kafka::send(&producer, BaseRecord::to(topic).key(key.as_str()).payload(payload.as_bytes())).map_err(|e| e.to_string())?;
        if let Some(rate) = rate.filter(|r| *r > 0) {
            // Steady input: event i leaves no earlier than i/rate seconds in.
            let due = Duration::from_secs_f64(i as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    kafka::wait_delivered(&producer, Some(Duration::from_secs(120)), &format!("the events to {topic}"))?;
    eprintln!("produced {count} events to {topic} in {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

fn check(bootstrap: &str, inputs: &[String], view: &str, logic: Logic, field: &str) -> Result<(), String> {
    let mut expected: HashMap<String, Agg> = HashMap::new();
    let mut rejected = 0u64;
    let read = kafka::read_all(bootstrap, inputs, |topic, partition, offset, key, payload| match logic::parse(key, payload, field) {
        Ok((k, n)) => {
            let source: std::sync::Arc<str> = format!("{topic}/{partition}").into();
            expected.entry(k.into_owned()).or_default().apply(logic, n, &source, offset);
        }
        Err(_) => rejected += 1,
    })?;
    let mut actual: HashMap<String, Agg> = HashMap::new();
    kafka::read_all(bootstrap, &[view.to_string()], |_, _, _, key, payload| {
        if let (Some(k), Some(v)) = (key.and_then(|k| std::str::from_utf8(k).ok()), payload.and_then(|p| serde_json::from_slice(p).ok())) {
            actual.insert(k.to_string(), Agg::from_json(&v));
        }
    })?;
    let mut wrong: Vec<String> = Vec::new();
    for (k, e) in &expected {
        match actual.get(k) {
            Some(a) if a.result(logic) == e.result(logic) => {}
            Some(a) => wrong.push(format!("{k}: view {:?}, expected {:?}", a.result(logic), e.result(logic))),
            None => wrong.push(format!("{k}: missing from the view, expected {:?}", e.result(logic))),
        }
    }
    for k in actual.keys().filter(|k| !expected.contains_key(*k)) {
        wrong.push(format!("{k}: in the view but not in the input"));
    }
    if wrong.is_empty() {
        println!("ok: {} keys match ({read} input events, {rejected} rejected, logic {})", expected.len(), logic.name());
        Ok(())
    } else {
        wrong.sort();
        for w in wrong.iter().take(10) {
            eprintln!("mismatch {w}");
        }
        Err(format!(
            "{} of {} keys do not match the input ({read} events, logic {})",
            wrong.len(),
            expected.len().max(actual.len()),
            logic.name()
        ))
    }
}

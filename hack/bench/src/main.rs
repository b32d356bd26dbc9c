//! Benchmarks on the lab. Human-readable progress on stderr; the last line on
//! stdout is one JSON object with the figures. Run through `hack/bench.sh`.

mod chain;
mod common;
mod parallel;
mod processors;
mod replay;
mod rollout;
mod soak;
mod topics;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Kappa Operator benchmarks on the lab")]
struct Cli {
    /// The operator binary to run (a release build).
    #[arg(long, env = "KAPPA_BENCH_OPERATOR")]
    operator: std::path::PathBuf,
    /// The reference processor binary (a release build; also mapped to image
    /// ghcr.io/kappa-dev/kappa-processor:bench in the lab).
    #[arg(long, env = "KAPPA_BENCH_PROCESSOR")]
    processor: std::path::PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create N Topics; time until all are Ready against the API server's
    /// own time for the same creates, operator peak RSS, idle API writes
    /// and Kafka requests per resync.
    Topics {
        count: usize,
        /// Seconds of idle observed after all are Ready.
        #[arg(long, default_value_t = 60)]
        idle_seconds: u64,
        /// Topics with deletionPolicy Retain (no finalizer) instead of Delete.
        #[arg(long)]
        retain: bool,
    },
    /// Create N Processors (replicas 0, one shared input); time until all
    /// have an active version, API writes per Processor; then a steady
    /// state: API reads and writes per minute, operator CPU and RSS, Kafka
    /// requests per lag poll per broker; one rollout among them (promotion
    /// beyond stableFor); then the namespace deleted.
    Processors {
        count: usize,
        /// Seconds of steady state observed.
        #[arg(long, default_value_t = 300)]
        steady_seconds: u64,
    },
    /// Produce N events; the reference processor's replay rate through the
    /// operator against a raw consumer's; the cost of one lag poll over
    /// 1,000 partitions. With `--replicas R`: the replay rate of R pods
    /// (replayReplicas) against one, and a live processor's p99 latency
    /// during an unthrottled and a throttled (`--budget`) replay.
    Replay {
        count: u64,
        #[arg(long)]
        replicas: Option<i32>,
        /// replayByteRate of the throttled replay, bytes/s (per broker).
        #[arg(long, default_value_t = 1 << 20)]
        budget: i64,
    },
    /// One v1 -> v2 rollout over N input records (default 100,000):
    /// promotion latency beyond stableFor, API writes, and a rollback to a
    /// standby 10,000 records behind. With `--stages N` (N >= 2): a chain of
    /// N Processors; the time from a change of stage one to the whole chain
    /// promoted, and API writes per chain rollout, Together and Independent.
    Rollout {
        #[arg(long, default_value_t = 100_000)]
        records: u64,
        #[arg(long, default_value_t = 1)]
        stages: usize,
    },
    /// 1,000 Topics and 100 Processors under churn (creates, deletes,
    /// logic changes) for M minutes: RSS every 10 s, RSS at the end against
    /// after the warm-up, errors in the log, every rollout completed.
    Soak {
        #[arg(long, default_value_t = 60)]
        minutes: u64,
    },
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Topics { count, idle_seconds, retain } => topics::run(&cli.operator, count, idle_seconds, retain).await,
        Command::Processors { count, steady_seconds } => processors::run(&cli.operator, &cli.processor, count, steady_seconds).await,
        Command::Replay { count, replicas: None, .. } => replay::run(&cli.operator, &cli.processor, count).await,
        Command::Replay { count, replicas: Some(r), budget } => parallel::run(&cli.operator, &cli.processor, count, r, budget).await,
        Command::Soak { minutes } => soak::run(&cli.operator, minutes).await,
        Command::Rollout { records, stages: 1 } => rollout::run(&cli.operator, &cli.processor, records).await,
        Command::Rollout { records, stages } => chain::run(&cli.operator, &cli.processor, records, stages).await,
    };
    match result {
        Ok(figures) => println!("{figures}"),
        Err(e) => {
            eprintln!("bench failed: {e:#}");
            std::process::exit(1);
        }
    }
}

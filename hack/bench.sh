#!/usr/bin/env bash
# Benchmarks on the lab. Progress on stderr; the last stdout line is a JSON
# object with the figures.
#
#   hack/bench.sh topics N [--retain]   N Topics to Ready: time against the API server's own create time, rate, operator peak RSS, idle writes, Kafka requests per resync
#   hack/bench.sh processors N  N Processors to an active version: time, writes each; steady reads/writes per minute, CPU, RSS, Kafka requests per lag poll; one rollout among them; namespace deletion
#   hack/bench.sh replay N      N events replayed by the reference processor and by the Kafka Streams example vs a raw consumer; one lag poll over 1,000 partitions and 100 groups
#   hack/bench.sh replay N --replicas R [--budget B]   a replay by R pods against one pod (replayReplicas), and a live processor's p99 latency during an unthrottled and a throttled replay
#   hack/bench.sh soak --minutes M   1,000 Topics and 100 Processors with churn for M minutes: RSS every 10 s, errors in the log, every rollout completed
#   hack/bench.sh rollout       one v1 -> v2 rollout: promotion latency, API writes; rollback to a standby
#   hack/bench.sh rollout --stages 3   a chain of 3 Processors: time from a change of stage one to the chain promoted, API writes (Together, Independent)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

hack/lab.sh up >&2
eval "$(hack/lab.sh env)"
# The operator as shipped (the Dockerfile's profile); the rest as released.
cargo build -q --profile dist -p kappa-operator --bin kappa-operator >&2
cargo build -q --release -p kappa-bench -p kappa-processor >&2
target=$(cargo metadata -q --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
export KAPPA_BENCH_OPERATOR="$target/dist/kappa-operator"
export KAPPA_BENCH_PROCESSOR="$target/release/kappa-processor"
hack/lab.sh image "ghcr.io/kappa-dev/kappa-processor:bench=$KAPPA_BENCH_PROCESSOR" >&2
hack/images.sh streams >&2
exec "$target/release/kappa-bench" "$@"

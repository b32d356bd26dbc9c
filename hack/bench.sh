#!/usr/bin/env bash
# Benchmarks on the lab. Progress on stderr; the last stdout line is a JSON
# object with the figures.
#
#   hack/bench.sh topics N      N Topics to Ready: time, rate, operator peak RSS, idle writes, Kafka requests per resync
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

hack/lab.sh up >&2
eval "$(hack/lab.sh env)"
cargo build -q --release -p kappa-operator -p kappa-bench >&2
export KAPPA_BENCH_OPERATOR="$PWD/target/release/kappa-operator"
exec target/release/kappa-bench "$@"

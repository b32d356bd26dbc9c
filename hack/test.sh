#!/usr/bin/env bash
# The project's test command: brings the lab up (building what is missing),
# loads its environment, builds the operator and the lab images, and runs
# every unit and end-to-end test. Exits non-zero on any failure.
#
#   hack/test.sh                 everything
#   hack/test.sh --test e2e_lab  extra arguments go to `cargo test --workspace --all-targets`
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

hack/lab.sh up
eval "$(hack/lab.sh env)"
hack/images.sh
cargo test --workspace --all-targets --no-fail-fast "$@"

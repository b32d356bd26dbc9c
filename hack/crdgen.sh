#!/usr/bin/env bash
# Regenerates the committed CRDs (crds/ and the Helm chart's crds/) from the
# Rust types. A unit test fails when they are out of date.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mkdir -p crds charts/kappa-operator/crds
cargo run -q -- crd --output-dir crds
cargo run -q -- crd --output-dir charts/kappa-operator/crds

#!/usr/bin/env bash
# Builds the binaries that stand in for the project's container images on the
# lab, and maps each image to its executable in the lab's image map (the
# process kubelet runs a pod's container image as that executable).
#
#   hack/images.sh            debug builds (tests)
#   hack/images.sh --release  release builds (benchmarks, demo)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
profile=debug
if [ "${1:-}" = --release ]; then profile=release; fi
cargo build -q --workspace --bins $([ $profile = release ] && echo --release)
target=$(cargo metadata -q --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
hack/lab.sh image "ghcr.io/kappa-dev/kappa-operator=$target/$profile/kappa-operator"
hack/lab.sh image "ghcr.io/kappa-dev/kappa-operator:dev=$target/$profile/kappa-operator"
hack/lab.sh image "ghcr.io/kappa-dev/kappa-processor=$target/$profile/kappa-processor"

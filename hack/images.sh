#!/usr/bin/env bash
# Builds the binaries that stand in for the project's container images on the
# lab, and maps each image to its executable in the lab's image map.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build -q --workspace --bins

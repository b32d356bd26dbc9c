#!/usr/bin/env bash
# Runs the compatibility tests (tests/e2e_compat.rs) against a Kafka-API
# broker that is not Apache Kafka, on the lab:
#
#   hack/compat.sh tansu     tansu (crates.io, memory storage), built once into the lab's home
#
# The first run builds tansu from crates.io (about half an hour on 2 cores);
# later runs reuse it. hack/test.sh runs the same tests against the lab's
# Apache Kafka.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=lab/versions.env
source hack/lab/versions.env

case ${1:-} in
  tansu) ;;
  *) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac

hack/lab.sh up >&2
eval "$(hack/lab.sh env)"
H=$KAPPA_LAB_HOME
PORT=9492
if [ ! -x "$H/tansu/bin/tansu" ] || [ "$(cat "$H/stamps/tansu" 2>/dev/null)" != "$TANSU_VERSION" ]; then
  echo "[compat] building tansu $TANSU_VERSION from crates.io (once)" >&2
  cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore \
    --root "$H/tansu" --target-dir "$H/tansu-build" >&2
  mkdir -p "$H/stamps" && echo "$TANSU_VERSION" >"$H/stamps/tansu"
fi
mkdir -p "$H/logs"
setsid "$H/tansu/bin/tansu" broker --listener-url "tcp://127.0.0.1:$PORT" --advertised-listener-url "tcp://127.0.0.1:$PORT" \
  --storage-engine memory://tansu/ >"$H/logs/tansu.log" 2>&1 </dev/null &
pid=$!
trap 'kill -TERM -- "-$pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.2; done
hack/images.sh
KAPPA_COMPAT_BOOTSTRAP="127.0.0.1:$PORT" cargo test --test e2e_compat -- --nocapture

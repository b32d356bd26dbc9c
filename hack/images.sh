#!/usr/bin/env bash
# Builds the binaries that stand in for the project's container images on the
# lab, and maps each image to its executable in the lab's image map (the
# process kubelet runs a pod's container image as that executable).
#
#   hack/images.sh            debug builds (tests)
#   hack/images.sh --release  release builds (benchmarks, demo)
#   hack/images.sh streams    only the Kafka Streams example
#   hack/images.sh python     only the Python example
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The Kafka Streams example (Java 17, Maven): built under the lab's home when
# its sources change, run by a launcher script the image maps to.
streams_example() {
  local H=${KAPPA_LAB_HOME:-$HOME/.cache/kappa-lab}
  local src=examples/kafka-streams out=$H/builds/kafka-streams sum
  sum=$(find "$src/pom.xml" "$src/src" -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
  if [ "$(cat "$out/.sources" 2>/dev/null)" != "$sum" ]; then
    command -v mvn >/dev/null || { echo "mvn and Java 17 are needed to build $src" >&2; exit 1; }
    rm -rf "$out"
    # (Maven's -q still prints colour resets: stripped.)
    mvn -q -B -f "$src/pom.xml" -Dmaven.repo.local="$H/m2" -Dout="$out" package 2>&1 | sed 's/\x1b\[[0-9;]*m//g' | grep -v '^$' >&2 || true
    [ -f "$out/kappa-streams-example.jar" ] || { echo "building $src failed" >&2; exit 1; }
    cat >"$out/run" <<LAUNCHER
#!/usr/bin/env bash
# The image's entrypoint: the example's jar and its libraries on the JVM.
exec java \${JAVA_OPTS:--Xmx192m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xss512k} \\
  -cp "$out/kappa-streams-example.jar:$out/lib/*" dev.kappa.examples.streams.Main "\$@"
LAUNCHER
    chmod +x "$out/run"
    echo "$sum" >"$out/.sources"
  fi
  hack/lab.sh image "ghcr.io/kappa-dev/kappa-streams-example=$out/run"
}
# The Python example (confluent-kafka from PyPI): a virtualenv under the lab's
# home, made again when its requirements change.
python_example() {
  local H=${KAPPA_LAB_HOME:-$HOME/.cache/kappa-lab}
  local src=examples/python out=$H/builds/python-processor
  if [ "$(cat "$out/.requirements" 2>/dev/null)" != "$(cat "$src/requirements.txt")" ]; then
    command -v python3 >/dev/null || { echo "python3 is needed to build $src" >&2; exit 1; }
    rm -rf "$out"
    python3 -m venv "$out/venv"
    "$out/venv/bin/pip" install -q --disable-pip-version-check -r "$src/requirements.txt" >&2
    cp "$src/requirements.txt" "$out/.requirements"
  fi
  cp "$src/processor.py" "$out/processor.py"
  printf '#!/usr/bin/env bash\nexec %q -u %q "$@"\n' "$out/venv/bin/python" "$out/processor.py" >"$out/run"
  chmod +x "$out/run"
  hack/lab.sh image "ghcr.io/kappa-dev/kappa-python-example=$out/run"
}
case "${1:-}" in
  streams) streams_example; exit 0 ;;
  python) python_example; exit 0 ;;
esac

profile=debug
if [ "${1:-}" = --release ]; then profile=release; fi
cargo build -q --workspace --bins $([ $profile = release ] && echo --release)
target=$(cargo metadata -q --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
hack/lab.sh image "ghcr.io/kappa-dev/kappa-operator=$target/$profile/kappa-operator"
hack/lab.sh image "ghcr.io/kappa-dev/kappa-operator:dev=$target/$profile/kappa-operator"
hack/lab.sh image "ghcr.io/kappa-dev/kappa-processor=$target/$profile/kappa-processor"

streams_example
python_example

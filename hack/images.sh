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

# The Kafka Streams example (Java 17, Maven): built under the lab's home when
# its sources change, run by a launcher script the image maps to.
H=${KAPPA_LAB_HOME:-$HOME/.cache/kappa-lab}
streams_src=examples/kafka-streams
streams_out=$H/builds/kafka-streams
streams_sum=$(find "$streams_src/pom.xml" "$streams_src/src" -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
if [ "$(cat "$streams_out/.sources" 2>/dev/null)" != "$streams_sum" ]; then
  command -v mvn >/dev/null || { echo "mvn and Java 17 are needed to build $streams_src" >&2; exit 1; }
  rm -rf "$streams_out"
  mvn -q -B -Dstyle.color=never -f "$streams_src/pom.xml" -Dmaven.repo.local="$H/m2" -Dout="$streams_out" package >&2
  cat >"$streams_out/run" <<LAUNCHER
#!/usr/bin/env bash
# The image's entrypoint: the example's jar and its libraries on the JVM.
exec java \${JAVA_OPTS:--Xmx192m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xss512k} \\
  -cp "$streams_out/kappa-streams-example.jar:$streams_out/lib/*" dev.kappa.examples.streams.Main "\$@"
LAUNCHER
  chmod +x "$streams_out/run"
  echo "$streams_sum" >"$streams_out/.sources"
fi
hack/lab.sh image "ghcr.io/kappa-dev/kappa-streams-example=$streams_out/run"

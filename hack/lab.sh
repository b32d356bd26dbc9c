#!/usr/bin/env bash
# The lab: real upstream components on one machine, for end-to-end tests and
# the demo. etcd, kube-apiserver, kube-controller-manager and kube-scheduler
# built from their Go modules, Apache Kafka (KRaft) from Maven Central, and a
# process kubelet that runs pods as local processes.
#
#   hack/lab.sh up                  build what is missing, start what is not running, wait until ready
#   hack/lab.sh down [--purge]      stop everything the lab started (--purge: also cluster and Kafka data)
#   hack/lab.sh stop COMPONENT      stop one component (kafka-1..3, or kafka for all three)
#   hack/lab.sh start COMPONENT     start one stopped component and wait until it is ready
#   hack/lab.sh status              per component: running or not, pid, address (and Kafka's active controller)
#   hack/lab.sh kafka-controller    the Kafka node that leads the controller quorum now (kafka-N)
#   hack/lab.sh env                 shell exports: eval "$(hack/lab.sh env)"
#   hack/lab.sh logs COMPONENT      a component's log (etcd, kube-apiserver, ..., kafka-1, kubelet)
#   hack/lab.sh logs NS/POD         the container logs of a pod run by the process kubelet
#   hack/lab.sh image IMAGE=PATH    map a container image to a local executable
#   hack/lab.sh build               build the lab's binaries only (no start)
#
# Everything lives under KAPPA_LAB_HOME (default ~/.cache/kappa-lab): builds,
# downloads, certificates, data, logs and pid files.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LAB_SRC="$REPO/hack/lab"
# shellcheck source=lab/versions.env
source "$LAB_SRC/versions.env"

export KAPPA_LAB_HOME=${KAPPA_LAB_HOME:-$HOME/.cache/kappa-lab}
H=$KAPPA_LAB_HOME
BIN=$H/bin
RUN=$H/run
LOGS=$H/logs
PKI=$H/pki
DATA=$H/data
IMAGES=$H/images

APISERVER_PORT=6443
ETCD_CLIENT_PORT=2379
ETCD_PEER_PORT=2380
# Kafka: three nodes, each broker and controller. Node N listens on
# base = 9092 + 100*(N-1): base PLAINTEXT, base+1 CONTROLLER, base+2
# SASL_PLAINTEXT (SCRAM-SHA-512), base+3 SSL, base+4 SSL with client
# certificates.
KAFKA_NODES=(1 2 3)
KAFKA_SCRAM_USER=kappa-lab
kafka_port() { echo $((9092 + 100 * ($1 - 1) + ${2:-0})); }
kafka_addrs() { local n out=""; for n in "${KAFKA_NODES[@]}"; do out+="${out:+,}127.0.0.1:$(kafka_port "$n" "$1")"; done; echo "$out"; }
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kafka-1 kafka-2 kafka-3 kubelet)

log() { printf '[lab] %s\n' "$*" >&2; }
die() { printf '[lab] error: %s\n' "$*" >&2; exit 1; }

go_env() {
  export GOMODCACHE=$H/go/mod GOCACHE=$H/go/cache GOFLAGS=-mod=mod GOTOOLCHAIN=local
}

# A stamp file per built component records the version it was built at, so a
# version change in versions.env triggers a rebuild and nothing else does.
stamp_ok() { [ -f "$H/stamps/$1" ] && [ "$(cat "$H/stamps/$1")" = "$2" ]; }
stamp_set() { mkdir -p "$H/stamps"; echo "$2" >"$H/stamps/$1"; }

build_kubernetes() {
  local want="$KUBERNETES_VERSION"
  stamp_ok kubernetes "$want" && [ -x "$BIN/kube-apiserver" ] && return 0
  log "building Kubernetes $want (kube-apiserver, kube-controller-manager, kube-scheduler, kubectl); a cold build takes 10-20 minutes"
  local minor=${KUBERNETES_VERSION#v1.}; minor=${minor%%.*}
  local ld="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=$KUBERNETES_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  (cd "$LAB_SRC/k8s" && go_env && go build -trimpath -ldflags "$ld" -o "$BIN/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl)
  stamp_set kubernetes "$want"
}

build_etcd() {
  stamp_ok etcd "$ETCD_VERSION" && [ -x "$BIN/etcd" ] && return 0
  log "building etcd $ETCD_VERSION"
  (cd "$LAB_SRC/etcd" && go_env && go build -trimpath -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3)
  stamp_set etcd "$ETCD_VERSION"
}

build_helm() {
  stamp_ok helm "$HELM_VERSION" && [ -x "$BIN/helm" ] && return 0
  log "building helm $HELM_VERSION"
  local minor=${KUBERNETES_STAGING_VERSION#v0.}; minor=${minor%%.*}
  local ld="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.metadata="
  for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ld+=" -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$minor"
  done
  (cd "$LAB_SRC/helm" && go_env && go build -trimpath -ldflags "$ld" -o "$BIN/helm" helm.sh/helm/v3/cmd/helm)
  stamp_set helm "$HELM_VERSION"
}

build_kafka() {
  local libs=$H/kafka-$KAFKA_VERSION/libs
  stamp_ok kafka "$KAFKA_VERSION" && [ -d "$libs" ] && return 0
  log "resolving Apache Kafka $KAFKA_VERSION from Maven Central"
  rm -rf "$libs"
  mvn -q -B -f "$LAB_SRC/kafka/pom.xml" -Dmaven.repo.local="$H/m2" \
    -Dkafka.version="$KAFKA_VERSION" -Dkafka.libs="$libs" \
    -DbuildDirectory="$H/kafka-build" package >&2
  rm -rf "$LAB_SRC/kafka/target"
  stamp_set kafka "$KAFKA_VERSION"
}

# The GitOps checks: kstatus and healthCheckExprs (Flux's status library and
# CEL evaluator) and Argo CD's Lua sandbox, from their Go modules; see
# hack/lab/gitops.
build_gitops() {
  local want; want=$(cat "$LAB_SRC/gitops/go.sum" "$LAB_SRC"/gitops/*/main.go | sha256sum | cut -c1-16)
  stamp_ok gitops "$want" && [ -x "$BIN/kstatus" ] && [ -x "$BIN/argocd-lua" ] && [ -x "$BIN/flux-cel" ] && return 0
  log "building kstatus, flux-cel and argocd-lua"
  (cd "$LAB_SRC/gitops" && go_env && go build -trimpath -ldflags "-s -w" -o "$BIN/" ./kstatus ./flux-cel ./argocd-lua)
  stamp_set gitops "$want"
}

# promtool, to check the chart's alerting rules; a cold build takes a few minutes.
build_promtool() {
  local want; want=$(grep -m1 'prometheus/prometheus ' "$LAB_SRC/prometheus/go.mod" | awk '{print $NF}')
  stamp_ok promtool "$want" && [ -x "$BIN/promtool" ] && return 0
  log "building promtool $want"
  # remove_all_sd: no service discovery (cloud SDKs), which promtool needs not to check rules
  (cd "$LAB_SRC/prometheus" && go_env && go build -tags remove_all_sd -trimpath -ldflags "-s -w" -o "$BIN/promtool" github.com/prometheus/prometheus/cmd/promtool)
  stamp_set promtool "$want"
}

# The process kubelet and the lab's test program are Rust workspace members.
# A debug build: it shares its dependencies' builds with the tests' build,
# which saves minutes on a fresh machine, and a kubelet needs no speed.
build_kubelet() {
  log "building the process kubelet"
  (cd "$REPO" && cargo build -q -p kappa-lab-kubelet --bins)
  local target; target=$(cd "$REPO" && cargo metadata -q --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
  install -m 0755 "$target/debug/process-kubelet" "$BIN/process-kubelet"
  install -m 0755 "$target/debug/lab-testapp" "$BIN/lab-testapp"
}

build_all() {
  mkdir -p "$BIN"
  command -v go >/dev/null || die "go is needed to build the lab (Kubernetes, etcd, helm)"
  command -v mvn >/dev/null || die "mvn and Java 17 are needed to fetch Kafka"
  build_etcd
  build_kubernetes
  build_helm
  build_kafka
  build_gitops
  build_promtool
  build_kubelet
}

# ---------------------------------------------------------------- certificates

gen_cert() { # name CN O [SANs]
  local name=$1 cn=$2 o=$3 sans=${4:-}
  [ -f "$PKI/$name.crt" ] && return 0
  local subj="/CN=$cn"; [ -n "$o" ] && subj="/O=$o$subj"
  openssl genrsa -out "$PKI/$name.key" 2048 2>/dev/null
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  local ext="$PKI/$name.ext"
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    if [ -n "$sans" ]; then echo "extendedKeyUsage=serverAuth,clientAuth"; echo "subjectAltName=$sans"; else echo "extendedKeyUsage=clientAuth"; fi
  } >"$ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$ext"
}

kubeconfig() { # file user cert-name
  local file=$1 user=$2 cert=$3
  [ -f "$file" ] && return 0
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: kappa-lab
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority: $PKI/ca.crt
users:
- name: $user
  user:
    client-certificate: $PKI/$cert.crt
    client-key: $PKI/$cert.key
contexts:
- name: kappa-lab
  context: {cluster: kappa-lab, user: $user, namespace: default}
current-context: kappa-lab
EOF
}

ensure_pki() {
  mkdir -p "$PKI" && chmod 700 "$PKI"
  if [ ! -f "$PKI/ca.crt" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$PKI/ca.key" -out "$PKI/ca.crt" \
      -days 3650 -subj "/CN=kappa-lab-ca" 2>/dev/null
  fi
  [ -f "$PKI/sa.key" ] || { openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null; openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null; }
  gen_cert apiserver kube-apiserver "" "IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  gen_cert admin kappa-lab-admin system:masters
  gen_cert controller-manager system:kube-controller-manager ""
  gen_cert scheduler system:kube-scheduler ""
  gen_cert kubelet system:node:lab-node system:nodes
  gen_cert apiserver-kubelet-client kube-apiserver-kubelet-client ""
  gen_cert kafka-server kafka-lab "" "IP:127.0.0.1,DNS:localhost"
  gen_cert kafka-client kappa-lab-client ""
  # Kafka reads a PEM keystore of the PKCS#8 key and the certificate.
  [ -f "$PKI/kafka-server.pem" ] || { openssl pkcs8 -topk8 -nocrypt -in "$PKI/kafka-server.key"; cat "$PKI/kafka-server.crt"; } >"$PKI/kafka-server.pem"
  kubeconfig "$H/admin.kubeconfig" admin admin
  kubeconfig "$H/controller-manager.kubeconfig" controller-manager controller-manager
  kubeconfig "$H/scheduler.kubeconfig" scheduler scheduler
  kubeconfig "$H/kubelet.kubeconfig" kubelet kubelet
}

# ---------------------------------------------------------------- processes

pid_of() { local f="$RUN/$1.pid"; [ -f "$f" ] && cat "$f"; }
running() { local p; p=$(pid_of "$1") && [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }

start() { # name command...
  local name=$1; shift
  running "$name" && return 0
  mkdir -p "$RUN" "$LOGS"
  log "starting $name"
  # setsid: each component leads its own process group, so `down` can stop it
  # with everything it spawned, by recorded pid.
  setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN/$name.pid"
}

stop() {
  local name=$1 p
  p=$(pid_of "$name") || return 0
  if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then
    log "stopping $name (pid $p)"
    kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$p" 2>/dev/null || true
  fi
  rm -f "$RUN/$name.pid"
}

wait_for() { # what seconds command...
  local what=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      die "$what did not become ready within ${secs}s; see: hack/lab.sh logs ${what%% *}"
    fi
    sleep 0.3
  done
}

kctl() { "$BIN/kubectl" --kubeconfig "$H/admin.kubeconfig" "$@"; }

start_etcd() {
  mkdir -p "$DATA/etcd" && chmod 700 "$DATA/etcd"
  start etcd "$BIN/etcd" --name lab --data-dir "$DATA/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "lab=http://127.0.0.1:$ETCD_PEER_PORT" \
    --quota-backend-bytes 4294967296 --log-level warn \
    --unsafe-no-fsync  # a lab: speed over durability (fsync dominates write latency on shared disks)
  wait_for etcd 60 curl -fsS "http://127.0.0.1:$ETCD_CLIENT_PORT/health"
}

start_apiserver() {
  start kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$APISERVER_PORT" \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --client-ca-file "$PKI/ca.crt" \
    --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
    --authorization-mode Node,RBAC \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
    --api-audiences https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range 10.96.0.0/16 \
    --allow-privileged \
    --profiling=false --v 1
  wait_for kube-apiserver 120 kctl get --raw /readyz
}

start_controller_manager() {
  start kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig "$H/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$H/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$H/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 \
    --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
    --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
    --use-service-account-credentials \
    --service-cluster-ip-range 10.96.0.0/16 \
    --leader-elect=false --profiling=false --v 1
  wait_for kube-controller-manager 60 curl -fsSk https://127.0.0.1:10257/healthz
}

start_scheduler() {
  start kube-scheduler "$BIN/kube-scheduler" \
    --kubeconfig "$H/scheduler.kubeconfig" \
    --authentication-kubeconfig "$H/scheduler.kubeconfig" \
    --authorization-kubeconfig "$H/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false --profiling=false --v 1
  wait_for kube-scheduler 60 curl -fsSk https://127.0.0.1:10259/healthz
}

# Kafka's command-line tools (storage format, readiness probe), small heap.
kafka_tool() {
  java -Xmx256m -Dlog4j2.configurationFile="$H/kafka/log4j2.yaml" -cp "$H/kafka-$KAFKA_VERSION/libs/*" "$@"
}

kafka_config() { # node
  local n=$1 voters="" m
  for m in "${KAFKA_NODES[@]}"; do voters+="${voters:+,}$m@127.0.0.1:$(kafka_port "$m" 1)"; done
  mkdir -p "$H/kafka"
  cat >"$H/kafka/server-$n.properties" <<EOF
process.roles=broker,controller
node.id=$n
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$(kafka_port "$n"),CONTROLLER://127.0.0.1:$(kafka_port "$n" 1),SASL_PLAINTEXT://127.0.0.1:$(kafka_port "$n" 2),SSL://127.0.0.1:$(kafka_port "$n" 3),MTLS://127.0.0.1:$(kafka_port "$n" 4)
advertised.listeners=PLAINTEXT://127.0.0.1:$(kafka_port "$n"),SASL_PLAINTEXT://127.0.0.1:$(kafka_port "$n" 2),SSL://127.0.0.1:$(kafka_port "$n" 3),MTLS://127.0.0.1:$(kafka_port "$n" 4)
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SSL:SSL,MTLS:SSL
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PEM
ssl.keystore.location=$PKI/kafka-server.pem
ssl.truststore.type=PEM
ssl.truststore.location=$PKI/ca.crt
listener.name.mtls.ssl.client.auth=required
log.dirs=$DATA/kafka-$n
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=3
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
group.initial.rebalance.delay.ms=0
log.retention.check.interval.ms=5000
EOF
  cat >"$H/kafka/log4j2.yaml" <<'EOF'
Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: WARN
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka.server.KafkaServer
        level: INFO
      - name: kafka.server.BrokerServer
        level: INFO
EOF
}

# Formats the three nodes' storage once, with one cluster id and the SCRAM user.
format_kafka() {
  local n id
  for n in "${KAFKA_NODES[@]}"; do [ -f "$DATA/kafka-$n/meta.properties" ] && return 0; done
  [ -f "$H/kafka/scram-password" ] || { openssl rand -hex 16 >"$H/kafka/scram-password"; chmod 600 "$H/kafka/scram-password"; }
  id=$(kafka_tool kafka.tools.StorageTool random-uuid 2>/dev/null)
  for n in "${KAFKA_NODES[@]}"; do
    mkdir -p "$DATA/kafka-$n"
    log "formatting Kafka node $n (KRaft, cluster $id) with SCRAM user $KAFKA_SCRAM_USER"
    kafka_tool kafka.tools.StorageTool format --cluster-id "$id" --config "$H/kafka/server-$n.properties" \
      --add-scram "SCRAM-SHA-512=[name=$KAFKA_SCRAM_USER,password=$(cat "$H/kafka/scram-password")]" >>"$LOGS/kafka-$n.log" 2>&1 \
      || die "formatting Kafka storage failed; see $LOGS/kafka-$n.log"
  done
}

start_kafka_node() { # node
  local n=$1
  kafka_config "$n"
  start "kafka-$n" java -Xms128m -Xmx"${KAFKA_HEAP:-512m}" -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$H/kafka/log4j2.yaml" -cp "$H/kafka-$KAFKA_VERSION/libs/*" \
    kafka.Kafka "$H/kafka/server-$n.properties"
}

start_kafka() {
  local n
  mkdir -p "$LOGS"
  for n in "${KAFKA_NODES[@]}"; do kafka_config "$n"; done
  format_kafka
  # All three at once: the controller quorum needs two of them.
  for n in "${KAFKA_NODES[@]}"; do start_kafka_node "$n"; done
  for n in "${KAFKA_NODES[@]}"; do wait_for "kafka-$n" 180 kafka_ready "$n"; done
}

# The node that leads the KRaft controller quorum now, as kafka-N.
kafka_controller() {
  local leader
  leader=$(kafka_tool org.apache.kafka.tools.MetadataQuorumCommand --bootstrap-server "$(kafka_addrs 0)" describe --status 2>/dev/null \
    | sed -n 's/^LeaderId: *\([0-9]*\).*/\1/p')
  [ -n "$leader" ] || die "no Kafka controller quorum leader (is Kafka up?)"
  echo "kafka-$leader"
}

# Ready means the node answers as a broker the cluster has registered, not
# merely that its port is open.
kafka_ready() { # node
  (exec 3<>"/dev/tcp/127.0.0.1/$(kafka_port "$1")") 2>/dev/null || return 1
  kafka_tool org.apache.kafka.tools.BrokerApiVersionsCommand --bootstrap-server "127.0.0.1:$(kafka_port "$1")" 2>/dev/null \
    | grep -q "(id: $1 rack"
}

default_images() {
  mkdir -p "$H"
  touch "$IMAGES"
  set_image "kappa-lab/testapp=$BIN/lab-testapp"
  set_image "kappa-lab/kubectl=$BIN/kubectl"
}

set_image() { # IMAGE=PATH
  local image=${1%%=*} path=${1#*=}
  [ -n "$image" ] && [ "$image" != "$1" ] || die "usage: hack/lab.sh image IMAGE=PATH"
  touch "$IMAGES"
  local tmp; tmp=$(mktemp "$IMAGES.XXXX")
  grep -v -F -x -e "$1" "$IMAGES" | awk -F= -v i="$image" '$1 != i' >"$tmp" || true
  echo "$image=$path" >>"$tmp"
  mv "$tmp" "$IMAGES"
}

start_kubelet() {
  mkdir -p "$H/pods"
  start kubelet "$BIN/process-kubelet" --kubeconfig "$H/kubelet.kubeconfig" \
    --node-name lab-node --root "$H/pods" --image-map "$IMAGES"
  wait_for kubelet 60 node_ready
}

node_ready() {
  [ "$(kctl get node lab-node -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]
}

# Starts one stopped component (a Kafka node, or all three) and waits until
# it is ready; the rest of the lab is expected up.
start_component() {
  case $1 in
    kafka) start_kafka ;;
    kafka-[123]) start_kafka_node "${1#kafka-}"; wait_for "$1" 180 kafka_ready "${1#kafka-}" ;;
    *) die "usage: hack/lab.sh start kafka|kafka-1|kafka-2|kafka-3 (hack/lab.sh up starts everything)" ;;
  esac
}

up() {
  local t0=$SECONDS
  build_all
  ensure_pki
  default_images
  start_etcd
  start_apiserver
  start_controller_manager
  start_scheduler
  start_kafka
  start_kubelet
  wait_for "kube-apiserver default service account" 60 kctl -n default get serviceaccount default
  log "lab is up in $((SECONDS - t0))s; run: eval \"\$(hack/lab.sh env)\""
}

down() {
  local i
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do stop "${COMPONENTS[$i]}"; done
  # Container processes of a kubelet that was killed hard: stop them by the
  # pids the kubelet recorded.
  local f p
  for f in "$H"/pods/*/*.pid; do
    [ -f "$f" ] || continue
    p=$(cat "$f"); [ -n "$p" ] && kill -KILL -- "-$p" 2>/dev/null || true
    rm -f "$f"
  done
  if [ "${1:-}" = --purge ]; then
    log "deleting cluster and Kafka data"
    rm -rf "$DATA" "$H/pods" "$LOGS"
  fi
}

status() {
  local c addr controller=""
  running kafka-1 || running kafka-2 || running kafka-3 && controller=$(kafka_controller 2>/dev/null || true)
  for c in "${COMPONENTS[@]}"; do
    case $c in
      etcd) addr=http://127.0.0.1:$ETCD_CLIENT_PORT ;;
      kube-apiserver) addr=https://127.0.0.1:$APISERVER_PORT ;;
      kube-controller-manager) addr=https://127.0.0.1:10257 ;;
      kube-scheduler) addr=https://127.0.0.1:10259 ;;
      kafka-*) addr="127.0.0.1:$(kafka_port "${c#kafka-}") PLAINTEXT, :$(kafka_port "${c#kafka-}" 2) SCRAM, :$(kafka_port "${c#kafka-}" 3) SSL, :$(kafka_port "${c#kafka-}" 4) mTLS" ;;
      kubelet) addr="node lab-node" ;;
    esac
    [ "$c" = "$controller" ] && addr+=" (active controller)"
    if running "$c"; then
      printf '%-24s running  pid %-8s %s\n' "$c" "$(pid_of "$c")" "$addr"
    else
      printf '%-24s stopped  %-12s %s\n' "$c" "" "$addr"
    fi
  done
}

env_cmd() {
  cat <<EOF
export KAPPA_LAB_HOME='$H'
export KUBECONFIG='$H/admin.kubeconfig'
export KAPPA_KAFKA_BOOTSTRAP='$(kafka_addrs 0)'
export KAPPA_KAFKA_SCRAM_BOOTSTRAP='$(kafka_addrs 2)'
export KAPPA_KAFKA_SCRAM_USER='$KAFKA_SCRAM_USER'
export KAPPA_KAFKA_SCRAM_PASSWORD_FILE='$H/kafka/scram-password'
export KAPPA_KAFKA_TLS_BOOTSTRAP='$(kafka_addrs 3)'
export KAPPA_KAFKA_MTLS_BOOTSTRAP='$(kafka_addrs 4)'
export KAPPA_KAFKA_CA_FILE='$PKI/ca.crt'
export KAPPA_KAFKA_CLIENT_CERT_FILE='$PKI/kafka-client.crt'
export KAPPA_KAFKA_CLIENT_KEY_FILE='$PKI/kafka-client.key'
export PATH='$BIN':"\$PATH"
EOF
}

logs() {
  local what=${1:-}
  [ -n "$what" ] || die "usage: hack/lab.sh logs COMPONENT|NAMESPACE/POD"
  if [[ $what == */* ]]; then
    local ns=${what%%/*} pod=${what#*/} d found=0
    for d in "$H/pods/${ns}_${pod}_"*; do
      [ -d "$d" ] || continue
      found=1
      for f in "$d"/*.log; do [ -f "$f" ] && { echo "==> $f <=="; cat "$f"; }; done
    done
    [ $found = 1 ] || die "no pod $what has run on the lab's kubelet"
  else
    [ -f "$LOGS/$what.log" ] || die "no log for component $what (components: ${COMPONENTS[*]})"
    cat "$LOGS/$what.log"
  fi
}

case ${1:-} in
  up) up ;;
  down) shift; down "$@" ;;
  stop) [ -n "${2:-}" ] || die "usage: hack/lab.sh stop COMPONENT"
    if [ "$2" = kafka ]; then for n in 3 2 1; do stop "kafka-$n"; done; else stop "$2"; fi ;;
  start) start_component "${2:-}" ;;
  kafka-controller) kafka_controller ;;
  status) status ;;
  env) env_cmd ;;
  logs) logs "${2:-}" ;;
  image) [ -n "${2:-}" ] || die "usage: hack/lab.sh image IMAGE=PATH"; set_image "$2" ;;
  build) build_all ;;
  *) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# The Kappa Operator demo, from nothing to a reprocessing rollout:
#   1. bring up the lab (real Kubernetes control plane, Kafka, process kubelet)
#   2. helm-install the operator
#   3. apply the example pipeline and produce events
#   4. show the view
#   5. change the processor's logic and watch the replay, the cutover, the standby
#   6. check that the new view is exact
#   7. roll back to the standby, without a replay
#   8. add a second stage over the first one's view; a change to stage one
#      cascades through stage two, and both cut over together
# Exits non-zero if any step fails. The first run builds the lab (15-25 min).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bold() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
say() { printf '   %s\n' "$*"; }
fail() { printf '\n\033[31mdemo failed: %s\033[0m\n' "$*" >&2; exit 1; }
trap 'fail "a step exited with an error (line $LINENO)"' ERR

EVENTS=${DEMO_EVENTS:-200000}

bold "1. The lab: etcd, kube-apiserver, controller-manager, scheduler, Kafka, process kubelet"
hack/lab.sh up
eval "$(hack/lab.sh env)"
kubectl get nodes
hack/images.sh --release >/dev/null
P=$(cargo metadata -q --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release/kappa-processor

bold "2. helm install kappa-operator (watching the demo's namespace)"
for old in $(kubectl get ns -o name | sed -n 's#namespace/\(kappa-demo-[0-9]*\)#\1#p'); do
  say "removing the previous demo namespace $old"
  # Its kappa objects first, while the operator may still act there (the
  # namespace's deletion takes the operator's RoleBinding with it).
  kubectl -n "$old" delete processors,topics --all --wait=true --timeout=120s >/dev/null || true
  kubectl delete ns "$old" --wait=true --timeout=120s >/dev/null
done
NS=kappa-demo-$(date +%s)
kubectl create namespace "$NS" >/dev/null
helm upgrade --install kappa-operator charts/kappa-operator -n kappa-system --create-namespace \
  --set image.tag=dev --set "watchNamespaces={$NS}" --wait --timeout 3m >/dev/null
kubectl -n kappa-system get pods
say "leader: $(kubectl -n kappa-system get lease kappa-operator -o jsonpath='{.spec.holderIdentity}' 2>/dev/null || echo electing)"

bold "3. The example pipeline: a KafkaCluster, an input Topic, a Processor (logic: sum)"
kubectl -n "$NS" apply -f examples/pipeline.yaml
say "producing $EVENTS order events (JSON with a key and an amount)"
"$P" produce --bootstrap "$KAPPA_KAFKA_BOOTSTRAP" --topic orders --count "$EVENTS" --seed "$(date +%s)" 2>&1 | sed 's/^/   /'

wait_live() { # until the processor is Live with lag 0 (and, if given, on version $1)
  for _ in $(seq 1 240); do
    read -r phase lag active < <(kubectl -n "$NS" get processor order-totals \
      -o jsonpath='{.status.phase} {.status.lag} {.status.activeVersion}{"\n"}' 2>/dev/null || echo "- - -")
    if [ "$phase" = Live ] && [ "$lag" = 0 ] && { [ -z "${1:-}" ] || [ "$active" = "$1" ]; }; then return 0; fi
    sleep 1
  done
  fail "the processor did not become Live (phase $phase, lag $lag)"
}
wait_live
V1=$(kubectl -n "$NS" get processor order-totals -o jsonpath='{.status.activeVersion}')

bold "4. The view"
kubectl -n "$NS" get kappa
TOPIC=$(kubectl -n "$NS" get configmap order-totals-view -o jsonpath='{.data.topic}')
say "readers are told (ConfigMap order-totals-view): topic $TOPIC, version $V1"
POD_IP=$(kubectl -n "$NS" get pods -l "kappa.dev/version=$V1" -o jsonpath='{.items[0].status.podIP}')
say "one key, straight from the processor (GET $POD_IP:8080/view/k42): $(curl -s "http://$POD_IP:8080/view/k42")"
"$P" check --bootstrap "$KAPPA_KAFKA_BOOTSTRAP" --input orders --view "$TOPIC" --logic sum | sed 's/^/   check: /'

bold "5. New logic (count instead of sum): replay from offset zero beside the live version"
kubectl -n "$NS" patch processor order-totals --type merge -p '{"spec":{"template":{"args":["run","--logic","count"]}}}'
bar() { # progress bar from a percentage like 42.0%
  local pct=${1%\%}; pct=${pct%.*}; [ -n "$pct" ] || pct=0
  local n=$((pct * 30 / 100))
  printf '[%-30s] %3s%%' "$(printf '#%.0s' $(seq 1 $n) 2>/dev/null | head -c $n)" "$pct"
}
cut_over=""
for _ in $(seq 1 240); do
  read -r phase active candidate progress clag < <(kubectl -n "$NS" get processor order-totals \
    -o jsonpath='{.status.phase} {.status.activeVersion} {.status.candidateVersion} {.status.candidateProgress} {.status.candidateLag}' | awk '{print $1, $2, ($3==""?"-":$3), ($4==""?"0%":$4), ($5==""?"-":$5)}')
  printf '\r   %-17s active %-10s candidate %-10s %s lag %-8s' "$phase" "$active" "$candidate" "$(bar "$progress")" "$clag"
  if [ "$active" != "$V1" ] && [ "$phase" = Live ]; then cut_over=$active; break; fi
  if [ "$phase" = Failed ] || [ "$phase" = Blocked ]; then echo; fail "the rollout is $phase"; fi
  sleep 1
done
echo
[ -n "$cut_over" ] || fail "no cutover within 4 minutes"
V2=$cut_over
say "cut over: readers now use version $V2 ($(kubectl -n "$NS" get configmap order-totals-view -o jsonpath='{.data.topic}'))"
wait_live "$V2"
kubectl -n "$NS" get events --field-selector involvedObject.kind=Processor --sort-by=.lastTimestamp | tail -4 | sed 's/^/   /'
say "the rollout history:"
kubectl -n "$NS" get viewversions | sed 's/^/   /'

bold "6. The new view is exact, over every event"
"$P" check --bootstrap "$KAPPA_KAFKA_BOOTSTRAP" --input orders \
  --view "$(kubectl -n "$NS" get configmap order-totals-view -o jsonpath='{.data.topic}')" --logic count | sed 's/^/   check: /'

bold "7. Roll back: the args back to --logic sum return readers to the standby $V1, without a replay"
kubectl -n "$NS" patch processor order-totals --type merge -p '{"spec":{"template":{"args":["run","--logic","sum"]}}}'
wait_live "$V1"
say "readers use version $(kubectl -n "$NS" get configmap order-totals-view -o jsonpath='{.data.version}') again"

bold "8. A pipeline: stage two (customer-peaks) reads stage one's view; stage one cascades Together"
kubectl -n "$NS" apply -f examples/pipeline-two-stage.yaml
stage_two() { kubectl -n "$NS" get processor customer-peaks -o jsonpath='{.status.phase}|{.status.activeVersion}|{.status.builtOn}{"\n"}' 2>/dev/null || echo "||"; }
for _ in $(seq 1 240); do
  IFS='|' read -r phase2 _ on2 < <(stage_two) || true
  if [ "${phase2:-}" = Live ] && [ "${on2:-}" = "order-totals@$V1" ]; then break; fi
  sleep 1
done
[ "${on2:-}" = "order-totals@$V1" ] || fail "stage two did not go live on order-totals $V1 (phase ${phase2:-none}, built on ${on2:-none})"
kubectl -n "$NS" get processors | sed 's/^/   /'
say "reprocessing stage one (a new reprocessNonce): watch stage two build on the offered candidate, then both cut over"
kubectl -n "$NS" patch processor order-totals --type merge -p "{\"spec\":{\"reprocessNonce\":\"demo-$(date +%s)\"}}"
cascaded=""
for _ in $(seq 1 300); do
  IFS='|' read -r p1 a1 _ offered < <(kubectl -n "$NS" get processor order-totals \
    -o jsonpath='{.status.phase}|{.status.activeVersion}|{.status.candidateVersion}|{.status.cascadeCandidate}{"\n"}') || true
  IFS='|' read -r p2 a2 c2 on2 < <(kubectl -n "$NS" get processor customer-peaks \
    -o jsonpath='{.status.phase}|{.status.activeVersion}|{.status.candidateVersion}|{.status.builtOn}{"\n"}') || true
  printf '\r   stage one %-17s active %-10s offers %-10s | stage two %-17s active %-10s candidate %-10s' \
    "$p1" "$a1" "${offered:--}" "$p2" "$a2" "${c2:--}"
  if [ "$a1" != "$V1" ] && [ "$p1" = Live ] && [ "$p2" = Live ] && [ "$on2" = "order-totals@$a1" ]; then cascaded=$a1; break; fi
  sleep 1
done
echo
[ -n "$cascaded" ] || fail "the cascade did not complete within 5 minutes"
kubectl -n "$NS" get events --field-selector involvedObject.kind=Processor --sort-by=.lastTimestamp | grep -E "Cascade|CutOver" | tail -4 | sed 's/^/   /'
STAGE_ONE=$(kubectl -n "$NS" get configmap order-totals-view -o jsonpath='{.data.topic}')
"$P" check --bootstrap "$KAPPA_KAFKA_BOOTSTRAP" --input "$STAGE_ONE" \
  --view "$(kubectl -n "$NS" get configmap customer-peaks-view -o jsonpath='{.data.topic}')" --logic max --field sum | sed 's/^/   check stage two: /'
bold "Demo complete. Namespace $NS stays for you to explore; hack/lab.sh down stops the lab."

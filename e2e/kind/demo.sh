#!/usr/bin/env bash
# Runs the book shop on the kind cluster from up.sh and walks through the
# scenarios: mTLS identities, a 90/10 then 0/100 canary of reviews, header
# routing to v2, and meshctl proxy-status. Not run in CI.
source "$(dirname "$0")/common.sh"
need kubectl
NS=bookshop
PF_PID=""
cleanup() { if [ -n "$PF_PID" ]; then kill "$PF_PID" 2>/dev/null || true; fi; }
trap cleanup EXIT

say "deploying the book shop (namespace $NS, labelled mesh-injection=enabled)"
kc apply -f "$ROOT/e2e/kind/bookshop.yaml"
for d in productpage-v1 reviews-v1 reviews-v2 ratings-v1 client; do
  kc -n "$NS" rollout status "deploy/$d" --timeout=180s
done
if ! kc -n "$NS" get pod -l app=productpage -o jsonpath='{.items[0].spec.containers[*].name}' | grep -q mesh-proxy; then
  echo "warning: productpage has no mesh-proxy sidecar: the injection webhook is not serving" >&2
fi

# curl from the client pod (it has a sidecar too); prints the JSON reply.
call() { kc -n "$NS" exec deploy/client -c client -- curl -sS --max-time 5 "$@"; }
# The top-level version of N replies from reviews, one per line.
versions() {
  local n=$1; shift
  kc -n "$NS" exec deploy/client -c client -- sh -c \
    "for i in \$(seq $n); do curl -sS --max-time 5 $* http://reviews:9080/; echo; done" \
    | sed -n 's/^{"service":"reviews","version":"\(v[0-9]\)".*/\1/p'
}
count() { grep -cx "$1" || true; }

say "1. mTLS: each hop names its caller's SPIFFE ID"
reply="$(call http://productpage:9080/)"
echo "$reply"
echo "$reply" | grep -q '"caller":"spiffe://cluster.local/ns/bookshop/sa/client"' \
  || die "productpage did not see the client's SPIFFE ID (is mTLS on?)"
echo "$reply" | grep -q '"caller":"spiffe://cluster.local/ns/bookshop/sa/productpage"' \
  || die "reviews did not see productpage's SPIFFE ID"

route() { # route V1_WEIGHT V2_WEIGHT
  kc apply -f - <<YAML
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: $NS}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: $NS}
spec:
  hosts: [reviews]
  http:
  - route:
    - {destination: {host: reviews, subset: v1}, weight: $1}
    - {destination: {host: reviews, subset: v2}, weight: $2}
YAML
  sleep 3 # meshd debounces and pushes; the proxies apply within a second
}

say "2a. canary: reviews 90% v1, 10% v2"
route 90 10
out="$(versions 100)"
v1=$(echo "$out" | count v1); v2=$(echo "$out" | count v2)
echo "v1=$v1 v2=$v2 (of 100)"
[ "$v2" -ge 1 ] && [ "$v2" -le 25 ] || die "expected about 10 replies from v2, got $v2"

say "2b. canary done: reviews 0% v1, 100% v2"
route 0 100
out="$(versions 50)"
v2=$(echo "$out" | count v2)
echo "v2=$v2 (of 50)"
[ "$v2" -eq 50 ] || die "expected every reply from v2, got $v2"

say "3. header routing: end-user: jason goes to v2, everyone else to v1"
kc apply -f - <<YAML
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: $NS}
spec:
  hosts: [reviews]
  http:
  - match:
    - headers: {end-user: {exact: jason}}
    route:
    - destination: {host: reviews, subset: v2}
  - route:
    - destination: {host: reviews, subset: v1}
YAML
sleep 3
jason="$(versions 10 -H end-user:jason)"; others="$(versions 10)"
echo "jason: v2=$(echo "$jason" | count v2)/10; others: v1=$(echo "$others" | count v1)/10"
[ "$(echo "$jason" | count v2)" -eq 10 ] || die "jason's requests did not all reach v2"
[ "$(echo "$others" | count v1)" -eq 10 ] || die "other requests did not all reach v1"

say "4. meshctl proxy-status"
pf_log="$(mktemp)"
kc -n mesh-system port-forward svc/meshd :15014 >"$pf_log" 2>&1 &
PF_PID=$!
port=""
for _ in $(seq 50); do
  port="$(sed -n 's/^Forwarding from 127.0.0.1:\([0-9]*\) .*/\1/p' "$pf_log" | head -n1)"
  [ -n "$port" ] && break
  sleep 0.2
done
[ -n "$port" ] || die "kubectl port-forward to meshd failed: $(cat "$pf_log")"
"$(meshctl_bin)" proxy-status --meshd "http://127.0.0.1:$port"
rm -f "$pf_log"

say "all scenarios passed"

#!/usr/bin/env bash
# Creates a kind cluster (deploy/kind/cluster.yaml), builds the mesh's images,
# loads them into the cluster and installs the demo profile.
# Needs Docker, kind and kubectl. Not run in CI.
source "$(dirname "$0")/common.sh"
need docker kind kubectl

if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  say "kind cluster $CLUSTER exists; reusing it"
else
  say "creating kind cluster $CLUSTER"
  kind create cluster --name "$CLUSTER" --config "$ROOT/deploy/kind/cluster.yaml"
fi

# image name -> Dockerfile
images=(
  "meshd:meshd.Dockerfile"
  "mesh-proxy:proxy.Dockerfile"
  "mesh-ca:ca.Dockerfile"
  "mesh-gateway:gateway.Dockerfile"
  "mesh-demo-app:demo-app.Dockerfile"
)
for entry in "${images[@]}"; do
  image="$HUB/${entry%%:*}:$TAG"
  say "building $image"
  docker build -f "$ROOT/deploy/docker/${entry#*:}" -t "$image" "$ROOT"
  kind load docker-image --name "$CLUSTER" "$image"
done

# `meshctl install` does not apply to a cluster yet: render and apply.
say "installing the mesh (profile demo)"
"$(meshctl_bin)" manifest generate --profile demo \
    --set "global.hub=$HUB" --set "global.tag=$TAG" \
  | kc apply --server-side --force-conflicts -f -

say "waiting for meshd"
if ! kc -n mesh-system rollout status deploy/meshd --timeout=180s; then
  kc -n mesh-system logs deploy/meshd --tail=50 || true
  die "meshd is not ready (meshd's Kubernetes mode is not implemented yet: see README, Kubernetes)"
fi
say "mesh is up; next: e2e/kind/demo.sh"

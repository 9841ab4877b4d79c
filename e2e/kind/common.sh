# Shared by up.sh, demo.sh and down.sh (sourced, not run).
# shellcheck shell=bash
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CLUSTER="${MESH_KIND_CLUSTER:-mesh}"
HUB="${MESH_HUB:-mesh}"
# The workspace version, which is also meshctl's default image tag.
TAG="${MESH_TAG:-$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n1)}"
MESHCTL="${MESHCTL:-$ROOT/target/debug/meshctl}"
KCTX="kind-$CLUSTER"

say() { printf '\n== %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

need() {
  for tool in "$@"; do
    command -v "$tool" >/dev/null || die "$tool is not installed (needed: docker, kind, kubectl)"
  done
}

kc() { kubectl --context "$KCTX" "$@"; }

meshctl_bin() {
  if [ ! -x "$MESHCTL" ]; then
    say "building meshctl"
    (cd "$ROOT" && cargo build -q -p mesh-cli --bin meshctl)
  fi
  echo "$MESHCTL"
}

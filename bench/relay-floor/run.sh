#!/usr/bin/env bash
# Measures the CPU per request of a plain TCP relay pinned to CPU 0 between
# oha and mesh-bench's backend (HTTP/1.1, 1 KiB answers).
# usage: bench/relay-floor/run.sh <epoll|uring> <requests per second|max>
# Needs: scripts/bench.sh run once (target/bench-tools: oha, mesh-bench),
# perf, taskset, python3.
set -euo pipefail
mode=$1
rate=$2
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
cargo build -q --release --manifest-path bench/relay-floor/Cargo.toml \
  --target-dir target/relay-floor
relay=target/relay-floor/release/relay-floor
bench=$(ls target/bench-tools/mesh-bench* | tail -n 1)
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
backend_port=$(port)
relay_port=$(port)
"$bench" backend --listen "127.0.0.1:$backend_port" >/dev/null 2>&1 &
backend_pid=$!
taskset -c 0 "$relay" "$mode" "127.0.0.1:$relay_port" "127.0.0.1:$backend_port" &
relay_pid=$!
trap 'kill "$relay_pid" "$backend_pid" 2>/dev/null || true' EXIT
sleep 0.5
rate_flag=()
[ "$rate" != max ] && rate_flag=(-q "$rate")
out=$(mktemp)
target/bench-tools/bin/oha -z 9s "${rate_flag[@]}" -c 10 --latency-correction --no-tui \
  --output-format json "http://127.0.0.1:$relay_port/" >"$out" 2>/dev/null &
oha_pid=$!
sleep 2
cpu_ms=$(perf stat -x, -e task-clock -p "$relay_pid" -- sleep 5 2>&1 | awk -F, '/task-clock/ {print $1}')
wait "$oha_pid"
python3 - "$out" "$cpu_ms" "$mode" "$rate" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
rps = d["summary"]["requestsPerSec"]
cpu_ms = float(sys.argv[2])
print(f"{sys.argv[3]} at {sys.argv[4]}: {rps:.0f} rps, relay CPU {cpu_ms:.0f} ms in 5 s, "
      f"{cpu_ms * 1000 / (rps * 5):.1f} µs per request")
PY
rm -f "$out"

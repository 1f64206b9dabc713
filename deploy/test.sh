#!/usr/bin/env bash
# Quick start, command 2: install what is missing, then build once and run every test
# (unit and end-to-end, with real nats-server and kubectl) in one cargo invocation.
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/install-deps.sh
if cargo nextest --version >/dev/null 2>&1; then
  exec cargo nextest run --workspace --no-fail-fast "$@"
else
  exec cargo test --workspace --no-fail-fast "$@"
fi

#!/usr/bin/env bash
# Quick start, command 1: install what is missing, build, and run a local cluster in the
# foreground (Ctrl-C stops it). Extra arguments go to `flotilla up`.
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/install-deps.sh
cargo build --release
exec target/release/flotilla up "$@"

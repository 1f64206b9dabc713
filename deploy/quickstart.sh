#!/usr/bin/env bash
# Quick start, command 1: install what is missing, build, and run a local cluster in the
# foreground (Ctrl-C stops it). Extra arguments go to `flotilla up`. As root with
# containerd, the offline images (busybox, nginx, python) are built once into the default
# air-gap folder first, so the usual manifests run without a registry.
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/install-deps.sh
cargo build --release
if [ "$(id -u)" -eq 0 ] && command -v containerd >/dev/null 2>&1; then
  bash deploy/offline-images.sh .flotilla/images
fi
exec target/release/flotilla up "$@"

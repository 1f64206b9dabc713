#!/usr/bin/env bash
# Installs what flotilla needs on Debian 12 and is missing: a C toolchain (for crates
# that build C), nats-server, etcd-server (the etcd 3.4 that `flotilla bench store` compares
# against), containerd + runc + the CNI plugins (the node agents' container runtime and pod
# network), mmdebstrap and busybox-static (deploy/offline-images.sh and the sandbox image),
# docker-registry and skopeo (a registry the image tests start and push to), kubectl (for
# the tests), chromium (tests/dashboard.rs renders the dashboard in it headless), Rust through rustup, and the Python `kubernetes` client (pinned, in a venv
# at <repo>/.venv) that tests/client_python.rs drives.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

need=()
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
command -v curl >/dev/null 2>&1 || need+=(curl ca-certificates)
[ -x /usr/sbin/nats-server ] || command -v nats-server >/dev/null 2>&1 || need+=(nats-server)
[ -x /usr/bin/etcd ] || command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v containerd >/dev/null 2>&1 || need+=(containerd)
command -v runc >/dev/null 2>&1 || need+=(runc)
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v mmdebstrap >/dev/null 2>&1 || need+=(mmdebstrap)
# A real registry (mirrors, pull secrets, image GC tests) and the tool that pushes to it.
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
command -v skopeo >/dev/null 2>&1 || need+=(skopeo)
command -v flock >/dev/null 2>&1 || need+=(util-linux)
# Headless Chromium renders the dashboard page in tests/dashboard.rs.
[ -x /usr/bin/chromium ] || need+=(chromium)
{ [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1; } || need+=(busybox-static)
# Debian's own python3 (not whatever `python3` is first on PATH) makes the venv, so the
# test's interpreter is the same on every machine; ensurepip comes with python3-venv.
[ -x /usr/bin/python3 ] || need+=(python3)
/usr/bin/python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
  # The package enables a registry on :5000 for the whole host; the tests start their own.
  if [[ " ${need[*]} " == *" docker-registry "* ]] && [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now docker-registry >/dev/null 2>&1 || true
  fi
fi

if ! command -v kubectl >/dev/null 2>&1; then
  # kubectl 1.32 comes from the Kubernetes (or Google Cloud) apt repository; Debian's own
  # kubernetes-client is 1.20 and too old for what the tests check.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq kubectl || {
    echo "kubectl is missing: add the Kubernetes apt repository (pkgs.k8s.io, v1.32) and re-run" >&2
    exit 1
  }
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "installing Rust with rustup"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi

# The Python client test's interpreter: <repo>/.venv/bin/python with exactly the versions
# in tests/clients/requirements.txt (kubernetes 32, the client for Kubernetes 1.32, and
# every package it pulls in). Re-installed only when that file changes.
FLOTILLA_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
reqs="$FLOTILLA_ROOT/tests/clients/requirements.txt"
venv="$FLOTILLA_ROOT/.venv"
if ! cmp -s "$reqs" "$venv/requirements.txt" 2>/dev/null; then
  echo "installing the Python kubernetes client into $venv"
  rm -rf "$venv"
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check --no-deps -r "$reqs"
  cp "$reqs" "$venv/requirements.txt"
fi

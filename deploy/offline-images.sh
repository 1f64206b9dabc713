#!/usr/bin/env bash
# Builds the images the usual manifests name (busybox, nginx, python) from Debian's own
# packages as OCI archives, for flotilla's air-gap folder (`flotilla up --images DIR`):
# machines without a registry run `--image=nginx` as they would with one. An archive
# already in DIR is kept (delete it to rebuild). Needs root, mmdebstrap and python3.
set -euo pipefail
out="${1:?usage: offline-images.sh DIR}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mkdir -p "$out"
# Tests build the cache from several processes at once: one builds, the others wait.
exec 9>"$out/.lock"
flock 9
work="$(mktemp -d "${out%/}/.build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
suite=bookworm
pack() { /usr/bin/python3 "$here/oci-archive.py" "$@"; }

if [ ! -s "$out/busybox.tar" ]; then
  echo "building busybox (busybox-static)"
  mmdebstrap --quiet --variant=extract --include=busybox-static "$suite" "$work/busybox-rootfs.tar"
  pack --rootfs "$work/busybox-rootfs.tar" --out "$out/busybox.tar" --name docker.io/library/busybox \
    --tag latest --tag 1 --tag 1.35 --tag 1.35.0 --cmd '["sh"]' --busybox-applets
fi

if [ ! -s "$out/nginx.tar" ]; then
  echo "building nginx (nginx-light)"
  mmdebstrap --quiet --variant=essential --include=nginx-light \
    --customize-hook='ln -sf /dev/stdout "$1/var/log/nginx/access.log" && ln -sf /dev/stderr "$1/var/log/nginx/error.log"' \
    "$suite" "$work/nginx-rootfs.tar"
  pack --rootfs "$work/nginx-rootfs.tar" --out "$out/nginx.tar" --name docker.io/library/nginx \
    --tag latest --tag 1 --tag 1.22 --tag stable \
    --entrypoint '["nginx"]' --cmd '["-g","daemon off;"]' --port 80/tcp --stop-signal SIGQUIT
fi

if [ ! -s "$out/python.tar" ]; then
  echo "building python (python3-minimal)"
  mmdebstrap --quiet --variant=essential --include=python3-minimal \
    --customize-hook='ln -sf python3 "$1/usr/bin/python"' \
    "$suite" "$work/python-rootfs.tar"
  pack --rootfs "$work/python-rootfs.tar" --out "$out/python.tar" --name docker.io/library/python \
    --tag latest --tag 3 --tag 3.11 --tag 3.11-slim --tag slim --cmd '["python3"]'
fi
ls -l "$out"/*.tar

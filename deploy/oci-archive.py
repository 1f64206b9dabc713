#!/usr/bin/python3
# Turns a root filesystem tar (from mmdebstrap) into an OCI image archive (an OCI layout
# in a tar, one uncompressed layer) that `ctr images import` and flotilla's air-gap folder
# take, so the usual images run on machines without a registry. Standard library only.
import argparse, hashlib, io, json, os, platform, sys, tarfile, tempfile

# OCI's names for the machine the packages were built for (mmdebstrap uses the host's).
ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}.get(platform.machine(), platform.machine())

# Paths a container runtime provides itself or that only an installer needs.
DROP = ("./dev/", "./proc/", "./sys/", "./var/cache/apt/", "./var/lib/apt/lists/")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rootfs", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--name", required=True, help="repository, e.g. docker.io/library/nginx")
    p.add_argument("--tag", action="append", required=True)
    p.add_argument("--entrypoint", default="[]", help="JSON list")
    p.add_argument("--cmd", default="[]", help="JSON list")
    p.add_argument("--env", action="append", default=[])
    p.add_argument("--port", action="append", default=[])
    p.add_argument("--workdir", default="/")
    p.add_argument("--stop-signal", default="")
    p.add_argument("--busybox-applets", action="store_true",
                   help="add /bin/<applet> -> busybox links and a minimal /etc/passwd, /etc/group")
    a = p.parse_args()

    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(a.out))) as tmp:
        layer_path = os.path.join(tmp, "layer.tar")
        with tarfile.open(a.rootfs) as src, tarfile.open(layer_path, "w", format=tarfile.PAX_FORMAT) as dst:
            names = set()
            for m in src:
                n = m.name if m.name.startswith("./") else "./" + m.name
                if any(n.startswith(d) and n != d for d in DROP):
                    continue
                names.add(n.rstrip("/"))
                dst.addfile(m, src.extractfile(m) if m.isreg() else None)
            if a.busybox_applets:
                add_busybox(src, dst, names, tmp)
        h = hashlib.sha256()
        with open(layer_path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        layer_digest = "sha256:" + h.hexdigest()
        layer_size = os.path.getsize(layer_path)

        env = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"] + a.env
        config = {"entrypoint": json.loads(a.entrypoint), "cmd": json.loads(a.cmd), "env": env, "workdir": a.workdir}
        cfg = {"Env": config["env"], "WorkingDir": config["workdir"]}
        if config["entrypoint"]:
            cfg["Entrypoint"] = config["entrypoint"]
        if config["cmd"]:
            cfg["Cmd"] = config["cmd"]
        if a.port:
            cfg["ExposedPorts"] = {p: {} for p in a.port}
        if a.stop_signal:
            cfg["StopSignal"] = a.stop_signal
        image_config = json.dumps({
            "architecture": ARCH, "os": "linux", "config": cfg,
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
            "history": [{"created_by": "flotilla deploy/offline-images.sh (Debian packages)"}],
        }, sort_keys=True).encode()
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(image_config), "size": len(image_config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer_size}],
        }, sort_keys=True).encode()
        index = json.dumps({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest(manifest), "size": len(manifest),
            "platform": {"architecture": ARCH, "os": "linux"},
            "annotations": {"io.containerd.image.name": f"{a.name}:{t}", "org.opencontainers.image.ref.name": t},
        } for t in a.tag]}, sort_keys=True).encode()

        part = a.out + ".part"
        with tarfile.open(part, "w") as out:
            add_bytes(out, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
            add_bytes(out, "index.json", index)
            add_bytes(out, "blobs/sha256/" + digest(image_config)[7:], image_config)
            add_bytes(out, "blobs/sha256/" + digest(manifest)[7:], manifest)
            out.add(layer_path, "blobs/sha256/" + layer_digest[7:])
        os.replace(part, a.out)


def add_busybox(src, dst, names, tmp):
    # mmdebstrap's extract variant runs no hooks: the applet links are made here, from the
    # image's own busybox (`busybox --list`), as its package's postinst would.
    import subprocess
    src.extract("./bin/busybox", tmp, set_attrs=False)
    os.chmod(os.path.join(tmp, "bin", "busybox"), 0o755)
    applets = subprocess.run([os.path.join(tmp, "bin", "busybox"), "--list"], check=True, capture_output=True, text=True).stdout.split()
    for app in applets:
        n = "./bin/" + app
        if n in names:
            continue
        link = tarfile.TarInfo(n)
        link.type = tarfile.SYMTYPE
        link.linkname = "busybox"
        dst.addfile(link)
    files = {"./etc/passwd": b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
             "./etc/group": b"root:x:0:\nnogroup:x:65534:\n"}
    for n, data in files.items():
        if n not in names:
            add_bytes(dst, n, data)
    for d in ("./root", "./tmp"):
        if d not in names:
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if d == "./tmp" else 0o700
            dst.addfile(info)


def digest(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def add_bytes(t, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    t.addfile(info, io.BytesIO(data))


if __name__ == "__main__":
    sys.exit(main())

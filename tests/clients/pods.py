# The official Python `kubernetes` client against a flotilla cluster: create, get, patch,
# list with a label selector, watch from a resourceVersion, delete a pod. Run by
# tests/client_python.rs as `pods.py KUBECONFIG NAMESPACE`; asserts what it sees, prints
# one line per step and `ok` last, exits non-zero on the first surprise.

import socket
import ssl
import sys
import threading
import urllib.parse

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

LABEL = "app=py-client"
POD = "py-pod"


def strict_handshake(cfg):
    """The handshake newer Pythons make by default (3.13 turns on VERIFY_X509_STRICT,
    which wants an Authority Key Identifier and proper key usages), with the kubeconfig's
    CA and client certificate."""
    ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
    u = urllib.parse.urlparse(cfg.host)
    with socket.create_connection((u.hostname, u.port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=u.hostname) as tls:
            print(f"strict TLS verification ok ({tls.version()})")


def main():
    kubeconfig, ns = sys.argv[1], sys.argv[2]
    # Verifies the gateway's certificate with the kubeconfig's CA and presents the admin's
    # client certificate: no insecure settings.
    config.load_kube_config(config_file=kubeconfig)
    v1 = client.CoreV1Api()

    strict_handshake(client.Configuration.get_default_copy())

    version = client.VersionApi().get_code()
    print(f"server {version.major}.{version.minor} {version.git_version}")

    before = v1.list_namespaced_pod(ns, label_selector=LABEL)
    assert before.items == [], [p.metadata.name for p in before.items]
    rv0 = before.metadata.resource_version
    assert rv0, "a list carries a resourceVersion"
    print(f"listed 0 pods at resourceVersion {rv0}")

    # The watch runs beside the writes, from the empty list's resourceVersion, as an
    # informer does; it ends itself after timeout_seconds or on the DELETED event.
    events = []
    failure = []

    def watch_pods():
        w = watch.Watch()
        try:
            for ev in w.stream(v1.list_namespaced_pod, ns, label_selector=LABEL, resource_version=rv0, timeout_seconds=20):
                pod = ev["object"]
                events.append((ev["type"], pod.metadata.name, pod.metadata.resource_version, pod.metadata.labels or {}))
                if ev["type"] == "DELETED":
                    w.stop()
        except Exception as e:  # reported by the main thread
            failure.append(repr(e))

    watcher = threading.Thread(target=watch_pods)
    watcher.start()

    body = client.V1Pod(
        metadata=client.V1ObjectMeta(name=POD, labels={"app": "py-client", "tier": "test"}),
        spec=client.V1PodSpec(containers=[client.V1Container(name="main", image="busybox", command=["sleep", "3600"])]),
    )
    created = v1.create_namespaced_pod(ns, body)
    assert created.metadata.name == POD
    assert created.metadata.uid, "the server sets uid"
    assert created.metadata.creation_timestamp is not None, "the server sets creationTimestamp"
    assert created.spec.containers[0].image == "busybox"
    print(f"created pod {created.metadata.name} uid {created.metadata.uid}")

    got = v1.read_namespaced_pod(POD, ns)
    assert got.metadata.uid == created.metadata.uid
    print(f"read pod {got.metadata.name} phase {got.status.phase}")

    # A dict body is sent as a strategic merge patch.
    patched = v1.patch_namespaced_pod(POD, ns, {"metadata": {"labels": {"patched": "yes"}}})
    assert patched.metadata.labels == {"app": "py-client", "tier": "test", "patched": "yes"}, patched.metadata.labels
    print("patched labels " + ",".join(f"{k}={v}" for k, v in sorted(patched.metadata.labels.items())))

    listed = v1.list_namespaced_pod(ns, label_selector=LABEL)
    names = [p.metadata.name for p in listed.items]
    assert names == [POD], names
    none = v1.list_namespaced_pod(ns, label_selector="app=someone-else")
    assert none.items == [], [p.metadata.name for p in none.items]
    everywhere = v1.list_pod_for_all_namespaces(label_selector="tier in (test),patched")
    assert [(p.metadata.namespace, p.metadata.name) for p in everywhere.items] == [(ns, POD)]
    print(f"listed pods with {LABEL}: {' '.join(names)}")

    try:
        v1.create_namespaced_pod(ns, body)
        raise AssertionError("a second create of the same name succeeded")
    except ApiException as e:
        assert e.status == 409, e.status
        print(f"second create: {e.status} {e.reason}")

    v1.delete_namespaced_pod(POD, ns, body=client.V1DeleteOptions(grace_period_seconds=0))
    print(f"deleted pod {POD}")
    try:
        v1.read_namespaced_pod(POD, ns)
        raise AssertionError("the pod is still there after delete")
    except ApiException as e:
        assert e.status == 404, e.status
        print(f"read after delete: {e.status}")

    watcher.join(timeout=30)
    assert not watcher.is_alive(), "the watch did not end"
    assert not failure, failure
    kinds = [e[0] for e in events]
    assert kinds and kinds[0] == "ADDED" and kinds[-1] == "DELETED", kinds
    assert all(e[1] == POD for e in events), events
    revs = [int(e[2]) for e in events]
    assert revs == sorted(revs), f"events out of order: {revs}"
    # The scheduler may also write the pod's status (unschedulable here): more MODIFIED
    # events are fine, but one of them must carry the patched labels, as DELETED does.
    assert any(e[0] == "MODIFIED" and e[3].get("patched") == "yes" for e in events), events
    assert events[-1][3].get("patched") == "yes", events[-1]
    print("watch events: " + " ".join(f"{e[0]} {e[1]}" for e in events))
    print("watch saw the patch")
    print("ok")


if __name__ == "__main__":
    main()

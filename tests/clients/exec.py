# The official Python client's streaming calls against a flotilla cluster: `stream()` on
# pods/exec (it speaks v4.channel.k8s.io over WebSocket) with output, stdin and an exit
# code, and `portforward()` (the WebSocket port-forward protocol with `ports` in the
# query). Run by tests/client_python.rs as `exec.py KUBECONFIG NAMESPACE POD PORT`;
# prints one line per step and `ok` last, exits non-zero on the first surprise.

import sys

from kubernetes import client, config
from kubernetes.stream import portforward, stream


def main():
    kubeconfig, ns, pod, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    config.load_kube_config(config_file=kubeconfig)
    v1 = client.CoreV1Api()

    out = stream(v1.connect_get_namespaced_pod_exec, pod, ns, command=["sh", "-c", "echo from-python"], stderr=True, stdin=False, stdout=True, tty=False)
    assert out == "from-python\n", repr(out)
    print(f"exec output {out.strip()}")

    resp = stream(v1.connect_get_namespaced_pod_exec, pod, ns, command=["sh", "-c", "head -c 5; exit 7"], stderr=True, stdin=True, stdout=True, tty=False, _preload_content=False)
    resp.write_stdin("hello")
    got = ""
    while resp.is_open():
        resp.update(timeout=5)
        got += resp.read_stdout()
    resp.close()
    assert got == "hello", repr(got)
    assert resp.returncode == 7, resp.returncode
    print(f"exec stdin {got} exit {resp.returncode}")

    pf = portforward(v1.connect_get_namespaced_pod_portforward, pod, ns, ports=str(port))
    sock = pf.socket(port)
    sock.setblocking(True)
    sock.settimeout(10)
    sock.sendall(b"GET /hello.txt HTTP/1.0\r\nHost: x\r\n\r\n")
    data = b""
    while True:
        try:
            chunk = sock.recv(4096)
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    sock.close()
    text = data.decode(errors="replace")
    assert " 200 " in text and "served" in text, text
    print("portforward ok")
    print("ok")


if __name__ == "__main__":
    main()

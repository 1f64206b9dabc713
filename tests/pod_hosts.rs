//! The managed /etc/hosts under containerd with the real kubectl: localhost, the pod's
//! address under its hostname (and FQDN with a subdomain) and its hostAliases, in the
//! kubelet's layout; the `hostname` inside is `spec.hostname`, else the pod's name.

mod common;

use common::cluster::Cluster;
use common::registry::{busybox_only, offline_images};
use std::time::Duration;

const PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: aliased}
spec:
  terminationGracePeriodSeconds: 1
  hostname: myhost
  subdomain: sub
  hostAliases:
  - {ip: "10.1.2.3", hostnames: [foo.local, bar.local]}
  containers:
  - name: c
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "exec sleep 3600"]
---
apiVersion: v1
kind: Pod
metadata: {name: plain}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "exec sleep 3600"]
"#;

#[test]
fn pods_get_the_kubelets_hosts_file_and_hostname() {
    assert!(unsafe { libc::geteuid() } == 0, "this test runs containerd: run it as root (CI does, after deploy/install-deps.sh)");
    let images = offline_images();
    let tmp = tempfile::tempdir().expect("tempdir");
    let airgap = busybox_only(&images, tmp.path());
    let cidr = common::pod_cidr();
    let mut c = Cluster::up_with(&tmp.path().join("c"), 1, &["--runtime", "containerd", "--images", &airgap.to_string_lossy(), "--cluster-cidr", &cidr]);
    let o = c.kubectl_stdin(&["apply", "-f", "-"], Some(PODS));
    assert!(o.ok, "{}", o.stderr);
    for p in ["aliased", "plain"] {
        c.eventually(Duration::from_secs(120), &format!("{p} Running"), || {
            let o = c.ok(&["get", "pod", p, "-o", "jsonpath={.status.phase}"]);
            if o == "Running" { Ok(()) } else { Err(o) }
        });
    }
    let ip = c.ok(&["get", "pod", "aliased", "-o", "jsonpath={.status.podIP}"]);
    let hosts = c.ok(&["exec", "aliased", "--", "cat", "/etc/hosts"]);
    assert!(hosts.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"), "{hosts}");
    assert!(hosts.contains(&format!("\n{ip}\tmyhost.sub.default.svc.cluster.local\tmyhost\n")), "{hosts}");
    assert!(hosts.ends_with("\n# Entries added by HostAliases.\n10.1.2.3\tfoo.local\tbar.local\n"), "{hosts}");
    assert_eq!(c.ok(&["exec", "aliased", "--", "hostname"]).trim(), "myhost");

    let ip = c.ok(&["get", "pod", "plain", "-o", "jsonpath={.status.podIP}"]);
    let hosts = c.ok(&["exec", "plain", "--", "cat", "/etc/hosts"]);
    assert!(hosts.ends_with(&format!("fe00::2\tip6-allrouters\n{ip}\tplain\n")), "no aliases, no alias header: {hosts}");
    assert_eq!(c.ok(&["exec", "plain", "--", "hostname"]).trim(), "plain");

    for p in ["aliased", "plain"] {
        c.ok(&["delete", "pod", p, "--wait=true", "--timeout=60s"]);
    }
    c.stop();
}

//! The pod's /etc/hosts, managed as the kubelet manages it: one file in the pod's
//! directory with localhost, the pod's own address under its hostname (and FQDN when it
//! has a subdomain) and its `hostAliases`, bind-mounted into every container, so a name
//! the pod is known by resolves inside it without DNS.

use crate::runtime::{ContainerSpec, Mount};
use k8s_openapi::api::core::v1::{HostAlias, Pod};
use std::path::{Path, PathBuf};

/// Longest hostname the kernel takes (and the kubelet truncates to).
const HOSTNAME_MAX: usize = 63;

/// The pod's hostname (`spec.hostname`, else its name) as the kubelet makes it: cut to 63
/// characters, without a trailing `-` or `.` the cut may leave.
pub fn hostname(pod: &Pod) -> String {
    let spec = pod.spec.as_ref();
    let name = spec.and_then(|s| s.hostname.clone()).filter(|h| !h.is_empty()).or_else(|| pod.metadata.name.clone()).unwrap_or_default();
    if name.len() <= HOSTNAME_MAX {
        return name;
    }
    name[..HOSTNAME_MAX].trim_end_matches(['-', '.']).to_string()
}

/// The hosts file's text for a pod at `pod_ip`.
pub fn render(pod_ip: &str, hostname: &str, fqdn: Option<&str>, aliases: &[HostAlias]) -> String {
    let mut s = String::from("# Kubernetes-managed hosts file.\n");
    s.push_str("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n");
    match fqdn {
        Some(f) => s.push_str(&format!("{pod_ip}\t{f}\t{hostname}\n")),
        None => s.push_str(&format!("{pod_ip}\t{hostname}\n")),
    }
    if !aliases.is_empty() {
        s.push_str("\n# Entries added by HostAliases.\n");
        for a in aliases {
            s.push_str(&format!("{}\t{}\n", a.ip, a.hostnames.as_deref().unwrap_or_default().join("\t")));
        }
    }
    s
}

/// The pod's file, when it gets one: not for hostNetwork pods, which see the node's.
pub fn content(pod: &Pod, pod_ip: &str) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if spec.host_network.unwrap_or(false) {
        return None;
    }
    let host = hostname(pod);
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let fqdn = spec.subdomain.as_deref().filter(|s| !s.is_empty()).map(|sub| format!("{host}.{sub}.{ns}.svc.cluster.local"));
    Some(render(pod_ip, &host, fqdn.as_deref(), spec.host_aliases.as_deref().unwrap_or_default()))
}

/// Where the pod's hosts file lives on the node.
pub fn path(pod_dir: &Path) -> PathBuf {
    pod_dir.join("etc-hosts")
}

/// Writes the pod's hosts file and mounts it at /etc/hosts in `cspec`, unless the pod has
/// none or the container mounts something there itself.
pub fn mount(pod: &Pod, pod_dir: &Path, pod_ip: &str, cspec: &mut ContainerSpec) -> std::io::Result<()> {
    if cspec.mounts.iter().any(|m| m.container_path.trim_end_matches('/') == "/etc/hosts") {
        return Ok(());
    }
    let Some(text) = content(pod, pod_ip) else { return Ok(()) };
    let file = path(pod_dir);
    // Rewritten in place only when it differs: running containers see the same inode.
    if std::fs::read_to_string(&file).ok().as_deref() != Some(text.as_str()) {
        std::fs::write(&file, &text)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))?;
    }
    cspec.mounts.push(Mount { volume: "etc-hosts".into(), host_path: file, container_path: "/etc/hosts".into(), read_only: false });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "web-0", "namespace": "ns"}, "spec": spec})).unwrap()
    }

    #[test]
    fn the_file_has_localhost_the_pod_and_its_aliases_in_the_kubelets_layout() {
        let p = pod(json!({"containers": [], "hostAliases": [{"ip": "10.1.2.3", "hostnames": ["foo.local", "bar.local"]}, {"ip": "127.0.0.1", "hostnames": ["extra"]}]}));
        assert_eq!(
            content(&p, "10.244.0.7").unwrap(),
            "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n10.244.0.7\tweb-0\n\n# Entries added by HostAliases.\n10.1.2.3\tfoo.local\tbar.local\n127.0.0.1\textra\n"
        );
        let p = pod(json!({"containers": [], "hostname": "h", "subdomain": "nginx"}));
        let text = content(&p, "10.244.0.8").unwrap();
        assert!(text.ends_with("fe00::2\tip6-allrouters\n10.244.0.8\th.nginx.ns.svc.cluster.local\th\n"), "{text}");
        assert_eq!(content(&pod(json!({"containers": [], "hostNetwork": true})), "10.0.0.1"), None);
    }

    #[test]
    fn hostnames_are_cut_to_63_without_a_trailing_dash() {
        assert_eq!(hostname(&pod(json!({"containers": []}))), "web-0");
        assert_eq!(hostname(&pod(json!({"containers": [], "hostname": "mine"}))), "mine");
        let long: Pod = serde_json::from_value(json!({"metadata": {"name": format!("{}-b", "a".repeat(62))}, "spec": {"containers": []}})).unwrap();
        assert_eq!(hostname(&long), "a".repeat(62));
    }

    #[test]
    fn a_container_mounting_etc_hosts_itself_keeps_its_own() {
        let dir = std::env::temp_dir().join(format!("flotilla-hosts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = pod(json!({"containers": [{"name": "c"}]}));
        let mut spec = crate::kubelet::spec::container_spec(&p, 0, &dir, 0, &[]).unwrap();
        mount(&p, &dir, "10.0.0.9", &mut spec).unwrap();
        assert_eq!(spec.mounts.last().map(|m| (m.container_path.as_str(), m.host_path.clone())), Some(("/etc/hosts", path(&dir))));
        assert!(std::fs::read_to_string(path(&dir)).unwrap().contains("10.0.0.9\tweb-0\n"));
        let mut own = crate::kubelet::spec::container_spec(&p, 0, &dir, 0, &[]).unwrap();
        own.mounts.push(Mount { volume: "v".into(), host_path: "/x".into(), container_path: "/etc/hosts".into(), read_only: true });
        mount(&p, &dir, "10.0.0.9", &mut own).unwrap();
        assert_eq!(own.mounts.len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

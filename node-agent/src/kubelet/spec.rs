//! From a Pod to what the runtime is asked for (pure): the sandbox spec and each
//! container's spec, with env values the downward API resolves and Kubernetes' command
//! rules (command replaces the entrypoint; args replace the image's cmd).

use crate::runtime::{ContainerSpec, PortMapping, SandboxSpec};
use k8s_openapi::api::core::v1::Pod;
use std::path::{Path, PathBuf};

/// The pod's directory: working dirs and logs; the log service finds logs by its name
/// (the kubelet's `/var/log/pods/<ns>_<name>_<uid>`).
pub fn pod_dir(data_dir: &Path, ns: &str, name: &str, uid: &str) -> PathBuf {
    data_dir.join("pods").join(format!("{ns}_{name}_{uid}"))
}

pub fn sandbox_spec(pod: &Pod, dir: &Path, attempt: u32) -> SandboxSpec {
    let spec = pod.spec.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let host_network = spec.host_network.unwrap_or(false);
    let ports = spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.host_port.is_some_and(|h| h > 0))
        .map(|p| PortMapping {
            protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
            container_port: p.container_port,
            host_port: p.host_port.unwrap_or(0),
            host_ip: p.host_ip.clone().unwrap_or_default(),
        })
        .collect();
    SandboxSpec {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        hostname: spec.hostname.clone().unwrap_or_else(|| name.clone()),
        name,
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        attempt,
        log_dir: dir.to_path_buf(),
        host_network,
        ports,
        labels: pod.metadata.labels.clone().unwrap_or_default(),
    }
}

/// The container's spec; `env` is its environment as `env::resolve` made it, from which
/// `$(VAR)` in command and args is expanded.
pub fn container_spec(pod: &Pod, idx: usize, dir: &Path, restarts: i32, env: &[(String, String)]) -> Option<ContainerSpec> {
    let c = pod.spec.as_ref()?.containers.get(idx)?;
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let mut all = vec![("HOSTNAME".to_string(), name.clone())];
    all.extend(env.iter().filter(|(k, _)| k != "HOSTNAME").cloned());
    let env = all;
    let attempt = restarts.max(0) as u32;
    Some(ContainerSpec {
        pod_key: format!("{ns}/{name}"),
        name: c.name.clone(),
        image: c.image.clone().unwrap_or_default(),
        command: super::env::expand_all(c.command.as_deref().unwrap_or_default(), &env),
        args: super::env::expand_all(c.args.as_deref().unwrap_or_default(), &env),
        env,
        working_dir: c.working_dir.clone().filter(|w| !w.is_empty()).map(PathBuf::from),
        log_path: dir.join(&c.name).join(format!("{attempt}.log")),
        attempt,
        stdin: c.stdin.unwrap_or(false),
        stdin_once: c.stdin_once.unwrap_or(false),
        tty: c.tty.unwrap_or(false),
        mounts: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "ns", "uid": "u1"}, "spec": spec})).unwrap()
    }

    #[test]
    fn command_and_args_stay_apart_for_the_runtime() {
        let p = pod(json!({"containers": [{"name": "c", "image": "nginx", "args": ["-v", "$(A)"]}]}));
        let env = vec![("A".to_string(), "1".to_string()), ("IP".to_string(), "10.244.1.5".to_string())];
        let s = container_spec(&p, 0, Path::new("/d/pods/x"), 2, &env).unwrap();
        assert!(s.command.is_empty(), "no command: the image's entrypoint runs");
        assert_eq!(s.args, vec!["-v", "1"]);
        assert_eq!(s.env, vec![("HOSTNAME".into(), "p".into()), ("A".into(), "1".into()), ("IP".into(), "10.244.1.5".into())]);
        assert_eq!(s.log_path, Path::new("/d/pods/x/c/2.log"));
        assert_eq!(s.attempt, 2);
        assert_eq!(s.working_dir, None);
    }

    #[test]
    fn sandbox_carries_host_ports_and_host_network() {
        let p = pod(json!({"hostNetwork": true, "containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 8080}, {"containerPort": 81}]}]}));
        let s = sandbox_spec(&p, Path::new("/d"), 1);
        assert!(s.host_network);
        assert_eq!(s.ports, vec![PortMapping { protocol: "TCP".into(), container_port: 80, host_port: 8080, host_ip: String::new() }]);
        assert_eq!((s.hostname.as_str(), s.attempt), ("p", 1));
    }
}

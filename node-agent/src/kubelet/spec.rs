//! From a Pod to what the runtime is asked for (pure): the sandbox spec and each
//! container's spec, with env values the downward API resolves and Kubernetes' command
//! rules (command replaces the entrypoint; args replace the image's cmd).

use crate::runtime::{ContainerSpec, PortMapping, Resources, SandboxSpec};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use std::path::{Path, PathBuf};

/// The pod's directory: working dirs and logs; the log service finds logs by its name
/// (the kubelet's `/var/log/pods/<ns>_<name>_<uid>`).
pub fn pod_dir(data_dir: &Path, ns: &str, name: &str, uid: &str) -> PathBuf {
    data_dir.join("pods").join(format!("{ns}_{name}_{uid}"))
}

/// `cluster_dns`: this node's DNS server address, when it runs one (pods' nameserver).
pub fn sandbox_spec(pod: &Pod, dir: &Path, attempt: u32, cluster_dns: Option<std::net::Ipv4Addr>, host_dns: &crate::dns::resolv_conf::HostConf) -> SandboxSpec {
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
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    SandboxSpec {
        dns: crate::dns::resolv_conf::pod_dns(&spec, &namespace, cluster_dns, host_dns),
        namespace,
        hostname: super::hosts::hostname(pod),
        name,
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        attempt,
        log_dir: dir.to_path_buf(),
        host_network,
        ports,
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        privileged: super::security::any_privileged(pod),
    }
}

/// The kubelet numbers a pod's containers as one list: its init containers first, in
/// order, then its containers. `idx` in the state machine and the shell is this number.
pub fn container_at(spec: &PodSpec, idx: usize) -> Option<&Container> {
    let init = spec.init_containers.as_deref().unwrap_or_default();
    init.get(idx).or_else(|| spec.containers.get(idx.checked_sub(init.len())?))
}

/// Every container of the pod in that numbering.
pub fn all_containers(spec: &PodSpec) -> impl Iterator<Item = &Container> {
    spec.init_containers.iter().flatten().chain(spec.containers.iter())
}

/// The number of the container named `name`.
pub fn index_of(spec: &PodSpec, name: &str) -> Option<usize> {
    all_containers(spec).position(|c| c.name == name)
}

/// `resources` as cgroup figures; quantities that do not parse are left out.
pub fn resources(c: &Container) -> Resources {
    let r = c.resources.clone().unwrap_or_default();
    let (req, lim) = (r.requests.unwrap_or_default(), r.limits.unwrap_or_default());
    let cpu = |m: &std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>| m.get("cpu").and_then(|q| schema::quantity::cpu_millis(&q.0));
    Resources {
        memory_limit_bytes: lim.get("memory").and_then(|q| schema::quantity::value(&q.0)).map(|v| v.min(i64::MAX as u64) as i64),
        cpu_request_millis: cpu(&req).or_else(|| cpu(&lim)),
        cpu_limit_millis: cpu(&lim),
    }
}

/// The container's spec; `env` is its environment as `env::resolve` made it, from which
/// `$(VAR)` in command and args is expanded.
pub fn container_spec(pod: &Pod, idx: usize, dir: &Path, restarts: i32, env: &[(String, String)]) -> Option<ContainerSpec> {
    let c = container_at(pod.spec.as_ref()?, idx)?;
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
        resources: resources(c),
        security: super::security::effective(pod, c),
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
    fn init_containers_come_first_and_limits_become_cgroup_figures() {
        let p = pod(json!({"initContainers": [{"name": "i1"}, {"name": "i2"}], "containers": [{"name": "c",
            "resources": {"limits": {"memory": "32Mi", "cpu": "500m"}}}]}));
        let spec = p.spec.as_ref().unwrap();
        let names: Vec<&str> = (0..4).filter_map(|i| container_at(spec, i)).map(|c| c.name.as_str()).collect();
        assert_eq!(names, vec!["i1", "i2", "c"]);
        assert_eq!(index_of(spec, "c"), Some(2));
        let s = container_spec(&p, 2, Path::new("/d"), 0, &[]).unwrap();
        assert_eq!(s.resources, Resources { memory_limit_bytes: Some(32 << 20), cpu_request_millis: Some(500), cpu_limit_millis: Some(500) });
        assert_eq!(container_spec(&p, 0, Path::new("/d"), 0, &[]).unwrap().resources, Resources::default());
    }

    #[test]
    fn sandbox_carries_host_ports_and_host_network() {
        let p = pod(json!({"hostNetwork": true, "containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 8080}, {"containerPort": 81}]}]}));
        let s = sandbox_spec(&p, Path::new("/d"), 1, None, &Default::default());
        assert!(s.host_network);
        assert_eq!(s.ports, vec![PortMapping { protocol: "TCP".into(), container_port: 80, host_port: 8080, host_ip: String::new() }]);
        assert_eq!((s.hostname.as_str(), s.attempt), ("p", 1));
    }
}

//! A container's environment as the kubelet makes it: the Services' link variables,
//! `envFrom` (with its prefix), `env` with `valueFrom` (configMapKeyRef, secretKeyRef,
//! fieldRef, resourceFieldRef) and `$(VAR)` expansion, which command and args get too.
//! `resolve` is pure; `Sources::fetch` reads what it names from the store first. A
//! missing non-optional source is the container's `CreateContainerConfigError`, with the
//! kubelet's own words.

use super::admission::Allocatable;
use bus::Client;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Service};
use std::collections::{BTreeMap, BTreeSet};

/// The objects a pod's containers' environment names, as the store had them (None: absent).
#[derive(Debug, Default, Clone)]
pub struct Sources {
    pub config_maps: BTreeMap<String, Option<ConfigMap>>,
    pub secrets: BTreeMap<String, Option<Secret>>,
    /// The pod's namespace's Services plus `default/kubernetes` (the kubelet's "master
    /// services", always linked).
    pub services: Vec<Service>,
    /// ServiceAccount tokens by `token_key(audience, expirationSeconds)`.
    pub tokens: BTreeMap<String, String>,
}

/// Which token a projected `serviceAccountToken` source takes from `Sources::tokens`.
pub fn token_key(audience: &str, seconds: i64) -> String {
    format!("{audience}|{seconds}")
}

/// What fieldRef and resourceFieldRef read besides the pod itself.
#[derive(Debug, Clone)]
pub struct Downward {
    pub node: String,
    pub host_ip: String,
    pub pod_ip: String,
    /// Stands in for a limit the container does not set, as the node's allocatable does.
    pub allocatable: Allocatable,
}

fn all_containers(pod: &Pod) -> impl Iterator<Item = &Container> {
    pod.spec.as_ref().into_iter().flat_map(super::spec::all_containers)
}

/// The ConfigMaps and Secrets the pod's containers' environment names.
pub fn referenced(pod: &Pod) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut cms, mut secrets) = (BTreeSet::new(), BTreeSet::new());
    for c in all_containers(pod) {
        for f in c.env_from.iter().flatten() {
            if let Some(r) = &f.config_map_ref {
                cms.insert(r.name.clone());
            }
            if let Some(r) = &f.secret_ref {
                secrets.insert(r.name.clone());
            }
        }
        for e in c.env.iter().flatten() {
            let Some(from) = &e.value_from else { continue };
            if let Some(r) = &from.config_map_key_ref {
                cms.insert(r.name.clone());
            }
            if let Some(r) = &from.secret_key_ref {
                secrets.insert(r.name.clone());
            }
        }
    }
    (cms, secrets)
}

impl Sources {
    /// Reads what `pod`'s environment names; a store error is an error (the start is
    /// tried again), an absent object is recorded as absent.
    pub async fn fetch(client: &Client, pod: &Pod) -> Result<Sources, String> {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let (cms, secrets) = referenced(pod);
        let mut out = Sources::objects(client, &ns, cms, secrets).await?;
        let links = pod.spec.as_ref().and_then(|s| s.enable_service_links).unwrap_or(true);
        if links {
            let (svcs, _) = client.list::<Service>(Some(&ns)).await.map_err(|e| format!("listing services: {e}"))?;
            out.services.extend(svcs);
        }
        if ns != "default" || !links {
            if let Some(k) = client.get::<Service>(Some("default"), "kubernetes").await.map_err(|e| format!("reading service \"kubernetes\": {e}"))? {
                out.services.push(k);
            }
        }
        Ok(out)
    }

    /// A ConfigMap's keys as bytes (`data` and `binaryData`), None when it is absent.
    pub fn config_map(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        let cm = self.config_maps.get(name).cloned().flatten()?;
        let mut m: BTreeMap<String, Vec<u8>> = cm.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
        m.extend(cm.binary_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)));
        Some(m)
    }

    /// A Secret's keys, decoded (`data`, and `stringData` should a writer have left it).
    pub fn secret(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        let s = self.secrets.get(name).cloned().flatten()?;
        let mut m: BTreeMap<String, Vec<u8>> = s.string_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
        m.extend(s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)));
        Some(m)
    }

    /// Reads the named ConfigMaps and Secrets of namespace `ns`.
    pub async fn objects(client: &Client, ns: &str, cms: BTreeSet<String>, secrets: BTreeSet<String>) -> Result<Sources, String> {
        let ns = Some(ns);
        let mut out = Sources::default();
        for name in cms {
            let cm = client.get::<ConfigMap>(ns, &name).await.map_err(|e| format!("reading configmap \"{name}\": {e}"))?;
            out.config_maps.insert(name, cm);
        }
        for name in secrets {
            let s = client.get::<Secret>(ns, &name).await.map_err(|e| format!("reading secret \"{name}\": {e}"))?;
            out.secrets.insert(name, s);
        }
        Ok(out)
    }
}

/// `$(VAR)` expansion as Kubernetes does it: a defined name is replaced, an undefined one
/// stays as written, `$$` is a literal `$`.
pub fn expand(s: &str, vars: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'$' {
            let ch = s[i..].chars().next().unwrap_or('\u{fffd}');
            out.push(ch);
            i += ch.len_utf8().max(1);
            continue;
        }
        match b.get(i + 1) {
            Some(b'$') => {
                out.push('$');
                i += 2;
            }
            Some(b'(') => match s[i + 2..].find(')') {
                Some(end) => {
                    let name = &s[i + 2..i + 2 + end];
                    match vars(name) {
                        Some(v) => out.push_str(&v),
                        None => out.push_str(&s[i..i + 3 + end]),
                    }
                    i += 3 + end;
                }
                None => {
                    out.push_str(&s[i..]);
                    i = b.len();
                }
            },
            _ => {
                out.push('$');
                i += 1;
            }
        }
    }
    out
}

fn env_name(service: &str) -> String {
    service.to_uppercase().replace('-', "_")
}

/// The link variables of the Services (`WEB_SERVICE_HOST`, `WEB_PORT_80_TCP`, …); headless
/// Services and Services without an address have none.
pub fn service_links(services: &[Service]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for svc in services {
        let Some(spec) = &svc.spec else { continue };
        let Some(ip) = spec.cluster_ip.as_deref().filter(|ip| !ip.is_empty() && *ip != "None") else { continue };
        let name = svc.metadata.name.clone().unwrap_or_default();
        if !seen.insert(name.clone()) {
            continue;
        }
        let ports = spec.ports.clone().unwrap_or_default();
        let Some(first) = ports.first() else { continue };
        let n = env_name(&name);
        let url_ip = if ip.contains(':') { format!("[{ip}]") } else { ip.to_string() };
        out.push((format!("{n}_SERVICE_HOST"), ip.to_string()));
        out.push((format!("{n}_SERVICE_PORT"), first.port.to_string()));
        for p in &ports {
            if let Some(pn) = p.name.as_deref().filter(|s| !s.is_empty()) {
                out.push((format!("{n}_SERVICE_PORT_{}", env_name(pn)), p.port.to_string()));
            }
        }
        let proto = |p: &k8s_openapi::api::core::v1::ServicePort| p.protocol.clone().unwrap_or_else(|| "TCP".into());
        out.push((format!("{n}_PORT"), format!("{}://{url_ip}:{}", proto(first).to_lowercase(), first.port)));
        for p in &ports {
            let pr = proto(p);
            let base = format!("{n}_PORT_{}_{}", p.port, pr.to_uppercase());
            out.push((base.clone(), format!("{}://{url_ip}:{}", pr.to_lowercase(), p.port)));
            out.push((format!("{base}_PROTO"), pr.to_lowercase()));
            out.push((format!("{base}_PORT"), p.port.to_string()));
            out.push((format!("{base}_ADDR"), ip.to_string()));
        }
    }
    out
}

/// A fieldRef's value (env and downwardAPI files).
pub fn field(pod: &Pod, path: &str, d: &Downward) -> Result<String, String> {
    let m = &pod.metadata;
    let label_or_annotation = |prefix: &str, map: &Option<BTreeMap<String, String>>| -> Option<String> {
        let key = path.strip_prefix(prefix)?.strip_prefix('[')?.strip_suffix(']')?;
        let key = key.trim_matches(|c| c == '\'' || c == '"');
        Some(map.as_ref().and_then(|m| m.get(key)).cloned().unwrap_or_default())
    };
    if let Some(v) = label_or_annotation("metadata.labels", &m.labels).or_else(|| label_or_annotation("metadata.annotations", &m.annotations)) {
        return Ok(v);
    }
    Ok(match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "spec.nodeName" => d.node.clone(),
        "spec.serviceAccountName" => pod.spec.as_ref().and_then(|s| s.service_account_name.clone()).unwrap_or_default(),
        "status.podIP" | "status.podIPs" => d.pod_ip.clone(),
        "status.hostIP" | "status.hostIPs" => d.host_ip.clone(),
        other => return Err(format!("unsupported fieldPath: {other}")),
    })
}

/// A resourceFieldRef's value: the container's limit (the node's allocatable where it sets
/// none) or request, divided by the divisor and rounded up, as the kubelet does.
pub fn resource_field(c: &Container, resource: &str, divisor: Option<&str>, alloc: Allocatable) -> Result<String, String> {
    let res = c.resources.as_ref();
    let pick = |which: &str, name: &str| -> Option<String> {
        let m = if which == "limits" { res.and_then(|r| r.limits.as_ref()) } else { res.and_then(|r| r.requests.as_ref()) };
        m.and_then(|m| m.get(name)).map(|q| q.0.clone())
    };
    let (which, name) = resource.split_once('.').ok_or_else(|| format!("unsupported container resource: {resource}"))?;
    let declared = pick(which, name).or_else(|| if which == "requests" { pick("limits", name) } else { None });
    match name {
        "cpu" => {
            let millis = match declared {
                Some(q) => schema::quantity::cpu_millis(&q).ok_or_else(|| format!("invalid quantity {q}"))?,
                None if which == "limits" => alloc.cpu_millis,
                None => 0,
            };
            let div = divisor.map(|d| schema::quantity::cpu_millis(d).ok_or_else(|| format!("invalid divisor {d}"))).transpose()?.unwrap_or(1000).max(1);
            Ok(millis.div_ceil(div).to_string())
        }
        "memory" | "ephemeral-storage" => {
            let bytes = match declared {
                Some(q) => schema::quantity::value(&q).ok_or_else(|| format!("invalid quantity {q}"))?,
                None if which == "limits" && name == "memory" => alloc.memory_bytes,
                None => 0,
            };
            let div = divisor.map(|d| schema::quantity::value(d).ok_or_else(|| format!("invalid divisor {d}"))).transpose()?.unwrap_or(1).max(1);
            Ok(bytes.div_ceil(div).to_string())
        }
        _ => Err(format!("unsupported container resource: {resource}")),
    }
}

/// The container's environment, in the order the runtime gets it (later wins), or the
/// message of its `CreateContainerConfigError`.
pub fn resolve(pod: &Pod, c: &Container, src: &Sources, d: &Downward) -> Result<Vec<(String, String)>, String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mut vars: Vec<(String, String)> = Vec::new();
    let set = |vars: &mut Vec<(String, String)>, k: String, v: String| {
        if let Some(e) = vars.iter_mut().find(|(n, _)| *n == k) {
            e.1 = v;
        } else {
            vars.push((k, v));
        }
    };
    for (k, v) in service_links(&src.services) {
        set(&mut vars, k, v);
    }
    for f in c.env_from.iter().flatten() {
        let prefix = f.prefix.clone().unwrap_or_default();
        if let Some(r) = &f.config_map_ref {
            match src.config_maps.get(&r.name).cloned().flatten() {
                Some(cm) => {
                    for (k, v) in cm.data.iter().flatten() {
                        set(&mut vars, format!("{prefix}{k}"), v.clone());
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(format!("configmap \"{}\" not found", r.name)),
            }
        }
        if let Some(r) = &f.secret_ref {
            match src.secrets.get(&r.name).cloned().flatten() {
                Some(s) => {
                    for (k, v) in s.data.iter().flatten() {
                        set(&mut vars, format!("{prefix}{k}"), String::from_utf8_lossy(&v.0).into_owned());
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(format!("secret \"{}\" not found", r.name)),
            }
        }
    }
    for e in c.env.iter().flatten() {
        let value = match (&e.value, &e.value_from) {
            (Some(v), _) => {
                let lookup = |n: &str| vars.iter().rev().find(|(k, _)| k == n).map(|(_, v)| v.clone());
                Some(expand(v, &lookup))
            }
            (None, Some(from)) => {
                if let Some(r) = &from.config_map_key_ref {
                    let optional = r.optional == Some(true);
                    match src.config_map(&r.name) {
                        None if optional => None,
                        None => return Err(format!("configmap \"{}\" not found", r.name)),
                        Some(cm) => match cm.get(&r.key) {
                            Some(v) => Some(String::from_utf8_lossy(v).into_owned()),
                            None if optional => None,
                            None => return Err(format!("couldn't find key {} in ConfigMap {ns}/{}", r.key, r.name)),
                        },
                    }
                } else if let Some(r) = &from.secret_key_ref {
                    let optional = r.optional == Some(true);
                    match src.secret(&r.name) {
                        None if optional => None,
                        None => return Err(format!("secret \"{}\" not found", r.name)),
                        Some(s) => match s.get(&r.key) {
                            Some(v) => Some(String::from_utf8_lossy(v).into_owned()),
                            None if optional => None,
                            None => return Err(format!("couldn't find key {} in Secret {ns}/{}", r.key, r.name)),
                        },
                    }
                } else if let Some(f) = &from.field_ref {
                    Some(field(pod, &f.field_path, d)?)
                } else if let Some(r) = &from.resource_field_ref {
                    let target = match r.container_name.as_deref().filter(|n| !n.is_empty()) {
                        Some(n) => all_containers(pod).find(|x| x.name == n).ok_or_else(|| format!("container {n} not found"))?,
                        None => c,
                    };
                    Some(resource_field(target, &r.resource, r.divisor.as_ref().map(|q| q.0.as_str()), d.allocatable)?)
                } else {
                    Some(String::new())
                }
            }
            (None, None) => Some(String::new()),
        };
        if let Some(v) = value {
            set(&mut vars, e.name.clone(), v);
        }
    }
    Ok(vars)
}

/// Command and args with `$(VAR)` expanded from the container's environment.
pub fn expand_all(words: &[String], env: &[(String, String)]) -> Vec<String> {
    let lookup = |n: &str| env.iter().rev().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    words.iter().map(|w| expand(w, &lookup)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ALLOC: Allocatable = Allocatable { cpu_millis: 4000, memory_bytes: 8 << 30, pods: 110 };

    fn d() -> Downward {
        Downward { node: "n1".into(), host_ip: "10.0.0.1".into(), pod_ip: "10.244.0.5".into(), allocatable: ALLOC }
    }

    fn pod(containers: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "ns", "uid": "u1", "labels": {"app": "web"}}, "spec": {"containers": containers}})).unwrap()
    }

    fn cm(name: &str, data: serde_json::Value) -> Option<ConfigMap> {
        Some(serde_json::from_value(json!({"metadata": {"name": name}, "data": data})).unwrap())
    }

    fn get<'a>(env: &'a [(String, String)], k: &str) -> Option<&'a str> {
        env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn expansion_replaces_defined_names_and_keeps_the_rest() {
        let vars = |n: &str| (n == "A").then(|| "1".to_string());
        assert_eq!(expand("x$(A)y", &vars), "x1y");
        assert_eq!(expand("$(B) stays", &vars), "$(B) stays");
        assert_eq!(expand("$$(A) is escaped", &vars), "$(A) is escaped");
        assert_eq!(expand("cost $5", &vars), "cost $5");
        assert_eq!(expand("open $(A", &vars), "open $(A");
        assert_eq!(expand("ünï$(A)", &vars), "ünï1");
    }

    #[test]
    fn env_from_value_from_and_fields_resolve_in_order() {
        let p = pod(json!([{"name": "c", "image": "busybox",
            "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}],
            "env": [
                {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
                {"name": "MSG", "value": "mode=$(MODE) node=$(NODE)"},
                {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1m"}}},
                {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "requests.memory", "divisor": "1Mi"}}}
            ],
            "resources": {"requests": {"memory": "64Mi"}}}]));
        let mut src = Sources::default();
        src.config_maps.insert("cfg".into(), cm("cfg", json!({"mode": "fast", "level": "3"})));
        let c = &p.spec.as_ref().unwrap().containers[0];
        let env = resolve(&p, c, &src, &d()).unwrap();
        assert_eq!(get(&env, "CFG_mode"), Some("fast"));
        assert_eq!(get(&env, "CFG_level"), Some("3"));
        assert_eq!(get(&env, "MODE"), Some("fast"));
        // NODE comes after MSG, so it is not expanded there (as in Kubernetes).
        assert_eq!(get(&env, "MSG"), Some("mode=fast node=$(NODE)"));
        assert_eq!(get(&env, "NODE"), Some("n1"));
        assert_eq!(get(&env, "APP"), Some("web"));
        assert_eq!(get(&env, "CPU"), Some("4000"), "no limit: the node's allocatable");
        assert_eq!(get(&env, "MEM"), Some("64"));
    }

    #[test]
    fn missing_sources_give_the_kubelets_messages_unless_optional() {
        let p = pod(json!([{"name": "c", "env": [{"name": "K", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "nope"}}}]}]));
        let c = &p.spec.as_ref().unwrap().containers[0];
        let mut src = Sources::default();
        assert_eq!(resolve(&p, c, &src, &d()).unwrap_err(), "configmap \"cfg\" not found");
        src.config_maps.insert("cfg".into(), cm("cfg", json!({"a": "1"})));
        assert_eq!(resolve(&p, c, &src, &d()).unwrap_err(), "couldn't find key nope in ConfigMap ns/cfg");
        let p = pod(json!([{"name": "c", "env": [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k", "optional": true}}}],
            "envFrom": [{"secretRef": {"name": "gone", "optional": true}}]}]));
        let c = &p.spec.as_ref().unwrap().containers[0];
        assert_eq!(resolve(&p, c, &Sources::default(), &d()).unwrap(), vec![]);
        let p = pod(json!([{"name": "c", "envFrom": [{"secretRef": {"name": "gone"}}]}]));
        let c = &p.spec.as_ref().unwrap().containers[0];
        assert_eq!(resolve(&p, c, &Sources::default(), &d()).unwrap_err(), "secret \"gone\" not found");
    }

    #[test]
    fn secrets_are_decoded() {
        let p = pod(json!([{"name": "c", "env": [{"name": "PW", "valueFrom": {"secretKeyRef": {"name": "s", "key": "password"}}}]}]));
        let c = &p.spec.as_ref().unwrap().containers[0];
        let mut src = Sources::default();
        src.secrets.insert("s".into(), Some(serde_json::from_value(json!({"metadata": {"name": "s"}, "data": {"password": "aHVudGVyMg=="}})).unwrap()));
        assert_eq!(get(&resolve(&p, c, &src, &d()).unwrap(), "PW"), Some("hunter2"));
    }

    #[test]
    fn services_link_as_docker_links_did() {
        let svc: Service = serde_json::from_value(json!({"metadata": {"name": "web-front"}, "spec": {"clusterIP": "10.96.0.9", "ports": [{"name": "http", "port": 80}, {"port": 53, "protocol": "UDP"}]}})).unwrap();
        let headless: Service = serde_json::from_value(json!({"metadata": {"name": "h"}, "spec": {"clusterIP": "None", "ports": [{"port": 1}]}})).unwrap();
        let env = service_links(&[svc, headless]);
        assert_eq!(get(&env, "WEB_FRONT_SERVICE_HOST"), Some("10.96.0.9"));
        assert_eq!(get(&env, "WEB_FRONT_SERVICE_PORT"), Some("80"));
        assert_eq!(get(&env, "WEB_FRONT_SERVICE_PORT_HTTP"), Some("80"));
        assert_eq!(get(&env, "WEB_FRONT_PORT"), Some("tcp://10.96.0.9:80"));
        assert_eq!(get(&env, "WEB_FRONT_PORT_53_UDP"), Some("udp://10.96.0.9:53"));
        assert_eq!(get(&env, "WEB_FRONT_PORT_53_UDP_ADDR"), Some("10.96.0.9"));
        assert!(get(&env, "H_SERVICE_HOST").is_none());
    }

    #[test]
    fn command_words_expand_from_the_environment() {
        let env = vec![("WHO".to_string(), "world".to_string())];
        assert_eq!(expand_all(&["echo".into(), "hello $(WHO)".into(), "$(NOPE)".into()], &env), vec!["echo", "hello world", "$(NOPE)"]);
    }
}

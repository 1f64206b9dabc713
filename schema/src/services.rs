//! Services: the defaults the real server fills (type, protocol, targetPort, IP families,
//! traffic policies), cluster IP and node port allocation, and the fields a write may not
//! change. Allocation is a pure function of what is taken; the gateway gathers that from
//! the stored Services and passes a random starting point.

use crate::admission::Cause;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::net::Ipv4Addr;

/// kube-apiserver's default `--service-cluster-ip-range`.
pub const SERVICE_CIDR: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 96, 0, 0), 12);
/// kube-apiserver's default `--service-node-port-range`.
pub const NODE_PORTS: (u16, u16) = (30000, 32767);
/// The first address of the range belongs to the `kubernetes` Service.
pub const KUBERNETES_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
/// The tenth, as kubeadm's clusterDNS: the `kube-system/kube-dns` Service's.
pub const KUBE_DNS_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);

fn cidr_string() -> String {
    format!("{}/{}", SERVICE_CIDR.0, SERVICE_CIDR.1)
}

fn in_range(ip: Ipv4Addr) -> bool {
    let mask = u32::MAX << (32 - SERVICE_CIDR.1);
    (u32::from(ip) & mask) == u32::from(SERVICE_CIDR.0)
}

/// What the stored Services already hold.
#[derive(Debug, Default, Clone)]
pub struct Taken {
    pub ips: HashSet<Ipv4Addr>,
    pub node_ports: HashSet<u16>,
}

impl Taken {
    /// From stored Services, leaving out `except` (the one being updated).
    pub fn from_services<'a>(svcs: impl IntoIterator<Item = &'a Value>, except: Option<(&str, &str)>) -> Taken {
        let mut t = Taken::default();
        for s in svcs {
            let id = (crate::object::namespace(s).unwrap_or(""), crate::object::name(s).unwrap_or(""));
            if except == Some(id) {
                continue;
            }
            if let Some(ip) = s.pointer("/spec/clusterIP").and_then(Value::as_str).and_then(|i| i.parse().ok()) {
                t.ips.insert(ip);
            }
            for p in s.pointer("/spec/ports").and_then(Value::as_array).into_iter().flatten() {
                if let Some(n) = p.get("nodePort").and_then(Value::as_u64) {
                    t.node_ports.insert(n as u16);
                }
            }
        }
        t
    }
}

fn typ(v: &Value) -> &str {
    v.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP")
}

fn set_default(o: &mut Value, field: &str, val: Value) {
    if let Some(m) = o.as_object_mut() {
        m.entry(field).or_insert(val);
    }
}

/// Defaults that need no allocation; idempotent.
pub fn defaults(v: &mut Value) {
    let Some(spec) = v.get_mut("spec").filter(|s| s.is_object()) else { return };
    set_default(spec, "type", json!("ClusterIP"));
    set_default(spec, "sessionAffinity", json!("None"));
    let t = spec["type"].as_str().unwrap_or("ClusterIP").to_string();
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter(|p| p.is_object()) {
            set_default(p, "protocol", json!("TCP"));
            if let Some(port) = p.get("port").cloned() {
                set_default(p, "targetPort", port);
            }
        }
    }
    if t != "ExternalName" {
        set_default(spec, "ipFamilies", json!(["IPv4"]));
        set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
        set_default(spec, "internalTrafficPolicy", json!("Cluster"));
        if let Some(ip) = spec.get("clusterIP").and_then(Value::as_str).filter(|i| !i.is_empty()).map(str::to_string) {
            set_default(spec, "clusterIPs", json!([ip]));
        }
    }
    if t == "NodePort" || t == "LoadBalancer" {
        set_default(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if t == "LoadBalancer" {
        set_default(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    if let Some(o) = v.as_object_mut() {
        o.entry("status").or_insert_with(|| json!({"loadBalancer": {}}));
    }
}

/// On update, values the client left out keep what was allocated (as the real server's
/// `patchAllocatedValues`), so a PUT without clusterIP is not a change of it.
pub fn carry_allocated(v: &mut Value, old: &Value) {
    let Some(spec) = v.get_mut("spec").filter(|s| s.is_object()) else { return };
    let keep_ip = spec.get("type").and_then(Value::as_str).unwrap_or("ClusterIP") != "ExternalName";
    if keep_ip {
        for f in ["clusterIP", "clusterIPs"] {
            let empty = spec.get(f).map(|x| x.is_null() || x == "" || x == &json!([])).unwrap_or(true);
            if let (true, Some(o)) = (empty, old.pointer(&format!("/spec/{f}"))) {
                spec[f] = o.clone();
            }
        }
    }
    let old_ports = old.pointer("/spec/ports").and_then(Value::as_array).cloned().unwrap_or_default();
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter(|p| p.is_object() && p.get("nodePort").is_none()) {
            let same = old_ports.iter().find(|o| o.get("port") == p.get("port") && o.get("protocol").or(Some(&json!("TCP"))) == p.get("protocol").or(Some(&json!("TCP"))));
            if let Some(n) = same.and_then(|o| o.get("nodePort")) {
                p["nodePort"] = n.clone();
            }
        }
    }
}

/// On update, what the old type needed and the new one does not is dropped when the
/// client left it as it was (the real server's `dropTypeDependentFields`), so
/// `patch -p '{"spec":{"type":"ClusterIP"}}'` on a NodePort or LoadBalancer Service works.
pub fn drop_type_dependent(v: &mut Value, old: &Value) {
    let t = typ(v).to_string();
    let Some(spec) = v.get_mut("spec").filter(|s| s.is_object()) else { return };
    let same = |spec: &Value, f: &str| spec.get(f) == old.pointer(&format!("/spec/{f}"));
    let node_ports = |sp: &Value| -> Vec<Option<Value>> { sp.get("ports").and_then(Value::as_array).map(|ps| ps.iter().map(|p| p.get("nodePort").cloned()).collect()).unwrap_or_default() };
    let old_spec = old.get("spec").cloned().unwrap_or(Value::Null);
    let needs_node_ports = t == "NodePort" || (t == "LoadBalancer" && spec.get("allocateLoadBalancerNodePorts").and_then(Value::as_bool) != Some(false));
    if !needs_node_ports && node_ports(spec) == node_ports(&old_spec) {
        for p in spec.get_mut("ports").and_then(Value::as_array_mut).into_iter().flatten() {
            if let Some(m) = p.as_object_mut() {
                m.remove("nodePort");
            }
        }
    }
    let Some(m) = spec.as_object_mut() else { return };
    let drop = |m: &mut serde_json::Map<String, Value>, f: &str, needed: bool| {
        if !needed && same(&Value::Object(m.clone()), f) {
            m.remove(f);
        }
    };
    let external = t == "NodePort" || t == "LoadBalancer";
    let local_lb = t == "LoadBalancer" && m.get("externalTrafficPolicy").and_then(Value::as_str) == Some("Local");
    drop(m, "healthCheckNodePort", local_lb);
    drop(m, "allocateLoadBalancerNodePorts", t == "LoadBalancer");
    drop(m, "loadBalancerClass", t == "LoadBalancer");
    drop(m, "externalTrafficPolicy", external);
}

fn cause(reason: &str, field: &str, message: String) -> Cause {
    Cause { reason: reason.into(), field: field.into(), message }
}

/// Fills a cluster IP and node ports the client left empty, starting the search at
/// `seed`, and checks the ones it chose against the range and what is taken.
pub fn allocate(v: &mut Value, taken: &Taken, seed: u64) -> Result<(), Vec<Cause>> {
    let t = typ(v).to_string();
    let Some(spec) = v.get_mut("spec").filter(|s| s.is_object()) else { return Ok(()) };
    let mut causes = Vec::new();
    if t != "ExternalName" {
        match spec.get("clusterIP").and_then(Value::as_str).filter(|s| !s.is_empty()) {
            Some("None") => {}
            Some(ip) => match ip.parse::<Ipv4Addr>() {
                Err(_) => causes.push(cause("FieldValueInvalid", "spec.clusterIPs[0]", format!("Invalid value: \"{ip}\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"))),
                Ok(a) if !in_range(a) => causes.push(cause(
                    "FieldValueInvalid",
                    "spec.clusterIPs",
                    format!("Invalid value: []string{{\"{ip}\"}}: failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {}", cidr_string()),
                )),
                Ok(a) if taken.ips.contains(&a) => causes.push(cause("FieldValueInvalid", "spec.clusterIPs", format!("Invalid value: []string{{\"{ip}\"}}: failed to allocate IP {ip}: provided IP is already allocated"))),
                Ok(_) => {}
            },
            None => {
                let size = 1u64 << (32 - SERVICE_CIDR.1);
                let base = u32::from(SERVICE_CIDR.0) as u64;
                // Skip the network address, the kubernetes Service's address and the broadcast.
                let usable = size - 3;
                let found = (0..usable).map(|i| Ipv4Addr::from((base + 2 + (seed + i) % usable) as u32)).find(|a| !taken.ips.contains(a));
                match found {
                    Some(a) => {
                        spec["clusterIP"] = json!(a.to_string());
                        spec["clusterIPs"] = json!([a.to_string()]);
                    }
                    None => causes.push(cause("FieldValueInvalid", "spec.clusterIPs", format!("Invalid value: []string{{}}: failed to allocate IP: range is full ({})", cidr_string()))),
                }
            }
        }
    }
    let wants_node_ports = t == "NodePort" || (t == "LoadBalancer" && spec.get("allocateLoadBalancerNodePorts").and_then(Value::as_bool) != Some(false));
    let mut used: HashSet<u16> = HashSet::new();
    let span = (NODE_PORTS.1 - NODE_PORTS.0) as u64 + 1;
    let mut next = seed;
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        // The client's choices first, so that allocation steers around them.
        for (i, p) in ports.iter().enumerate() {
            let Some(n) = p.get("nodePort").and_then(Value::as_i64) else { continue };
            let field = format!("spec.ports[{i}].nodePort");
            if !wants_node_ports {
                causes.push(cause("FieldValueForbidden", &field, format!("Forbidden: may not be used when `type` is '{t}'")));
            } else if n < NODE_PORTS.0 as i64 || n > NODE_PORTS.1 as i64 {
                causes.push(cause(
                    "FieldValueInvalid",
                    &field,
                    format!("Invalid value: {n}: provided port is not in the valid range. The range of valid ports is {}-{}", NODE_PORTS.0, NODE_PORTS.1),
                ));
            } else if taken.node_ports.contains(&(n as u16)) || !used.insert(n as u16) {
                causes.push(cause("FieldValueInvalid", &field, format!("Invalid value: {n}: provided port is already allocated")));
            }
        }
        for (i, p) in ports.iter_mut().enumerate() {
            if !wants_node_ports || !p.is_object() || p.get("nodePort").is_some() {
                continue;
            }
            let found = (0..span).map(|k| NODE_PORTS.0 + ((next + k) % span) as u16).find(|n| !taken.node_ports.contains(n) && !used.contains(n));
            match found {
                Some(n) => {
                    used.insert(n);
                    next = next.wrapping_add(1);
                    p["nodePort"] = json!(n);
                }
                None => causes.push(cause("FieldValueInvalid", &format!("spec.ports[{i}].nodePort"), "Invalid value: 0: range is full".into())),
            }
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(causes)
    }
}

fn is_port_name(s: &str) -> bool {
    // IANA_SVC_NAME: at most 15 lowercase alphanumerics or '-', with a letter, no "--".
    !s.is_empty()
        && s.len() <= 15
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

/// Field validation of a Service (after defaulting and allocation).
pub fn validate(v: &Value, causes: &mut Vec<Cause>) {
    let t = typ(v);
    if !["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"].contains(&t) {
        causes.push(cause("FieldValueNotSupported", "spec.type", format!("Unsupported value: \"{t}\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"")));
        return;
    }
    if t == "ExternalName" && v.pointer("/spec/externalName").and_then(Value::as_str).unwrap_or("").is_empty() {
        causes.push(cause("FieldValueRequired", "spec.externalName", "Required value".into()));
    }
    let headless = v.pointer("/spec/clusterIP").and_then(Value::as_str) == Some("None");
    let ports = v.pointer("/spec/ports").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    if ports.is_empty() && t != "ExternalName" && !headless {
        causes.push(cause("FieldValueRequired", "spec.ports", "Required value".into()));
    }
    let mut names = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let f = |x: &str| format!("spec.ports[{i}].{x}");
        let name = p.get("name").and_then(Value::as_str).unwrap_or("");
        if ports.len() > 1 && name.is_empty() {
            causes.push(cause("FieldValueRequired", &f("name"), "Required value".into()));
        } else if !name.is_empty() && !names.insert(name.to_string()) {
            causes.push(cause("FieldValueDuplicate", &f("name"), format!("Duplicate value: \"{name}\"")));
        }
        match p.get("port").and_then(Value::as_i64) {
            Some(n) if (1..=65535).contains(&n) => {}
            Some(n) => causes.push(cause("FieldValueInvalid", &f("port"), format!("Invalid value: {n}: must be between 1 and 65535, inclusive"))),
            None => causes.push(cause("FieldValueRequired", &f("port"), "Required value".into())),
        }
        let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
        if !["TCP", "UDP", "SCTP"].contains(&proto) {
            causes.push(cause("FieldValueNotSupported", &f("protocol"), format!("Unsupported value: \"{proto}\": supported values: \"SCTP\", \"TCP\", \"UDP\"")));
        }
        match p.get("targetPort") {
            Some(Value::Number(n)) if !(1..=65535).contains(&n.as_i64().unwrap_or(0)) => {
                causes.push(cause("FieldValueInvalid", &f("targetPort"), format!("Invalid value: {n}: must be between 1 and 65535, inclusive")))
            }
            Some(Value::String(s)) if !is_port_name(s) => causes.push(cause("FieldValueInvalid", &f("targetPort"), format!("Invalid value: \"{s}\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"))),
            _ => {}
        }
    }
}

/// What an update may not change: the cluster IP once set.
pub fn immutable(v: &Value, old: &Value, causes: &mut Vec<Cause>) {
    let (o, n) = (old.pointer("/spec/clusterIP").and_then(Value::as_str).unwrap_or(""), v.pointer("/spec/clusterIP").and_then(Value::as_str).unwrap_or(""));
    let type_change_to_external = typ(v) == "ExternalName";
    if !o.is_empty() && o != n && !type_change_to_external {
        causes.push(cause("FieldValueInvalid", "spec.clusterIPs[0]", format!("Invalid value: []string{{\"{n}\"}}: may not change once set")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(spec: Value) -> Value {
        json!({"apiVersion":"v1","kind":"Service","metadata":{"name":"web","namespace":"d"},"spec":spec})
    }

    #[test]
    fn defaults_like_the_real_server() {
        let mut s = svc(json!({"ports":[{"port":80}],"selector":{"app":"web"}}));
        defaults(&mut s);
        allocate(&mut s, &Taken::default(), 7).unwrap();
        let spec = &s["spec"];
        assert_eq!(spec["type"], "ClusterIP");
        assert_eq!(spec["ports"][0], json!({"port":80,"protocol":"TCP","targetPort":80}));
        assert_eq!(spec["ipFamilies"], json!(["IPv4"]));
        assert_eq!(spec["sessionAffinity"], "None");
        let ip: Ipv4Addr = spec["clusterIP"].as_str().unwrap().parse().unwrap();
        assert!(in_range(ip) && ip != KUBERNETES_SERVICE_IP);
        assert_eq!(spec["clusterIPs"], json!([ip.to_string()]));
        assert_eq!(s["status"], json!({"loadBalancer":{}}));
        let mut errs = Vec::new();
        validate(&s, &mut errs);
        assert!(errs.is_empty(), "{errs:?}");
    }

    #[test]
    fn allocation_skips_what_is_taken_and_refuses_bad_choices() {
        let mut a = svc(json!({"ports":[{"port":80}]}));
        defaults(&mut a);
        allocate(&mut a, &Taken::default(), 0).unwrap();
        assert_eq!(a["spec"]["clusterIP"], "10.96.0.2");
        let taken = Taken::from_services([&a], None);
        let mut b = svc(json!({"ports":[{"port":80}]}));
        allocate(&mut b, &taken, 0).unwrap();
        assert_eq!(b["spec"]["clusterIP"], "10.96.0.3");
        let mut dup = svc(json!({"clusterIP":"10.96.0.2","ports":[{"port":80}]}));
        let e = allocate(&mut dup, &taken, 0).unwrap_err();
        assert_eq!(e[0].message, "Invalid value: []string{\"10.96.0.2\"}: failed to allocate IP 10.96.0.2: provided IP is already allocated");
        let mut outside = svc(json!({"clusterIP":"192.168.1.1","ports":[{"port":80}]}));
        assert!(allocate(&mut outside, &taken, 0).unwrap_err()[0].message.contains("not in the valid range. The range of valid IPs is 10.96.0.0/12"));
        // Updating the same Service does not count its own address as taken.
        assert!(Taken::from_services([&a], Some(("d", "web"))).ips.is_empty());
    }

    #[test]
    fn node_ports() {
        let mut s = svc(json!({"type":"NodePort","ports":[{"name":"a","port":80},{"name":"b","port":81,"nodePort":30000}]}));
        defaults(&mut s);
        allocate(&mut s, &Taken::default(), 0).unwrap();
        assert_eq!(s["spec"]["ports"][0]["nodePort"], 30001);
        assert_eq!(s["spec"]["externalTrafficPolicy"], "Cluster");
        let mut c = svc(json!({"ports":[{"port":80,"nodePort":30005}]}));
        let e = allocate(&mut c, &Taken::default(), 0).unwrap_err();
        assert_eq!(e[0].field, "spec.ports[0].nodePort");
        assert_eq!(e[0].reason, "FieldValueForbidden");
    }

    #[test]
    fn validation_and_updates() {
        let mut errs = Vec::new();
        validate(&svc(json!({"type":"Weird"})), &mut errs);
        assert_eq!(errs[0].field, "spec.type");
        errs.clear();
        validate(&svc(json!({"ports":[{"port":0,"protocol":"TCP"},{"port":80}]})), &mut errs);
        let fields: Vec<&str> = errs.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, vec!["spec.ports[0].name", "spec.ports[0].port", "spec.ports[1].name"]);
        let old = svc(json!({"clusterIP":"10.96.0.9","clusterIPs":["10.96.0.9"],"type":"NodePort","ports":[{"port":80,"protocol":"TCP","nodePort":30010}]}));
        let mut new = svc(json!({"type":"NodePort","ports":[{"port":80,"protocol":"TCP"}]}));
        carry_allocated(&mut new, &old);
        assert_eq!(new["spec"]["clusterIP"], "10.96.0.9");
        assert_eq!(new["spec"]["ports"][0]["nodePort"], 30010);
        let mut changed = old.clone();
        changed["spec"]["clusterIP"] = json!("10.96.0.10");
        errs.clear();
        immutable(&changed, &old, &mut errs);
        assert_eq!(errs[0].message, "Invalid value: []string{\"10.96.0.10\"}: may not change once set");
    }

    #[test]
    fn a_type_change_drops_what_only_the_old_type_needed() {
        let old = json!({"spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.5", "externalTrafficPolicy": "Cluster", "allocateLoadBalancerNodePorts": true,
            "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}]}});
        let mut to_cip = old.clone();
        to_cip["spec"]["type"] = json!("ClusterIP");
        drop_type_dependent(&mut to_cip, &old);
        assert_eq!(to_cip["spec"], json!({"type": "ClusterIP", "clusterIP": "10.96.0.5", "ports": [{"port": 80, "protocol": "TCP"}]}));
        // To NodePort the node port stays; a node port the client changed is its own
        // choice and left for validation to judge.
        let mut to_np = old.clone();
        to_np["spec"]["type"] = json!("NodePort");
        drop_type_dependent(&mut to_np, &old);
        assert_eq!((to_np["spec"]["ports"][0]["nodePort"].clone(), to_np["spec"]["externalTrafficPolicy"].clone(), to_np["spec"].get("allocateLoadBalancerNodePorts")), (json!(30080), json!("Cluster"), None));
        let mut changed = to_cip.clone();
        changed["spec"]["ports"][0]["nodePort"] = json!(30099);
        drop_type_dependent(&mut changed, &old);
        assert_eq!(changed["spec"]["ports"][0]["nodePort"], json!(30099));
    }
}

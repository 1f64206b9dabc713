//! The script builder, checked as text, and by the kernel itself (`nft -c`, which
//! validates without applying) where nft is present and we are root.

use super::diff::diff;
use super::rules::{backends, ruleset, script, table_name, NodeInfo};
use k8s_openapi::api::core::v1::{ClientIPConfig, Service, ServicePort, ServiceSpec, SessionAffinityConfig};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

fn svc(name: &str, ip: &str, port: i32, node_port: Option<i32>) -> Service {
    Service {
        metadata: ObjectMeta { name: Some(name.into()), namespace: Some("ns".into()), ..Default::default() },
        spec: Some(ServiceSpec {
            type_: Some(if node_port.is_some() { "NodePort" } else { "ClusterIP" }.into()),
            cluster_ip: Some(ip.into()),
            ports: Some(vec![ServicePort { name: Some("http".into()), port, node_port, protocol: Some("TCP".into()), ..Default::default() }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn slice(svc: &str, eps: &[(&str, bool, &str)]) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta { name: Some(format!("{svc}-abcde")), namespace: Some("ns".into()), labels: Some([("kubernetes.io/service-name".to_string(), svc.to_string())].into()), ..Default::default() },
        address_type: "IPv4".into(),
        ports: Some(vec![EndpointPort { name: Some("http".into()), port: Some(8080), protocol: Some("TCP".into()), app_protocol: None }]),
        endpoints: Some(eps.iter().map(|(ip, ready, node)| Endpoint { addresses: vec![ip.to_string()], conditions: Some(EndpointConditions { ready: Some(*ready), ..Default::default() }), node_name: Some(node.to_string()), ..Default::default() }).collect()),
    }
}

fn node() -> NodeInfo {
    NodeInfo { name: "n1".into(), bridge: Some("flab12-n1".into()) }
}

/// Checks the script with the kernel when we can; true when it did.
fn kernel_accepts(text: &str) -> bool {
    if unsafe { libc::geteuid() } != 0 || !super::available() {
        return false;
    }
    use std::io::Write;
    let mut child = std::process::Command::new("nft").args(["-c", "-f", "-"]).stdin(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "nft -c rejected the script:\n{}\n{text}", String::from_utf8_lossy(&out.stderr));
    true
}

#[test]
fn table_names_are_short_and_per_agent() {
    let a = table_name("ab12-node-1");
    assert!(a.starts_with("flotilla-") && a.len() == "flotilla-".len() + 8, "{a}");
    assert_ne!(a, table_name("cd34-node-1"));
}

#[test]
fn only_ready_endpoints_of_the_matching_port_serve() {
    let s = svc("web", "10.96.0.10", 80, None);
    let sl = slice("web", &[("10.244.0.2", true, "n1"), ("10.244.0.3", false, "n1"), ("10.244.1.2", true, "n2")]);
    let other = slice("db", &[("10.244.0.9", true, "n1")]);
    let b = backends(&s, &s.spec.as_ref().unwrap().ports.as_ref().unwrap()[0], &[&sl, &other], "n1");
    let ips: Vec<(String, bool)> = b.iter().map(|b| (b.ip.to_string(), b.local)).collect();
    assert_eq!(ips, [("10.244.0.2".to_string(), true), ("10.244.1.2".to_string(), false)]);
    assert!(b.iter().all(|b| b.port == 8080));
}

#[test]
fn cluster_ip_service_balances_over_its_endpoints() {
    let s = svc("web", "10.96.0.10", 80, None);
    let sl = slice("web", &[("10.244.0.2", true, "n1"), ("10.244.1.2", true, "n2")]);
    let t = script("flotilla-test0001", &node(), &[&s], &[&sl]);
    assert!(t.starts_with("add table ip flotilla-test0001\ndelete table ip flotilla-test0001\ntable ip flotilla-test0001 {"), "{t}");
    assert!(t.contains("10.96.0.10 . tcp . 80 : goto service-"), "{t}");
    assert!(t.contains("numgen random mod 2 vmap { 0 : goto endpoint-"), "{t}");
    assert!(t.contains("meta l4proto tcp dnat to 10.244.0.2:8080") && t.contains("meta l4proto tcp dnat to 10.244.1.2:8080"), "{t}");
    assert!(t.contains("ct status dnat iifname \"flab12-n1\" oifname \"flab12-n1\""), "hairpin across the bridge: {t}");
    assert!(!t.contains("goto reject-chain"), "{t}");
    kernel_accepts(&t);
}

#[test]
fn a_service_without_endpoints_is_rejected() {
    let s = svc("web", "10.96.0.10", 80, Some(30080));
    let t = script("flotilla-test0002", &node(), &[&s], &[&slice("web", &[("10.244.0.3", false, "n1")])]);
    assert!(t.contains("10.96.0.10 . tcp . 80 : goto reject-chain"), "{t}");
    assert!(t.contains("tcp . 30080 : goto reject-chain"), "{t}");
    assert!(!t.contains("dnat to"), "{t}");
    kernel_accepts(&t);
}

#[test]
fn node_ports_masquerade_and_local_policies_keep_to_the_node() {
    let mut s = svc("web", "10.96.0.10", 80, Some(30080));
    let spec = s.spec.as_mut().unwrap();
    spec.external_traffic_policy = Some("Local".into());
    spec.internal_traffic_policy = Some("Local".into());
    let sl = slice("web", &[("10.244.0.2", true, "n1"), ("10.244.1.2", true, "n2")]);
    let t = script("flotilla-test0003", &node(), &[&s], &[&sl]);
    assert!(t.contains("tcp . 30080 : goto external-"), "{t}");
    assert!(t.contains(": goto local-"), "internalTrafficPolicy Local: {t}");
    let local = t.split("\tchain local-").nth(1).unwrap().split("\t}").next().unwrap();
    assert!(local.contains("numgen random mod 1 ") && !local.contains("10.244.1.2"), "{local}");
    kernel_accepts(&t);
    // Cluster policy: every node port connection is masqueraded.
    let plain = svc("api", "10.96.0.11", 80, Some(30081));
    let t = script("flotilla-test0004", &node(), &[&plain], &[&slice("api", &[("10.244.1.2", true, "n2")])]);
    let ext = t.split("\tchain external-").nth(1).unwrap().split("\t}").next().unwrap();
    assert!(ext.contains("jump mark-for-masquerade") && ext.contains("goto service-"), "{ext}");
    kernel_accepts(&t);
}

#[test]
fn client_ip_affinity_remembers_the_endpoint() {
    let mut s = svc("web", "10.96.0.10", 80, None);
    let spec = s.spec.as_mut().unwrap();
    spec.session_affinity = Some("ClientIP".into());
    spec.session_affinity_config = Some(SessionAffinityConfig { client_ip: Some(ClientIPConfig { timeout_seconds: Some(60) }) });
    let sl = slice("web", &[("10.244.0.2", true, "n1"), ("10.244.1.2", true, "n2")]);
    let t = script("flotilla-test0005", &node(), &[&s], &[&sl]);
    assert!(t.contains("flags dynamic,timeout; timeout 60s;"), "{t}");
    assert!(t.contains("ip saddr @affinity-") && t.contains("update @affinity-"), "{t}");
    kernel_accepts(&t);
}

#[test]
fn headless_and_external_name_services_get_no_rules() {
    let mut h = svc("h", "None", 80, None);
    h.spec.as_mut().unwrap().cluster_ip = Some("None".into());
    let mut x = svc("x", "", 80, None);
    x.spec.as_mut().unwrap().type_ = Some("ExternalName".into());
    let t = script("flotilla-test0006", &node(), &[&h, &x], &[]);
    assert!(!t.contains("goto service-") && !t.contains("reject-chain,") && !t.contains(" : goto"), "{t}");
    kernel_accepts(&t);
}

#[test]
fn load_balancer_addresses_lead_to_the_external_chain_or_are_refused() {
    use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, ServiceStatus};
    let mut s = svc("web", "10.96.0.12", 80, None);
    s.spec.as_mut().unwrap().type_ = Some("LoadBalancer".into());
    s.status = Some(ServiceStatus { load_balancer: Some(LoadBalancerStatus { ingress: Some(vec![LoadBalancerIngress { ip: Some("127.0.100.1".into()), ..Default::default() }]) }), ..Default::default() });
    let sl = slice("web", &[("10.244.0.2", true, "n1")]);
    let t = script("flotilla-test0007", &node(), &[&s], &[&sl]);
    assert!(t.contains("127.0.100.1 . tcp . 80 : goto external-"), "{t}");
    let ext = t.split("\tchain external-").nth(1).unwrap().split("\t}").next().unwrap();
    assert!(ext.contains("jump mark-for-masquerade") && ext.contains("goto service-"), "{ext}");
    kernel_accepts(&t);
    let t = script("flotilla-test0008", &node(), &[&s], &[]);
    assert!(t.contains("127.0.100.1 . tcp . 80 : goto reject-chain"), "{t}");
    kernel_accepts(&t);
    // The same address on a Service no longer of type LoadBalancer is not served.
    s.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
    assert!(!script("flotilla-test0009", &node(), &[&s], &[&sl]).contains("127.0.100.1"));
}

/// A table applied for real for the length of a test (root with nft only), then removed.
struct LiveTable(&'static str);

impl LiveTable {
    fn apply(&self, text: &str) {
        use std::io::Write;
        let mut child = std::process::Command::new("nft").args(["-f", "-"]).stdin(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "nft refused:\n{}\n{text}", String::from_utf8_lossy(&out.stderr));
    }

    fn nft(&self, args: &[&str]) -> String {
        let o = std::process::Command::new("nft").args(args).output().unwrap();
        assert!(o.status.success(), "nft {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

impl Drop for LiveTable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("nft").args(["delete", "table", "ip", self.0]).output();
    }
}

fn live() -> bool {
    (unsafe { libc::geteuid() }) == 0 && super::available()
}

fn affine(name: &str, ip: &str) -> Service {
    let mut s = svc(name, ip, 80, None);
    let spec = s.spec.as_mut().unwrap();
    spec.session_affinity = Some("ClientIP".into());
    spec.session_affinity_config = Some(SessionAffinityConfig { client_ip: Some(ClientIPConfig { timeout_seconds: Some(60) }) });
    s
}

#[test]
fn an_unchanged_ruleset_needs_no_nft_run() {
    let s = svc("web", "10.96.0.10", 80, None);
    let sl = slice("web", &[("10.244.0.2", true, "n1")]);
    let a = ruleset("flotilla-testd001", &node(), &[&s], &[&sl]);
    assert_eq!(diff(&a, &a.clone()), None);
}

#[test]
fn a_new_endpoint_changes_its_service_only_and_affinity_survives() {
    let (web, api) = (affine("web", "10.96.0.10"), svc("api", "10.96.0.11", 80, None));
    let api_sl = slice("api", &[("10.244.0.9", true, "n1")]);
    let before = ruleset("flotilla-testd002", &node(), &[&web, &api], &[&slice("web", &[("10.244.0.2", true, "n1")]), &api_sl]);
    let after = ruleset("flotilla-testd002", &node(), &[&web, &api], &[&slice("web", &[("10.244.0.2", true, "n1"), ("10.244.0.3", true, "n1")]), &api_sl]);
    let d = diff(&before, &after).unwrap();
    assert!(!d.contains("delete table") && !d.contains("delete element") && !d.contains("delete set"), "{d}");
    assert!(d.contains("add set ip flotilla-testd002 affinity-") && d.contains("__10.244.0.3/8080 {"), "{d}");
    assert!(d.contains("add chain ip flotilla-testd002 endpoint-") && d.contains("flush chain ip flotilla-testd002 service-"), "{d}");
    assert!(!d.contains("ns/api/"), "the other Service is not touched: {d}");
    if !live() {
        return;
    }
    let t = LiveTable("flotilla-testd002");
    t.apply(&before.full());
    let set = before.sets[0].0.clone();
    t.nft(&["add", "element", "ip", t.0, &set, "{ 10.244.0.50 timeout 60s }"]);
    t.apply(&d);
    assert!(t.nft(&["list", "set", "ip", t.0, &set]).contains("10.244.0.50"), "the client's affinity survived");
    let listed = t.nft(&["list", "table", "ip", t.0]);
    assert!(listed.contains("dnat to 10.244.0.3:8080") && listed.contains("numgen random mod 2"), "{listed}");
}

#[test]
fn a_removed_service_takes_its_elements_chains_and_sets_along() {
    let (web, api) = (affine("web", "10.96.0.10"), svc("api", "10.96.0.11", 80, Some(30081)));
    let (web_sl, api_sl) = (slice("web", &[("10.244.0.2", true, "n1")]), slice("api", &[("10.244.0.9", true, "n1")]));
    let before = ruleset("flotilla-testd003", &node(), &[&web, &api], &[&web_sl, &api_sl]);
    let after = ruleset("flotilla-testd003", &node(), &[&api], &[&api_sl]);
    let d = diff(&before, &after).unwrap();
    assert!(d.contains("delete element ip flotilla-testd003 service-ips { 10.96.0.10 . tcp . 80 }"), "{d}");
    assert!(d.contains("delete chain ip flotilla-testd003 service-") && d.contains("delete set ip flotilla-testd003 affinity-"), "{d}");
    assert!(!d.contains("30081") && !d.contains("add "), "{d}");
    // And back to no endpoints at all: the ClusterIP is rejected instead.
    let empty = ruleset("flotilla-testd003", &node(), &[&api], &[]);
    let d2 = diff(&after, &empty).unwrap();
    assert!(d2.contains("add element ip flotilla-testd003 no-endpoint-services { 10.96.0.11 . tcp . 80 : goto reject-chain }"), "{d2}");
    if !live() {
        return;
    }
    let t = LiveTable("flotilla-testd003");
    t.apply(&before.full());
    t.apply(&d);
    t.apply(&d2);
    let listed = t.nft(&["list", "table", "ip", t.0]);
    assert!(!listed.contains("10.96.0.10") && !listed.contains("affinity-") && !listed.contains("ns/web/") && !listed.contains("ns/api/"), "{listed}");
}

#[test]
fn a_changed_affinity_timeout_rebuilds_the_table() {
    let web = affine("web", "10.96.0.10");
    let mut longer = web.clone();
    longer.spec.as_mut().unwrap().session_affinity_config = Some(SessionAffinityConfig { client_ip: Some(ClientIPConfig { timeout_seconds: Some(120) }) });
    let sl = slice("web", &[("10.244.0.2", true, "n1")]);
    let d = diff(&ruleset("t", &node(), &[&web], &[&sl]), &ruleset("t", &node(), &[&longer], &[&sl])).unwrap();
    assert!(d.starts_with("add table ip t\ndelete table ip t\n"), "{d}");
}

#[test]
fn only_pods_behind_this_agents_bridge_are_served_its_cluster_ips() {
    let t = script("flotilla-test0010", &node(), &[&svc("web", "10.96.0.10", 80, None)], &[&slice("web", &[("10.244.0.2", true, "n1")])]);
    let pre = t.split("\tchain nat-prerouting {").nth(1).unwrap().split("\t}").next().unwrap();
    assert!(pre.contains("iifname \"flab12-n1\" jump services") && pre.contains("vmap @service-nodeports"), "{pre}");
    assert!(!pre.lines().any(|l| l.trim() == "jump services"), "{pre}");
    kernel_accepts(&t);
}

//! Discovery, generated from `schema::registry::RESOURCES` only: aggregated v2
//! (`/api`, `/apis` when the Accept header asks for APIGroupDiscoveryList), the legacy
//! APIVersions/APIGroupList/APIResourceList documents, and `/version`.

use schema::registry::{self, ResourceInfo, RESOURCES};
use serde_json::{json, Value};

pub const AGGREGATED_CONTENT_TYPE: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Does the Accept header ask for the aggregated v2 form?
pub fn wants_aggregated(accept: &str) -> bool {
    accept.split(',').any(|a| a.contains("as=APIGroupDiscoveryList") && a.contains("v=v2") && !a.contains("v=v2beta1"))
}

pub fn version() -> Value {
    json!({"major": "1", "minor": "32", "gitVersion": "v1.32.4-flotilla", "gitCommit": "59526cd4867447956156ae3a602fcbac5b2e9b8a",
           "gitTreeState": "clean", "buildDate": "2025-04-22T16:00:00Z", "goVersion": "go1.23.6", "compiler": "gc", "platform": "linux/amd64"})
}

/// (group, version, kind, verbs) of one subresource.
fn subresource(res: &ResourceInfo, sub: &str) -> (&'static str, &'static str, &'static str, &'static [&'static str]) {
    match sub {
        "scale" => ("autoscaling", "v1", "Scale", &["get", "patch", "update"]),
        "token" => ("authentication.k8s.io", "v1", "TokenRequest", &["create"]),
        "log" => ("", "v1", "Pod", &["get"]),
        "binding" => ("", "v1", "Binding", &["create"]),
        "eviction" => ("policy", "v1", "Eviction", &["create"]),
        "exec" => ("", "v1", "PodExecOptions", &["create", "get"]),
        "attach" => ("", "v1", "PodAttachOptions", &["create", "get"]),
        "portforward" => ("", "v1", "PodPortForwardOptions", &["create", "get"]),
        "status" => (res.group, res.version, res.kind, &["get", "patch", "update"]),
        _ => (res.group, res.version, res.kind, &["get"]),
    }
}

fn aggregated_resource(res: &ResourceInfo) -> Value {
    let subs: Vec<Value> = res
        .subresources
        .iter()
        .map(|s| {
            let (g, v, k, verbs) = subresource(res, s);
            json!({"subresource": s, "responseKind": {"group": g, "version": v, "kind": k}, "verbs": verbs})
        })
        .collect();
    let mut r = json!({"resource": res.plural, "responseKind": {"group": res.group, "version": res.version, "kind": res.kind},
        "scope": if res.namespaced { "Namespaced" } else { "Cluster" }, "singularResource": res.singular, "verbs": res.verbs});
    if !res.short_names.is_empty() {
        r["shortNames"] = json!(res.short_names);
    }
    if !res.categories.is_empty() {
        r["categories"] = json!(res.categories);
    }
    if !subs.is_empty() {
        r["subresources"] = Value::Array(subs);
    }
    r
}

fn groups(core: bool) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for (g, _) in registry::group_versions() {
        if g.is_empty() == core && !out.contains(&g) {
            out.push(g);
        }
    }
    out
}

fn versions_of(group: &str) -> Vec<&'static str> {
    registry::group_versions().into_iter().filter(|(g, _)| *g == group).map(|(_, v)| v).collect()
}

/// `/api` (core = true) or `/apis` as an APIGroupDiscoveryList.
pub fn aggregated(core: bool) -> Value {
    let items: Vec<Value> = groups(core)
        .into_iter()
        .map(|g| {
            let versions: Vec<Value> = versions_of(g)
                .into_iter()
                .map(|v| {
                    let resources: Vec<Value> = RESOURCES.iter().filter(|r| r.group == g && r.version == v).map(aggregated_resource).collect();
                    json!({"version": v, "resources": resources, "freshness": "Current"})
                })
                .collect();
            let mut meta = json!({"creationTimestamp": null});
            if !core {
                meta["name"] = json!(g);
            }
            json!({"metadata": meta, "versions": versions})
        })
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

pub fn legacy_api(server_address: &str) -> Value {
    json!({"kind": "APIVersions", "versions": versions_of(""),
           "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]})
}

fn api_group(g: &str) -> Value {
    let vs: Vec<Value> = versions_of(g).into_iter().map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v})).collect();
    let preferred = vs.first().cloned().unwrap_or(Value::Null);
    json!({"name": g, "versions": vs, "preferredVersion": preferred})
}

pub fn legacy_apis() -> Value {
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups(false).into_iter().map(api_group).collect::<Vec<_>>()})
}

/// `/apis/<group>`, or None when the group is not served.
pub fn group(g: &str) -> Option<Value> {
    if g.is_empty() || !groups(false).contains(&g) {
        return None;
    }
    let mut v = api_group(g);
    v["kind"] = json!("APIGroup");
    v["apiVersion"] = json!("v1");
    Some(v)
}

/// `/api/v1` or `/apis/<g>/<v>` as an APIResourceList, or None when not served.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for r in RESOURCES.iter().filter(|r| r.group == group && r.version == version) {
        let mut e = json!({"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind, "verbs": r.verbs});
        if !r.short_names.is_empty() {
            e["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            e["categories"] = json!(r.categories);
        }
        resources.push(e);
        for s in r.subresources {
            let (g, v, k, verbs) = subresource(r, s);
            let mut e = json!({"name": format!("{}/{s}", r.plural), "singularName": "", "namespaced": r.namespaced, "kind": k, "verbs": verbs});
            if (g, v) != (r.group, r.version) {
                e["group"] = json!(g);
                e["version"] = json!(v);
            }
            resources.push(e);
        }
    }
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregated_core_has_pods_with_subresources() {
        let v = aggregated(true);
        assert_eq!(v["kind"], "APIGroupDiscoveryList");
        let res = v["items"][0]["versions"][0]["resources"].as_array().unwrap();
        let pods = res.iter().find(|r| r["resource"] == "pods").unwrap();
        assert_eq!(pods["scope"], "Namespaced");
        assert_eq!(pods["shortNames"], json!(["po"]));
        assert_eq!(pods["responseKind"]["kind"], "Pod");
        assert!(pods["subresources"].as_array().unwrap().iter().any(|s| s["subresource"] == "log"));
        assert!(v["items"][0]["metadata"].get("name").is_none());
    }

    #[test]
    fn aggregated_groups_and_scale() {
        let v = aggregated(false);
        let apps = v["items"].as_array().unwrap().iter().find(|i| i["metadata"]["name"] == "apps").unwrap();
        let d = apps["versions"][0]["resources"].as_array().unwrap().iter().find(|r| r["resource"] == "deployments").unwrap();
        let scale = d["subresources"].as_array().unwrap().iter().find(|s| s["subresource"] == "scale").unwrap();
        assert_eq!(scale["responseKind"], json!({"group":"autoscaling","version":"v1","kind":"Scale"}));
        assert!(v["items"].as_array().unwrap().iter().any(|i| i["metadata"]["name"] == "node.k8s.io"));
    }

    #[test]
    fn legacy_lists() {
        let v = resource_list("apps", "v1").unwrap();
        let scale = v["resources"].as_array().unwrap().iter().find(|r| r["name"] == "deployments/scale").unwrap();
        assert_eq!(scale["group"], "autoscaling");
        assert!(resource_list("nope", "v1").is_none());
        // Every non-core group in the registry, once.
        let groups: std::collections::BTreeSet<&str> = RESOURCES.iter().map(|r| r.group).filter(|g| !g.is_empty()).collect();
        assert_eq!(legacy_apis()["groups"].as_array().unwrap().len(), groups.len());
        assert!(group("apps").is_some());
        assert!(wants_aggregated("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"));
        assert!(!wants_aggregated("application/json, */*"));
        assert_eq!(version()["minor"], "32");
    }
}

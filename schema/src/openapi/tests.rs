//! Generation checks: every registry kind is published with its GVK, every reference
//! resolves in both document forms, and the list extensions are where kubectl looks.

use super::*;

fn all_refs(v: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    collect_refs(v, &mut out);
    out
}

#[test]
fn every_registry_kind_has_a_schema_with_its_gvk() {
    let defs = definitions();
    for r in RESOURCES {
        let d = defs.get(&schema_name(r)).unwrap_or_else(|| panic!("{} has no schema", r.kind));
        let gvks = d["x-kubernetes-group-version-kind"].as_array().unwrap();
        assert!(gvks.contains(&json!({"group": r.group, "version": r.version, "kind": r.kind})), "{}", r.kind);
        assert!(d["properties"]["metadata"].is_object() || r.kind.starts_with("SelfSubject"), "{}", r.kind);
        let v3 = v3_document(&gv_path(r.group, r.version)).unwrap();
        assert_eq!(v3["components"]["schemas"][schema_name(r)]["x-kubernetes-group-version-kind"], d["x-kubernetes-group-version-kind"]);
    }
    assert_eq!(schema_name(registry::by_kind("v1", "Pod").unwrap()), "io.k8s.api.core.v1.Pod");
    assert!(defs.contains_key("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"));
    assert!(defs["io.k8s.api.core.v1.Pod"].get("required").is_none(), "metadata is never required");
    assert_eq!(defs["io.k8s.api.core.v1.Container"]["required"], json!(["name"]));
    assert!(defs.contains_key("io.k8s.apimachinery.pkg.api.resource.Quantity"));
    assert!(defs.contains_key("io.k8s.apimachinery.pkg.util.intstr.IntOrString"));
}

#[test]
fn refs_resolve_in_v2_and_v3() {
    let v2 = v2_document();
    for r in all_refs(&v2) {
        assert!(v2["definitions"].get(&r).is_some(), "v2 dangling {r}");
    }
    for p in v3_paths() {
        let d = v3_document(&p).unwrap();
        let text = serde_json::to_string(&d).unwrap();
        assert!(!text.contains(V2_PREFIX), "{p} has a v2 ref");
        for r in all_refs(&d) {
            assert!(d["components"]["schemas"].get(&r).is_some(), "{p}: dangling {r}");
        }
    }
    // A described ref is wrapped, a bare one kept.
    let core = v3_document("api/v1").unwrap();
    let meta = &core["components"]["schemas"]["io.k8s.api.core.v1.Pod"]["properties"]["metadata"];
    assert_eq!(meta["allOf"][0]["$ref"], "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta");
    assert!(meta["description"].as_str().unwrap().contains("Standard object's metadata"));
    assert!(v3_document("apis/nope/v1").is_none());
}

#[test]
fn merge_keys_are_on_the_lists() {
    let defs = definitions();
    let prop = |d: &str, p: &str| defs[d]["properties"][p].clone();
    let c = prop("io.k8s.api.core.v1.PodSpec", "containers");
    assert_eq!(c["x-kubernetes-patch-merge-key"], "name");
    assert_eq!(c["x-kubernetes-patch-strategy"], "merge");
    assert_eq!(c["x-kubernetes-list-type"], "map");
    assert_eq!(c["x-kubernetes-list-map-keys"], json!(["name"]));
    assert_eq!(prop("io.k8s.api.core.v1.Container", "ports")["x-kubernetes-patch-merge-key"], "containerPort");
    assert_eq!(prop("io.k8s.api.core.v1.Container", "env")["x-kubernetes-patch-merge-key"], "name");
    assert_eq!(prop("io.k8s.api.core.v1.PodSpec", "volumes")["x-kubernetes-patch-merge-key"], "name");
    assert_eq!(prop("io.k8s.api.core.v1.PodSpec", "tolerations")["x-kubernetes-list-type"], "atomic");
    assert_eq!(prop("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "finalizers")["x-kubernetes-list-type"], "set");
    assert_eq!(prop("io.k8s.api.core.v1.ServiceSpec", "ports")["x-kubernetes-list-map-keys"], json!(["port", "protocol"]));
    assert_eq!(prop("io.k8s.api.core.v1.ServiceSpec", "ports")["x-kubernetes-patch-merge-key"], "port");
}

#[test]
fn operations_carry_gvk_and_field_validation() {
    let d = v3_document("apis/apps/v1").unwrap();
    let patch = &d["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
    assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "Deployment");
    assert!(patch["parameters"].as_array().unwrap().iter().any(|p| p["name"] == "fieldValidation"));
    assert!(v3_document("api/v1").unwrap()["paths"]["/api/v1/namespaces/{name}"]["patch"].is_object());
    let bytes = serde_json::to_vec(&d).unwrap();
    assert_eq!(hash(&bytes), hash(&serde_json::to_vec(&v3_document("apis/apps/v1").unwrap()).unwrap()));
}

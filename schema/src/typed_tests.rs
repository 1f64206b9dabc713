//! Unit tests of the typed walks: field sets of configurations, the comparison that
//! Update entries come from, the apply merge, and the removal pruning uses.

use super::*;
use serde_json::json;

fn deploy_config() -> Value {
    json!({"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web","labels":{"app":"web"}},
        "spec":{"replicas":2,"selector":{"matchLabels":{"app":"web"}},
          "template":{"metadata":{"labels":{"app":"web"}},"spec":{"containers":[
            {"name":"web","image":"nginx:1","ports":[{"containerPort":80}],"command":["a","b"]}]}}}})
}

#[test]
fn field_set_of_a_configuration_in_fields_v1() {
    let s = field_set("Deployment", &deploy_config(), true).unwrap();
    let want = json!({"f:apiVersion":{},"f:kind":{},"f:metadata":{"f:labels":{"f:app":{}},"f:name":{}},
        "f:spec":{"f:replicas":{},"f:selector":{},"f:template":{"f:metadata":{"f:labels":{"f:app":{}}},
          "f:spec":{"f:containers":{"k:{\"name\":\"web\"}":{".":{},"f:command":{},"f:image":{},"f:name":{},
            "f:ports":{"k:{\"containerPort\":80,\"protocol\":\"TCP\"}":{".":{},"f:containerPort":{}}}}}}}}});
    assert_eq!(s.to_fields_v1(), want);
}

#[test]
fn empty_objects_and_sets_are_owned() {
    let s = field_set("Pod", &json!({"metadata":{"finalizers":["a/b"]},"spec":{"securityContext":{}}}), true).unwrap();
    assert_eq!(s.to_fields_v1(), json!({"f:metadata":{"f:finalizers":{"v:\"a/b\"":{}}},"f:spec":{"f:securityContext":{}}}));
}

#[test]
fn bad_keyed_lists_in_a_configuration_are_errors() {
    let dup = json!({"spec":{"containers":[{"name":"a"},{"name":"a"}]}});
    assert_eq!(field_set("Pod", &dup, true).unwrap_err(), ".spec.containers: duplicate entries for key [name=\"a\"]");
    let nokey = json!({"spec":{"containers":[{"image":"x"}]}});
    assert!(field_set("Pod", &nokey, true).unwrap_err().contains("omits key field \"name\""));
    // A live object with such a list owns it whole.
    let s = field_set("Pod", &dup, false).unwrap();
    assert_eq!(s.to_fields_v1(), json!({"f:spec":{"f:containers":{}}}));
}

#[test]
fn comparing_with_the_zero_object_marks_new_maps_with_a_dot() {
    let mut d = deploy_config();
    d["spec"]["strategy"] = json!({"type":"RollingUpdate","rollingUpdate":{"maxSurge":"25%"}});
    let c = compare("Deployment", &crate::fieldtypes::zero_object("Deployment"), &d);
    let v = c.added.to_fields_v1();
    assert_eq!(v["f:spec"]["f:strategy"], json!({"f:rollingUpdate":{".":{},"f:maxSurge":{}},"f:type":{}}));
    assert_eq!(v["f:metadata"]["f:labels"], json!({".":{},"f:app":{}}));
    assert!(v["f:spec"].get(".").is_none());
    assert!(c.modified.is_empty());
}

#[test]
fn comparison_reports_modified_added_and_removed_leaves() {
    let a = deploy_config();
    let mut b = a.clone();
    b["spec"]["replicas"] = json!(3);
    b["metadata"]["labels"]["tier"] = json!("fe");
    b["spec"]["template"]["spec"]["containers"][0].as_object_mut().unwrap().remove("command");
    let c = compare("Deployment", &a, &b);
    assert_eq!(c.modified.to_fields_v1(), json!({"f:spec":{"f:replicas":{}}}));
    assert_eq!(c.added.to_fields_v1(), json!({"f:metadata":{"f:labels":{"f:tier":{}}}}));
    assert_eq!(c.removed.to_fields_v1(), json!({"f:spec":{"f:template":{"f:spec":{"f:containers":{"k:{\"name\":\"web\"}":{"f:command":{}}}}}}}));
    // Atomic lists change as one leaf.
    let mut d = a.clone();
    d["spec"]["template"]["spec"]["containers"][0]["command"] = json!(["a"]);
    let c = compare("Deployment", &a, &d);
    assert_eq!(c.modified.paths().len(), 1);
    assert!(compare("Deployment", &a, &a) == Comparison::default());
}

#[test]
fn merge_keyed_lists_by_key_and_replaces_atomics() {
    let live = json!({"spec":{"selector":{"matchLabels":{"a":"1","b":"2"}},"template":{"spec":{"containers":[
        {"name":"a","image":"a:1","imagePullPolicy":"Always","command":["x"]},{"name":"b","image":"b:1"}]}}}});
    let cfg = json!({"spec":{"selector":{"matchLabels":{"a":"1"}},"template":{"spec":{"containers":[
        {"name":"c","image":"c:1"},{"name":"a","image":"a:2","command":["y","z"]}]}}}});
    let m = merge("Deployment", &live, &cfg);
    assert_eq!(m["spec"]["selector"], json!({"matchLabels":{"a":"1"}}));
    let cs = m["spec"]["template"]["spec"]["containers"].as_array().unwrap();
    let names: Vec<&str> = cs.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["c", "a", "b"]);
    assert_eq!(cs[1], json!({"name":"a","image":"a:2","imagePullPolicy":"Always","command":["y","z"]}));
}

#[test]
fn merge_keeps_live_order_for_shared_items() {
    let live = json!({"spec":{"containers":[{"name":"a"},{"name":"b"},{"name":"c"}]}});
    let cfg = json!({"spec":{"containers":[{"name":"a","image":"1"},{"name":"c","image":"3"}]}});
    let m = merge("Pod", &live, &cfg);
    assert_eq!(m["spec"]["containers"], json!([{"name":"a","image":"1"},{"name":"b"},{"name":"c","image":"3"}]));
}

#[test]
fn remove_items_drops_fields_items_and_emptied_maps() {
    let v = deploy_config();
    let mut gone = FieldSet::new();
    gone.insert(&[Elem::field("metadata"), Elem::field("labels"), Elem::field("app")]);
    gone.insert(&[Elem::field("spec"), Elem::field("replicas")]);
    let port = Elem::Key(r#"{"containerPort":80,"protocol":"TCP"}"#.into());
    let web = Elem::Key(r#"{"name":"web"}"#.into());
    gone.insert(&[Elem::field("spec"), Elem::field("template"), Elem::field("spec"), Elem::field("containers"), web, Elem::field("ports"), port]);
    let out = remove_items("Deployment", &v, &gone).unwrap();
    assert!(out.pointer("/metadata/labels").is_none());
    assert!(out.pointer("/spec/replicas").is_none());
    assert!(out.pointer("/spec/template/spec/containers/0/ports").is_none());
    assert_eq!(out.pointer("/spec/template/spec/containers/0/image"), Some(&json!("nginx:1")));
}

//! Unit tests of field management, as scenarios a kubectl user meets: Update and Apply
//! entries, pruning, conflicts, forcing, co-ownership and the upgrade from client-side apply.

use super::*;
use crate::fieldpath::Elem;

fn scope(manager: &str, sub: &str, now: &str) -> Scope<'static> {
    let mut ignored = FieldSet::new();
    if sub.is_empty() {
        ignored.insert(&[Elem::field("status")]);
    }
    Scope { kind: "Deployment", writer: Writer { manager: manager.into(), api_version: "apps/v1".into(), subresource: sub.into() }, ignored, now: now.into() }
}

fn config(replicas: i64, image: &str, labels: Value) -> Value {
    json!({"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web","namespace":"default","labels":labels},
        "spec":{"replicas":replicas,"selector":{"matchLabels":{"app":"web"}},
          "template":{"metadata":{"labels":{"app":"web"}},"spec":{"containers":[{"name":"web","image":image}]}}}})
}

/// What the store holds after a write: the server-owned metadata the apply never sees.
fn stored(mut v: Value) -> Value {
    crate::object::set_meta(&mut v, "uid", json!("u1"));
    crate::object::set_meta(&mut v, "resourceVersion", json!("5"));
    v
}

fn managers(v: &Value) -> Vec<(String, String, String)> {
    decode(v).unwrap().into_iter().map(|e| (e.manager, format!("{:?}", e.operation), e.subresource)).collect()
}

fn owns(v: &Value, manager: &str, path: &[&str]) -> bool {
    let p: Vec<Elem> = path.iter().map(|s| Elem::field(s)).collect();
    decode(v).unwrap().iter().any(|e| e.manager == manager && e.fields.has(&p))
}

#[test]
fn apply_on_an_absent_object_owns_the_configuration() {
    let out = apply(&scope("kubectl", "", "2026-11-23T08:00:00Z"), None, &config(2, "nginx:1", json!({"app":"web"})), false).unwrap();
    let mf = &out["metadata"]["managedFields"];
    assert_eq!(mf.as_array().unwrap().len(), 1);
    assert_eq!(mf[0]["manager"], "kubectl");
    assert_eq!(mf[0]["operation"], "Apply");
    assert_eq!(mf[0]["apiVersion"], "apps/v1");
    assert_eq!(mf[0]["time"], "2026-11-23T08:00:00Z");
    assert_eq!(mf[0]["fieldsType"], "FieldsV1");
    assert!(mf[0].get("subresource").is_none());
    assert_eq!(mf[0]["fieldsV1"]["f:metadata"], json!({"f:labels":{"f:app":{}}}));
    assert_eq!(mf[0]["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"], json!({"k:{\"name\":\"web\"}":{".":{},"f:image":{},"f:name":{}}}));
    assert!(mf[0]["fieldsV1"].get("f:apiVersion").is_none());
}

#[test]
fn update_on_create_owns_every_field_the_writer_set() {
    let mut v = config(1, "nginx:1", json!({"app":"web"}));
    let s = Scope { ..scope("kubectl-create", "", "2026-11-23T08:00:00Z") };
    record_update(&s, None, &mut v);
    let mf = &v["metadata"]["managedFields"][0];
    assert_eq!(mf["operation"], "Update");
    assert_eq!(mf["fieldsV1"]["f:metadata"]["f:labels"], json!({".":{},"f:app":{}}));
    assert_eq!(mf["fieldsV1"]["f:spec"]["f:replicas"], json!({}));
    assert!(mf["fieldsV1"]["f:spec"].get(".").is_none());
}

#[test]
fn scale_then_apply_with_other_replicas_conflicts_and_force_takes_over() {
    let s = scope("kubectl", "", "2026-11-23T08:00:00Z");
    let live = stored(apply(&s, None, &config(2, "nginx:1", json!({"app":"web"})), false).unwrap());
    // kubectl scale: an Update through the scale subresource.
    let mut scaled = live.clone();
    scaled["spec"]["replicas"] = json!(5);
    record_update(&scope("kubectl", "scale", "2026-11-23T08:01:00Z"), Some(&live), &mut scaled);
    assert!(owns(&scaled, "kubectl", &["spec", "replicas"]));
    assert_eq!(managers(&scaled), [("kubectl".into(), "Apply".into(), "".into()), ("kubectl".into(), "Update".into(), "scale".into())]);
    let apply_owns_replicas = decode(&scaled).unwrap().iter().any(|e| e.operation == Operation::Apply && e.fields.has(&[Elem::field("spec"), Elem::field("replicas")]));
    assert!(!apply_owns_replicas, "the scale took .spec.replicas from the applier");

    let err = apply(&s, Some(&scaled), &config(3, "nginx:1", json!({"app":"web"})), false).unwrap_err();
    assert_eq!(err.to_string(), "Apply failed with 1 conflict: conflict with \"kubectl\" with subresource \"scale\" using apps/v1: .spec.replicas");

    // Applying the value it already has co-owns without a conflict.
    let same = apply(&s, Some(&scaled), &config(5, "nginx:1", json!({"app":"web"})), false).unwrap();
    assert_eq!(decode(&same).unwrap().iter().filter(|e| e.fields.has(&[Elem::field("spec"), Elem::field("replicas")])).count(), 2);

    let forced = apply(&s, Some(&scaled), &config(3, "nginx:1", json!({"app":"web"})), true).unwrap();
    assert_eq!(forced["spec"]["replicas"], 3);
    assert_eq!(managers(&forced), [("kubectl".into(), "Apply".into(), "".into())]);
}

#[test]
fn dropping_a_field_from_the_configuration_removes_it_unless_someone_else_owns_it() {
    let s = scope("kubectl", "", "2026-11-23T08:00:00Z");
    let live = stored(apply(&s, None, &config(2, "nginx:1", json!({"app":"web","tier":"fe","team":"a"})), false).unwrap());
    let mut labelled = live.clone();
    labelled["metadata"]["labels"]["team"] = json!("b");
    record_update(&scope("kubectl-label", "", "2026-11-23T08:01:00Z"), Some(&live), &mut labelled);
    assert!(owns(&labelled, "kubectl-label", &["metadata", "labels", "team"]));
    let out = apply(&s, Some(&labelled), &config(2, "nginx:1", json!({"app":"web"})), false).unwrap();
    assert_eq!(out["metadata"]["labels"], json!({"app":"web","team":"b"}));
    // Nobody owns the labels any more: the map goes with its last label.
    let mut cfg = config(2, "nginx:1", json!({}));
    cfg["metadata"].as_object_mut().unwrap().remove("labels");
    let out = apply(&s, Some(&stored(apply(&s, None, &config(2, "nginx:1", json!({"app":"web"})), false).unwrap())), &cfg, false).unwrap();
    assert!(out.pointer("/metadata/labels").is_none());
}

#[test]
fn a_second_applier_with_disjoint_fields_co_owns_the_object() {
    let s = scope("kubectl", "", "2026-11-23T08:00:00Z");
    let live = stored(apply(&s, None, &config(2, "nginx:1", json!({"app":"web"})), false).unwrap());
    let other = json!({"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web","annotations":{"owner":"team-b"}}});
    let out = stored(apply(&scope("other", "", "2026-11-23T08:02:00Z"), Some(&live), &other, false).unwrap());
    assert_eq!(out["spec"]["replicas"], 2);
    assert_eq!(out["metadata"]["annotations"]["owner"], "team-b");
    assert!(owns(&out, "other", &["metadata", "annotations", "owner"]));
    assert!(owns(&out, "kubectl", &["spec", "replicas"]));
    // The other applier taking the replicas it does not own conflicts with kubectl's Apply.
    let mut grab = other.clone();
    grab["spec"] = json!({"replicas": 4});
    let err = apply(&scope("other", "", "2026-11-23T08:03:00Z"), Some(&out), &grab, false).unwrap_err();
    assert_eq!(err.to_string(), "Apply failed with 1 conflict: conflict with \"kubectl\": .spec.replicas");
}

#[test]
fn kubectl_server_side_apply_takes_over_client_side_apply_fields() {
    let csa = config(2, "nginx:1", json!({"app":"web"}));
    let mut live = csa.clone();
    live["metadata"]["annotations"] = json!({LAST_APPLIED: csa.to_string()});
    record_update(&scope("kubectl-client-side-apply", "", "2026-11-23T08:00:00Z"), None, &mut live);
    let live = stored(live);
    let new = config(2, "nginx:2", json!({"app":"web"}));
    // Any manager but kubectl conflicts over the image.
    let err = apply(&scope("someone", "", "t"), Some(&live), &new, false).unwrap_err();
    assert!(err.to_string().contains("conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.template.spec.containers[name=\"web\"].image"), "{err}");
    let out = apply(&scope("kubectl", "", "2026-11-23T08:05:00Z"), Some(&live), &new, false).unwrap();
    assert_eq!(out["spec"]["template"]["spec"]["containers"][0]["image"], "nginx:2");
    let last: Value = serde_json::from_str(out["metadata"]["annotations"][LAST_APPLIED].as_str().unwrap()).unwrap();
    assert_eq!(last, new);
}

#[test]
fn multiple_conflicts_are_listed_by_manager() {
    let e = FieldsError::Conflicts(vec![
        ("\"a\" using v1".into(), vec![Elem::field("spec"), Elem::field("replicas")]),
        ("\"a\" using v1".into(), vec![Elem::field("spec"), Elem::field("paused")]),
    ]);
    assert_eq!(e.to_string(), "Apply failed with 2 conflicts: conflicts with \"a\" using v1:\n- .spec.replicas\n- .spec.paused");
}

#[test]
fn clients_may_replace_or_reset_managed_fields() {
    let s = scope("kubectl", "", "2026-11-23T08:00:00Z");
    let live = stored(apply(&s, None, &config(2, "nginx:1", json!({"app":"web"})), false).unwrap());
    // kubectl's migration patch: managedFields replaced, nothing else changed.
    let mut new = live.clone();
    let mut entries = decode(&live).unwrap();
    entries[0].manager = "renamed".into();
    crate::object::set_meta(&mut new, "managedFields", encode(&entries));
    record_update(&s, Some(&live), &mut new);
    assert_eq!(managers(&new), [("renamed".into(), "Apply".into(), "".into())]);
    // Garbage is ignored: the live entries stay.
    let mut bad = live.clone();
    crate::object::set_meta(&mut bad, "managedFields", json!([{"manager":"x","operation":"Nope"}]));
    record_update(&s, Some(&live), &mut bad);
    assert_eq!(managers(&bad), [("kubectl".into(), "Apply".into(), "".into())]);
    let mut reset = live.clone();
    crate::object::set_meta(&mut reset, "managedFields", json!([{}]));
    record_update(&s, Some(&live), &mut reset);
    assert_eq!(reset["metadata"]["managedFields"], json!([]));
}

#[test]
fn decode_rejects_bad_entries() {
    let bad = |e: Value| decode(&json!({"metadata":{"managedFields":[e]}})).unwrap_err();
    assert_eq!(bad(json!({"manager":"a","operation":"Apply","apiVersion":"v1"})), "missing fieldsType in managed fields entry 0");
    assert_eq!(bad(json!({"manager":"a","operation":"Apply","apiVersion":"v1","fieldsType":"FieldsV2"})), "invalid fieldsType \"FieldsV2\" in managed fields entry 0");
    assert_eq!(bad(json!({"manager":"a","operation":"Apply","fieldsType":"FieldsV1"})), "apiVersion must not be empty");
    assert!(decode(&json!({"metadata":{"managedFields":{}}})).is_err());
}

#[test]
fn update_managers_past_the_cap_fold_into_ancient_changes() {
    let mut live = config(1, "nginx:1", json!({}));
    let mut entries = Vec::new();
    for i in 0..12 {
        let mut next = live.clone();
        next["metadata"]["labels"][format!("l{i}")] = json!("x");
        entries = update(&scope(&format!("m{i}"), "", &format!("2026-11-23T08:00:{i:02}Z")), Some(&live), &next, entries);
        live = next;
    }
    assert_eq!(entries.len(), MAX_UPDATE_MANAGERS);
    let ancient = entries.iter().find(|e| e.manager == "ancient-changes").unwrap();
    assert!(ancient.fields.has(&[Elem::field("metadata"), Elem::field("labels"), Elem::field("l0")]));
    assert!(ancient.fields.has(&[Elem::field("metadata"), Elem::field("labels"), Elem::field("l2")]));
}

#[test]
fn an_apply_configuration_may_not_carry_managed_fields() {
    let mut c = config(1, "a", json!({}));
    c["metadata"]["managedFields"] = json!([]);
    assert_eq!(apply(&scope("kubectl", "", "t"), None, &c, false).unwrap_err().to_string(), "metadata.managedFields must be nil");
}

/// A small deterministic generator of object-like JSON over the field names whose
/// semantics differ (keyed lists, sets, atomic maps), with missing keys and duplicates.
struct Gen(u64);

impl Gen {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
    fn value(&mut self, depth: u32) -> Value {
        const KEYS: &[&str] = &["metadata", "labels", "spec", "replicas", "containers", "name", "image", "ports", "containerPort", "protocol", "finalizers", "selector", "matchLabels", "template", "command", "status", "conditions", "type", "a"];
        match if depth == 0 { self.next(4) } else { self.next(7) } {
            0 => json!(["x", "y", "z"][self.next(3) as usize]),
            1 => json!(self.next(3)),
            2 => Value::Null,
            3 => json!(self.next(2) == 0),
            4 | 5 => {
                let mut m = serde_json::Map::new();
                for _ in 0..=self.next(3) {
                    m.insert(KEYS[self.next(KEYS.len() as u64) as usize].to_string(), self.value(depth - 1));
                }
                Value::Object(m)
            }
            _ => Value::Array((0..self.next(3)).map(|_| if self.next(3) == 0 { self.value(depth - 1) } else { {
                let name = ["a", "b"][self.next(2) as usize];
                json!({"name": name, "containerPort": self.next(2), "type": "t", "image": self.value(0)})
            } }).collect()),
        }
    }
}

#[test]
fn random_objects_never_panic_and_applies_are_idempotent() {
    let mut g = Gen(0x9e37_79b9_7f4a_7c15);
    let mut applied = 0;
    for round in 0..3000 {
        let mut live = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}});
        live["spec"] = g.value(4);
        live["metadata"]["labels"] = g.value(2);
        let mut config = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}});
        config["spec"] = g.value(4);
        let mut new = live.clone();
        new["spec"] = g.value(4);
        let c = typed::compare("Deployment", &live, &live);
        assert!(c == typed::Comparison::default(), "round {round}: {live}");
        let s = scope(if round % 2 == 0 { "kubectl" } else { "ctl" }, "", "2026-11-23T08:00:00Z");
        let mut updated = new.clone();
        record_update(&scope("editor", "", "t1"), Some(&live), &mut updated);
        let base = stored(updated);
        let Ok(first) = apply(&s, Some(&base), &config, true) else { continue };
        assert!(decode(&first).is_ok(), "round {round}");
        applied += 1;
        let again = apply(&s, Some(&first), &config, false).unwrap_or_else(|e| panic!("round {round}: {e}\nconfig {config}\nfirst {first}"));
        let strip = |mut v: Value| {
            v["metadata"].as_object_mut().map(|m| m.remove("managedFields"));
            v
        };
        assert_eq!(strip(again), strip(first.clone()), "round {round}: config {config}");
    }
    // Most configurations are valid: the property was checked, not skipped.
    assert!(applied > 1000, "only {applied} applies succeeded");
}

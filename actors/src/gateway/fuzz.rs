//! Property tests over everything the gateway parses from a request before it reaches the
//! store: paths, query strings, bodies in every accepted encoding, patches of every type,
//! selectors, delete options and resourceVersion parameters. Arbitrary input must give a
//! value or an error, never a panic. (tests/gateway_fuzz.rs sends the same kind of input
//! to a running cluster and checks that nothing partial is stored.)

use super::consistency::Freshness;
use super::deletion::delete_opts;
use super::objects::decode_body;
use super::target::parse_target;
use super::patching::{patch_body, patched};
use super::patch::{self, PatchType};
use super::selectors::{FieldSelector, LabelSelector};
use super::{parse_query, protobuf, Req};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use proptest::prelude::*;
use schema::registry::RESOURCES;
use serde_json::{json, Map, Value};

/// Any JSON value, a few levels deep, with keys that often hit real field names.
fn any_json() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("metadata".to_string()),
        Just("name".to_string()),
        Just("spec".to_string()),
        Just("containers".to_string()),
        Just("labels".to_string()),
        Just("$patch".to_string()),
        Just("resourceVersion".to_string()),
        "[a-zA-Z$/.~0-9]{0,8}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null)),
        "\\PC{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..6).prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A real-looking object of some registered kind with arbitrary parts grafted on.
fn object_like() -> impl Strategy<Value = Value> {
    (0..RESOURCES.len(), any_json(), any_json(), "[a-z0-9][a-z0-9.-]{0,19}").prop_map(|(i, spec, meta, name)| {
        let r = &RESOURCES[i];
        let mut v = json!({"apiVersion": r.api_version(), "kind": r.kind, "metadata": {"name": name}, "spec": spec});
        if let Value::Object(m) = meta {
            for (k, x) in m.into_iter().filter(|(k, _)| k != "name") {
                v["metadata"][k] = x;
            }
        }
        v
    })
}

fn req(method: Method, content_type: &str, body: Vec<u8>, query: &str) -> Req {
    let mut headers = HeaderMap::new();
    if let Ok(ct) = HeaderValue::from_str(content_type) {
        headers.insert(header::CONTENT_TYPE, ct);
    }
    Req { method, query: parse_query(query), headers, body: body.into(), user: Default::default(), upgrade: Default::default() }
}

const CONTENT_TYPES: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
    "text/plain",
    "",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn paths_never_panic(group in prop_oneof![Just(String::new()), Just("apps".to_string()), "[a-z.]{0,12}"],
                         version in prop_oneof![Just("v1".to_string()), "[a-z0-9]{0,4}"],
                         rest in prop::collection::vec(prop_oneof![
                             Just("namespaces".to_string()), Just("pods".to_string()), Just("deployments".to_string()),
                             Just("status".to_string()), Just("scale".to_string()), Just("eviction".to_string()),
                             "\\PC{0,10}"], 0..7)) {
        let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
        let _ = parse_target(&group, &version, &rest);
    }

    #[test]
    fn query_strings_never_panic(q in "\\PC{0,64}", raw in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = parse_query(&q);
        let _ = parse_query(&String::from_utf8_lossy(&raw));
        let r = req(Method::GET, "", vec![], &q);
        let _ = Freshness::parse(r.q("resourceVersion"), r.q("resourceVersionMatch"));
    }

    #[test]
    fn bodies_in_any_encoding_never_panic(ct in prop::sample::select(CONTENT_TYPES), body in prop::collection::vec(any::<u8>(), 0..256)) {
        let r = req(Method::POST, ct, body, "");
        let _ = decode_body(&r);
        let _ = patch_body(&r);
    }

    #[test]
    fn protobuf_envelopes_never_panic(mut body in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = protobuf::decode(&body);
        // With the envelope's magic in front, the decoder gets past its first check.
        let mut framed = b"k8s\0".to_vec();
        framed.append(&mut body);
        let _ = protobuf::decode(&framed);
    }

    #[test]
    fn json_and_yaml_of_any_value_decode_or_fail_cleanly(v in any_json()) {
        let bytes = serde_json::to_vec(&v).unwrap_or_default();
        let _ = decode_body(&req(Method::POST, "application/json", bytes.clone(), ""));
        let yaml = serde_yaml::to_string(&v).unwrap_or_default().into_bytes();
        let _ = decode_body(&req(Method::POST, "application/yaml", yaml, ""));
    }

    #[test]
    fn patches_of_every_type_never_panic(doc in object_like(), p in any_json(), kind in 0..4usize) {
        let kind = [PatchType::Json, PatchType::Merge, PatchType::Strategic, PatchType::Apply][kind];
        let mut d = doc.clone();
        let _ = patch::apply(kind, doc["kind"].as_str().unwrap_or(""), &mut d, &p);
        if let Some(res) = RESOURCES.iter().find(|r| Some(r.kind) == doc["kind"].as_str()) {
            // A patch may never rename or move the object.
            if let Ok(v) = patched(res, &doc, 1, kind, &p) {
                prop_assert_eq!(schema::object::name(&v), schema::object::name(&doc));
            }
        }
    }

    #[test]
    fn selectors_never_panic(ls in "\\PC{0,40}", fs in "\\PC{0,40}", obj in object_like()) {
        if let Ok(s) = LabelSelector::parse(&ls) {
            let _ = s.matches(&obj);
        }
        if let Ok(s) = FieldSelector::parse(&fs) {
            let _ = s.matches(&obj);
        }
    }

    #[test]
    fn delete_options_never_panic(body in any_json(), q in "\\PC{0,40}") {
        let query = parse_query(&q);
        let _ = delete_opts(&body, &|k| query.iter().find(|(a, _)| a == k).map(|(_, b)| b.clone()));
    }

    #[test]
    fn admission_of_any_object_never_panics(new in object_like(), old in object_like()) {
        let Some(res) = RESOURCES.iter().find(|r| Some(r.kind) == new["kind"].as_str()) else { return Ok(()) };
        let mut created = new.clone();
        let _ = schema::admission::admit_create(res, &mut created);
        let mut updated = new.clone();
        let _ = schema::admission::admit_update(res, &mut updated, &old);
    }
}

//! Decodes `application/vnd.kubernetes.protobuf` request bodies (typed client-go calls
//! such as `kubectl create namespace` send them) into the JSON form the rest of the
//! gateway uses. Only the kinds kubectl sends in our flows are known; others get 415.

use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";
const MAGIC: &[u8] = b"k8s\0";

/// runtime.Unknown: the envelope every protobuf body travels in.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Unknown {
    #[prost(message, optional, tag = "1")]
    pub type_meta: Option<TypeMeta>,
    #[prost(bytes = "vec", optional, tag = "2")]
    pub raw: Option<Vec<u8>>,
    #[prost(string, optional, tag = "3")]
    pub content_encoding: Option<String>,
    #[prost(string, optional, tag = "4")]
    pub content_type: Option<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TypeMeta {
    #[prost(string, optional, tag = "1")]
    pub api_version: Option<String>,
    #[prost(string, optional, tag = "2")]
    pub kind: Option<String>,
}

/// The ObjectMeta fields a client may set on create; server-owned ones are skipped.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ObjectMeta {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    #[prost(string, optional, tag = "2")]
    pub generate_name: Option<String>,
    #[prost(string, optional, tag = "3")]
    pub namespace: Option<String>,
    #[prost(string, optional, tag = "6")]
    pub resource_version: Option<String>,
    #[prost(btree_map = "string, string", tag = "11")]
    pub labels: BTreeMap<String, String>,
    #[prost(btree_map = "string, string", tag = "12")]
    pub annotations: BTreeMap<String, String>,
    #[prost(string, repeated, tag = "14")]
    pub finalizers: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Namespace {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<ObjectMeta>,
    #[prost(message, optional, tag = "2")]
    pub spec: Option<NamespaceSpec>,
    #[prost(message, optional, tag = "3")]
    pub status: Option<NamespaceStatus>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct NamespaceSpec {
    #[prost(string, repeated, tag = "1")]
    pub finalizers: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct NamespaceStatus {
    #[prost(string, optional, tag = "1")]
    pub phase: Option<String>,
}

/// `kubectl create configmap`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ConfigMap {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<ObjectMeta>,
    #[prost(btree_map = "string, string", tag = "2")]
    pub data: BTreeMap<String, String>,
    #[prost(btree_map = "string, bytes", tag = "3")]
    pub binary_data: BTreeMap<String, Vec<u8>>,
    #[prost(bool, optional, tag = "4")]
    pub immutable: Option<bool>,
}

/// `kubectl create secret generic|docker-registry|tls`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Secret {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<ObjectMeta>,
    #[prost(btree_map = "string, bytes", tag = "2")]
    pub data: BTreeMap<String, Vec<u8>>,
    #[prost(string, optional, tag = "3")]
    pub type_: Option<String>,
    #[prost(btree_map = "string, string", tag = "4")]
    pub string_data: BTreeMap<String, String>,
    #[prost(bool, optional, tag = "5")]
    pub immutable: Option<bool>,
}

/// `kubectl create serviceaccount`: only its metadata and automount flag are set.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ServiceAccount {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<ObjectMeta>,
    #[prost(bool, optional, tag = "4")]
    pub automount_service_account_token: Option<bool>,
}

/// `kubectl create deployment NAME --image=… [--replicas=N] [--port=P] [-- COMMAND…]`:
/// the fields that command sets, from k8s.io/api/apps/v1 and core/v1 generated.proto.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Deployment {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<ObjectMeta>,
    #[prost(message, optional, tag = "2")]
    pub spec: Option<DeploymentSpec>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DeploymentSpec {
    #[prost(int32, optional, tag = "1")]
    pub replicas: Option<i32>,
    #[prost(message, optional, tag = "2")]
    pub selector: Option<LabelSelector>,
    #[prost(message, optional, tag = "3")]
    pub template: Option<PodTemplateSpec>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LabelSelector {
    #[prost(btree_map = "string, string", tag = "1")]
    pub match_labels: BTreeMap<String, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PodTemplateSpec {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<ObjectMeta>,
    #[prost(message, optional, tag = "2")]
    pub spec: Option<PodSpec>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSpec {
    #[prost(message, repeated, tag = "2")]
    pub containers: Vec<Container>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Container {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    #[prost(string, optional, tag = "2")]
    pub image: Option<String>,
    #[prost(string, repeated, tag = "3")]
    pub command: Vec<String>,
    #[prost(string, repeated, tag = "4")]
    pub args: Vec<String>,
    #[prost(message, repeated, tag = "6")]
    pub ports: Vec<ContainerPort>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerPort {
    #[prost(int32, optional, tag = "3")]
    pub container_port: Option<i32>,
    #[prost(string, optional, tag = "4")]
    pub protocol: Option<String>,
}

fn deployment_json(d: Deployment) -> Value {
    let mut v = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta_json(&d.metadata.unwrap_or_default())});
    let spec = d.spec.unwrap_or_default();
    let mut sj = Map::new();
    if let Some(r) = spec.replicas {
        sj.insert("replicas".into(), json!(r));
    }
    if let Some(sel) = spec.selector {
        sj.insert("selector".into(), json!({"matchLabels": sel.match_labels}));
    }
    let tpl = spec.template.unwrap_or_default();
    let containers: Vec<Value> = tpl
        .spec
        .unwrap_or_default()
        .containers
        .into_iter()
        .map(|c| {
            let mut cj = json!({"name": c.name.unwrap_or_default(), "image": c.image.unwrap_or_default()});
            if !c.command.is_empty() {
                cj["command"] = json!(c.command);
            }
            if !c.args.is_empty() {
                cj["args"] = json!(c.args);
            }
            if !c.ports.is_empty() {
                cj["ports"] = Value::Array(c.ports.iter().map(|p| json!({"containerPort": p.container_port.unwrap_or(0), "protocol": p.protocol.clone().unwrap_or_else(|| "TCP".into())})).collect());
            }
            cj
        })
        .collect();
    sj.insert("template".into(), json!({"metadata": meta_json(&tpl.metadata.unwrap_or_default()), "spec": {"containers": containers}}));
    v["spec"] = Value::Object(sj);
    v
}

fn b64_map(m: &BTreeMap<String, Vec<u8>>) -> Value {
    use base64::Engine;
    Value::Object(m.iter().map(|(k, v)| (k.clone(), json!(base64::engine::general_purpose::STANDARD.encode(v)))).collect())
}

/// `kubectl auth can-i`: authorization.k8s.io/v1 SelfSubjectAccessReview.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SelfSubjectAccessReview {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<ObjectMeta>,
    #[prost(message, optional, tag = "2")]
    pub spec: Option<SelfSubjectAccessReviewSpec>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SelfSubjectAccessReviewSpec {
    #[prost(message, optional, tag = "1")]
    pub resource_attributes: Option<ResourceAttributes>,
    #[prost(message, optional, tag = "2")]
    pub non_resource_attributes: Option<NonResourceAttributes>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ResourceAttributes {
    #[prost(string, optional, tag = "1")]
    pub namespace: Option<String>,
    #[prost(string, optional, tag = "2")]
    pub verb: Option<String>,
    #[prost(string, optional, tag = "3")]
    pub group: Option<String>,
    #[prost(string, optional, tag = "4")]
    pub version: Option<String>,
    #[prost(string, optional, tag = "5")]
    pub resource: Option<String>,
    #[prost(string, optional, tag = "6")]
    pub subresource: Option<String>,
    #[prost(string, optional, tag = "7")]
    pub name: Option<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct NonResourceAttributes {
    #[prost(string, optional, tag = "1")]
    pub path: Option<String>,
    #[prost(string, optional, tag = "2")]
    pub verb: Option<String>,
}

fn ssar_json(r: SelfSubjectAccessReview) -> Value {
    let mut spec = Map::new();
    let spec_in = r.spec.unwrap_or_default();
    if let Some(ra) = spec_in.resource_attributes {
        let mut o = Map::new();
        for (k, v) in [("namespace", &ra.namespace), ("verb", &ra.verb), ("group", &ra.group), ("version", &ra.version), ("resource", &ra.resource), ("subresource", &ra.subresource), ("name", &ra.name)] {
            if let Some(x) = nonempty(v) {
                o.insert(k.into(), json!(x));
            }
        }
        spec.insert("resourceAttributes".into(), Value::Object(o));
    }
    if let Some(na) = spec_in.non_resource_attributes {
        spec.insert("nonResourceAttributes".into(), json!({"path": na.path.unwrap_or_default(), "verb": na.verb.unwrap_or_default()}));
    }
    json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview", "metadata": meta_json(&r.metadata.unwrap_or_default()), "spec": spec})
}

/// Sent by `kubectl drain` when eviction is not offered.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeleteOptions {
    #[prost(int64, optional, tag = "1")]
    pub grace_period_seconds: Option<i64>,
    #[prost(message, optional, tag = "2")]
    pub preconditions: Option<Preconditions>,
    #[prost(string, optional, tag = "4")]
    pub propagation_policy: Option<String>,
    #[prost(string, repeated, tag = "5")]
    pub dry_run: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Preconditions {
    #[prost(string, optional, tag = "1")]
    pub uid: Option<String>,
    #[prost(string, optional, tag = "2")]
    pub resource_version: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ProtoError {
    /// 400: not a well-formed envelope or message.
    Bad(String),
    /// 415: a kind the gateway cannot decode from protobuf.
    Unsupported(String),
}

fn nonempty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

fn meta_json(m: &ObjectMeta) -> Value {
    let mut o = Map::new();
    if let Some(v) = nonempty(&m.name) {
        o.insert("name".into(), json!(v));
    }
    if let Some(v) = nonempty(&m.generate_name) {
        o.insert("generateName".into(), json!(v));
    }
    if let Some(v) = nonempty(&m.namespace) {
        o.insert("namespace".into(), json!(v));
    }
    if let Some(v) = nonempty(&m.resource_version) {
        o.insert("resourceVersion".into(), json!(v));
    }
    if !m.labels.is_empty() {
        o.insert("labels".into(), json!(m.labels));
    }
    if !m.annotations.is_empty() {
        o.insert("annotations".into(), json!(m.annotations));
    }
    if !m.finalizers.is_empty() {
        o.insert("finalizers".into(), json!(m.finalizers));
    }
    Value::Object(o)
}

/// Decodes a protobuf body into the JSON object it stands for (apiVersion and kind set).
pub fn decode(body: &[u8]) -> Result<Value, ProtoError> {
    use prost::Message;
    let rest = body.strip_prefix(MAGIC).ok_or_else(|| ProtoError::Bad("the protobuf body does not start with the k8s magic prefix".into()))?;
    let unknown = Unknown::decode(rest).map_err(|e| ProtoError::Bad(format!("the protobuf envelope could not be decoded: {e}")))?;
    let tm = unknown.type_meta.unwrap_or_default();
    let api_version = tm.api_version.unwrap_or_default();
    let kind = tm.kind.unwrap_or_default();
    if nonempty(&unknown.content_encoding).is_some() {
        return Err(ProtoError::Unsupported(format!("content encoding {:?} is not supported", unknown.content_encoding.unwrap_or_default())));
    }
    let raw = unknown.raw.unwrap_or_default();
    let bad = |e: prost::DecodeError| ProtoError::Bad(format!("{kind} in version \"{api_version}\" cannot be decoded from protobuf: {e}"));
    match (api_version.as_str(), kind.as_str()) {
        ("v1", "Namespace") => {
            let ns = Namespace::decode(raw.as_slice()).map_err(bad)?;
            let mut v = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": meta_json(&ns.metadata.unwrap_or_default())});
            if let Some(spec) = ns.spec.filter(|s| !s.finalizers.is_empty()) {
                v["spec"] = json!({"finalizers": spec.finalizers});
            }
            Ok(v)
        }
        ("v1", "ConfigMap") => {
            let cm = ConfigMap::decode(raw.as_slice()).map_err(bad)?;
            let mut v = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta_json(&cm.metadata.unwrap_or_default())});
            if !cm.data.is_empty() {
                v["data"] = json!(cm.data);
            }
            if !cm.binary_data.is_empty() {
                v["binaryData"] = b64_map(&cm.binary_data);
            }
            if let Some(i) = cm.immutable {
                v["immutable"] = json!(i);
            }
            Ok(v)
        }
        ("apps/v1", "Deployment") => Ok(deployment_json(Deployment::decode(raw.as_slice()).map_err(bad)?)),
        ("v1", "Secret") => {
            let sec = Secret::decode(raw.as_slice()).map_err(bad)?;
            let mut v = json!({"apiVersion": "v1", "kind": "Secret", "metadata": meta_json(&sec.metadata.unwrap_or_default())});
            if !sec.data.is_empty() {
                v["data"] = b64_map(&sec.data);
            }
            if !sec.string_data.is_empty() {
                v["stringData"] = json!(sec.string_data);
            }
            if let Some(t) = nonempty(&sec.type_) {
                v["type"] = json!(t);
            }
            if let Some(i) = sec.immutable {
                v["immutable"] = json!(i);
            }
            Ok(v)
        }
        ("v1", "ServiceAccount") => {
            let sa = ServiceAccount::decode(raw.as_slice()).map_err(bad)?;
            let mut v = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta_json(&sa.metadata.unwrap_or_default())});
            if let Some(a) = sa.automount_service_account_token {
                v["automountServiceAccountToken"] = json!(a);
            }
            Ok(v)
        }
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview") => Ok(ssar_json(SelfSubjectAccessReview::decode(raw.as_slice()).map_err(bad)?)),
        // `kubectl auth whoami`: the request carries nothing the answer depends on.
        ("authentication.k8s.io/v1", "SelfSubjectReview") => Ok(json!({"apiVersion": api_version, "kind": kind})),
        (_, "DeleteOptions") => {
            let d = DeleteOptions::decode(raw.as_slice()).map_err(bad)?;
            let mut v = json!({"apiVersion": api_version, "kind": "DeleteOptions"});
            if let Some(g) = d.grace_period_seconds {
                v["gracePeriodSeconds"] = json!(g);
            }
            if let Some(p) = d.preconditions {
                let mut pc = Map::new();
                if let Some(u) = nonempty(&p.uid) {
                    pc.insert("uid".into(), json!(u));
                }
                if let Some(r) = nonempty(&p.resource_version) {
                    pc.insert("resourceVersion".into(), json!(r));
                }
                v["preconditions"] = Value::Object(pc);
            }
            if let Some(pp) = nonempty(&d.propagation_policy) {
                v["propagationPolicy"] = json!(pp);
            }
            if !d.dry_run.is_empty() {
                v["dryRun"] = json!(d.dry_run);
            }
            Ok(v)
        }
        _ if super::protobuf_kinds::knows(&api_version, &kind) => super::protobuf_kinds::decode(&api_version, &kind, &raw)
            .unwrap_or_else(|| Err("no field table".into()))
            .map_err(|e| ProtoError::Bad(format!("{kind} in version \"{api_version}\" cannot be decoded from protobuf: {e}"))),
        _ => Err(ProtoError::Unsupported(format!(
            "the protobuf encoding of {kind} ({api_version}) is not supported by this server; send it as application/json"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let u = Unknown {
            type_meta: Some(TypeMeta { api_version: Some(api_version.into()), kind: Some(kind.into()) }),
            raw: Some(raw),
            content_encoding: Some(String::new()),
            content_type: Some(String::new()),
        };
        let mut out = MAGIC.to_vec();
        out.extend(u.encode_to_vec());
        out
    }

    #[test]
    fn namespace_from_our_structs() {
        let ns = Namespace {
            metadata: Some(ObjectMeta {
                name: Some("demo".into()),
                generate_name: Some(String::new()),
                labels: [("team".to_string(), "a".to_string())].into(),
                ..Default::default()
            }),
            spec: Some(NamespaceSpec::default()),
            status: Some(NamespaceStatus { phase: Some(String::new()) }),
        };
        let v = decode(&envelope("v1", "Namespace", ns.encode_to_vec())).unwrap();
        assert_eq!(v, json!({"apiVersion":"v1","kind":"Namespace","metadata":{"name":"demo","labels":{"team":"a"}}}));
    }

    #[test]
    fn namespace_bytes_kubectl_sent() {
        // `kubectl create namespace demo`, captured (kubectl-protocol.md §5.2).
        let hex = "6b3873000a0f0a02763112094e616d657370616365121c0a140a0464656d6f12001a0022002a0032003800420012001a020a001a002200";
        let bytes: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
        let v = decode(&bytes).unwrap();
        assert_eq!(v["metadata"]["name"], "demo");
        assert_eq!(v["kind"], "Namespace");
    }

    #[test]
    fn configmaps_and_secrets() {
        let meta = ObjectMeta { name: Some("c".into()), ..Default::default() };
        let cm = ConfigMap { metadata: Some(meta.clone()), data: [("a".to_string(), "b".to_string())].into(), binary_data: [("bin".to_string(), vec![0u8, 1])].into(), immutable: None };
        let v = decode(&envelope("v1", "ConfigMap", cm.encode_to_vec())).unwrap();
        assert_eq!(v, json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"},"data":{"a":"b"},"binaryData":{"bin":"AAE="}}));
        let sec = Secret { metadata: Some(meta), data: [("k".to_string(), b"v".to_vec())].into(), type_: Some("Opaque".into()), ..Default::default() };
        let v = decode(&envelope("v1", "Secret", sec.encode_to_vec())).unwrap();
        assert_eq!(v, json!({"apiVersion":"v1","kind":"Secret","metadata":{"name":"c"},"data":{"k":"dg=="},"type":"Opaque"}));
    }

    #[test]
    fn self_subject_access_review_bytes_kubectl_sent() {
        // `kubectl auth can-i create pods`, captured (kubectl-protocol.md §5.3).
        let hex = "6b3873000a320a17617574686f72697a6174696f6e2e6b38732e696f2f7631121753656c665375626a656374416363657373526576696577123f0a100a0012001a0022002a0032003800420012210a1f0a0764656661756c7412066372656174651a0022002a04706f647332003a001a08080012001a0020001a002200";
        let bytes: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
        let v = decode(&bytes).unwrap();
        assert_eq!(v["kind"], "SelfSubjectAccessReview");
        assert_eq!(v["spec"], json!({"resourceAttributes":{"namespace":"default","verb":"create","resource":"pods"}}));
    }

    #[test]
    fn delete_options_and_errors() {
        let hex = "6b3873000a130a027631120d44656c6574654f7074696f6e7312001a002200";
        let bytes: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
        assert_eq!(decode(&bytes).unwrap()["kind"], "DeleteOptions");
        let d = DeleteOptions { grace_period_seconds: Some(0), ..Default::default() };
        assert_eq!(decode(&envelope("v1", "DeleteOptions", d.encode_to_vec())).unwrap()["gracePeriodSeconds"], 0);
        assert!(matches!(decode(&envelope("apps/v1", "StatefulSet", vec![])), Err(ProtoError::Unsupported(m)) if m.contains("StatefulSet")));
        assert!(matches!(decode(b"nope"), Err(ProtoError::Bad(_))));
        assert!(matches!(decode(b"k8s\0\xff\xff\xff"), Err(ProtoError::Bad(_))));
    }
}

//! Resource usage as the metrics API (metrics.k8s.io/v1beta1, metrics-server's) serves
//! it: each node agent publishes one `NodeReport` per period on its node's metrics
//! subject; gateways answer `kubectl top` from the latest reports, and the HPA controller
//! scales on them. The report is the bus message; `NodeMetrics`/`PodMetrics` the API
//! objects made from it.

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeReport {
    pub node: String,
    /// When the figures were taken (RFC 3339) and over how long the CPU rate was measured.
    pub timestamp: String,
    pub window_secs: u32,
    pub cpu_nanocores: u64,
    pub memory_bytes: u64,
    pub pods: Vec<PodUsage>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodUsage {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The pod's labels, for `kubectl top pod -l`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub containers: Vec<ContainerUsage>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerUsage {
    pub name: String,
    pub cpu_nanocores: u64,
    pub memory_bytes: u64,
}

impl PodUsage {
    pub fn cpu_nanocores(&self) -> u64 {
        self.containers.iter().map(|c| c.cpu_nanocores).sum()
    }
}

/// metrics.k8s.io/v1beta1 NodeMetrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeMetrics {
    pub api_version: String,
    pub kind: String,
    pub metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    pub timestamp: String,
    pub window: String,
    pub usage: BTreeMap<String, String>,
}

/// One container's usage in a PodMetrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerMetrics {
    pub name: String,
    pub usage: BTreeMap<String, String>,
}

/// metrics.k8s.io/v1beta1 PodMetrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodMetrics {
    pub api_version: String,
    pub kind: String,
    pub metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    pub timestamp: String,
    pub window: String,
    pub containers: Vec<ContainerMetrics>,
}

// Written out rather than derived: the schema is what `kubectl explain` and the OpenAPI
// documents show, and metrics-server publishes no more than this.
impl JsonSchema for NodeMetrics {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "io.k8s.metrics.pkg.apis.metrics.v1beta1.NodeMetrics".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "NodeMetrics sets resource usage metrics of a node.",
            "type": "object",
            "properties": {
                "apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"},
                "timestamp": {"type": "string", "format": "date-time"}, "window": {"type": "string"},
                "usage": {"type": "object", "additionalProperties": {"type": "string"}, "description": "The memory and CPU usage."}
            }
        })
    }
}

impl JsonSchema for PodMetrics {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "io.k8s.metrics.pkg.apis.metrics.v1beta1.PodMetrics".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "PodMetrics sets resource usage metrics of a pod.",
            "type": "object",
            "properties": {
                "apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"},
                "timestamp": {"type": "string", "format": "date-time"}, "window": {"type": "string"},
                "containers": {"type": "array", "items": {"type": "object", "properties": {
                    "name": {"type": "string"},
                    "usage": {"type": "object", "additionalProperties": {"type": "string"}}
                }}}
            }
        })
    }
}

/// metrics-server's spelling: CPU in nanocores ("12345n"), memory in Ki.
fn usage(cpu_nanocores: u64, memory_bytes: u64) -> BTreeMap<String, String> {
    [("cpu".to_string(), format!("{cpu_nanocores}n")), ("memory".to_string(), format!("{}Ki", memory_bytes / 1024))].into()
}

fn meta(name: &str, namespace: Option<&str>, timestamp: &str) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(str::to_string),
        creation_timestamp: timestamp.parse().ok().map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time),
        ..Default::default()
    }
}

pub fn node_metrics(r: &NodeReport) -> NodeMetrics {
    NodeMetrics {
        api_version: "metrics.k8s.io/v1beta1".into(),
        kind: "NodeMetrics".into(),
        metadata: meta(&r.node, None, &r.timestamp),
        timestamp: r.timestamp.clone(),
        window: format!("{}s", r.window_secs),
        usage: usage(r.cpu_nanocores, r.memory_bytes),
    }
}

pub fn pod_metrics(r: &NodeReport, p: &PodUsage) -> PodMetrics {
    PodMetrics {
        api_version: "metrics.k8s.io/v1beta1".into(),
        kind: "PodMetrics".into(),
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta { labels: Some(p.labels.clone()).filter(|l| !l.is_empty()), ..meta(&p.name, Some(&p.namespace), &r.timestamp) },
        timestamp: r.timestamp.clone(),
        window: format!("{}s", r.window_secs),
        containers: p.containers.iter().map(|c| ContainerMetrics { name: c.name.clone(), usage: usage(c.cpu_nanocores, c.memory_bytes) }).collect(),
    }
}

/// A CPU rate from two cumulative readings (nanoseconds of CPU time) `elapsed` apart.
pub fn nanocores(before_ns: u64, after_ns: u64, elapsed: std::time::Duration) -> u64 {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        return 0;
    }
    (after_ns.saturating_sub(before_ns) as f64 / secs) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_spell_usage_as_metrics_server_does() {
        let r = NodeReport {
            node: "n1".into(),
            timestamp: "2026-01-01T00:00:00Z".into(),
            window_secs: 10,
            cpu_nanocores: 250_000_000,
            memory_bytes: 1 << 30,
            pods: vec![PodUsage { namespace: "demo".into(), name: "web".into(), uid: "u".into(), labels: Default::default(), containers: vec![ContainerUsage { name: "c".into(), cpu_nanocores: 5_000_000, memory_bytes: 2048 }] }],
        };
        let n = serde_json::to_value(node_metrics(&r)).unwrap();
        assert_eq!(n["usage"], serde_json::json!({"cpu": "250000000n", "memory": "1048576Ki"}));
        assert_eq!((n["kind"].as_str(), n["window"].as_str()), (Some("NodeMetrics"), Some("10s")));
        let p = serde_json::to_value(pod_metrics(&r, &r.pods[0])).unwrap();
        assert_eq!(p["containers"][0]["usage"]["cpu"], "5000000n");
        assert_eq!(p["metadata"]["namespace"], "demo");
        assert_eq!(nanocores(1_000, 501_000, std::time::Duration::from_millis(500)), 1_000_000);
    }
}

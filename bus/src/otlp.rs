//! OTLP/gRPC export of the spans `trace::record` keeps: when a process is started with
//! `--otlp-endpoint`, every sampled span also goes, in batches, to an OpenTelemetry
//! collector (Jaeger, Tempo, the collector itself). The ring for the dashboard is kept
//! either way; export never blocks an actor: a full queue drops spans and counts them.

use crate::trace::SpanRecord;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, ResourceSpans, ScopeSpans, Span};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};

/// Spans waiting for the exporter; past this, new ones are dropped (and counted).
const QUEUE: usize = 16 * 1024;
/// One export carries at most this many spans...
const BATCH: usize = 512;
/// ...and waits at most this long for more after its first.
const LINGER: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("--otlp-endpoint {0:?} is not an http:// or https:// URL")]
    Endpoint(String),
    #[error("the OTLP exporter was already started")]
    Started,
}

enum Msg {
    Span(SpanRecord),
    Flush(oneshot::Sender<()>),
}

fn sink() -> &'static OnceLock<mpsc::Sender<Msg>> {
    static S: OnceLock<mpsc::Sender<Msg>> = OnceLock::new();
    &S
}

/// Hands a finished span to the exporter, if one runs. Never waits.
pub(crate) fn offer(s: &SpanRecord) {
    let Some(tx) = sink().get() else { return };
    if tx.try_send(Msg::Span(s.clone())).is_err() {
        crate::metrics::inc("flotilla_otlp_spans_dropped_total", "Spans not exported because the exporter's queue was full or gone.", String::new(), 1.0);
    }
}

/// Starts exporting to `endpoint` (an OTLP/gRPC receiver, e.g. `http://127.0.0.1:4317`)
/// as `service` (the resource's `service.name`). Must run inside a tokio runtime.
pub fn start(endpoint: &str, service: &str) -> Result<(), OtlpError> {
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
        return Err(OtlpError::Endpoint(endpoint.to_string()));
    }
    let (tx, rx) = mpsc::channel(QUEUE);
    sink().set(tx).map_err(|_| OtlpError::Started)?;
    let resource = resource(service);
    tokio::spawn(export_loop(endpoint.to_string(), resource, rx));
    Ok(())
}

/// Waits (at most `within`) until every span recorded so far was sent or given up on.
pub async fn flush(within: Duration) {
    let Some(tx) = sink().get() else { return };
    let (done, wait) = oneshot::channel();
    if tx.send(Msg::Flush(done)).await.is_ok() {
        let _ = tokio::time::timeout(within, wait).await;
    }
}

async fn export_loop(endpoint: String, resource: Resource, mut rx: mpsc::Receiver<Msg>) {
    let mut client: Option<TraceServiceClient<tonic::transport::Channel>> = None;
    let mut batch: Vec<SpanRecord> = Vec::with_capacity(BATCH);
    loop {
        // The first span of a batch is waited for without limit: an idle process sends nothing.
        let mut flush = None;
        match rx.recv().await {
            None => return,
            Some(Msg::Span(s)) => batch.push(s),
            Some(Msg::Flush(done)) => flush = Some(done),
        }
        let deadline = tokio::time::Instant::now() + LINGER;
        while flush.is_none() && batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(Msg::Span(s))) => batch.push(s),
                Ok(Some(Msg::Flush(done))) => flush = Some(done),
                Ok(None) | Err(_) => break,
            }
        }
        if !batch.is_empty() {
            let req = request(&resource, &batch);
            let n = batch.len() as f64;
            batch.clear();
            match send(&endpoint, &mut client, req).await {
                Ok(()) => crate::metrics::inc("flotilla_otlp_spans_exported_total", "Spans accepted by the OTLP endpoint.", String::new(), n),
                Err(e) => {
                    // The next batch reconnects; a collector that is down loses spans, not the process.
                    client = None;
                    crate::metrics::inc("flotilla_otlp_spans_failed_total", "Spans whose export the OTLP endpoint refused or never received.", String::new(), n);
                    tracing::debug!(error = %e, endpoint, "OTLP export failed");
                }
            }
        }
        if let Some(done) = flush {
            let _ = done.send(());
        }
    }
}

async fn send(endpoint: &str, client: &mut Option<TraceServiceClient<tonic::transport::Channel>>, req: ExportTraceServiceRequest) -> Result<(), String> {
    if client.is_none() {
        let ep = tonic::transport::Endpoint::from_shared(endpoint.to_string()).map_err(|e| e.to_string())?.connect_timeout(Duration::from_secs(2)).timeout(Duration::from_secs(5));
        *client = Some(TraceServiceClient::new(ep.connect().await.map_err(|e| e.to_string())?));
    }
    let c = client.as_mut().ok_or("no client")?;
    c.export(req).await.map(|_| ()).map_err(|e| e.to_string())
}

fn string_attr(key: &str, value: &str) -> KeyValue {
    KeyValue { key: key.to_string(), value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.to_string())) }), ..Default::default() }
}

fn resource(service: &str) -> Resource {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
    let mut attributes = vec![string_attr("service.name", service), string_attr("service.instance.id", &format!("{host}/{}", std::process::id()))];
    attributes.push(KeyValue { key: "process.pid".into(), value: Some(AnyValue { value: Some(any_value::Value::IntValue(std::process::id() as i64)) }), ..Default::default() });
    Resource { attributes, ..Default::default() }
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// One span as OTLP has it: the gateway's spans are the servers of their requests, the
/// actors' handlers internal steps of the trace.
pub fn span(s: &SpanRecord) -> Span {
    let start = nanos(s.started);
    Span {
        trace_id: s.trace.trace_id.to_vec(),
        span_id: s.span_id.to_vec(),
        // An all-zero parent marks a trace's first span (a request that came without one).
        parent_span_id: if s.trace.parent_id == [0; 8] { Vec::new() } else { s.trace.parent_id.to_vec() },
        name: s.name.to_string(),
        kind: if s.name == "gateway" { SpanKind::Server as i32 } else { SpanKind::Internal as i32 },
        start_time_unix_nano: start,
        end_time_unix_nano: start + s.took.as_nanos() as u64,
        attributes: vec![string_attr("flotilla.actor", s.name)],
        flags: u32::from(s.trace.flags),
        ..Default::default()
    }
}

pub fn request(resource: &Resource, spans: &[SpanRecord]) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource.clone()),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope { name: "flotilla".into(), version: env!("CARGO_PKG_VERSION").into(), ..Default::default() }),
                spans: spans.iter().map(span).collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::trace::TraceParent;

    fn rec(parent: [u8; 8], name: &'static str) -> SpanRecord {
        SpanRecord {
            trace: TraceParent { trace_id: [7; 16], parent_id: parent, flags: 1 },
            span_id: [9; 8],
            name,
            started: UNIX_EPOCH + Duration::from_secs(10),
            took: Duration::from_millis(3),
        }
    }

    #[test]
    fn a_span_keeps_its_ids_times_and_actor() {
        let s = span(&rec([5; 8], "replicaset"));
        assert_eq!((s.trace_id, s.span_id, s.parent_span_id), (vec![7; 16], vec![9; 8], vec![5; 8]));
        assert_eq!((s.start_time_unix_nano, s.end_time_unix_nano), (10_000_000_000, 10_003_000_000));
        assert_eq!(s.kind, SpanKind::Internal as i32);
        assert_eq!(s.attributes[0].key, "flotilla.actor");
    }

    #[test]
    fn a_traces_first_span_has_no_parent_and_the_gateway_serves() {
        let s = span(&rec([0; 8], "gateway"));
        assert!(s.parent_span_id.is_empty());
        assert_eq!(s.kind, SpanKind::Server as i32);
    }

    #[test]
    fn one_request_carries_the_resource_once() {
        let r = request(&resource("flotilla-test"), &[rec([1; 8], "a"), rec([2; 8], "b")]);
        assert_eq!(r.resource_spans.len(), 1);
        assert_eq!(r.resource_spans[0].scope_spans[0].spans.len(), 2);
        let attrs = &r.resource_spans[0].resource.as_ref().unwrap().attributes;
        assert!(attrs.iter().any(|kv| kv.key == "service.name"));
    }

    #[test]
    fn a_non_url_endpoint_is_refused() {
        assert!(matches!(start("127.0.0.1:4317", "x"), Err(OtlpError::Endpoint(_))));
    }
}

//! OTLP export: `flotilla up --otlp-endpoint` sends the spans of a request that came with
//! a client's `traceparent` to an OTLP/gRPC receiver this test runs (the collector's own
//! service, from the protocol's generated types): the gateway's span under the client's,
//! and the spans of the actors the pod woke, down to the kubelet that started it.

mod common;

use common::cluster::Cluster;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use std::collections::BTreeSet;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const CLIENT_SPAN: &str = "b7ad6b7169203331";

const POD: &str = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"exported","namespace":"default"},
"spec":{"terminationGracePeriodSeconds":1,"containers":[{"name":"main","image":"busybox","command":["sleep","3600"]}]}}"#;

/// What the receiver got: (service.name, span name, trace id, parent span id), hex.
type Got = Arc<Mutex<Vec<(String, String, String, String)>>>;

struct Receiver(Got);

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(&self, req: tonic::Request<ExportTraceServiceRequest>) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut got = self.0.lock().unwrap();
        for rs in req.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    Value::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    got.push((service.clone(), s.name, hex(&s.trace_id), hex(&s.parent_span_id)));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

#[test]
fn spans_of_a_clients_trace_reach_an_otlp_receiver() {
    let got: Got = Arc::default();
    let port = common::free_port();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Receiver(got.clone())))
            .serve_with_shutdown(([127, 0, 0, 1], port).into(), async {
                let _ = stopped.await;
            }),
    );

    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("http://127.0.0.1:{port}");
    let c = Cluster::up_with(&dir.path().join("c"), 1, &["--otlp-endpoint", &endpoint]);
    let proxy = c.kubectl_background(&["proxy", "--port=0"]);
    let out = proxy.wait_for(Duration::from_secs(30), "kubectl proxy serving", |o| o.contains("Starting to serve on "));
    let addr = out.lines().find_map(|l| l.trim().strip_prefix("Starting to serve on ")).expect("an address").to_string();
    let o = Command::new("curl")
        .args(["-s", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "-H", "Content-Type: application/json", "-H"])
        .arg(format!("traceparent: 00-{TRACE_ID}-{CLIENT_SPAN}-01"))
        .args(["--data", POD, &format!("http://{addr}/api/v1/namespaces/default/pods")])
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "201", "the create");
    c.eventually(Duration::from_secs(60), "the pod Running", || {
        let p = c.ok(&["get", "pod", "exported", "-o", "jsonpath={.status.phase}"]);
        if p == "Running" { Ok(()) } else { Err(p) }
    });
    c.eventually(Duration::from_secs(30), "the trace's spans at the receiver", || {
        let g = got.lock().unwrap();
        let ours: Vec<_> = g.iter().filter(|s| s.2 == TRACE_ID).collect();
        let names: BTreeSet<&str> = ours.iter().map(|s| s.1.as_str()).collect();
        let gateway_under_client = ours.iter().any(|s| s.1 == "gateway" && s.3 == CLIENT_SPAN && s.0 == "flotilla-up");
        if gateway_under_client && names.contains("scheduler") && names.contains("kubelet") {
            Ok(())
        } else {
            Err(format!("spans of the trace so far: {ours:?}"))
        }
    });
    // Other requests' traces are exported too, each under its own id.
    assert!(got.lock().unwrap().iter().any(|s| s.2 != TRACE_ID), "only the client's trace was exported");
    proxy.stop();
    drop(c);
    let _ = stop.send(());
    let _ = rt.block_on(server);
}

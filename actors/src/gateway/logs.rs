//! `pods/<name>/log`: the gateway asks the node agent that runs the pod, over NATS
//! (`subjects::node_logs(node)`), and answers its bytes as text/plain. `follow=true`
//! answers what exists now and ends (streaming follow comes later).

use super::objects::read_existing;
use super::status::ApiError;
use super::{AppState, Req};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use schema::logs::{LogRequest, LogResponse};
use schema::registry::ResourceInfo;
use schema::{codec, object, subjects};
use serde_json::Value;
use std::time::Duration;

fn container_names(pod: &Value) -> Vec<String> {
    ["/spec/containers", "/spec/initContainers"]
        .iter()
        .flat_map(|p| pod.pointer(p).and_then(Value::as_array).cloned().unwrap_or_default())
        .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
        .collect()
}

/// The container a log request is for: the one named, or the pod's only one.
pub fn pick_container(pod: &Value, asked: Option<&str>) -> Result<String, ApiError> {
    let name = object::name(pod).unwrap_or("");
    let names = container_names(pod);
    match asked.filter(|c| !c.is_empty()) {
        Some(c) if names.iter().any(|n| n == c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::bad_request(format!("container {c} is not valid for pod {name}"))),
        None => {
            let main: Vec<&str> = pod.pointer("/spec/containers").and_then(Value::as_array).map(|a| a.iter().filter_map(|c| c.get("name").and_then(Value::as_str)).collect()).unwrap_or_default();
            match main.as_slice() {
                [one] => Ok(one.to_string()),
                [] => Err(ApiError::bad_request(format!("pod {name} has no containers"))),
                many => Err(ApiError::bad_request(format!("a container name must be specified for pod {name}, choose one of: [{}]", many.join(" ")))),
            }
        }
    }
}

pub async fn pod_log(st: &AppState, res: &ResourceInfo, ns: Option<&str>, name: &str, req: &Req) -> Result<Response, ApiError> {
    let (pod, _) = read_existing(st, res, ns, name).await?;
    let container = pick_container(&pod, req.q("container"))?;
    let Some(node) = object::node_name(&pod) else {
        return Err(ApiError::bad_request(format!("container \"{container}\" in pod \"{name}\" is waiting to start: ContainerCreating")));
    };
    let tail_lines = match req.q("tailLines") {
        None | Some("") => None,
        Some(t) => Some(t.parse::<i64>().map_err(|_| ApiError::bad_request(format!("invalid tailLines {t:?}")))?.max(0) as u64),
    };
    let lr = LogRequest {
        namespace: ns.unwrap_or("").to_string(),
        pod: name.to_string(),
        container: Some(container),
        tail_lines,
        previous: req.flag("previous"),
        follow_inbox: None,
    };
    // `-f`: the node sends later output to this inbox, one acknowledged chunk at a time;
    // dropping the subscription (the client went away) is what stops it.
    let follow = req.flag("follow") && !lr.previous;
    let mut follower = None;
    let mut lr = lr;
    if follow {
        let inbox = st.bus.nats.new_inbox();
        let sub = st.bus.nats.subscribe(inbox.clone()).await.map_err(|e| ApiError::internal(format!("log follow: {e}")))?;
        lr.follow_inbox = Some(inbox);
        follower = Some(sub);
    }
    let payload = codec::encode(&lr).map_err(|e| ApiError::internal(e.to_string()))?;
    let ask = st.bus.nats.request(subjects::node_logs(node), payload.into());
    let msg = match tokio::time::timeout(Duration::from_secs(15), ask).await {
        Err(_) => return Err(ApiError::new(504, "Timeout", format!("the node {node} did not answer the log request in time"))),
        Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
            return Err(ApiError::unavailable(format!("the node agent of {node} is not reachable for logs")))
        }
        Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::TimedOut => {
            return Err(ApiError::new(504, "Timeout", format!("the node {node} did not answer the log request in time")))
        }
        Ok(Err(e)) => return Err(ApiError::internal(format!("log request to {node}: {e}"))),
        Ok(Ok(m)) => m,
    };
    match codec::decode::<LogResponse>(&msg.payload).map_err(|e| ApiError::internal(format!("bad log answer from {node}: {e}")))? {
        LogResponse::Data(bytes) => {
            let mut r = match follower {
                None => (StatusCode::OK, bytes).into_response(),
                Some(sub) => (StatusCode::OK, axum::body::Body::from_stream(follow_stream(st.bus.nats.clone(), bytes, sub))).into_response(),
            };
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            Ok(r)
        }
        LogResponse::NotFound(m) => Err(ApiError::new(404, "NotFound", m)),
        LogResponse::BadRequest(m) => Err(ApiError::bad_request(m)),
    }
}

/// The body of `logs -f`: what exists now, then each chunk the node sends, acknowledged
/// so that the node keeps going.
fn follow_stream(
    nats: async_nats::Client,
    first: Vec<u8>,
    sub: async_nats::Subscriber,
) -> impl futures::Stream<Item = Result<bytes::Bytes, std::convert::Infallible>> + Send + 'static {
    use futures::StreamExt;
    let rest = sub.then(move |msg| {
        let nats = nats.clone();
        async move {
            if let Some(reply) = msg.reply.clone() {
                let _ = nats.publish(reply, bytes::Bytes::new()).await;
            }
            match codec::decode::<LogResponse>(&msg.payload) {
                Ok(LogResponse::Data(b)) => b,
                _ => Vec::new(),
            }
        }
    });
    futures::stream::once(async move { first }).chain(rest).filter(|b| futures::future::ready(!b.is_empty())).map(|b| Ok(bytes::Bytes::from(b)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn container_choice() {
        let one = json!({"metadata":{"name":"p"},"spec":{"containers":[{"name":"c"}]}});
        assert_eq!(pick_container(&one, None).unwrap(), "c");
        assert_eq!(pick_container(&one, Some("c")).unwrap(), "c");
        assert_eq!(pick_container(&one, Some("x")).unwrap_err().message, "container x is not valid for pod p");
        let two = json!({"metadata":{"name":"p"},"spec":{"containers":[{"name":"a"},{"name":"b"}]}});
        assert!(pick_container(&two, None).unwrap_err().message.contains("choose one of: [a b]"));
    }
}

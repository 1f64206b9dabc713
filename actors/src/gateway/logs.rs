//! `pods/<name>/log`: the gateway checks the options and the container's state as the
//! apiserver and the kubelet do (same messages), then asks the node agent that runs the
//! pod, over NATS (`subjects::node_logs(node)`), and answers its bytes as text/plain;
//! `follow=true` streams further chunks as the node sends them.

use super::objects::read_existing;
use super::status::ApiError;
use super::{AppState, Req};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use schema::admission::Cause;
use schema::logs::{LogRequest, LogResponse};
use schema::registry::ResourceInfo;
use schema::{codec, object, subjects};
use serde_json::Value;
use std::time::Duration;

fn names_at(pod: &Value, path: &str) -> Vec<String> {
    pod.pointer(path).and_then(Value::as_array).into_iter().flatten().filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string)).collect()
}

/// The container a log request is for: the one named, or the pod's only one
/// (the apiserver's `LogLocation`).
pub fn pick_container(pod: &Value, asked: Option<&str>) -> Result<String, ApiError> {
    let name = object::name(pod).unwrap_or("");
    let (main, init, ephemeral) = (names_at(pod, "/spec/containers"), names_at(pod, "/spec/initContainers"), names_at(pod, "/spec/ephemeralContainers"));
    match asked.filter(|c| !c.is_empty()) {
        Some(c) if main.iter().chain(&init).chain(&ephemeral).any(|n| n == c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::bad_request(format!("container {c} is not valid for pod {name}"))),
        None => match main.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(ApiError::bad_request(format!("a container name must be specified for pod {name}"))),
            many => {
                let mut m = format!("a container name must be specified for pod {name}, choose one of: [{}]", many.join(" "));
                if !init.is_empty() {
                    m.push_str(&format!(" or one of the init containers: [{}]", init.join(" ")));
                }
                if !ephemeral.is_empty() {
                    m.push_str(&format!(" or one of the ephemeral containers: [{}]", ephemeral.join(" ")));
                }
                Err(ApiError::bad_request(m))
            }
        },
    }
}

/// Whether the container has a log to show, from the pod's status, with the kubelet's
/// words when not (its `validateContainerLogStatus`).
pub fn check_container_state(pod: &Value, container: &str, previous: bool) -> Result<(), String> {
    let name = object::name(pod).unwrap_or("");
    let status = ["/status/containerStatuses", "/status/initContainerStatuses", "/status/ephemeralContainerStatuses"]
        .iter()
        .flat_map(|p| pod.pointer(p).and_then(Value::as_array).cloned().unwrap_or_default())
        .find(|s| s.get("name").and_then(Value::as_str) == Some(container));
    let Some(st) = status else {
        // Not reported yet: the kubelet has the container as ContainerCreating (an init
        // container's followers as PodInitializing) until its first status is written.
        let phase = pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or("Pending");
        if phase == "Pending" {
            let init_pending = !names_at(pod, "/spec/initContainers").is_empty() && !names_at(pod, "/spec/initContainers").iter().any(|n| n == container);
            let reason = if init_pending { "PodInitializing" } else { "ContainerCreating" };
            return Err(format!("container \"{container}\" in pod \"{name}\" is waiting to start: {reason}"));
        }
        return Err(format!("container \"{container}\" in pod \"{name}\" is not available"));
    };
    let last_terminated = st.pointer("/lastState/terminated").filter(|t| t.is_object());
    let state = |k: &str| st.pointer(&format!("/state/{k}")).filter(|v| v.is_object());
    if previous {
        return match last_terminated {
            Some(_) => Ok(()),
            None => Err(format!("previous terminated container \"{container}\" in pod \"{name}\" not found")),
        };
    }
    if state("running").is_some() || state("terminated").is_some() || last_terminated.is_some() {
        return Ok(());
    }
    match state("waiting").and_then(|w| w.get("reason")).and_then(Value::as_str) {
        Some("ErrImagePull") => Err(format!("container \"{container}\" in pod \"{name}\" is waiting to start: image can't be pulled")),
        Some("ImagePullBackOff") => Err(format!("container \"{container}\" in pod \"{name}\" is waiting to start: trying and failing to pull image")),
        Some(reason) => Err(format!("container \"{container}\" in pod \"{name}\" is waiting to start: {reason}")),
        None => Err(format!("container \"{container}\" in pod \"{name}\" is waiting to start - no logs yet")),
    }
}

/// Whether the container waits to start again after an instance ended (its newest log is
/// then `lastState.terminated`'s, which `--previous` asks for).
pub fn between_instances(pod: &Value, container: &str) -> bool {
    ["/status/containerStatuses", "/status/initContainerStatuses"]
        .iter()
        .flat_map(|p| pod.pointer(p).and_then(Value::as_array).cloned().unwrap_or_default())
        .find(|s| s.get("name").and_then(Value::as_str) == Some(container))
        .is_some_and(|s| s.pointer("/state/waiting").is_some_and(Value::is_object) && s.pointer("/lastState/terminated").is_some_and(Value::is_object))
}

/// PodLogOptions from the query, as the apiserver decodes and validates them: a value
/// that is not a number or a time is a 400, one out of range a 422 naming the field.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogOptions {
    pub container: Option<String>,
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub tail_lines: Option<i64>,
    pub limit_bytes: Option<i64>,
    pub since_seconds: Option<i64>,
    pub since_time: Option<jiff::Timestamp>,
}

fn int_param(q: &impl Fn(&str) -> Option<String>, key: &str) -> Result<Option<i64>, ApiError> {
    match q(key).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v.parse::<i64>().map(Some).map_err(|e| {
            let why = match e.kind() {
                std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow => "value out of range",
                _ => "invalid syntax",
            };
            ApiError::bad_request(format!("{key}: strconv.ParseInt: parsing {v:?}: {why}"))
        }),
    }
}

pub fn parse_options(pod_name: &str, q: impl Fn(&str) -> Option<String>) -> Result<LogOptions, ApiError> {
    let flag = |k: &str| super::query_bool(q(k).as_deref());
    let since_time = match q("sinceTime").filter(|v| !v.is_empty()) {
        None => None,
        Some(v) => Some(v.parse::<jiff::Timestamp>().map_err(|_| ApiError::bad_request(format!("sinceTime: parsing time {v:?} as \"2006-01-02T15:04:05Z07:00\": cannot parse {v:?} as a time")))?),
    };
    let o = LogOptions {
        container: q("container").filter(|c| !c.is_empty()),
        follow: flag("follow"),
        previous: flag("previous"),
        timestamps: flag("timestamps"),
        tail_lines: int_param(&q, "tailLines")?,
        limit_bytes: int_param(&q, "limitBytes")?,
        since_seconds: int_param(&q, "sinceSeconds")?,
        since_time,
    };
    let mut causes = Vec::new();
    let invalid = |field: &str, v: i64, m: &str| Cause { reason: "FieldValueInvalid".into(), field: field.into(), message: format!("Invalid value: {v}: {m}") };
    if let Some(t) = o.tail_lines.filter(|t| *t < 0) {
        causes.push(invalid("tailLines", t, "must be greater than or equal to 0"));
    }
    if let Some(l) = o.limit_bytes.filter(|l| *l < 1) {
        causes.push(invalid("limitBytes", l, "must be greater than 0"));
    }
    match (o.since_seconds, o.since_time) {
        (Some(_), Some(_)) => causes.push(Cause { reason: "FieldValueForbidden".into(), field: "".into(), message: "Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified".into() }),
        (Some(s), None) if s < 1 => causes.push(invalid("sinceSeconds", s, "must be greater than 0")),
        _ => {}
    }
    if !causes.is_empty() {
        return Err(ApiError::invalid("PodLogOptions", "", pod_name, &causes));
    }
    Ok(o)
}

pub async fn pod_log(st: &AppState, res: &ResourceInfo, ns: Option<&str>, name: &str, req: &Req) -> Result<Response, ApiError> {
    let opts = parse_options(name, |k| req.q(k).map(str::to_string))?;
    let (pod, _) = read_existing(st, res, ns, name).await?;
    let container = pick_container(&pod, opts.container.as_deref())?;
    let Some(node) = object::node_name(&pod) else {
        // Not on a node yet: the apiserver has no kubelet to ask and answers nothing.
        return Ok(text(Vec::new()));
    };
    // The kubelet turns sinceSeconds into a time when it reads; so does this, for it.
    // A huge sinceSeconds reaches before any time there is: everything.
    let since = opts.since_time.or_else(|| opts.since_seconds.map(|s| jiff::Timestamp::now().checked_sub(jiff::SignedDuration::from_secs(s)).unwrap_or(jiff::Timestamp::MIN)));
    let mut lr = LogRequest {
        namespace: ns.unwrap_or("").to_string(),
        pod: name.to_string(),
        tail_lines: opts.tail_lines.map(|t| t as u64),
        previous: opts.previous,
        follow_inbox: None,
        timestamps: opts.timestamps,
        since: since.map(|t| t.to_string()),
        limit_bytes: opts.limit_bytes.map(|l| l as u64),
        between_instances: between_instances(&pod, &container),
        refused: check_container_state(&pod, &container, opts.previous).err(),
        container: Some(container),
    };
    // `-f`: the node sends later output to this inbox, one acknowledged chunk at a time;
    // dropping the subscription (the client went away) is what stops it.
    let follow = opts.follow && !lr.previous;
    let mut follower = None;
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
        LogResponse::Data(bytes) => Ok(match follower {
            None => text(bytes),
            Some(sub) => {
                let mut r = (StatusCode::OK, axum::body::Body::from_stream(follow_stream(st.bus.nats.clone(), bytes, sub))).into_response();
                r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                r
            }
        }),
        LogResponse::End => Ok(text(Vec::new())),
        LogResponse::NotFound(m) => Err(ApiError::new(404, "NotFound", m)),
        LogResponse::BadRequest(m) => Err(ApiError::bad_request(m)),
    }
}

fn text(bytes: Vec<u8>) -> Response {
    let mut r = (StatusCode::OK, bytes).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
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
                Ok(LogResponse::Data(b)) => Some(b),
                Ok(LogResponse::End) => None,
                _ => Some(Vec::new()),
            }
        }
    });
    // `End` (limitBytes used up) closes the body.
    let rest = rest.take_while(|b| futures::future::ready(b.is_some())).filter_map(futures::future::ready);
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
        let two = json!({"metadata":{"name":"p"},"spec":{"containers":[{"name":"a"},{"name":"b"}],"initContainers":[{"name":"i"}]}});
        assert_eq!(pick_container(&two, None).unwrap_err().message, "a container name must be specified for pod p, choose one of: [a b] or one of the init containers: [i]");
        assert_eq!(pick_container(&two, Some("i")).unwrap(), "i");
    }

    fn with_status(cs: Value) -> Value {
        json!({"metadata":{"name":"p"},"spec":{"containers":[{"name":"c"}]},"status":{"phase":"Pending","containerStatuses":[cs]}})
    }

    #[test]
    fn container_states_as_the_kubelet_words_them() {
        let waiting = |r: &str| with_status(json!({"name":"c","state":{"waiting":{"reason":r}},"lastState":{}}));
        assert_eq!(check_container_state(&waiting("ContainerCreating"), "c", false).unwrap_err(), "container \"c\" in pod \"p\" is waiting to start: ContainerCreating");
        assert_eq!(check_container_state(&waiting("ImagePullBackOff"), "c", false).unwrap_err(), "container \"c\" in pod \"p\" is waiting to start: trying and failing to pull image");
        assert_eq!(check_container_state(&waiting("ErrImagePull"), "c", false).unwrap_err(), "container \"c\" in pod \"p\" is waiting to start: image can't be pulled");
        assert_eq!(check_container_state(&waiting("CrashLoopBackOff"), "c", true).unwrap_err(), "previous terminated container \"c\" in pod \"p\" not found");
        let crashed = with_status(json!({"name":"c","state":{"waiting":{"reason":"CrashLoopBackOff"}},"lastState":{"terminated":{"exitCode":1}}}));
        assert!(between_instances(&crashed, "c"));
        assert!(check_container_state(&crashed, "c", false).is_ok());
        assert!(check_container_state(&crashed, "c", true).is_ok());
        let running = with_status(json!({"name":"c","state":{"running":{}},"lastState":{}}));
        assert!(check_container_state(&running, "c", false).is_ok());
        let fresh = json!({"metadata":{"name":"p"},"spec":{"containers":[{"name":"c"}],"initContainers":[{"name":"i"}]},"status":{"phase":"Pending"}});
        assert_eq!(check_container_state(&fresh, "c", false).unwrap_err(), "container \"c\" in pod \"p\" is waiting to start: PodInitializing");
        assert_eq!(check_container_state(&fresh, "i", false).unwrap_err(), "container \"i\" in pod \"p\" is waiting to start: ContainerCreating");
    }

    fn parse(q: &[(&str, &str)]) -> Result<LogOptions, ApiError> {
        let q: Vec<(String, String)> = q.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        parse_options("p", move |k| q.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone()))
    }

    #[test]
    fn options_are_decoded_and_validated_as_the_apiserver_does() {
        let o = parse(&[("tailLines", "3"), ("timestamps", "true"), ("sinceTime", "2026-12-02T07:00:00Z"), ("limitBytes", "10")]).unwrap();
        assert_eq!((o.tail_lines, o.timestamps, o.limit_bytes), (Some(3), true, Some(10)));
        assert_eq!(o.since_time.unwrap().to_string(), "2026-12-02T07:00:00Z");
        let e = parse(&[("tailLines", "abc")]).unwrap_err();
        assert_eq!((e.code, e.message.as_str()), (400, "tailLines: strconv.ParseInt: parsing \"abc\": invalid syntax"));
        let e = parse(&[("limitBytes", "-1")]).unwrap_err();
        assert_eq!((e.code, e.message.as_str()), (422, "PodLogOptions \"p\" is invalid: limitBytes: Invalid value: -1: must be greater than 0"));
        let e = parse(&[("sinceSeconds", "0")]).unwrap_err();
        assert_eq!(e.message, "PodLogOptions \"p\" is invalid: sinceSeconds: Invalid value: 0: must be greater than 0");
        let e = parse(&[("sinceSeconds", "5"), ("sinceTime", "2026-12-02T07:00:00Z")]).unwrap_err();
        assert_eq!(e.message, "PodLogOptions \"p\" is invalid: : Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified");
        assert_eq!(parse(&[("sinceTime", "yesterday")]).unwrap_err().code, 400);
        assert_eq!(parse(&[("tailLines", "-1")]).unwrap_err().code, 422);
    }
}

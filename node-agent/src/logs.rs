//! Answers `kubectl logs` for the pods of this node: the gateway asks on the node's log
//! subject, this reads the container's log file (current or previous instance).

use futures::StreamExt;
use schema::codec;
use schema::logs::{LogRequest, LogResponse};
use std::path::{Path, PathBuf};

/// The log files of one container, oldest instance first.
fn instances(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let n = e.file_name().to_string_lossy().strip_suffix(".log")?.parse::<u64>().ok()?;
                    Some((n, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v.into_iter().map(|(_, p)| p).collect()
}

/// The newest directory of a pod with this namespace and name (a re-created pod of the
/// same name has a new uid).
fn pod_dir(data_dir: &Path, ns: &str, pod: &str) -> Option<PathBuf> {
    let prefix = format!("{ns}_{pod}_");
    std::fs::read_dir(data_dir.join("pods"))
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .map(|e| e.path())
}

fn tail(bytes: Vec<u8>, lines: Option<u64>) -> Vec<u8> {
    let Some(n) = lines else { return bytes };
    let mut count = 0u64;
    let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            count += 1;
            if count == n {
                return bytes[i + 1..].to_vec();
            }
        }
    }
    if n == 0 {
        Vec::new()
    } else {
        bytes
    }
}

pub fn answer(data_dir: &Path, req: &LogRequest) -> LogResponse {
    let Some(dir) = pod_dir(data_dir, &req.namespace, &req.pod) else {
        return LogResponse::NotFound(format!("pod \"{}\" has no logs on this node", req.pod));
    };
    let container = match &req.container {
        Some(c) => c.clone(),
        None => match std::fs::read_dir(&dir).ok().and_then(|rd| rd.flatten().find(|e| e.path().is_dir() && e.file_name() != "work")) {
            Some(e) => e.file_name().to_string_lossy().into_owned(),
            None => return LogResponse::NotFound(format!("pod \"{}\" has no container logs yet", req.pod)),
        },
    };
    if !dir.join(&container).is_dir() {
        return LogResponse::NotFound(format!("container \"{container}\" in pod \"{}\" not found", req.pod));
    }
    let files = instances(&dir.join(&container));
    let file = if req.previous { files.len().checked_sub(2).and_then(|i| files.get(i)) } else { files.last() };
    match file {
        Some(f) => LogResponse::Data(tail(std::fs::read(f).unwrap_or_default(), req.tail_lines)),
        None if req.previous => LogResponse::BadRequest(format!("previous terminated container \"{container}\" in pod \"{}\" not found", req.pod)),
        None => LogResponse::NotFound(format!("container \"{container}\" in pod \"{}\" has no logs yet", req.pod)),
    }
}

pub async fn serve(nats: async_nats::Client, node: String, data_dir: PathBuf, stop: tokio_util::sync::CancellationToken) {
    let mut sub = match nats.subscribe(schema::subjects::node_logs(&node)).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot serve logs");
            return;
        }
    };
    loop {
        let msg = tokio::select! {
            _ = stop.cancelled() => return,
            m = sub.next() => match m { Some(m) => m, None => return },
        };
        let Some(reply) = msg.reply.clone() else { continue };
        let span = tracing::info_span!("kubelet", node = %node, op = "logs");
        let resp = span.in_scope(|| match codec::decode::<LogRequest>(&msg.payload) {
            Ok(req) => answer(&data_dir, &req),
            Err(e) => LogResponse::BadRequest(format!("bad log request: {e}")),
        });
        if let Ok(bytes) = codec::encode(&resp) {
            let _ = nats.publish(reply, bytes.into()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(container: &str, previous: bool, tail_lines: Option<u64>) -> LogRequest {
        LogRequest { namespace: "ns".into(), pod: "p".into(), container: Some(container.into()), tail_lines, previous, follow_inbox: None }
    }

    #[test]
    fn answers_current_and_previous_instances() {
        let data = std::env::temp_dir().join(format!("flotilla-logs-{}", std::process::id()));
        let c = crate::kubelet::pod_dir(&data, "ns", "p", "u1").join("c");
        std::fs::create_dir_all(&c).unwrap();
        std::fs::write(c.join("0.log"), "first\n").unwrap();
        std::fs::write(c.join("1.log"), "a\nb\nc\n").unwrap();
        assert_eq!(answer(&data, &req("c", false, None)), LogResponse::Data(b"a\nb\nc\n".to_vec()));
        assert_eq!(answer(&data, &req("c", false, Some(1))), LogResponse::Data(b"c\n".to_vec()));
        assert_eq!(answer(&data, &req("c", true, None)), LogResponse::Data(b"first\n".to_vec()));
        assert_eq!(answer(&data, &req("x", false, None)), LogResponse::NotFound("container \"x\" in pod \"p\" not found".into()));
        let other = LogRequest { pod: "q".into(), ..req("c", false, None) };
        assert!(matches!(answer(&data, &other), LogResponse::NotFound(_)));
        let _ = std::fs::remove_dir_all(data);
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(super::tail(b"a\nb\nc\n".to_vec(), Some(2)), b"b\nc\n");
        assert_eq!(super::tail(b"a\nb\n".to_vec(), Some(5)), b"a\nb\n");
        assert_eq!(super::tail(b"a\n".to_vec(), None), b"a\n");
    }
}

//! Answers `kubectl logs` for the pods of this node: the gateway asks on the node's log
//! subject, this reads the container's log file (current or previous instance). Files
//! written by a CRI runtime are in the CRI log format (`<time> stdout F <line>`): the
//! text is taken out of it, as the kubelet does.

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

/// One line in the CRI log format: (message, whether the line is complete).
fn cri_line(line: &[u8]) -> Option<(&[u8], bool)> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let (time, stream, tag) = (parts.next()?, parts.next()?, parts.next()?);
    let msg = parts.next().unwrap_or(b"");
    let looks_like_time = time.len() >= 20 && time.get(4) == Some(&b'-') && time.get(10) == Some(&b'T');
    if !looks_like_time || !(stream == b"stdout" || stream == b"stderr") {
        return None;
    }
    match tag {
        b"F" => Some((msg, true)),
        b"P" => Some((msg, false)),
        _ => None,
    }
}

/// The container's output from a log file: CRI-format lines are unwrapped (partial lines
/// joined), anything else (host-mode output) is passed on as it is.
pub fn decode(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for line in bytes.split_inclusive(|b| *b == b'\n') {
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        match cri_line(body) {
            Some((msg, complete)) => {
                out.extend_from_slice(msg);
                if complete {
                    out.push(b'\n');
                }
            }
            None => out.extend_from_slice(line),
        }
    }
    out
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

/// The log file a request is about, or the answer that says why there is none.
fn locate(data_dir: &Path, req: &LogRequest) -> Result<PathBuf, LogResponse> {
    let Some(dir) = pod_dir(data_dir, &req.namespace, &req.pod) else {
        return Err(LogResponse::NotFound(format!("pod \"{}\" has no logs on this node", req.pod)));
    };
    let container = match &req.container {
        Some(c) => c.clone(),
        None => match std::fs::read_dir(&dir).ok().and_then(|rd| rd.flatten().find(|e| e.path().is_dir() && e.file_name() != "work")) {
            Some(e) => e.file_name().to_string_lossy().into_owned(),
            None => return Err(LogResponse::NotFound(format!("pod \"{}\" has no container logs yet", req.pod))),
        },
    };
    if !dir.join(&container).is_dir() {
        return Err(LogResponse::NotFound(format!("container \"{container}\" in pod \"{}\" not found", req.pod)));
    }
    let files = instances(&dir.join(&container));
    let file = if req.previous { files.len().checked_sub(2).and_then(|i| files.get(i)) } else { files.last() };
    match file {
        Some(f) => Ok(f.clone()),
        None if req.previous => Err(LogResponse::BadRequest(format!("previous terminated container \"{container}\" in pod \"{}\" not found", req.pod))),
        None => Err(LogResponse::NotFound(format!("container \"{container}\" in pod \"{}\" has no logs yet", req.pod))),
    }
}

pub fn answer(data_dir: &Path, req: &LogRequest) -> LogResponse {
    match locate(data_dir, req) {
        Ok(f) => LogResponse::Data(tail(decode(&std::fs::read(f).unwrap_or_default()), req.tail_lines)),
        Err(r) => r,
    }
}

/// How often a followed log is read for new output.
const FOLLOW_POLL: std::time::Duration = std::time::Duration::from_millis(250);
/// Polls without output before an empty chunk checks that the reader is still there.
const FOLLOW_PROBE_EVERY: u32 = 20;

fn read_from(path: &Path, offset: u64) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let mut out = Vec::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        if f.seek(SeekFrom::Start(offset)).is_ok() {
            let _ = f.read_to_end(&mut out);
        }
    }
    out
}

/// Sends what the container writes after `offset` to the follower's inbox, one request
/// per chunk: when nobody acknowledges (the `kubectl logs -f` went away), it stops.
async fn follow(nats: async_nats::Client, inbox: String, path: PathBuf, mut offset: u64, stop: tokio_util::sync::CancellationToken) {
    let mut idle = 0u32;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(FOLLOW_POLL) => {}
        }
        let mut chunk = read_from(&path, offset);
        // Only whole lines: a CRI line cut in two would not decode.
        match chunk.iter().rposition(|b| *b == b'\n') {
            Some(i) => chunk.truncate(i + 1),
            None => chunk.clear(),
        }
        if chunk.is_empty() {
            idle += 1;
            if idle < FOLLOW_PROBE_EVERY {
                continue;
            }
        }
        idle = 0;
        offset += chunk.len() as u64;
        let Ok(payload) = codec::encode(&LogResponse::Data(decode(&chunk))) else { return };
        match tokio::time::timeout(std::time::Duration::from_secs(5), nats.request(inbox.clone(), payload.into())).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
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
        let (resp, follower) = span.in_scope(|| match codec::decode::<LogRequest>(&msg.payload) {
            Ok(req) => match locate(&data_dir, &req) {
                Ok(path) => {
                    let raw = std::fs::read(&path).unwrap_or_default();
                    // Follow from the last whole line on.
                    let offset = raw.iter().rposition(|b| *b == b'\n').map(|i| i + 1).unwrap_or(0) as u64;
                    let all = decode(&raw[..offset as usize]);
                    let follower = req.follow_inbox.clone().filter(|_| !req.previous).map(|inbox| (inbox, path, offset));
                    (LogResponse::Data(tail(all, req.tail_lines)), follower)
                }
                Err(r) => (r, None),
            },
            Err(e) => (LogResponse::BadRequest(format!("bad log request: {e}")), None),
        });
        if let Ok(bytes) = codec::encode(&resp) {
            let _ = nats.publish(reply, bytes.into()).await;
        }
        if let Some((inbox, path, offset)) = follower {
            use tracing::Instrument;
            tokio::spawn(follow(nats.clone(), inbox, path, offset, stop.clone()).instrument(span));
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
    fn cri_lines_are_unwrapped_and_others_kept() {
        let cri = b"2026-12-02T07:27:01.123456789Z stdout F hello\n2026-12-02T07:27:01.2Z stderr P par\n2026-12-02T07:27:01.3Z stderr F tial\n2026-12-02T07:27:01.4Z stdout F \n";
        assert_eq!(decode(cri), b"hello\npartial\n\n");
        assert_eq!(decode(b"plain output\nstdout F x\n"), b"plain output\nstdout F x\n");
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(super::tail(b"a\nb\nc\n".to_vec(), Some(2)), b"b\nc\n");
        assert_eq!(super::tail(b"a\nb\n".to_vec(), Some(5)), b"a\nb\n");
        assert_eq!(super::tail(b"a\n".to_vec(), None), b"a\n");
    }
}

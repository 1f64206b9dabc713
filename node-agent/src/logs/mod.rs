//! Answers `kubectl logs` for the pods of this node: the gateway asks on the node's log
//! subject, this reads the container's log file (current or previous instance). Both
//! runtimes write the CRI log format (`<time> stdout F <line>`, `cri`); `read` turns it
//! into the answer the options ask for, as the kubelet does.

pub mod cri;
pub mod read;

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
    let file = if req.previous && !req.between_instances { files.len().checked_sub(2).and_then(|i| files.get(i)) } else { files.last() };
    match file {
        Some(f) => Ok(f.clone()),
        None if req.previous => Err(LogResponse::BadRequest(format!("previous terminated container \"{container}\" in pod \"{}\" not found", req.pod))),
        None => Err(LogResponse::NotFound(format!("container \"{container}\" in pod \"{}\" has no logs yet", req.pod))),
    }
}

/// The request's options; a `since` that is not a time is the gateway's bug, answered.
fn options(req: &LogRequest) -> Result<read::Options, LogResponse> {
    if let Some(m) = &req.refused {
        return Err(LogResponse::BadRequest(m.clone()));
    }
    let since = match &req.since {
        None => None,
        Some(s) => Some(s.parse::<jiff::Timestamp>().map_err(|e| LogResponse::BadRequest(format!("sinceTime {s:?}: {e}")))?),
    };
    Ok(read::Options { tail: req.tail_lines, since, timestamps: req.timestamps, limit_bytes: req.limit_bytes })
}

pub fn answer(data_dir: &Path, req: &LogRequest) -> LogResponse {
    let opts = match options(req) {
        Ok(o) => o,
        Err(r) => return r,
    };
    match locate(data_dir, req) {
        Ok(f) => LogResponse::Data(read::answer(&std::fs::read(f).unwrap_or_default(), &opts)),
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

/// Where a follow is: the next byte of the file to read, whether that begins a line, and
/// what is left of `limitBytes`.
struct Cursor {
    offset: u64,
    line_start: bool,
    remaining: Option<u64>,
}

/// Sends what the container writes after the cursor to the follower's inbox, one request
/// per chunk: when nobody acknowledges (the `kubectl logs -f` went away), it stops; when
/// `limitBytes` is used up it says so and stops.
async fn follow(nats: async_nats::Client, inbox: String, path: PathBuf, opts: read::Options, mut at: Cursor, stop: tokio_util::sync::CancellationToken) {
    let mut idle = 0u32;
    loop {
        if at.remaining == Some(0) {
            if let Ok(payload) = codec::encode(&LogResponse::End) {
                let _ = tokio::time::timeout(std::time::Duration::from_secs(5), nats.request(inbox.clone(), payload.into())).await;
            }
            return;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(FOLLOW_POLL) => {}
        }
        let mut chunk = read_from(&path, at.offset);
        // Only whole lines: a CRI line cut in two would not parse.
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
        at.offset += chunk.len() as u64;
        let out = read::limit(read::render(&cri::entries(&chunk), &opts, &mut at.line_start), &mut at.remaining);
        let Ok(payload) = codec::encode(&LogResponse::Data(out)) else { return };
        match tokio::time::timeout(std::time::Duration::from_secs(5), nats.request(inbox.clone(), payload.into())).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
    }
}

/// The answer to one request, and the follow to start after it.
fn handle(data_dir: &Path, req: &LogRequest) -> (LogResponse, Option<(String, PathBuf, read::Options, Cursor)>) {
    let opts = match options(req) {
        Ok(o) => o,
        Err(r) => return (r, None),
    };
    let path = match locate(data_dir, req) {
        Ok(p) => p,
        Err(r) => return (r, None),
    };
    let raw = std::fs::read(&path).unwrap_or_default();
    // Follow from the last whole line on.
    let offset = raw.iter().rposition(|b| *b == b'\n').map(|i| i + 1).unwrap_or(0);
    let entries = cri::entries(&raw[..offset]);
    let start = read::tail_start(&entries, opts.tail);
    let mut at = Cursor { offset: offset as u64, line_start: true, remaining: opts.limit_bytes };
    let out = read::limit(read::render(&entries[start..], &opts, &mut at.line_start), &mut at.remaining);
    let follower = req.follow_inbox.clone().filter(|_| !req.previous).map(|inbox| (inbox, path, opts, at));
    (LogResponse::Data(out), follower)
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
            Ok(req) => handle(&data_dir, &req),
            Err(e) => (LogResponse::BadRequest(format!("bad log request: {e}")), None),
        });
        if let Ok(bytes) = codec::encode(&resp) {
            let _ = nats.publish(reply, bytes.into()).await;
        }
        if let Some((inbox, path, opts, at)) = follower {
            use tracing::Instrument;
            tokio::spawn(follow(nats.clone(), inbox, path, opts, at, stop.clone()).instrument(span));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(container: &str, previous: bool, tail_lines: Option<u64>) -> LogRequest {
        LogRequest { namespace: "ns".into(), pod: "p".into(), container: Some(container.into()), tail_lines, previous, ..Default::default() }
    }

    #[test]
    fn answers_current_and_previous_instances() {
        let data = std::env::temp_dir().join(format!("flotilla-logs-{}", std::process::id()));
        let c = crate::kubelet::pod_dir(&data, "ns", "p", "u1").join("c");
        std::fs::create_dir_all(&c).unwrap();
        std::fs::write(c.join("0.log"), "2026-12-02T07:00:00Z stdout F first\n").unwrap();
        std::fs::write(c.join("1.log"), "2026-12-02T07:00:01Z stdout F a\n2026-12-02T07:00:02Z stdout F b\n2026-12-02T07:00:03Z stderr F c\n").unwrap();
        assert_eq!(answer(&data, &req("c", false, None)), LogResponse::Data(b"a\nb\nc\n".to_vec()));
        assert_eq!(answer(&data, &req("c", false, Some(1))), LogResponse::Data(b"c\n".to_vec()));
        assert_eq!(answer(&data, &req("c", true, None)), LogResponse::Data(b"first\n".to_vec()));
        let waiting = LogRequest { between_instances: true, ..req("c", true, None) };
        assert_eq!(answer(&data, &waiting), LogResponse::Data(b"a\nb\nc\n".to_vec()), "the instance that ended is the previous one");
        let ts = LogRequest { timestamps: true, since: Some("2026-12-02T07:00:02Z".into()), limit_bytes: Some(30), ..req("c", false, None) };
        assert_eq!(answer(&data, &ts), LogResponse::Data(b"2026-12-02T07:00:02Z b\n2026-12".to_vec()));
        assert_eq!(answer(&data, &req("x", false, None)), LogResponse::NotFound("container \"x\" in pod \"p\" not found".into()));
        let refused = LogRequest { refused: Some("container \"c\" in pod \"p\" is waiting to start: ContainerCreating".into()), ..req("c", false, None) };
        assert_eq!(answer(&data, &refused), LogResponse::BadRequest("container \"c\" in pod \"p\" is waiting to start: ContainerCreating".into()));
        let other = LogRequest { pod: "q".into(), ..req("c", false, None) };
        assert!(matches!(answer(&data, &other), LogResponse::NotFound(_)));
        let _ = std::fs::remove_dir_all(data);
    }
}

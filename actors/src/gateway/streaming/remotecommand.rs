//! `exec` and `attach`: the options of the request, then the client's streams relayed
//! to the node's session — over WebSocket channels, or SPDY streams named by their
//! `streamtype` header — and the end reported on the error channel as the kubelet does
//! (v4 and later: a JSON Status whose `NonZeroExitCode` cause carries the exit code).

use super::ws::{Channels, CLOSE_SIGNAL, REMOTE_COMMAND};
use super::{connection, negotiate, open, switching, take_connection, PodRef, Upgrade};
use crate::gateway::status::ApiError;
use crate::gateway::{AppState, Req};
use axum::response::Response;
use bus::streams::{PipeRx, PipeTx};
use futures::{SinkExt, StreamExt};
use schema::streaming::{Body, End, StreamKind, STDIN};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// The SPDY protocols, best first (v5 over SPDY is v4: the close signal is WebSocket's).
pub const SPDY_REMOTE_COMMAND: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io"];

const RESIZE: u8 = 4;

/// The error channel's last word: a Status (v4+) or plain text (older), None for success
/// under the old protocols.
pub fn end_status(end: &End, version: u8, command: &[String]) -> Option<Vec<u8>> {
    let status = match end {
        End::Exited(0) => json!({"metadata": {}, "status": "Success"}),
        End::Exited(code) => json!({"metadata": {}, "status": "Failure",
            "message": format!("command terminated with non-zero exit code: error executing command [{}], exit code {code}", command.join(" ")),
            "reason": "NonZeroExitCode", "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}}),
        End::Error(m) => json!({"metadata": {}, "status": "Failure", "message": format!("Internal error occurred: error executing command in container: {m}"),
            "reason": "InternalError", "details": {"causes": [{"message": m}]}, "code": 500}),
    };
    if version >= 4 {
        return serde_json::to_vec(&status).ok();
    }
    match end {
        End::Exited(0) => None,
        _ => status["message"].as_str().map(|m| m.as_bytes().to_vec()),
    }
}

fn resize_of(data: &[u8]) -> Option<(u16, u16)> {
    let v: Value = serde_json::from_slice(data).ok()?;
    Some((v["Width"].as_u64()? as u16, v["Height"].as_u64()? as u16))
}

pub async fn handle(st: &AppState, p: PodRef, container: String, verb: &str, req: &Req) -> Result<Response, ApiError> {
    let (stdin, stdout, stderr, tty) = (req.flag("stdin"), req.flag("stdout"), req.flag("stderr"), req.flag("tty"));
    if !(stdin || stdout || stderr) {
        return Err(ApiError::bad_request("you must specify at least 1 of stdin, stdout, stderr"));
    }
    let command: Vec<String> = req.query.iter().filter(|(k, _)| k == "command").map(|(_, v)| v.clone()).collect();
    let kind = if verb == "exec" {
        if command.is_empty() {
            return Err(ApiError::bad_request("you must specify at least one command for the container"));
        }
        StreamKind::Exec { command: command.clone() }
    } else {
        StreamKind::Attach
    };
    let up = negotiate(req, REMOTE_COMMAND, SPDY_REMOTE_COMMAND)?;
    let on = take_connection(req)?;
    // With a terminal, stderr is stdout.
    let (tx, rx) = open(&st.bus.nats, &p, &container, kind, [stdin, stdout, stderr && !tty, tty]).await?;
    let resp = switching(&up);
    let span = tracing::info_span!("gateway-stream", verb, pod = %format!("{}/{}", p.namespace, p.name));
    tokio::spawn(tracing::Instrument::instrument(
        async move {
            let Some(io) = connection(on).await else {
                let _ = tx.send(Body::Cancel).await;
                return;
            };
            match up {
                Upgrade::WebSocket { protocol, .. } => {
                    let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
                    over_websocket(ws, Channels::of(&protocol), tx, rx, &command).await
                }
                Upgrade::Spdy { protocol } => over_spdy(io, Channels::of(&protocol).version, [stdin, stdout, stderr && !tty, tty], tx, rx, &command).await,
            }
        },
        span,
    ));
    Ok(resp)
}

async fn over_websocket<S>(ws: WebSocketStream<S>, chans: Channels, tx: PipeTx, mut rx: PipeRx, command: &[String])
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut stream) = ws.split();
    // client-go's v5 reader drops data for channels it has not set up yet, and it sets
    // them up beside its read loop: output waits until that loop has answered a ping.
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
    let client = async move {
        let mut ready_tx = Some(ready_tx);
        while let Some(Ok(m)) = stream.next().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
            if let Message::Pong(_) = m {
                if let Some(t) = ready_tx.take() {
                    let _ = t.send(());
                }
                continue;
            }
            let sent = match chans.decode(&m) {
                Some((STDIN, data)) => tx.send(Body::Data { ch: STDIN, data }).await,
                Some((CLOSE_SIGNAL, ch)) if ch.first() == Some(&STDIN) => tx.send(Body::Close { ch: STDIN }).await,
                Some((RESIZE, data)) => match resize_of(&data) {
                    Some((width, height)) => tx.send(Body::Resize { width, height }).await,
                    None => Ok(()),
                },
                _ => Ok(()),
            };
            if sent.is_err() {
                return;
            }
        }
        // The client went away (or closed): the node stops what it runs, and its last
        // word has a moment to come.
        let _ = tx.send(Body::Cancel).await;
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    };
    let node = async move {
        if chans.version >= 5 && sink.send(Message::Ping(b"ready".to_vec().into())).await.is_ok() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(3), ready_rx).await;
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let end = loop {
            match rx.recv().await {
                Some(Ok(Body::Data { ch, data })) => {
                    if sink.send(chans.encode(ch, &data)).await.is_err() {
                        return;
                    }
                }
                Some(Ok(Body::End(e))) => break e,
                Some(Ok(_)) => {}
                Some(Err(e)) => break End::Error(e.to_string()),
                None => break End::Error("the node closed the stream".into()),
            }
        };
        if let Some(msg) = end_status(&end, chans.version, command) {
            let _ = sink.send(chans.encode(3, &msg)).await;
        }
        // A normal closure: kubectl reads any other close (even one without a code) as
        // a failure of the error stream.
        let _ = sink.send(Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "".into() }))).await;
        let _ = sink.close().await;
    };
    // The node's end decides; the client's side only forwards until then.
    tokio::select! {
        _ = node => {}
        _ = client => {}
    }
}

/// Over SPDY: the client opens one stream per channel (`streamtype` error, stdin, stdout,
/// stderr, resize); each is answered, relayed, and the error stream carries the end.
async fn over_spdy<IO>(io: IO, version: u8, want: [bool; 4], tx: PipeTx, mut rx: PipeRx, command: &[String])
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use bus::spdy;
    let (session, mut incoming) = spdy::serve(io);
    let [stdin, stdout, stderr, tty] = want;
    let expected = 1 + usize::from(stdin) + usize::from(stdout) + usize::from(stderr) + usize::from(tty && version >= 3);
    let mut streams: std::collections::HashMap<String, spdy::IncomingStream> = Default::default();
    let deadline = tokio::time::sleep(std::time::Duration::from_secs(30));
    tokio::pin!(deadline);
    while streams.len() < expected {
        tokio::select! {
            _ = &mut deadline => break,
            s = incoming.recv() => match s {
                Some(s) => {
                    let t = s.header("streamtype").unwrap_or("").to_string();
                    streams.insert(t, s);
                }
                None => break,
            },
        }
    }
    let Some(error) = streams.remove("error") else {
        let _ = tx.send(Body::Cancel).await;
        session.go_away().await;
        return;
    };
    if let Some(mut s) = streams.remove("stdin") {
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(data) = s.data.recv().await {
                if tx.send(Body::Data { ch: STDIN, data: data.to_vec() }).await.is_err() {
                    return;
                }
            }
            let _ = tx.send(Body::Close { ch: STDIN }).await;
        });
    }
    if let Some(mut s) = streams.remove("resize") {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            while let Some(data) = s.data.recv().await {
                buf.extend_from_slice(&data);
                // Sizes come as concatenated JSON objects.
                let mut de = serde_json::Deserializer::from_slice(&buf).into_iter::<Value>();
                let mut used = 0;
                while let Some(Ok(v)) = de.next() {
                    used = de.byte_offset();
                    if let (Some(w), Some(h)) = (v["Width"].as_u64(), v["Height"].as_u64()) {
                        let _ = tx.send(Body::Resize { width: w as u16, height: h as u16 }).await;
                    }
                }
                buf.drain(..used);
            }
        });
    }
    let out = streams.remove("stdout").map(|s| s.writer);
    let err = streams.remove("stderr").map(|s| s.writer);
    let closed = session.closed();
    tokio::pin!(closed);
    let end = loop {
        let item = tokio::select! {
            _ = &mut closed => {
                let _ = tx.send(Body::Cancel).await;
                return;
            }
            i = rx.recv() => i,
        };
        match item {
            Some(Ok(Body::Data { ch, data })) => {
                let w = if ch == 2 { err.as_ref() } else { out.as_ref() };
                if let Some(w) = w {
                    if w.write(data.into()).await.is_err() {
                        let _ = tx.send(Body::Cancel).await;
                        return;
                    }
                }
            }
            Some(Ok(Body::End(e))) => break e,
            Some(Ok(_)) => {}
            Some(Err(e)) => break End::Error(e.to_string()),
            None => break End::Error("the node closed the stream".into()),
        }
    };
    for w in [out.as_ref(), err.as_ref()].into_iter().flatten() {
        let _ = w.close().await;
    }
    if let Some(msg) = end_status(&end, version, command) {
        let _ = error.writer.write(msg.into()).await;
    }
    let _ = error.writer.close().await;
    session.go_away().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_as_the_kubelet_reports_them() {
        let cmd = vec!["sh".to_string(), "-c".into(), "exit 3".into()];
        let v: Value = serde_json::from_slice(&end_status(&End::Exited(3), 5, &cmd).unwrap()).unwrap();
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(v["details"]["causes"][0], json!({"reason": "ExitCode", "message": "3"}));
        let ok: Value = serde_json::from_slice(&end_status(&End::Exited(0), 4, &cmd).unwrap()).unwrap();
        assert_eq!(ok["status"], "Success");
        assert_eq!(end_status(&End::Exited(0), 1, &cmd), None);
        assert!(String::from_utf8(end_status(&End::Error("boom".into()), 1, &cmd).unwrap()).unwrap().contains("boom"));
        assert_eq!(resize_of(br#"{"Width":80,"Height":24}"#), Some((80, 24)));
    }
}

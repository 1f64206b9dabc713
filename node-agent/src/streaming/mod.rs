//! The node's end of `exec`, `attach` and `port-forward`: a gateway opens a stream on
//! `subjects::node_streams(node)`, the kubelet names the pod's runtime and container, the
//! runtime starts a session, and its bytes are relayed over the bus (`bus::streams`) until
//! the process ends or the client goes away. No HTTP port is opened on the node.

use crate::kubelet::lookup::{Found, Lookup};
use crate::kubelet::Kubelet;
use crate::runtime::streams::{Session, Streams};
use actix::Addr;
use bus::streams::{pipe, PipeRx, PipeTx};
use futures::StreamExt;
use schema::streaming::{Body, End, OpenReply, StreamKind, StreamOpen, STDIN};
use schema::{codec, subjects};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub async fn serve(nats: async_nats::Client, node: String, kubelet: Addr<Kubelet>, stop: CancellationToken) {
    let mut sub = match nats.subscribe(subjects::node_streams(&node)).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(node = %node, error = %e, "cannot serve exec, attach and port-forward");
            return;
        }
    };
    loop {
        let msg = tokio::select! {
            _ = stop.cancelled() => return,
            m = sub.next() => m,
        };
        let Some(msg) = msg else { return };
        let (nats, kubelet) = (nats.clone(), kubelet.clone());
        let span = tracing::info_span!("streaming", node = %node);
        tokio::spawn(async move { open(nats, kubelet, msg).await }.instrument(span));
    }
}

async fn answer(nats: &async_nats::Client, reply: Option<&async_nats::Subject>, r: &OpenReply) {
    let (Some(to), Ok(bytes)) = (reply, codec::encode(r)) else { return };
    let _ = nats.publish(to.clone(), bytes.into()).await;
}

async fn open(nats: async_nats::Client, kubelet: Addr<Kubelet>, msg: async_nats::Message) {
    let reply = msg.reply.clone();
    let req: StreamOpen = match codec::decode(&msg.payload) {
        Ok(r) => r,
        Err(e) => return answer(&nats, reply.as_ref(), &OpenReply::Refused { code: 400, message: format!("undecodable stream request: {e}") }).await,
    };
    let container = match req.kind {
        StreamKind::PortForward { .. } => String::new(),
        _ => req.container.clone(),
    };
    let found = kubelet.send(Lookup { namespace: req.namespace.clone(), pod: req.pod.clone(), uid: req.uid.clone(), container }).await;
    let Found { runtime, sandbox, target } = match found {
        Ok(Ok(f)) => f,
        Ok(Err(r)) => return answer(&nats, reply.as_ref(), &OpenReply::Refused { code: r.code, message: r.message }).await,
        Err(_) => return answer(&nats, reply.as_ref(), &OpenReply::Refused { code: 503, message: "the node agent is stopping".into() }).await,
    };
    let streams = Streams { stdin: req.stdin, stdout: req.stdout, stderr: req.stderr, tty: req.tty };
    let session = match (&req.kind, target) {
        (StreamKind::PortForward { port }, _) => runtime.port_forward(&sandbox, *port).await,
        (StreamKind::Exec { command }, Some(t)) => runtime.exec(&t, command.clone(), streams).await,
        (StreamKind::Attach, Some(t)) => runtime.attach(&t, streams).await,
        (_, None) => return answer(&nats, reply.as_ref(), &OpenReply::Refused { code: 400, message: "a container name is required".into() }).await,
    };
    let session = match session {
        Ok(s) => s,
        Err(e) => return answer(&nats, reply.as_ref(), &OpenReply::Refused { code: 500, message: e.to_string() }).await,
    };
    let inbox = nats.new_inbox();
    let sub = match nats.subscribe(inbox.clone()).await {
        Ok(s) => s,
        Err(e) => return answer(&nats, reply.as_ref(), &OpenReply::Refused { code: 503, message: format!("the node cannot take the stream: {e}") }).await,
    };
    answer(&nats, reply.as_ref(), &OpenReply::Opened { inbox }).await;
    let (tx, rx) = pipe(nats, sub, req.inbox.clone());
    tracing::debug!(pod = %format!("{}/{}", req.namespace, req.pod), kind = ?req.kind, "stream opened");
    relay(session, tx, rx).await;
}

/// Client → session: stdin, its end, resizes; a cancel or a lost stream stops the session.
async fn inbound(mut rx: PipeRx, mut stdin: Option<tokio::sync::mpsc::Sender<Vec<u8>>>, resize: Option<tokio::sync::mpsc::Sender<(u16, u16)>>, gone: CancellationToken) {
    while let Some(item) = rx.recv().await {
        match item {
            Ok(Body::Data { ch: STDIN, data }) => {
                if let Some(s) = &stdin {
                    if s.send(data).await.is_err() {
                        stdin = None;
                    }
                }
            }
            Ok(Body::Close { ch: STDIN }) => stdin = None,
            Ok(Body::Resize { width, height }) => {
                if let Some(r) = &resize {
                    let _ = r.send((width, height)).await;
                }
            }
            Ok(Body::Cancel) | Err(_) => break,
            Ok(_) => {}
        }
    }
    gone.cancel();
}

async fn relay(session: Session, tx: PipeTx, rx: PipeRx) {
    let Session { stdin, mut output, resize, end } = session;
    let gone = CancellationToken::new();
    tokio::spawn(inbound(rx, stdin, resize, gone.clone()));
    loop {
        let item = tokio::select! {
            _ = gone.cancelled() => return,
            o = output.recv() => o,
        };
        match item {
            Some((ch, data)) => {
                let sent = tokio::select! {
                    _ = gone.cancelled() => return,
                    r = tx.send(Body::Data { ch, data }) => r,
                };
                if sent.is_err() {
                    return;
                }
            }
            None => break,
        }
    }
    let how = tokio::select! {
        _ = gone.cancelled() => return,
        e = end => e.unwrap_or(End::Error("the session ended without an exit status".into())),
    };
    let _ = tx.send(Body::End(how)).await;
}

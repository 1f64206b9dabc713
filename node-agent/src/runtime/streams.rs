//! What `exec`, `attach` and `port-forward` get from a runtime: a [`Session`] of
//! channels (stdin in, stdout/stderr out, terminal resizes in, how it ended), whatever
//! the runtime underneath (host processes and their pipes or terminal, CRI's streaming
//! server over WebSocket). `streaming` relays a session to the bus.

use super::{Sandbox, Started};
pub use schema::streaming::End;
use schema::streaming::{CHUNK, STDOUT};
use std::path::PathBuf;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

/// The container a stream goes to, as the kubelet knows it.
#[derive(Debug, Clone)]
pub struct ExecTarget {
    pub started: Started,
    pub sandbox: Sandbox,
    /// The container's environment and working directory (host mode runs the command with them).
    pub env: Vec<(String, String)>,
    pub working_dir: PathBuf,
    /// The running instance's log (host-mode attach follows it).
    pub log_path: PathBuf,
    /// Who the container runs as (host mode runs the command as the same).
    pub security: super::Security,
}

/// Which streams the client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Streams {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

pub struct Session {
    /// Bytes for the process's stdin (the connection, for port-forward); dropping it is EOF.
    pub stdin: Option<mpsc::Sender<Vec<u8>>>,
    /// (STDOUT or STDERR, bytes); ends when the output has.
    pub output: mpsc::Receiver<(u8, Vec<u8>)>,
    pub resize: Option<mpsc::Sender<(u16, u16)>>,
    /// How it ended; sent after the last output.
    pub end: oneshot::Receiver<End>,
}

/// The sending ends a runtime fills a [`Session`] through.
pub struct SessionParts {
    pub stdin: Option<mpsc::Receiver<Vec<u8>>>,
    pub output: mpsc::Sender<(u8, Vec<u8>)>,
    pub resize: Option<mpsc::Receiver<(u16, u16)>>,
    pub end: oneshot::Sender<End>,
}

/// A new session and the runtime's ends of it.
pub fn session(stdin: bool, resize: bool) -> (Session, SessionParts) {
    let (in_tx, in_rx) = if stdin {
        let (t, r) = mpsc::channel(8);
        (Some(t), Some(r))
    } else {
        (None, None)
    };
    let (rs_tx, rs_rx) = if resize {
        let (t, r) = mpsc::channel(4);
        (Some(t), Some(r))
    } else {
        (None, None)
    };
    let (out_tx, out_rx) = mpsc::channel(8);
    let (end_tx, end_rx) = oneshot::channel();
    (Session { stdin: in_tx, output: out_rx, resize: rs_tx, end: end_rx }, SessionParts { stdin: in_rx, output: out_tx, resize: rs_rx, end: end_tx })
}

/// Copies a reader into the output channel as `ch` until EOF (or the session is gone).
pub async fn pump_out(mut r: impl AsyncRead + Unpin, ch: u8, out: mpsc::Sender<(u8, Vec<u8>)>) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if out.send((ch, buf[..n].to_vec())).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Copies the stdin channel into a writer; the writer is shut down (EOF) when it ends.
pub async fn pump_in(mut rx: mpsc::Receiver<Vec<u8>>, mut w: impl AsyncWrite + Unpin) {
    while let Some(b) = rx.recv().await {
        if w.write_all(&b).await.is_err() || w.flush().await.is_err() {
            return;
        }
    }
    let _ = w.shutdown().await;
}

/// A session over one byte stream (a port-forward connection): what is read is STDOUT,
/// stdin is written to it; it ends `Exited(0)` when the peer closes it.
pub fn over_stream<S: AsyncRead + AsyncWrite + Send + 'static>(s: S) -> Session {
    let (session, parts) = session(true, false);
    let (r, w) = tokio::io::split(s);
    if let Some(stdin) = parts.stdin {
        tokio::spawn(pump_in(stdin, w));
    }
    let (out, end) = (parts.output, parts.end);
    tokio::spawn(async move {
        pump_out(r, STDOUT, out).await;
        let _ = end.send(End::Exited(0));
    });
    session
}

/// The message and end of a session that could not start.
pub fn failed(message: String) -> Session {
    let (session, parts) = session(false, false);
    let _ = parts.end.send(End::Error(message));
    session
}


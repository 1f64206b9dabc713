//! WebSocket pieces: the handshake's accept key, the `channel.k8s.io` framing (each
//! message starts with its channel: a byte, or an ASCII digit before base64 text), and a
//! byte-stream view of a WebSocket for the port-forward tunnel, whose binary messages
//! carry a SPDY session.

use base64::Engine as _;
use futures::{Sink, Stream};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

pub fn accept_key(key: &str) -> String {
    tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes())
}

/// The remote-command subprotocols, best first.
pub const REMOTE_COMMAND: &[&str] = &["v5.channel.k8s.io", "v5.base64.channel.k8s.io", "v4.channel.k8s.io", "v4.base64.channel.k8s.io", "channel.k8s.io", "base64.channel.k8s.io"];

/// The v5 close signal: `[255, channel]`.
pub const CLOSE_SIGNAL: u8 = 255;

/// How one negotiated subprotocol frames channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Channels {
    pub base64: bool,
    /// 5 and 4: JSON Status on the error channel (5 adds the close signal); 1: plain text.
    pub version: u8,
}

impl Channels {
    pub fn of(protocol: &str) -> Channels {
        // `channel.k8s.io` and `base64.channel.k8s.io` are version 1.
        let version = protocol.split('.').next().and_then(|v| v.strip_prefix('v')).and_then(|n| n.parse().ok()).unwrap_or(1);
        Channels { base64: protocol.contains("base64"), version }
    }

    pub fn encode(&self, ch: u8, data: &[u8]) -> Message {
        if self.base64 {
            let mut s = String::with_capacity(1 + data.len() * 4 / 3 + 4);
            s.push(char::from(b'0' + ch));
            base64::engine::general_purpose::STANDARD.encode_string(data, &mut s);
            Message::Text(s.into())
        } else {
            let mut v = Vec::with_capacity(data.len() + 1);
            v.push(ch);
            v.extend_from_slice(data);
            Message::Binary(v.into())
        }
    }

    /// (channel, payload) of a data message; None for anything else or a malformed one.
    pub fn decode(&self, m: &Message) -> Option<(u8, Vec<u8>)> {
        match m {
            Message::Binary(b) if !self.base64 => {
                let (ch, rest) = b.split_first()?;
                Some((*ch, rest.to_vec()))
            }
            // The Python client sends `str` data as text messages even on the binary
            // protocols: the first character is the raw channel number.
            Message::Text(t) if !self.base64 => {
                let (ch, rest) = t.as_bytes().split_first()?;
                Some((*ch, rest.to_vec()))
            }
            Message::Text(t) if self.base64 => {
                let t = t.as_str();
                let ch = t.as_bytes().first()?.checked_sub(b'0')?;
                let data = base64::engine::general_purpose::STANDARD.decode(&t[1..]).ok()?;
                Some((ch, data))
            }
            // A v5 close signal comes as binary even in base64 mode.
            Message::Binary(b) if b.len() == 2 && b[0] == CLOSE_SIGNAL => Some((CLOSE_SIGNAL, vec![b[1]])),
            _ => None,
        }
    }
}

/// A WebSocket as a byte stream: binary messages in order, each write one message.
pub struct WsIo<S> {
    ws: WebSocketStream<S>,
    buf: bytes::Bytes,
}

impl<S> WsIo<S> {
    pub fn new(ws: WebSocketStream<S>) -> Self {
        WsIo { ws, buf: bytes::Bytes::new() }
    }
}

fn io_err(e: tokio_tungstenite::tungstenite::Error) -> std::io::Error {
    std::io::Error::other(e)
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsIo<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        loop {
            if !self.buf.is_empty() {
                let n = self.buf.len().min(out.remaining());
                let chunk = self.buf.split_to(n);
                out.put_slice(&chunk);
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.ws).poll_next(cx)) {
                None | Some(Ok(Message::Close(_))) => return Poll::Ready(Ok(())),
                Some(Err(e)) => return Poll::Ready(Err(io_err(e))),
                Some(Ok(Message::Binary(b))) => self.buf = b,
                Some(Ok(_)) => {}
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsIo<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(io_err)?;
        Pin::new(&mut self.ws).start_send(Message::Binary(bytes::Bytes::copy_from_slice(data))).map_err(io_err)?;
        Poll::Ready(Ok(data.len()))
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.ws).poll_flush(cx).map_err(io_err)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.ws).poll_close(cx).map_err(io_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_framing_binary_and_base64() {
        let bin = Channels::of("v5.channel.k8s.io");
        assert_eq!(bin, Channels { base64: false, version: 5 });
        let m = bin.encode(1, b"hi");
        assert_eq!(m, Message::Binary(vec![1, b'h', b'i'].into()));
        assert_eq!(bin.decode(&m), Some((1, b"hi".to_vec())));
        assert_eq!(bin.decode(&Message::Binary(vec![255, 0].into())), Some((255, vec![0])));
        let b64 = Channels::of("v4.base64.channel.k8s.io");
        assert_eq!(b64, Channels { base64: true, version: 4 });
        let m = b64.encode(2, b"hello");
        assert_eq!(m, Message::Text("2aGVsbG8=".into()));
        assert_eq!(b64.decode(&m), Some((2, b"hello".to_vec())));
        assert_eq!(b64.decode(&Message::Text("x!!".into())), None);
        assert_eq!(Channels::of("channel.k8s.io").version, 1);
        assert_eq!(Channels::of("v3.channel.k8s.io").version, 3);
        assert_eq!(bin.decode(&Message::Binary(Vec::new().into())), None);
        assert_eq!(bin.decode(&Message::Text("\u{0}typed".into())), Some((0, b"typed".to_vec())));
    }

    #[test]
    fn accept_key_is_rfc6455s() {
        // The example handshake of RFC 6455, section 1.3.
        assert_eq!(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }
}

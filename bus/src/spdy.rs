//! SPDY/3.1 sessions, both sides, over any byte stream (frames may span transport messages).
//!
//! Server side ([`serve`]): as spoken by kubectl (client-go over `moby/spdystream`) for
//! `exec`/`attach`/`port-forward`, either over a plain HTTP `Upgrade: SPDY/3.1` or tunnelled
//! inside WebSocket binary messages (`SPDY/3.1+portforward.k8s.io`); the gateway serves it.
//! Client side ([`connect`]): the node agent speaks it to a container runtime's streaming server
//! (containerd's CRI server: Go, apimachinery's `httpstream/spdy` over spdystream), as the kubelet's
//! own proxy would. Both sides share the codec and the reader/writer tasks; only who opens
//! streams, who answers them and which PING ids are echoed differ.
//!
//! Wire format (big-endian): control frame = `1|version(15)=3|type(16)|flags(8)|length(24)|payload`,
//! data frame = `0|stream-id(31)|flags(8)|length(24)|data`. Header blocks (SYN_STREAM, SYN_REPLY,
//! HEADERS) are `u32 count, {u32 len, name, u32 len, value}*`, names lower-case, several values of
//! one name joined by NUL, compressed with ONE zlib stream per direction per connection, primed
//! with [`DICTIONARY`] and sync-flushed after every block.
//!
//! Flow control: spdystream neither sends WINDOW_UPDATE nor enforces a window, so we ignore
//! WINDOW_UPDATE/SETTINGS and never block on windows. Back-pressure instead comes from bounded
//! queues: `StreamWriter::write` waits when the writer queue is full (slow peer), and the
//! connection reader waits when a stream's `data` receiver is full — which stalls *every* stream
//! of the connection until that receiver is drained (head-of-line blocking, as in spdystream).
//!
//! A server session lives until the peer sends GOAWAY / closes / sends a malformed frame (answered
//! with GOAWAY PROTOCOL_ERROR), `Session::go_away` is called, or every `Session`/`StreamWriter`
//! clone *and* the incoming-stream receiver are dropped (then GOAWAY OK is sent). A client
//! session ends the same ways, every `ClientSession`/`StreamWriter` clone standing in for both.
//!
//! Go facts the client side is built around (spdystream's `connection.go`, Go's `spdy/read.go`):
//! - spdystream drops DATA that arrives for a stream it has not answered yet, so a stream's
//!   writer is only handed out once its SYN_REPLY is in ([`ClientSession::open_stream`]).
//! - It refuses a SYN_STREAM whose id is not above every earlier one, so ids are taken and
//!   SYN_STREAMs queued by the one reader task, in order, however many opens run at once.
//! - Its frame reader fails on upper-case or repeated header names and on `connection`, `host`,
//!   `keep-alive`, `proxy-connection` or `transfer-encoding` in a SYN_STREAM, and a failed read
//!   ends the whole connection: names are lower-cased and merged here, the others refused.
//! - After reading a GOAWAY it reads nothing more, and apimachinery's server `Close()` resets
//!   every stream before sending its GOAWAY: a v4 exec's status on the error stream is followed
//!   by RST_STREAM, not FIN. Data queued before an RST stays readable.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};

pub const VERSION: u16 = 3;
pub const TYPE_SYN_STREAM: u16 = 1;
pub const TYPE_SYN_REPLY: u16 = 2;
pub const TYPE_RST_STREAM: u16 = 3;
pub const TYPE_SETTINGS: u16 = 4;
pub const TYPE_PING: u16 = 6;
pub const TYPE_GOAWAY: u16 = 7;
pub const TYPE_HEADERS: u16 = 8;
pub const TYPE_WINDOW_UPDATE: u16 = 9;
pub const FLAG_FIN: u8 = 0x01;
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;
pub const RST_PROTOCOL_ERROR: u32 = 1;
pub const RST_INVALID_STREAM: u32 = 2;
pub const RST_REFUSED_STREAM: u32 = 3;
pub const RST_CANCEL: u32 = 5;
pub const RST_INTERNAL_ERROR: u32 = 6;
pub const GOAWAY_OK: u32 = 0;
pub const GOAWAY_PROTOCOL_ERROR: u32 = 1;
pub const GOAWAY_INTERNAL_ERROR: u32 = 2;
/// Largest DATA payload `StreamWriter::write` puts in one frame.
pub const MAX_DATA_CHUNK: usize = 32 * 1024;
const MAX_FRAME_LEN: usize = 0x00ff_ffff;
const MAX_HEADER_BLOCK: usize = 1 << 20;
const ID_MASK: u32 = 0x7fff_ffff;
/// Adler-32 of [`DICTIONARY`]: the dictionary id a SPDY/3 zlib stream (FDICT) asks for.
pub const DICTIONARY_ID: u32 = 0xe3c6_a7c2;

/// The SPDY/3 header-compression dictionary (1423 bytes, as in the SPDY/3 draft and spdystream).
pub const DICTIONARY: &[u8; 1423] = b"\
\x00\x00\x00\x07options\x00\x00\x00\x04head\x00\x00\x00\x04post\x00\x00\x00\x03put\x00\x00\
\x00\x06delete\x00\x00\x00\x05trace\x00\x00\x00\x06accept\x00\x00\x00\x0eaccept-charset\x00\
\x00\x00\x0faccept-encoding\x00\x00\x00\x0faccept-language\x00\x00\x00\x0daccept-ranges\x00\
\x00\x00\x03age\x00\x00\x00\x05allow\x00\x00\x00\x0dauthorization\x00\x00\x00\x0dcache-contr\
ol\x00\x00\x00\x0aconnection\x00\x00\x00\x0ccontent-base\x00\x00\x00\x10content-encoding\x00\
\x00\x00\x10content-language\x00\x00\x00\x0econtent-length\x00\x00\x00\x10content-location\
\x00\x00\x00\x0bcontent-md5\x00\x00\x00\x0dcontent-range\x00\x00\x00\x0ccontent-type\x00\x00\
\x00\x04date\x00\x00\x00\x04etag\x00\x00\x00\x06expect\x00\x00\x00\x07expires\x00\x00\x00\
\x04from\x00\x00\x00\x04host\x00\x00\x00\x08if-match\x00\x00\x00\x11if-modified-since\x00\
\x00\x00\x0dif-none-match\x00\x00\x00\x08if-range\x00\x00\x00\x13if-unmodified-since\x00\x00\
\x00\x0dlast-modified\x00\x00\x00\x08location\x00\x00\x00\x0cmax-forwards\x00\x00\x00\x06pra\
gma\x00\x00\x00\x12proxy-authenticate\x00\x00\x00\x13proxy-authorization\x00\x00\x00\x05rang\
e\x00\x00\x00\x07referer\x00\x00\x00\x0bretry-after\x00\x00\x00\x06server\x00\x00\x00\x02te\
\x00\x00\x00\x07trailer\x00\x00\x00\x11transfer-encoding\x00\x00\x00\x07upgrade\x00\x00\x00\
\x0auser-agent\x00\x00\x00\x04vary\x00\x00\x00\x03via\x00\x00\x00\x07warning\x00\x00\x00\x10\
www-authenticate\x00\x00\x00\x06method\x00\x00\x00\x03get\x00\x00\x00\x06status\x00\x00\x00\
\x06200\x20OK\x00\x00\x00\x07version\x00\x00\x00\x08HTTP/1.1\x00\x00\x00\x03url\x00\x00\x00\
\x06public\x00\x00\x00\x0aset-cookie\x00\x00\x00\x0akeep-alive\x00\x00\x00\x06origin10010120\
1202205206300302303304305306307402405406407408409410411412413414415416417502504505203\x20Non\
-Authoritative\x20Information204\x20No\x20Content301\x20Moved\x20Permanently400\x20Bad\x20Re\
quest401\x20Unauthorized403\x20Forbidden404\x20Not\x20Found500\x20Internal\x20Server\x20Erro\
r501\x20Not\x20Implemented503\x20Service\x20UnavailableJan\x20Feb\x20Mar\x20Apr\x20May\x20Ju\
n\x20Jul\x20Aug\x20Sept\x20Oct\x20Nov\x20Dec\x2000:00:00\x20Mon,\x20Tue,\x20Wed,\x20Thu,\x20\
Fri,\x20Sat,\x20Sun,\x20GMTchunked,text/html,image/png,image/jpg,image/gif,application/xml,a\
pplication/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdchcharse\
t=utf-8charset=iso-8859-1,utf-,*,enq=0.";

pub type Headers = Vec<(String, String)>;

#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("SPDY protocol error: {0}")]
    Protocol(&'static str),
    #[error("SPDY header compression error: {0}")]
    Compression(String),
    #[error("SPDY stream was reset")]
    StreamReset,
    /// The peer answered our SYN_STREAM with RST_STREAM (the status), e.g. an unknown `streamtype`.
    #[error("SPDY stream was refused (RST_STREAM status {0})")]
    Refused(u32),
    #[error("SPDY stream was not answered within {0:?}")]
    Timeout(Duration),
    #[error("SPDY stream is closed for writing")]
    StreamClosed,
    #[error("SPDY session is closed")]
    SessionClosed,
    #[error("SPDY I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// One decoded frame. Stream ids are 31-bit; `flags` are the frame's flag byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A new stream: `priority` is 0 (highest) ..= 7.
    SynStream {
        stream_id: u32,
        assoc_id: u32,
        priority: u8,
        slot: u8,
        flags: u8,
        headers: Headers,
    },
    /// (stream_id, flags, headers)
    SynReply(u32, u8, Headers),
    /// (stream_id, status)
    RstStream(u32, u32),
    /// (flags, entries as (flags, id, value))
    Settings(u8, Vec<(u8, u32, u32)>),
    /// (id): odd ids are the client's, even ones the server's.
    Ping(u32),
    /// (last_good_stream_id, status)
    GoAway(u32, u32),
    /// (stream_id, flags, headers)
    Headers(u32, u8, Headers),
    /// (stream_id, delta)
    WindowUpdate(u32, u32),
    /// (stream_id, flags, payload)
    Data(u32, u8, Bytes),
    /// A control frame of a type we do not know: (type, flags, payload); ignored.
    Unknown(u16, u8, Bytes),
}

/// Compressing half of a connection's header-block zlib state (one per direction).
pub struct HeaderCompressor(Compress);

impl Default for HeaderCompressor {
    fn default() -> Self {
        let mut c = Compress::new(Compression::default(), true);
        // On a fresh stream this only records the dictionary (and sets FDICT in the header).
        let _ = c.set_dictionary(DICTIONARY);
        HeaderCompressor(c)
    }
}

impl HeaderCompressor {
    /// Compresses one header block, sync-flushed, appending to `out`.
    pub fn compress(&mut self, block: &[u8], out: &mut Vec<u8>) -> Result<(), SpdyError> {
        let start = self.0.total_in();
        loop {
            let done = (self.0.total_in() - start) as usize;
            out.reserve(block.len() / 2 + 64);
            self.0
                .compress_vec(&block[done.min(block.len())..], out, FlushCompress::Sync)
                .map_err(|e| SpdyError::Compression(e.to_string()))?;
            let done = (self.0.total_in() - start) as usize;
            if done >= block.len() && out.len() < out.capacity() {
                return Ok(());
            }
        }
    }
}

/// Decompressing half of a connection's header-block zlib state.
pub struct HeaderDecompressor(Decompress);

impl Default for HeaderDecompressor {
    fn default() -> Self {
        HeaderDecompressor(Decompress::new(true))
    }
}

impl HeaderDecompressor {
    /// Inflates one compressed header block (continuing the stream), appending to `out`.
    /// Answers zlib's request for the SPDY dictionary (FDICT in the peer's zlib header).
    pub fn decompress(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), SpdyError> {
        loop {
            let (in0, out0) = (self.0.total_in(), self.0.total_out());
            if out.capacity() - out.len() < 1024 {
                out.reserve(4096);
            }
            let res = self.0.decompress_vec(input, out, FlushDecompress::Sync);
            let used = ((self.0.total_in() - in0) as usize).min(input.len());
            let produced = self.0.total_out() - out0;
            input = &input[used..];
            match res {
                Ok(Status::StreamEnd) if !input.is_empty() => {
                    return Err(SpdyError::Compression(
                        "data after end of zlib stream".into(),
                    ))
                }
                Ok(_) => {}
                Err(e) => match e.needs_dictionary() {
                    Some(DICTIONARY_ID) => {
                        self.0
                            .set_dictionary(DICTIONARY)
                            .map_err(|e| SpdyError::Compression(e.to_string()))?;
                        continue;
                    }
                    Some(_) => {
                        return Err(SpdyError::Compression(
                            "zlib asks for an unknown dictionary".into(),
                        ))
                    }
                    None => return Err(SpdyError::Compression(e.to_string())),
                },
            }
            if out.len() > MAX_HEADER_BLOCK {
                return Err(SpdyError::Protocol("header block too large"));
            }
            if input.is_empty() && (out.len() < out.capacity() || produced == 0) {
                return Ok(());
            }
            if used == 0 && produced == 0 {
                return Err(SpdyError::Compression("zlib made no progress".into()));
            }
        }
    }
}

/// Serializes a header block: names lower-cased, repeated names merged with NUL separators.
pub fn encode_header_block(headers: &[(String, String)]) -> Vec<u8> {
    let mut merged: Vec<(String, String)> = Vec::with_capacity(headers.len());
    for (n, v) in headers {
        let n = n.to_ascii_lowercase();
        match merged.iter_mut().find(|(m, _)| *m == n) {
            Some(e) => {
                e.1.push('\0');
                e.1.push_str(v);
            }
            None => merged.push((n, v.clone())),
        }
    }
    let mut b = Vec::new();
    b.put_u32(merged.len() as u32);
    for (n, v) in &merged {
        b.put_u32(n.len() as u32);
        b.put_slice(n.as_bytes());
        b.put_u32(v.len() as u32);
        b.put_slice(v.as_bytes());
    }
    b
}

fn take_u32(r: &mut &[u8]) -> Result<u32, SpdyError> {
    if r.len() < 4 {
        return Err(SpdyError::Protocol("truncated header block"));
    }
    Ok(r.get_u32())
}

fn take_str<'a>(r: &mut &'a [u8]) -> Result<&'a [u8], SpdyError> {
    let n = take_u32(r)? as usize;
    if r.len() < n {
        return Err(SpdyError::Protocol("truncated header block"));
    }
    let (s, rest) = r.split_at(n);
    *r = rest;
    Ok(s)
}

/// Parses an (uncompressed) header block; NUL-separated values become repeated pairs.
pub fn decode_header_block(mut r: &[u8]) -> Result<Headers, SpdyError> {
    let n = take_u32(&mut r)? as usize;
    if n > r.len() / 8 {
        return Err(SpdyError::Protocol("header count exceeds block"));
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let name = take_str(&mut r)?;
        let value = take_str(&mut r)?;
        if name.is_empty() {
            return Err(SpdyError::Protocol("empty header name"));
        }
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        for v in value.split(|&c| c == 0) {
            out.push((name.clone(), String::from_utf8_lossy(v).into_owned()));
        }
    }
    Ok(out)
}

/// Appends the wire form of `frame` to `out`, compressing header blocks with `comp`.
pub fn encode_frame(
    frame: &Frame,
    comp: &mut HeaderCompressor,
    out: &mut BytesMut,
) -> Result<(), SpdyError> {
    let mut p = Vec::new();
    let (ty, flags, headers) = match frame {
        Frame::Data(id, flags, data) => {
            if data.len() > MAX_FRAME_LEN {
                return Err(SpdyError::Protocol("frame too large"));
            }
            out.put_u32(id & ID_MASK);
            out.put_u32((u32::from(*flags) << 24) | data.len() as u32);
            out.put_slice(data);
            return Ok(());
        }
        Frame::SynStream {
            stream_id,
            assoc_id,
            priority,
            slot,
            flags,
            headers,
        } => {
            p.put_u32(stream_id & ID_MASK);
            p.put_u32(assoc_id & ID_MASK);
            p.put_slice(&[priority << 5, *slot]);
            (TYPE_SYN_STREAM, *flags, Some(headers))
        }
        Frame::SynReply(id, flags, h) | Frame::Headers(id, flags, h) => {
            p.put_u32(id & ID_MASK);
            let ty = if matches!(frame, Frame::SynReply(..)) {
                TYPE_SYN_REPLY
            } else {
                TYPE_HEADERS
            };
            (ty, *flags, Some(h))
        }
        Frame::Settings(flags, entries) => {
            p.put_u32(entries.len() as u32);
            for (f, id, v) in entries {
                p.put_u32((u32::from(*f) << 24) | (id & 0x00ff_ffff));
                p.put_u32(*v);
            }
            (TYPE_SETTINGS, *flags, None)
        }
        Frame::Ping(id) => {
            p.put_u32(*id);
            (TYPE_PING, 0, None)
        }
        Frame::RstStream(a, b) | Frame::GoAway(a, b) | Frame::WindowUpdate(a, b) => {
            p.put_u32(a & ID_MASK);
            p.put_u32(if matches!(frame, Frame::WindowUpdate(..)) {
                b & ID_MASK
            } else {
                *b
            });
            let ty = match frame {
                Frame::RstStream(..) => TYPE_RST_STREAM,
                Frame::GoAway(..) => TYPE_GOAWAY,
                _ => TYPE_WINDOW_UPDATE,
            };
            (ty, 0, None)
        }
        Frame::Unknown(ty, flags, payload) => {
            p.put_slice(payload);
            (*ty, *flags, None)
        }
    };
    if let Some(h) = headers {
        comp.compress(&encode_header_block(h), &mut p)?;
    }
    if p.len() > MAX_FRAME_LEN {
        return Err(SpdyError::Protocol("frame too large"));
    }
    out.put_u16(0x8000 | VERSION);
    out.put_u16(ty);
    out.put_u32((u32::from(flags) << 24) | p.len() as u32);
    out.put_slice(&p);
    Ok(())
}

/// Takes one complete frame off the front of `buf` (`Ok(None)`: need more bytes). Every
/// header block is inflated, even of ignored frames, to keep the zlib stream in step.
pub fn decode_frame(
    buf: &mut BytesMut,
    dec: &mut HeaderDecompressor,
) -> Result<Option<Frame>, SpdyError> {
    if buf.len() < 8 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
    if buf.len() < 8 + len {
        buf.reserve(8 + len - buf.len());
        return Ok(None);
    }
    let mut head = buf.split_to(8);
    let mut p = buf.split_to(len).freeze();
    let (word, flags) = (head.get_u32(), head.get_u8());
    if word & 0x8000_0000 == 0 {
        return Ok(Some(Frame::Data(word, flags, p)));
    }
    if (word >> 16) & 0x7fff != u32::from(VERSION) {
        return Err(SpdyError::Protocol("unsupported SPDY version"));
    }
    let ty = (word & 0xffff) as u16;
    // Minimum payload length, and whether it is also the exact one.
    let (min, exact) = match ty {
        TYPE_SYN_STREAM => (10, false),
        TYPE_SYN_REPLY | TYPE_HEADERS | TYPE_SETTINGS => (4, false),
        TYPE_PING => (4, true),
        TYPE_RST_STREAM | TYPE_GOAWAY | TYPE_WINDOW_UPDATE => (8, true),
        _ => return Ok(Some(Frame::Unknown(ty, flags, p))),
    };
    if p.len() < min || (exact && p.len() != min) {
        return Err(SpdyError::Protocol("control frame of wrong length"));
    }
    let id = p.get_u32() & ID_MASK;
    let mut headers = |p: &Bytes| -> Result<Headers, SpdyError> {
        let mut raw = Vec::new();
        dec.decompress(p, &mut raw)?;
        decode_header_block(&raw)
    };
    Ok(Some(match ty {
        TYPE_SYN_STREAM => {
            let (assoc_id, priority, slot) = (p.get_u32() & ID_MASK, p.get_u8() >> 5, p.get_u8());
            let headers = headers(&p)?;
            if id == 0 {
                return Err(SpdyError::Protocol("SYN_STREAM for stream 0"));
            }
            Frame::SynStream {
                stream_id: id,
                assoc_id,
                priority,
                slot,
                flags,
                headers,
            }
        }
        TYPE_SYN_REPLY => Frame::SynReply(id, flags, headers(&p)?),
        TYPE_HEADERS => Frame::Headers(id, flags, headers(&p)?),
        TYPE_SETTINGS => {
            let n = id as usize; // the first word is the entry count here
            if p.len() / 8 < n {
                return Err(SpdyError::Protocol("SETTINGS count exceeds frame"));
            }
            let entry = |w: u32, v: u32| ((w >> 24) as u8, w & 0x00ff_ffff, v);
            Frame::Settings(
                flags,
                (0..n).map(|_| entry(p.get_u32(), p.get_u32())).collect(),
            )
        }
        TYPE_PING => Frame::Ping(id),
        TYPE_RST_STREAM => Frame::RstStream(id, p.get_u32()),
        TYPE_GOAWAY => Frame::GoAway(id, p.get_u32()),
        _ => Frame::WindowUpdate(id, p.get_u32() & ID_MASK),
    }))
}

// ---------------------------------------------------------------------------------------------
// Session

/// Tuning for [`serve_with`] and [`connect_with`].
#[derive(Debug, Clone)]
pub struct Config {
    /// Headers of the SYN_REPLY sent for every accepted stream (kubelet sends none). Server only.
    pub reply_headers: Headers,
    /// DATA chunks buffered per stream before the connection reader waits.
    pub data_capacity: usize,
    /// Frames queued for the writer before `write` waits.
    pub write_queue: usize,
    /// New streams buffered before the connection reader waits for `recv`. Server only.
    pub incoming_capacity: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            reply_headers: Vec::new(),
            data_capacity: 16,
            write_queue: 64,
            incoming_capacity: 16,
        }
    }
}

/// How long [`ClientSession::open_stream`] waits for the SYN_REPLY: apimachinery's client
/// (`createStreamResponseTimeout`) waits as long.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// SYN_STREAM headers Go's SPDY framer fails the whole frame read on (`invalidReqHeaders`),
/// which ends spdystream's connection rather than the one stream.
const FORBIDDEN_REQUEST_HEADERS: [&str; 5] = [
    "connection",
    "host",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
];

enum Cmd {
    Frame(Frame),
    Shutdown,
}

struct StreamShared {
    id: u32,
    reset: AtomicBool,
    local_fin: AtomicBool,
    remote_fin: AtomicBool,
    data_tx: Mutex<Option<mpsc::Sender<Bytes>>>,
}

impl StreamShared {
    fn new(id: u32, local_fin: bool, data_tx: Option<mpsc::Sender<Bytes>>) -> Arc<Self> {
        Arc::new(StreamShared {
            id,
            reset: AtomicBool::new(false),
            local_fin: AtomicBool::new(local_fin),
            remote_fin: AtomicBool::new(data_tx.is_none()),
            data_tx: Mutex::new(data_tx),
        })
    }
    fn data_sender(&self) -> Option<mpsc::Sender<Bytes>> {
        self.data_tx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
    fn end_data(&self) {
        self.data_tx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }
    fn finished(&self) -> bool {
        self.reset.load(Ordering::SeqCst)
            || (self.local_fin.load(Ordering::SeqCst) && self.remote_fin.load(Ordering::SeqCst))
    }
}

/// Clone-able handle on a running session.
#[derive(Clone)]
pub struct Session {
    tx: mpsc::Sender<Cmd>,
    done: watch::Receiver<bool>,
    /// The last stream id the peer opened and we accepted (GOAWAY's last-good id); a client
    /// accepts none, so its stays 0.
    last_id: Arc<AtomicU32>,
}

impl Session {
    /// Sends GOAWAY (OK) after the frames already queued, then the writer closes the connection.
    pub async fn go_away(&self) {
        let last = self.last_id.load(Ordering::SeqCst);
        let _ = self
            .tx
            .send(Cmd::Frame(Frame::GoAway(last, GOAWAY_OK)))
            .await;
        let _ = self.tx.send(Cmd::Shutdown).await;
    }

    /// Resolves once the connection has ended (every stream is then ended too).
    pub fn closed(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut done = self.done.clone();
        async move {
            let _ = done.wait_for(|d| *d).await;
        }
    }
}

/// A stream opened by the client, already answered with SYN_REPLY.
pub struct IncomingStream {
    pub id: u32,
    /// Lower-case names, in the order sent (a NUL-joined value becomes several pairs).
    pub headers: Headers,
    /// DATA payloads until the client's FIN (then `None`), its RST, or the connection's end.
    pub data: mpsc::Receiver<Bytes>,
    pub writer: StreamWriter,
}

impl IncomingStream {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sending half of one stream.
#[derive(Clone)]
pub struct StreamWriter {
    shared: Arc<StreamShared>,
    tx: mpsc::Sender<Cmd>,
    done: watch::Receiver<bool>,
}

impl StreamWriter {
    pub fn id(&self) -> u32 {
        self.shared.id
    }

    fn check(&self) -> Result<(), SpdyError> {
        if *self.done.borrow() {
            Err(SpdyError::SessionClosed)
        } else if self.shared.reset.load(Ordering::SeqCst) {
            Err(SpdyError::StreamReset)
        } else if self.shared.local_fin.load(Ordering::SeqCst) {
            Err(SpdyError::StreamClosed)
        } else {
            Ok(())
        }
    }

    async fn send(&self, flags: u8, data: Bytes) -> Result<(), SpdyError> {
        let frame = Frame::Data(self.shared.id, flags, data);
        self.tx
            .send(Cmd::Frame(frame))
            .await
            .map_err(|_| SpdyError::SessionClosed)
    }

    /// Queues `data` as DATA frames of at most [`MAX_DATA_CHUNK`] bytes; waits while the
    /// writer queue is full.
    pub async fn write(&self, mut data: Bytes) -> Result<(), SpdyError> {
        while !data.is_empty() {
            self.check()?;
            let chunk = data.split_to(data.len().min(MAX_DATA_CHUNK));
            self.send(0, chunk).await?;
        }
        self.check()
    }

    /// Half-closes our side (empty DATA frame with FIN). Closing twice is a no-op.
    pub async fn close(&self) -> Result<(), SpdyError> {
        if self.shared.local_fin.load(Ordering::SeqCst) && !self.shared.reset.load(Ordering::SeqCst)
        {
            return Ok(());
        }
        self.check()?;
        self.shared.local_fin.store(true, Ordering::SeqCst);
        self.send(FLAG_FIN, Bytes::new()).await
    }

    /// Sends RST_STREAM with `status` (e.g. [`RST_CANCEL`]; 0, which spdystream rejects as a
    /// malformed frame, is sent as CANCEL); ends this stream's `data` too.
    pub async fn reset(&self, status: u32) {
        let status = if status == 0 { RST_CANCEL } else { status };
        if self.shared.reset.swap(true, Ordering::SeqCst) {
            return;
        }
        self.shared.end_data();
        let frame = Frame::RstStream(self.shared.id, status);
        let _ = self.tx.send(Cmd::Frame(frame)).await;
    }
}

/// [`serve_with`] with the default [`Config`].
pub fn serve<IO>(io: IO) -> (Session, mpsc::Receiver<IncomingStream>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    serve_with(io, Config::default())
}

/// Serves the server side of a SPDY/3.1 session on `io` (spawns a reader and a writer task;
/// must be called inside a tokio runtime). New client streams arrive on the receiver.
pub fn serve_with<IO>(io: IO, cfg: Config) -> (Session, mpsc::Receiver<IncomingStream>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (in_tx, in_rx) = mpsc::channel(cfg.incoming_capacity.max(1));
    (start(io, cfg, Role::Server { incoming: in_tx }), in_rx)
}

/// The client side of a SPDY/3.1 session: opens streams (odd ids from 1) with
/// [`open_stream`](Self::open_stream), refuses the server's own. Clone-able; the session
/// lasts while a clone or a stream's writer lives (see the module docs for its other ends).
#[derive(Clone)]
pub struct ClientSession {
    session: Session,
    opens: mpsc::Sender<Open>,
}

/// A stream we opened, answered by the server.
pub struct ClientStream {
    /// DATA payloads until the server's FIN or RST (then `None`), or the connection's end.
    pub data: mpsc::Receiver<Bytes>,
    pub writer: StreamWriter,
}

/// An `open_stream` handed to the reader, which alone takes stream ids (see the module docs).
struct Open {
    headers: Headers,
    reply: oneshot::Sender<Result<ClientStream, SpdyError>>,
}

/// A stream whose SYN_STREAM is out and whose SYN_REPLY is not in yet. Its writer is made
/// when the reply comes: a writer held here would keep an abandoned session alive.
struct Pending {
    reply: oneshot::Sender<Result<ClientStream, SpdyError>>,
    shared: Arc<StreamShared>,
    data: mpsc::Receiver<Bytes>,
}

impl ClientSession {
    /// Opens a stream: SYN_STREAM with `headers` (names of any case, sent lower-case; repeated
    /// names merged), resolving on the server's SYN_REPLY. Fails with `Refused` if the server
    /// resets it instead, `SessionClosed` if the session ends first, `Timeout` after
    /// [`OPEN_TIMEOUT`], and `Protocol` — sending nothing — for headers the Go server would end
    /// the connection over. Opens may run concurrently; their ids follow the order in which
    /// they reach the reader. A stream whose open timed out or was dropped is reset.
    pub async fn open_stream(&self, headers: Headers) -> Result<ClientStream, SpdyError> {
        check_request_headers(&headers)?;
        let (reply, answer) = oneshot::channel();
        self.opens
            .send(Open { headers, reply })
            .await
            .map_err(|_| SpdyError::SessionClosed)?;
        match tokio::time::timeout(OPEN_TIMEOUT, answer).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(SpdyError::SessionClosed),
            Err(_) => Err(SpdyError::Timeout(OPEN_TIMEOUT)),
        }
    }

    /// Sends GOAWAY (OK) after the frames already queued, then closes the connection. The Go
    /// server reads nothing after it: queue every FIN first.
    pub async fn go_away(&self) {
        self.session.go_away().await
    }

    /// Resolves once the connection has ended (every stream is then ended too).
    pub fn closed(&self) -> impl Future<Output = ()> + Send + 'static {
        self.session.closed()
    }
}

fn check_request_headers(headers: &Headers) -> Result<(), SpdyError> {
    let mut size = 0;
    for (n, v) in headers {
        if n.is_empty() || n.contains('\0') {
            return Err(SpdyError::Protocol("empty header name or NUL in one"));
        }
        if FORBIDDEN_REQUEST_HEADERS
            .iter()
            .any(|f| n.eq_ignore_ascii_case(f))
        {
            return Err(SpdyError::Protocol(
                "connection, host, keep-alive, proxy-connection and transfer-encoding are not SPDY request headers",
            ));
        }
        size += n.len() + v.len() + 8;
    }
    if size > MAX_HEADER_BLOCK {
        return Err(SpdyError::Protocol("header block too large"));
    }
    Ok(())
}

/// [`connect_with`] with the default [`Config`].
pub fn connect<IO>(io: IO) -> ClientSession
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    connect_with(io, Config::default())
}

/// Runs the client side of a SPDY/3.1 session on `io`, which must already be upgraded
/// (spawns a reader and a writer task; must be called inside a tokio runtime). Of `cfg`, only
/// `data_capacity` and `write_queue` apply.
pub fn connect_with<IO>(io: IO, cfg: Config) -> ClientSession
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (opens, open_rx) = mpsc::channel(16);
    let role = Role::Client {
        opens: Some(open_rx),
        next_id: 1,
        pending: HashMap::new(),
    };
    ClientSession {
        session: start(io, cfg, role),
        opens,
    }
}

/// Spawns the writer and the reader of one session.
fn start<IO>(io: IO, cfg: Config, role: Role) -> Session
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (rd, wr) = tokio::io::split(io);
    let (tx, rx) = mpsc::channel(cfg.write_queue.max(1));
    let (done_tx, done_rx) = watch::channel(false);
    let (stop_tx, stop_rx) = watch::channel(false); // the writer's own, so it is no "handle"
    let last_id = Arc::new(AtomicU32::new(0));
    tokio::spawn(writer_task(wr, rx, stop_rx));
    let reader = Reader {
        tx: tx.clone(),
        role,
        done: done_tx,
        stop: stop_tx,
        last_id: last_id.clone(),
        streams: HashMap::new(),
        cfg,
    };
    tokio::spawn(reader.run(rd));
    Session {
        tx,
        done: done_rx,
        last_id,
    }
}

async fn writer_task<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut rx: mpsc::Receiver<Cmd>,
    mut done: watch::Receiver<bool>,
) {
    let mut comp = HeaderCompressor::default();
    let mut out = BytesMut::with_capacity(64 * 1024);
    loop {
        let first = tokio::select! {
            biased;
            c = rx.recv() => c,
            _ = done.wait_for(|d| *d) => None,
        };
        let Some(mut cmd) = first else { break };
        let mut shutdown = false;
        for batched in 1.. {
            match cmd {
                Cmd::Shutdown => {
                    shutdown = true;
                    break;
                }
                Cmd::Frame(f) => {
                    if let Err(e) = encode_frame(&f, &mut comp, &mut out) {
                        tracing::warn!("spdy: dropping unencodable frame: {e}");
                    }
                }
            }
            // Batch whatever else is queued (at most 64 frames) into one write.
            match (batched < 64).then(|| rx.try_recv().ok()).flatten() {
                Some(c) => cmd = c,
                None => break,
            }
        }
        if let Err(e) = write_out(&mut wr, &out, &mut done).await {
            tracing::debug!("spdy: write failed: {e}");
            return;
        }
        out.clear();
        if shutdown {
            break;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), wr.shutdown()).await;
}

/// Writes `buf` unless the session ends while the peer is not reading.
async fn write_out<W: AsyncWrite + Unpin>(
    wr: &mut W,
    buf: &[u8],
    done: &mut watch::Receiver<bool>,
) -> std::io::Result<()> {
    if buf.is_empty() {
        return Ok(());
    }
    tokio::select! {
        biased;
        r = async { wr.write_all(buf).await?; wr.flush().await } => r,
        _ = done.wait_for(|d| *d) => Err(std::io::Error::other("session ended")),
    }
}

/// Why the reader stopped.
enum End {
    Eof,
    PeerGoAway,
    WriterGone,
    Abandoned,
    Malformed(SpdyError),
}

/// What a session's reader does beyond the frames both sides handle alike.
enum Role {
    /// Accepts the peer's streams and hands them out.
    Server {
        incoming: mpsc::Sender<IncomingStream>,
    },
    /// Opens streams when asked (`opens` is `None` once every `ClientSession` is gone) and
    /// refuses the peer's.
    Client {
        opens: Option<mpsc::Receiver<Open>>,
        next_id: u32,
        pending: HashMap<u32, Pending>,
    },
}

/// What woke the reader.
enum Wake {
    Read(std::io::Result<usize>),
    Open(Option<Open>),
    End(End),
}

struct Reader {
    tx: mpsc::Sender<Cmd>,
    role: Role,
    done: watch::Sender<bool>,
    stop: watch::Sender<bool>,
    last_id: Arc<AtomicU32>,
    streams: HashMap<u32, Arc<StreamShared>>,
    cfg: Config,
}

impl Reader {
    async fn run<R: AsyncRead + Unpin>(mut self, mut rd: R) {
        let mut buf = BytesMut::with_capacity(16 * 1024);
        let mut dec = HeaderDecompressor::default();
        let end = 'outer: loop {
            loop {
                match decode_frame(&mut buf, &mut dec) {
                    Ok(Some(f)) => {
                        if let Err(end) = self.handle(f).await {
                            break 'outer end;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => break 'outer End::Malformed(e),
                }
            }
            let wake = {
                let (done, tx) = (&self.done, &self.tx);
                let (incoming, opens) = match &mut self.role {
                    Role::Server { incoming } => (Some(&*incoming), None),
                    Role::Client { opens, .. } => (None, opens.as_mut()),
                };
                // A server session is abandoned when no handle and no `incoming` receiver is
                // left; a client one when no handle is (its `opens` sender sits in a handle).
                let abandoned = async {
                    done.closed().await;
                    if let Some(incoming) = incoming {
                        incoming.closed().await;
                    }
                };
                let open = async {
                    match opens {
                        Some(opens) => opens.recv().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    r = rd.read_buf(&mut buf) => Wake::Read(r),
                    o = open => Wake::Open(o),
                    _ = tx.closed() => Wake::End(End::WriterGone),
                    _ = abandoned => Wake::End(End::Abandoned),
                }
            };
            match wake {
                Wake::Read(Ok(0)) => break End::Eof,
                Wake::Read(Ok(_)) => {}
                Wake::Read(Err(e)) => {
                    tracing::debug!("spdy: read failed: {e}");
                    break End::Eof;
                }
                Wake::Open(Some(o)) => {
                    if let Err(end) = self.open(o).await {
                        break end;
                    }
                }
                Wake::Open(None) => {
                    if let Role::Client { opens, .. } = &mut self.role {
                        *opens = None;
                    }
                }
                Wake::End(end) => break end,
            }
        };
        let last = self.last_id.load(Ordering::SeqCst);
        let goaway = |status| Cmd::Frame(Frame::GoAway(last, status));
        match end {
            End::Malformed(e) => {
                tracing::debug!("spdy: closing session: {e}");
                let _ = self.tx.try_send(goaway(GOAWAY_PROTOCOL_ERROR));
            }
            End::Abandoned => {
                let _ = self.tx.try_send(goaway(GOAWAY_OK));
            }
            End::Eof | End::PeerGoAway | End::WriterGone => {}
        }
        let _ = self.tx.try_send(Cmd::Shutdown);
        for s in self.streams.values() {
            s.end_data();
        }
        // Opens still waiting for a reply end with `SessionClosed` (their senders dropped).
        if let Role::Client { pending, .. } = &mut self.role {
            pending.clear();
        }
        self.stop.send_replace(true);
        self.done.send_replace(true);
    }

    async fn enqueue(&self, f: Frame) -> Result<(), End> {
        self.tx
            .send(Cmd::Frame(f))
            .await
            .map_err(|_| End::WriterGone)
    }

    fn remote_fin(&mut self, s: &Arc<StreamShared>) {
        s.remote_fin.store(true, Ordering::SeqCst);
        s.end_data();
        if s.finished() {
            self.streams.remove(&s.id);
        }
    }

    /// Client: takes the next stream id and queues the SYN_STREAM; the open is answered
    /// when the SYN_REPLY (or an RST) comes.
    async fn open(&mut self, o: Open) -> Result<(), End> {
        let Role::Client {
            next_id, pending, ..
        } = &mut self.role
        else {
            return Ok(());
        };
        // Opens whose caller stopped waiting (timed out, dropped) are cancelled now rather
        // than left open on the server until it answers.
        let gave_up: Vec<u32> = pending
            .iter()
            .filter(|(_, p)| p.reply.is_closed())
            .map(|(id, _)| *id)
            .collect();
        let id = *next_id;
        if id <= ID_MASK {
            *next_id += 2;
        }
        for g in &gave_up {
            if let Some(p) = pending.remove(g) {
                p.shared.reset.store(true, Ordering::SeqCst);
            }
            self.streams.remove(g);
        }
        self.streams.retain(|_, s| !s.finished());
        for g in gave_up {
            self.enqueue(Frame::RstStream(g, RST_CANCEL)).await?;
        }
        if id > ID_MASK {
            let _ = o
                .reply
                .send(Err(SpdyError::Protocol("stream ids exhausted")));
            return Ok(());
        }
        let (dtx, drx) = mpsc::channel(self.cfg.data_capacity.max(1));
        let shared = StreamShared::new(id, false, Some(dtx));
        let syn = Frame::SynStream {
            stream_id: id,
            assoc_id: 0,
            // What spdystream (so kubectl) sends; the Go server does not act on it.
            priority: 7,
            slot: 0,
            flags: 0,
            headers: o.headers,
        };
        self.enqueue(syn).await?;
        self.streams.insert(id, shared.clone());
        if let Role::Client { pending, .. } = &mut self.role {
            let reply = o.reply;
            pending.insert(
                id,
                Pending {
                    reply,
                    shared,
                    data: drx,
                },
            );
        }
        Ok(())
    }

    /// Client: the server answered stream `id`.
    async fn replied(&mut self, id: u32, flags: u8) -> Result<(), End> {
        let Role::Client { pending, .. } = &mut self.role else {
            return Ok(()); // a server opens no streams to be answered
        };
        // Not waiting (a second reply, or a stream already reset): ignored, as spdystream does.
        let Some(p) = pending.remove(&id) else {
            return Ok(());
        };
        let writer = StreamWriter {
            shared: p.shared.clone(),
            tx: self.tx.clone(),
            done: self.done.subscribe(),
        };
        if flags & FLAG_FIN != 0 {
            self.remote_fin(&p.shared);
        }
        let stream = ClientStream {
            data: p.data,
            writer,
        };
        if let Err(Ok(stream)) = p.reply.send(Ok(stream)) {
            // The caller stopped waiting: nobody will use or close the stream.
            self.streams.remove(&id);
            stream.writer.reset(RST_CANCEL).await;
        }
        Ok(())
    }

    async fn handle(&mut self, frame: Frame) -> Result<(), End> {
        match frame {
            Frame::SynStream { stream_id, .. } if matches!(self.role, Role::Client { .. }) => {
                // Nothing the node agent talks to pushes streams; refusing keeps the server's
                // stream table clean.
                return self
                    .enqueue(Frame::RstStream(stream_id, RST_REFUSED_STREAM))
                    .await;
            }
            Frame::SynStream {
                stream_id,
                flags,
                headers,
                ..
            } => {
                if stream_id % 2 == 0 || stream_id <= self.last_id.load(Ordering::SeqCst) {
                    return self
                        .enqueue(Frame::RstStream(stream_id, RST_PROTOCOL_ERROR))
                        .await;
                }
                self.last_id.store(stream_id, Ordering::SeqCst);
                let Role::Server { incoming } = &self.role else {
                    return Ok(());
                };
                if incoming.is_closed() {
                    return self
                        .enqueue(Frame::RstStream(stream_id, RST_REFUSED_STREAM))
                        .await;
                }
                self.streams.retain(|_, s| !s.finished());
                let (dtx, drx) = mpsc::channel(self.cfg.data_capacity.max(1));
                let fin = flags & FLAG_FIN != 0;
                let uni = flags & FLAG_UNIDIRECTIONAL != 0;
                let shared = StreamShared::new(stream_id, uni, (!fin).then_some(dtx));
                if !uni {
                    let headers = self.cfg.reply_headers.clone();
                    self.enqueue(Frame::SynReply(stream_id, 0, headers)).await?;
                }
                self.streams.insert(stream_id, shared.clone());
                let writer = StreamWriter {
                    shared,
                    tx: self.tx.clone(),
                    done: self.done.subscribe(),
                };
                let stream = IncomingStream {
                    id: stream_id,
                    headers,
                    data: drx,
                    writer,
                };
                let Role::Server { incoming } = &self.role else {
                    return Ok(());
                };
                tokio::select! {
                    r = incoming.send(stream) => if r.is_err() {
                        self.streams.remove(&stream_id);
                        self.enqueue(Frame::RstStream(stream_id, RST_REFUSED_STREAM)).await?;
                    },
                    _ = self.tx.closed() => return Err(End::WriterGone),
                }
            }
            Frame::SynReply(stream_id, flags, _) => self.replied(stream_id, flags).await?,
            Frame::Data(stream_id, flags, data) => {
                let Some(s) = self.streams.get(&stream_id).cloned() else {
                    return Ok(());
                };
                if let (false, Some(sender)) = (data.is_empty(), s.data_sender()) {
                    tokio::select! {
                        _ = sender.send(data) => {}
                        _ = self.tx.closed() => return Err(End::WriterGone),
                    }
                }
                if flags & FLAG_FIN != 0 {
                    self.remote_fin(&s);
                }
            }
            Frame::Headers(stream_id, flags, _) => {
                if let (true, Some(s)) =
                    (flags & FLAG_FIN != 0, self.streams.get(&stream_id).cloned())
                {
                    self.remote_fin(&s);
                }
            }
            Frame::RstStream(stream_id, status) => {
                if let Some(s) = self.streams.remove(&stream_id) {
                    s.reset.store(true, Ordering::SeqCst);
                    s.end_data();
                }
                if let Role::Client { pending, .. } = &mut self.role {
                    if let Some(p) = pending.remove(&stream_id) {
                        let _ = p.reply.send(Err(SpdyError::Refused(status)));
                    }
                }
            }
            // Pings of the peer's parity must be echoed (client ids are odd, server ids even);
            // ours would be answers, and we send none.
            Frame::Ping(id) if (id % 2 == 0) == matches!(self.role, Role::Client { .. }) => {
                self.enqueue(Frame::Ping(id)).await?
            }
            Frame::GoAway(..) => return Err(End::PeerGoAway),
            _ => {} // SETTINGS, WINDOW_UPDATE, our own PINGs' answers, unknown types: ignored
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::DuplexStream;
    use tokio::time::timeout;

    /// SYN_STREAM sent by Firefox (SPDY/3), captured in proxygen's SPDYCodecTest.cpp (`synStream`).
    const FIREFOX_SYN_STREAM: &str = "\
        800300010100041a0000000100000000000038eae3c6a7c20265575022b4c29e20d9ad10a9d9dd350494f1aca0458714\
        30edeb25a61565e6a5e81527e9a5018be9246042d54b061730ec56c5c0a233175cbe669494141483b51624828b3b6e80\
        00d22f2e492c292dd62bc828000820942280032080f2f27593139333520102085be1cb01104079f9bac989c919a90001\
        84521b7821421f7b78a285ba35c8d796d058294f4d2ad0d1d2d7020b5a004d93849601ba9979c5a9c9a545a9ba459084\
        0b723f2340001902041046d150ee9b5f95999393a86faa67a0a0e19b989c9957925f9c610d4eba39c01497ace01fac10\
        a16068100f44a69ac074084cb5e1a949de9925faa6c6e67ac6660a1ade1e21be3e3a0a3999d9a90aeea9c9d9f99a0ace\
        19c0723a55dfc442cf40cfc8d418647a70625a6251265413f64a4f189c161460894101941a9054225741a979baa1c1c0\
        3400f7391bac94617a0c1040b9f125c5b68626866696a686e60666d60001a49092585264eb1b5f6010e65892156ee992\
        5761e91b16e8e913ef989d66690d10400af1e989b6ee8e867a467a86464686e666661666967a8626c6c6e696c6262626\
        d60001a490536a1b92ee53185ae263eee59aa9ebef5e98961498ebe15d9a516e0d10400a15254579b68e21a6c1c6c5ba\
        61a67e49a56551a1ce29c98ed60001088243238661200082ad841cf48cfe5e8a5180a24a6c6831cb24dd67f77544fc3e\
        ec5f74dd28d90b0e74dddbb350b2478dac91b5b43071a0d744c95e70a0d7dc9e85923d6ad5b6e7bb94da70a0f344c91e\
        38d0796ecf42c93f41708e0320080001f0355b9ab007516245f027343454faff38d399c4be6ad8dca00169cd0d09ee05\
        1a90d6dcc7f742823b43874ea994713ef72f80140a6c758dac01024821b938d7d6c81a2080142a8a6d4d8c548d1db38a\
        2c13537db32c3c7583930b03558d1d8d548d1d0d4d0c2c4ccd2c4ccc0d558d1d4d0d8d8cad010248a1d8d631d1c4a8a4\
        28a2d2dd33b03caa2cd0df3bbc5ccf29c432b032c21a208014d28a6c0d4cfc3c937c9c0a9d428353bc7dfc3283f51cc3\
        23fc33f39253330c82cd4a3d928b83531243e2bd4de333ddb3f59c828b4c7213f55c0bf5dc2273f50cf41cc343bd221d\
        5d52ac0102482139beb438b5c8d6d4c2c0d4dcd4ccd0d01a20801412934b6c0d4d4c4c8d2d4c0d4dcccc0d2c548ddc4c\
        ac01021004073708c3300000576184d8b1c179f0a8547b8d8a163f90d208250e5d9fbbdbb7fbf076f853d79f658dcfe9\
        06449c85118bcee1dd166449fce03bc0823ae2156eebd8d18088b3504a5272d140db78dff8adf5446bb3569d47a00111\
        67a194a41068746bb3568dcb00ff04c1410e80300804c02f95c242371eb1f419c698188f1efc7f9ca136d0dde7f99598\
        418719e99dcb0c3ad03b2334e7f5d4fe1eb8311a022e52023273fb059042798aad9185894985a1a9a905400001000000\
        ffff";

    fn h(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }
    fn syn(stream_id: u32, pairs: &[(&str, &str)]) -> Frame {
        Frame::SynStream {
            stream_id,
            assoc_id: 0,
            priority: 0,
            slot: 0,
            flags: 0,
            headers: h(pairs),
        }
    }
    fn data(stream_id: u32, flags: u8, d: &'static [u8]) -> Frame {
        Frame::Data(stream_id, flags, Bytes::from_static(d))
    }
    fn reply(stream_id: u32) -> Option<Frame> {
        Some(Frame::SynReply(stream_id, 0, vec![]))
    }
    fn all_frames() -> Vec<Frame> {
        vec![
            Frame::SynStream {
                stream_id: 1,
                assoc_id: 0,
                priority: 7,
                slot: 0,
                flags: FLAG_FIN,
                headers: h(&[("streamtype", "error"), ("port", "80"), ("requestid", "0")]),
            },
            Frame::SynReply(1, 0, vec![]),
            Frame::SynReply(3, FLAG_FIN, h(&[("a", "1"), ("a", "2"), ("b", "")])),
            Frame::RstStream(3, RST_CANCEL),
            Frame::Settings(1, vec![(1, 7, 1000), (0, 4, 100)]),
            Frame::Ping(1),
            Frame::GoAway(5, GOAWAY_PROTOCOL_ERROR),
            Frame::Headers(5, 0, h(&[("x-y", "z")])),
            Frame::WindowUpdate(5, 65536),
            data(5, FLAG_FIN, b"payload"),
            data(7, 0, b""),
            Frame::Unknown(11, 0, Bytes::from_static(b"\xd4\x74")),
        ]
    }

    #[test]
    fn every_frame_round_trips_byte_by_byte() {
        let (mut comp, mut dec) = (HeaderCompressor::default(), HeaderDecompressor::default());
        let mut wire = BytesMut::new();
        for f in all_frames() {
            encode_frame(&f, &mut comp, &mut wire).unwrap();
        }
        let (mut buf, mut got) = (BytesMut::new(), Vec::new());
        for b in wire.iter() {
            buf.put_u8(*b);
            while let Some(f) = decode_frame(&mut buf, &mut dec).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, all_frames());
        // Fixed layouts, checked against spdystream's write.go.
        let mut out = BytesMut::new();
        encode_frame(&Frame::Ping(1), &mut comp, &mut out).unwrap();
        encode_frame(&Frame::RstStream(3, 5), &mut comp, &mut out).unwrap();
        encode_frame(&data(1, FLAG_FIN, b"ab"), &mut comp, &mut out).unwrap();
        assert_eq!(
            &out[..],
            b"\x80\x03\x00\x06\x00\x00\x00\x04\x00\x00\x00\x01\
            \x80\x03\x00\x03\x00\x00\x00\x08\x00\x00\x00\x03\x00\x00\x00\x05\
            \x00\x00\x00\x01\x01\x00\x00\x02ab"
        );
    }

    #[test]
    fn header_blocks_share_one_zlib_stream() {
        let mut c = Compress::new(Compression::default(), true);
        assert_eq!(c.set_dictionary(DICTIONARY).unwrap(), DICTIONARY_ID);
        let (mut comp, mut dec) = (HeaderCompressor::default(), HeaderDecompressor::default());
        let mut blocks = Vec::new();
        for i in 0..5 {
            let port = format!("{}", 8000 + i);
            let hs = h(&[
                ("streamtype", "data"),
                ("port", &port),
                ("requestid", &i.to_string()),
            ]);
            let mut out = Vec::new();
            comp.compress(&encode_header_block(&hs), &mut out).unwrap();
            assert!(out.ends_with(&[0, 0, 0xff, 0xff]), "sync flush marker");
            blocks.push((hs, out));
        }
        let first = &blocks[0].1;
        assert!(
            first[1] & 0x20 != 0 && first[2..6] == DICTIONARY_ID.to_be_bytes(),
            "FDICT + dict id"
        );
        assert!(blocks[4].1.len() < first.len());
        for (hs, c) in &blocks {
            let mut raw = Vec::new();
            dec.decompress(c, &mut raw).unwrap();
            assert_eq!(&decode_header_block(&raw).unwrap(), hs);
        }
        let mut raw = Vec::new();
        let fresh = HeaderDecompressor::default().decompress(&blocks[1].1, &mut raw);
        assert!(fresh.is_err() || decode_header_block(&raw).ok().as_ref() != Some(&blocks[1].0));
    }

    #[test]
    fn decodes_captured_firefox_syn_stream() {
        let hex = FIREFOX_SYN_STREAM.as_bytes();
        let bytes: Vec<u8> = hex
            .chunks(2)
            .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
            .collect();
        assert_eq!(bytes.len(), 1058);
        let mut buf = BytesMut::from(&bytes[..]);
        let f = decode_frame(&mut buf, &mut HeaderDecompressor::default())
            .unwrap()
            .unwrap();
        let Frame::SynStream {
            stream_id: 1,
            flags: FLAG_FIN,
            headers,
            ..
        } = f
        else {
            panic!("{f:?}")
        };
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(headers.len(), 13);
        assert_eq!(get(":method"), Some("GET"));
        assert_eq!(get(":host"), Some("www.afrind.sb.facebook.com"));
        assert_eq!(get(":path"), Some("/status.php"));
        assert_eq!(get("accept-encoding"), Some("gzip, deflate, sdch"));
        assert!(buf.is_empty());
    }

    #[test]
    fn decoder_survives_garbage_and_truncation() {
        let mut rng = 0x1234_5678_9abc_def0u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut wire = BytesMut::new();
        let mut comp = HeaderCompressor::default();
        for f in all_frames() {
            encode_frame(&f, &mut comp, &mut wire).unwrap();
        }
        for round in 0..4000 {
            let mut input: Vec<u8> = match round % 3 {
                0 => (0..next() % 80).map(|_| next() as u8).collect(),
                1 => wire[..next() as usize % wire.len()].to_vec(),
                _ => {
                    let mut w = wire.to_vec();
                    for _ in 0..1 + next() % 4 {
                        let i = next() as usize % w.len();
                        w[i] ^= 1 << (next() % 8);
                    }
                    w
                }
            };
            if round % 5 == 0 && input.len() >= 4 {
                input[..4].copy_from_slice(&[0x80, 3, 0, (next() % 11) as u8]); // a known control type
            }
            let (mut buf, mut dec) = (BytesMut::from(&input[..]), HeaderDecompressor::default());
            while let Ok(Some(_)) = decode_frame(&mut buf, &mut dec) {}
        }
    }

    /// A frame-level peer: a client against `serve`, a server against `connect`.
    struct Peer {
        io: DuplexStream,
        comp: HeaderCompressor,
        dec: HeaderDecompressor,
        buf: BytesMut,
    }

    impl Peer {
        fn new(io: DuplexStream) -> Self {
            Peer {
                io,
                comp: HeaderCompressor::default(),
                dec: HeaderDecompressor::default(),
                buf: BytesMut::new(),
            }
        }
        async fn send(&mut self, f: Frame) {
            let mut out = BytesMut::new();
            encode_frame(&f, &mut self.comp, &mut out).unwrap();
            self.io.write_all(&out).await.unwrap();
        }
        async fn recv(&mut self) -> Option<Frame> {
            let fut = async {
                loop {
                    if let Some(f) = decode_frame(&mut self.buf, &mut self.dec).unwrap() {
                        return Some(f);
                    }
                    if self.io.read_buf(&mut self.buf).await.unwrap() == 0 {
                        return None;
                    }
                }
            };
            timeout(Duration::from_secs(5), fut)
                .await
                .expect("timed out waiting for a frame")
        }
    }

    fn pair() -> (Session, mpsc::Receiver<IncomingStream>, Peer) {
        let (a, b) = tokio::io::duplex(1 << 16);
        let (session, incoming) = serve(a);
        (session, incoming, Peer::new(b))
    }

    #[tokio::test]
    async fn end_to_end_two_streams_echo_ping_goaway() {
        let (session, mut incoming, mut c) = pair();
        let server = tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Some(mut s) = incoming.recv().await {
                seen.push((
                    s.id,
                    s.header("streamtype").map(String::from),
                    s.header("PORT").map(String::from),
                ));
                tokio::spawn(async move {
                    while let Some(d) = s.data.recv().await {
                        s.writer.write(d).await.unwrap();
                    }
                    s.writer.close().await.unwrap();
                });
            }
            seen
        });
        c.send(syn(
            1,
            &[("streamtype", "error"), ("port", "80"), ("requestid", "0")],
        ))
        .await;
        c.send(syn(
            3,
            &[("streamtype", "data"), ("port", "80"), ("requestid", "0")],
        ))
        .await;
        assert_eq!(c.recv().await, reply(1));
        assert_eq!(c.recv().await, reply(3));
        // Ignored: SETTINGS, WINDOW_UPDATE, HEADERS, unknown types, even (server) PING ids.
        c.send(Frame::Settings(0, vec![(0, 7, 1 << 20)])).await;
        c.send(Frame::WindowUpdate(3, 1000)).await;
        c.send(Frame::Headers(3, 0, h(&[("k", "v")]))).await;
        c.send(Frame::Unknown(11, 0, Bytes::from_static(b"??")))
            .await;
        c.send(Frame::Ping(2)).await;
        c.send(Frame::Ping(1)).await;
        c.send(data(3, 0, b"hello ")).await;
        c.send(data(3, FLAG_FIN, b"world")).await;
        c.send(data(1, FLAG_FIN, b"")).await;
        let (mut echoed, mut fins, mut pong) = (Vec::new(), Vec::new(), false);
        while fins.len() < 2 || !pong {
            match c.recv().await.expect("eof") {
                Frame::Data(3, flags, data) => {
                    echoed.extend_from_slice(&data);
                    if flags & FLAG_FIN != 0 {
                        fins.push(3);
                    }
                }
                Frame::Data(1, FLAG_FIN, data) if data.is_empty() => fins.push(1),
                Frame::Ping(1) => pong = true,
                f => panic!("unexpected {f:?}"),
            }
        }
        assert_eq!(echoed, b"hello world");
        c.send(Frame::GoAway(0, GOAWAY_OK)).await;
        timeout(Duration::from_secs(5), session.closed())
            .await
            .unwrap();
        assert_eq!(c.recv().await, None);
        let seen = server.await.unwrap();
        let s = |v: &str| Some(v.to_string());
        assert_eq!(
            seen,
            vec![(1, s("error"), s("80")), (3, s("data"), s("80"))]
        );
    }

    #[tokio::test]
    async fn rst_reuse_and_chunking() {
        let (_session, mut incoming, mut c) = pair();
        c.send(syn(1, &[("streamtype", "data")])).await;
        assert_eq!(c.recv().await, reply(1));
        let mut s = incoming.recv().await.unwrap();
        c.send(data(1, 0, b"x")).await;
        assert_eq!(s.data.recv().await.as_deref(), Some(&b"x"[..]));
        c.send(Frame::RstStream(1, RST_CANCEL)).await;
        assert_eq!(s.data.recv().await, None);
        assert!(matches!(
            s.writer.write(Bytes::from_static(b"y")).await,
            Err(SpdyError::StreamReset)
        ));
        // Our own reset.
        c.send(syn(3, &[])).await;
        assert_eq!(c.recv().await, reply(3));
        let s3 = incoming.recv().await.unwrap();
        s3.writer.reset(RST_CANCEL).await;
        assert_eq!(c.recv().await, Some(Frame::RstStream(3, RST_CANCEL)));
        // A stream id that does not increase is refused.
        c.send(syn(3, &[])).await;
        assert_eq!(
            c.recv().await,
            Some(Frame::RstStream(3, RST_PROTOCOL_ERROR))
        );
        // Large writes are split into frames of at most 32 KiB.
        c.send(syn(5, &[])).await;
        assert_eq!(c.recv().await, reply(5));
        let s5 = incoming.recv().await.unwrap();
        s5.writer
            .write(Bytes::from(vec![7u8; 70_000]))
            .await
            .unwrap();
        s5.writer.close().await.unwrap();
        let mut sizes = Vec::new();
        while let Some(Frame::Data(5, flags, data)) = c.recv().await {
            sizes.push((data.len(), flags));
            if flags & FLAG_FIN != 0 {
                break;
            }
        }
        assert_eq!(
            sizes,
            vec![(32768, 0), (32768, 0), (4464, 0), (0, FLAG_FIN)]
        );
        assert!(matches!(
            s5.writer.write(Bytes::from_static(b"z")).await,
            Err(SpdyError::StreamClosed)
        ));
    }

    #[tokio::test]
    async fn malformed_input_ends_session_with_protocol_error() {
        let bad: [&[u8]; 3] = [
            b"\x80\x03\x00\x03\x00\x00\x00\x04\x00\x00\x00\x01", // RST_STREAM, length 4
            b"\x80\x03\x00\x08\x00\x00\x00\x08\x00\x00\x00\x05garbage!", // HEADERS, not zlib
            b"\x80\x02\x00\x06\x00\x00\x00\x04\x00\x00\x00\x01", // version 2
        ];
        for bytes in bad {
            let (session, mut incoming, mut c) = pair();
            c.send(syn(1, &[])).await;
            assert_eq!(c.recv().await, reply(1));
            let mut s = incoming.recv().await.unwrap();
            c.io.write_all(bytes).await.unwrap();
            let goaway = Frame::GoAway(1, GOAWAY_PROTOCOL_ERROR);
            assert_eq!(c.recv().await, Some(goaway));
            assert_eq!(c.recv().await, None);
            timeout(Duration::from_secs(5), session.closed())
                .await
                .unwrap();
            assert_eq!(s.data.recv().await, None);
            assert!(matches!(
                s.writer.write(Bytes::from_static(b"y")).await,
                Err(SpdyError::SessionClosed)
            ));
            assert!(incoming.recv().await.is_none());
        }
    }

    #[tokio::test]
    async fn go_away_and_dropping_every_handle() {
        let (session, _incoming, mut c) = pair();
        session.go_away().await;
        assert_eq!(c.recv().await, Some(Frame::GoAway(0, GOAWAY_OK)));
        assert_eq!(c.recv().await, None);
        timeout(Duration::from_secs(5), session.closed())
            .await
            .unwrap();

        let (session, incoming, mut c) = pair();
        c.send(syn(1, &[])).await;
        assert_eq!(c.recv().await, reply(1));
        drop((session, incoming));
        assert_eq!(c.recv().await, Some(Frame::GoAway(1, GOAWAY_OK)));
        assert_eq!(c.recv().await, None);
    }

    // -----------------------------------------------------------------------------------------
    // Client side

    fn client_pair() -> (ClientSession, Peer) {
        let (a, b) = tokio::io::duplex(1 << 16);
        (connect(a), Peer::new(b))
    }

    async fn read_all(rx: &mut mpsc::Receiver<Bytes>) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(b) = timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("data ends")
        {
            out.extend_from_slice(&b);
        }
        out
    }

    fn typed(t: &str) -> Headers {
        // Mixed case on purpose: names go out lower-case.
        h(&[("StreamType", t), ("Port", "80")])
    }

    #[tokio::test]
    async fn client_and_server_end_to_end() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let (server, mut incoming) = serve(a);
        let client = connect(b);
        let (watched_tx, watched) = oneshot::channel();
        let srv = tokio::spawn(async move {
            let mut watched_tx = Some(watched_tx);
            let mut seen = Vec::new();
            while let Some(mut s) = incoming.recv().await {
                seen.push((s.id, s.headers.clone()));
                match s.header("streamtype") {
                    Some("reset") => s.writer.reset(RST_CANCEL).await,
                    Some("watch") => {
                        let report = watched_tx.take();
                        tokio::spawn(async move {
                            let ended = s.data.recv().await.is_none();
                            let late = s.writer.write(Bytes::from_static(b"late")).await;
                            let _ = report.map(|r| {
                                r.send((ended, matches!(late, Err(SpdyError::StreamReset))))
                            });
                        });
                    }
                    _ => {
                        // Echoes, then half-closes after the client's FIN.
                        tokio::spawn(async move {
                            while let Some(d) = s.data.recv().await {
                                s.writer.write(d).await.unwrap();
                            }
                            s.writer.close().await.unwrap();
                        });
                    }
                }
            }
            seen
        });

        // Two opens at once: the reader numbers them in order, or the server would refuse one.
        let (x, y) = tokio::join!(
            client.open_stream(typed("data")),
            client.open_stream(typed("data"))
        );
        let (mut x, mut y) = (x.unwrap(), y.unwrap());
        let mut ids = [x.writer.id(), y.writer.id()];
        ids.sort();
        assert_eq!(ids, [1, 3]);
        x.writer.write(Bytes::from_static(b"hello ")).await.unwrap();
        x.writer.write(Bytes::from_static(b"x")).await.unwrap();
        x.writer.close().await.unwrap();
        y.writer
            .write(Bytes::from(vec![9u8; 70_000]))
            .await
            .unwrap();
        y.writer.close().await.unwrap();
        assert!(matches!(
            x.writer.write(Bytes::from_static(b"!")).await,
            Err(SpdyError::StreamClosed)
        ));
        assert_eq!(read_all(&mut x.data).await, b"hello x");
        assert_eq!(read_all(&mut y.data).await, vec![9u8; 70_000]);

        // Reset by the server once answered.
        let mut r = client.open_stream(typed("reset")).await.unwrap();
        assert_eq!(r.writer.id(), 5);
        assert_eq!(read_all(&mut r.data).await, b"");
        assert!(matches!(
            r.writer.write(Bytes::from_static(b"y")).await,
            Err(SpdyError::StreamReset)
        ));

        // Reset by us: our data ends at once, the server's on the RST.
        let mut w = client.open_stream(typed("watch")).await.unwrap();
        w.writer.reset(RST_CANCEL).await;
        assert_eq!(w.data.recv().await, None);
        assert_eq!(
            timeout(Duration::from_secs(5), watched)
                .await
                .unwrap()
                .unwrap(),
            (true, true)
        );

        // GOAWAY from the client ends both sessions.
        client.go_away().await;
        timeout(Duration::from_secs(5), server.closed())
            .await
            .unwrap();
        timeout(Duration::from_secs(5), client.closed())
            .await
            .unwrap();
        assert!(matches!(
            client.open_stream(typed("data")).await,
            Err(SpdyError::SessionClosed)
        ));
        let seen = timeout(Duration::from_secs(5), srv).await.unwrap().unwrap();
        let want = |t: &str| h(&[("streamtype", t), ("port", "80")]);
        assert_eq!(
            seen.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            [1, 3, 5, 7]
        );
        let headers: Vec<&Headers> = seen.iter().map(|(_, hs)| hs).collect();
        assert_eq!(
            headers,
            [&want("data"), &want("data"), &want("reset"), &want("watch")]
        );
    }

    #[tokio::test]
    async fn server_go_away_ends_client_streams() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let (server, mut incoming) = serve(a);
        let client = connect(b);
        let mut s = client.open_stream(typed("data")).await.unwrap();
        let mut theirs = incoming.recv().await.unwrap();
        theirs
            .writer
            .write(Bytes::from_static(b"before"))
            .await
            .unwrap();
        server.go_away().await;
        // What came before the GOAWAY is still delivered; then the stream ends.
        assert_eq!(read_all(&mut s.data).await, b"before");
        timeout(Duration::from_secs(5), client.closed())
            .await
            .unwrap();
        assert!(matches!(
            s.writer.write(Bytes::from_static(b"z")).await,
            Err(SpdyError::SessionClosed)
        ));
        assert!(matches!(
            client.open_stream(typed("data")).await,
            Err(SpdyError::SessionClosed)
        ));
        assert_eq!(theirs.data.recv().await, None);
    }

    #[tokio::test]
    async fn client_against_a_frame_level_server() {
        let (client, mut p) = client_pair();
        let c = client.clone();
        let first = tokio::spawn(async move {
            c.open_stream(h(&[
                ("streamtype", "error"),
                ("X-Two", "a"),
                ("x-two", "b"),
            ]))
            .await
        });
        let Some(Frame::SynStream {
            stream_id: 1,
            assoc_id: 0,
            priority: 7,
            flags: 0,
            headers,
            ..
        }) = p.recv().await
        else {
            panic!("no SYN_STREAM 1")
        };
        assert_eq!(
            headers,
            h(&[("streamtype", "error"), ("x-two", "a"), ("x-two", "b")])
        );
        // Ignored: SETTINGS, WINDOW_UPDATE, unknown types, odd PINGs (answers to pings of ours).
        // Echoed: the server's (even) PINGs. Refused: the server's own streams.
        p.send(Frame::Settings(0, vec![(0, 7, 1 << 20)])).await;
        p.send(Frame::WindowUpdate(1, 1000)).await;
        p.send(Frame::Unknown(11, 0, Bytes::from_static(b"??")))
            .await;
        p.send(Frame::Ping(1)).await;
        p.send(Frame::Ping(2)).await;
        assert_eq!(p.recv().await, Some(Frame::Ping(2)));
        p.send(syn(2, &[("streamtype", "pushed")])).await;
        assert_eq!(
            p.recv().await,
            Some(Frame::RstStream(2, RST_REFUSED_STREAM))
        );
        p.send(Frame::SynReply(1, 0, vec![])).await;
        let mut s = first.await.unwrap().unwrap();
        assert_eq!(s.writer.id(), 1);
        p.send(data(1, 0, b"ab")).await;
        p.send(data(1, FLAG_FIN, b"c")).await;
        assert_eq!(read_all(&mut s.data).await, b"abc");
        // Half-closed by the server, still open for us.
        s.writer.write(Bytes::from_static(b"xyz")).await.unwrap();
        s.writer.close().await.unwrap();
        assert_eq!(p.recv().await, Some(data(1, 0, b"xyz")));
        assert_eq!(p.recv().await, Some(data(1, FLAG_FIN, b"")));

        // Refused by RST (spdystream's answer to an unknown streamtype).
        let c = client.clone();
        let refused =
            tokio::spawn(async move { c.open_stream(h(&[("streamtype", "bogus")])).await });
        assert!(matches!(
            p.recv().await,
            Some(Frame::SynStream { stream_id: 3, .. })
        ));
        p.send(Frame::RstStream(3, RST_PROTOCOL_ERROR)).await;
        assert!(matches!(
            refused.await.unwrap(),
            Err(SpdyError::Refused(RST_PROTOCOL_ERROR))
        ));

        // Headers the Go framer would end the connection over never leave.
        for bad in ["Host", "connection", "Transfer-Encoding", ""] {
            let r = client.open_stream(h(&[(bad, "x")])).await;
            assert!(
                matches!(r, Err(SpdyError::Protocol(_))),
                "{bad}: {:?}",
                r.err()
            );
        }

        // A SYN_REPLY with FIN: nothing to read, but writable.
        let c = client.clone();
        let half = tokio::spawn(async move { c.open_stream(typed("data")).await });
        assert!(matches!(
            p.recv().await,
            Some(Frame::SynStream { stream_id: 5, .. })
        ));
        p.send(Frame::SynReply(5, FLAG_FIN, vec![])).await;
        let mut half = half.await.unwrap().unwrap();
        assert_eq!(half.data.recv().await, None);
        half.writer.write(Bytes::from_static(b"q")).await.unwrap();
        assert_eq!(p.recv().await, Some(data(5, 0, b"q")));

        // apimachinery's Close(): data, then RST — the data stays readable.
        let c = client.clone();
        let status = tokio::spawn(async move { c.open_stream(typed("error")).await });
        assert!(matches!(
            p.recv().await,
            Some(Frame::SynStream { stream_id: 7, .. })
        ));
        p.send(Frame::SynReply(7, 0, vec![])).await;
        let mut status = status.await.unwrap().unwrap();
        p.send(data(7, 0, b"{\"status\":\"Success\"}")).await;
        p.send(Frame::RstStream(7, RST_CANCEL)).await;
        assert_eq!(
            read_all(&mut status.data).await,
            b"{\"status\":\"Success\"}"
        );
        assert!(matches!(
            status.writer.write(Bytes::from_static(b"?")).await,
            Err(SpdyError::StreamReset)
        ));

        // GOAWAY from the server: a pending open fails, the session ends.
        let c = client.clone();
        let pending = tokio::spawn(async move { c.open_stream(typed("data")).await });
        assert!(matches!(
            p.recv().await,
            Some(Frame::SynStream { stream_id: 9, .. })
        ));
        p.send(Frame::GoAway(0, GOAWAY_OK)).await;
        assert!(matches!(
            pending.await.unwrap(),
            Err(SpdyError::SessionClosed)
        ));
        timeout(Duration::from_secs(5), client.closed())
            .await
            .unwrap();
        assert_eq!(p.recv().await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn unanswered_and_abandoned_opens_are_cancelled() {
        let (client, mut p) = client_pair();
        // Time is paused: it jumps to the timeout once every task waits.
        let r = client.open_stream(typed("data")).await;
        assert!(
            matches!(r, Err(SpdyError::Timeout(OPEN_TIMEOUT))),
            "{:?}",
            r.err()
        );
        assert!(matches!(
            p.recv().await,
            Some(Frame::SynStream { stream_id: 1, .. })
        ));
        // A dropped open: the next open cancels the timed-out one first.
        let dropped = timeout(Duration::from_millis(10), client.open_stream(typed("data"))).await;
        assert!(dropped.is_err());
        assert_eq!(p.recv().await, Some(Frame::RstStream(1, RST_CANCEL)));
        assert!(matches!(
            p.recv().await,
            Some(Frame::SynStream { stream_id: 3, .. })
        ));
        // Its late answer is reset on arrival.
        p.send(Frame::SynReply(3, 0, vec![])).await;
        assert_eq!(p.recv().await, Some(Frame::RstStream(3, RST_CANCEL)));
        // Dropping every handle ends the session with GOAWAY OK (last good id 0: we accept none).
        drop(client);
        assert_eq!(p.recv().await, Some(Frame::GoAway(0, GOAWAY_OK)));
        assert_eq!(p.recv().await, None);
    }

    #[tokio::test]
    async fn client_answers_malformed_input_with_protocol_error() {
        let (client, mut p) = client_pair();
        let c = client.clone();
        let open = tokio::spawn(async move { c.open_stream(typed("data")).await });
        assert!(matches!(
            p.recv().await,
            Some(Frame::SynStream { stream_id: 1, .. })
        ));
        p.io.write_all(b"\x80\x03\x00\x02\x00\x00\x00\x08\x00\x00\x00\x01garbage!")
            .await
            .unwrap(); // SYN_REPLY, not zlib
        assert_eq!(
            p.recv().await,
            Some(Frame::GoAway(0, GOAWAY_PROTOCOL_ERROR))
        );
        assert_eq!(p.recv().await, None);
        assert!(matches!(open.await.unwrap(), Err(SpdyError::SessionClosed)));
        timeout(Duration::from_secs(5), client.closed())
            .await
            .unwrap();
    }
}

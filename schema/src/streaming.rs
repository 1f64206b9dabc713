//! Streams between a gateway and a node agent over NATS, for `exec`, `attach` and
//! `port-forward`: the gateway asks on `subjects::node_streams(node)` with a
//! [`StreamOpen`] naming its own inbox, the node answers [`OpenReply`] naming its inbox,
//! then each side publishes [`Frame`]s to the other's inbox. Frames carry a sequence
//! number so that a lost one ends the stream instead of corrupting it; data frames are
//! acknowledged, and a sender keeps at most `WINDOW` unacknowledged (flow control).

use serde::{Deserialize, Serialize};

/// Data frames a sender may have in flight before the receiver acknowledges.
pub const WINDOW: usize = 16;
/// The largest data frame payload.
pub const CHUNK: usize = 32 * 1024;
/// Either side pings this often when it has sent nothing else …
pub const PING_SECS: u64 = 10;
/// … and gives the stream up after this long without hearing from the other.
pub const SILENCE_SECS: u64 = 45;

/// Channel numbers, as `channel.k8s.io` numbers them.
pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StreamKind {
    Exec { command: Vec<String> },
    Attach,
    /// One connection to one port in the pod's network namespace.
    PortForward { port: u16 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamOpen {
    pub namespace: String,
    pub pod: String,
    pub uid: String,
    /// Empty for port-forward.
    pub container: String,
    pub kind: StreamKind,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
    /// Where the node publishes its frames.
    pub inbox: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OpenReply {
    /// Where the gateway publishes its frames.
    Opened { inbox: String },
    /// Nothing was started: the HTTP status code and the message for the client.
    Refused { code: u16, message: String },
}

/// How a stream ended, as the node saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum End {
    /// The process exited with this code (port-forward: the connection closed, 0).
    Exited(i32),
    /// It could not run, or the connection failed: the runtime's words.
    Error(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Body {
    Data {
        ch: u8,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// No more data on this channel (stdin's EOF, a half-closed connection).
    Close { ch: u8 },
    /// The terminal's new size.
    Resize { width: u16, height: u16 },
    /// Node → gateway, last: how it ended.
    End(End),
    /// Gateway → node: the client went away; stop.
    Cancel,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Frame {
    /// `seq` counts from 1 on each direction of a stream.
    Msg { seq: u64, body: Body },
    /// The receiver took in this many more data frames.
    Ack { n: u32 },
    /// Nothing else to say for a while, but alive.
    Ping,
}

//! The log request a gateway sends to a node agent (on `subjects::node_logs(node)`), and
//! the answer: the container's log bytes, or a reason it has none. The options are
//! PodLogOptions after the gateway parsed and validated them.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct LogRequest {
    pub namespace: String,
    pub pod: String,
    /// None: the pod's only (or first) container.
    pub container: Option<String>,
    /// Only the last N lines.
    pub tail_lines: Option<u64>,
    /// The previous (terminated) instance's log.
    pub previous: bool,
    /// Streaming follow: when set, the node publishes further chunks to this inbox
    /// subject until the requester stops answering (reserved for `logs -f`).
    pub follow_inbox: Option<String>,
    /// Each line prefixed with the time it was written (RFC3339Nano) and a space.
    #[serde(default)]
    pub timestamps: bool,
    /// Only lines written at or after this time (RFC3339); `sinceSeconds` arrives here
    /// already turned into a time by the gateway.
    #[serde(default)]
    pub since: Option<String>,
    /// At most this many bytes in all (follow included).
    #[serde(default)]
    pub limit_bytes: Option<u64>,
    /// The container is waiting to start again (CrashLoopBackOff): its newest log is
    /// the instance that ended, which is then also the previous one.
    #[serde(default)]
    pub between_instances: bool,
    /// The kubelet's refusal (a waiting container, no previous instance), judged by the
    /// gateway from the pod's status; the node answers it, so that an unreachable node is
    /// still a 503 first, as the kubelet is asked before it checks.
    #[serde(default)]
    pub refused: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LogResponse {
    Data(#[serde(with = "serde_bytes")] Vec<u8>),
    /// e.g. `container "x" in pod "y" is waiting to start: ContainerCreating`
    NotFound(String),
    BadRequest(String),
    /// A followed log has ended (its `limitBytes` is used up): the follower closes.
    End,
}

//! Every NATS subject and stream name flotilla uses is built here, and nowhere else.
//! One token per level; cluster-scoped objects use `_` for the namespace, and a pod's
//! subject carries its node (`_` while unscheduled) so that a node agent subscribes to
//! its own pods only and the scheduler to unscheduled ones.

/// JetStream stream that carries every committed change, in revision order.
pub const EVENTS_STREAM: &str = "FLOTILLA_EVENTS";
/// Subjects captured by [`EVENTS_STREAM`].
pub const EVENTS_ALL: &str = "ev.>";
/// Every object's events, without the stream's placeholders (their subject has one token
/// after `ev`): what a watcher of all resources at once subscribes to.
pub const OBJECT_EVENTS: &str = "ev.*.>";
/// Placeholders that carry the events stream's sequence past revisions a restored group
/// has no events for; inside the stream, read by no watch, purged at once.
pub const EVENTS_GAP: &str = "ev._gap";
/// Requests that mutate the store (answered by the leader only: a member subscribes
/// while it leads with a fresh quorum and unsubscribes when it does not).
pub const STATE_WRITE: &str = "flotilla.state.write";
/// Linearizable reads (answered by the leader, after a read-index round).
pub const STATE_READ: &str = "flotilla.state.read";
/// Serializable reads: any member answers from its own state machine, which may lag.
pub const STATE_READ_LOCAL: &str = "flotilla.state.read.local";
/// Membership changes and backups (answered by the leader).
pub const STATE_ADMIN: &str = "flotilla.state.admin";
/// Every state member answers here (no queue group): who it is, its role, its progress.
pub const STATE_STATUS: &str = "flotilla.state.status";
/// Node agents write and read through their own node's subjects (the state group answers
/// them too): the subject a request came in on names its writer, which nats-server's
/// permissions vouch for, so the state group can hold each node to its own objects.
const NODE_PREFIX: &str = "flotilla.node";
/// Every node's write subject (what the state group's leader subscribes to).
pub const NODE_WRITES: &str = "flotilla.node.*.write";
/// Every node's read subject.
pub const NODE_READS: &str = "flotilla.node.*.read";
/// Every node's ServiceAccount token requests (the gateways answer, in TOKEN_QUEUE).
pub const NODE_TOKEN_REQUESTS: &str = "flotilla.node.*.token";
/// Where node agents present a join token for their credentials (`up` answers).
pub const JOIN: &str = "flotilla.join";
/// The nodes that joined, with their public keys (`join::JoinedNodes`): the servers'
/// wrappers answer requests here, so a leaf site's server admits its nodes too.
pub const NATS_USERS: &str = "flotilla.nats.users";
/// Published (with the whole list) whenever a node joins or is revoked.
pub const NATS_USERS_CHANGED: &str = "flotilla.nats.users.changed";
/// A node agent's log service: `flotilla.logs.<node>`.
const LOGS_PREFIX: &str = "flotilla.logs";
const STREAMS_PREFIX: &str = "flotilla.streams";
const METRICS_PREFIX: &str = "flotilla.metrics";
const OBS_ACTORS_PREFIX: &str = "flotilla.obs.actors";
const OBS_SPANS_PREFIX: &str = "flotilla.obs.spans";
/// A node name that no object can have (names are DNS labels), standing for every node:
/// its [`token`] is the wildcard, for permissions that cover all of a site's nodes.
pub const ANY_NODE: &str = "\u{0}*";

/// Placeholder token for "no namespace" or "no node".
pub const NONE: &str = "_";

/// Makes any string usable as one subject token: NATS splits on `.` and treats `*`,
/// `>` and whitespace specially, and Kubernetes names may contain dots.
pub fn token(s: &str) -> String {
    if s == ANY_NODE {
        return "*".to_string();
    }
    if s.is_empty() {
        return NONE.to_string();
    }
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '.' => out.push_str("%2E"),
            '*' => out.push_str("%2A"),
            '>' => out.push_str("%3E"),
            '%' => out.push_str("%25"),
            c if c.is_whitespace() => out.push_str(&format!("%{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// The name a [`token`] was made from.
pub fn untoken(t: &str) -> String {
    if t == NONE {
        return String::new();
    }
    let mut out = String::with_capacity(t.len());
    let mut rest = t;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        match rest.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok()) {
            Some(b) => {
                out.push(b as char);
                rest = &rest[i + 3..];
            }
            None => {
                out.push('%');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// An object's own subject, kept with it in the store. `node` matters for pods only
/// (None = unscheduled). Events are published on [`event_subject`] of it.
pub fn object_event(plural: &str, namespace: Option<&str>, name: &str, node: Option<&str>) -> String {
    let ns = namespace.map(token).unwrap_or_else(|| NONE.to_string());
    if plural == "pods" {
        let node = node.map(token).unwrap_or_else(|| NONE.to_string());
        format!("ev.pods.{ns}.{node}.{}", token(name))
    } else {
        format!("ev.{plural}.{ns}.{}", token(name))
    }
}

/// The pod subject's node token, if `subject` is a pod's own subject (4 tokens after `ev`).
fn pod_node_token(subject: &str) -> Option<&str> {
    let mut t = subject.split('.');
    match (t.next(), t.next(), t.next(), t.next(), t.next(), t.next()) {
        (Some("ev"), Some("pods"), Some(_), Some(node), Some(_), None) => Some(node),
        _ => None,
    }
}

/// The subject one event is published on, from the object's subject after the change
/// (`now`) and before it (`before`, None for a create). A pod's event carries a fifth
/// token, the node it was on before (its node now when that did not change): a bind
/// (`_` to a node) is then on both the node's subject and the unscheduled one, so the
/// watcher of unscheduled pods sees the pod leave, as kube-apiserver's field selector
/// watch does. nats-server 2.9 takes one filter subject per consumer, so each side of a
/// move must be matchable by one pattern: the node watcher matches the 4th token, the
/// unscheduled watcher the 5th. spec.nodeName is immutable once set, so no pod moves
/// the other ways (node to node, node to unscheduled). Other kinds: `now` unchanged.
pub fn event_subject(now: &str, before: Option<&str>) -> String {
    match pod_node_token(now) {
        Some(node) => {
            let from = before.and_then(pod_node_token).unwrap_or(node);
            format!("{now}.{from}")
        }
        None => now.to_string(),
    }
}

/// Which events a watcher wants: all of a resource, one namespace, and for pods one node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter<'a> {
    pub namespace: Option<&'a str>,
    /// For pods: `Some("_")`-like filtering is expressed with [`NodeFilter`].
    pub node: NodeFilter<'a>,
    pub name: Option<&'a str>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NodeFilter<'a> {
    #[default]
    Any,
    Unscheduled,
    Node(&'a str),
}

/// Subject filter for a watch on `plural` (namespaced tells whether a namespace token exists).
/// Pod events have five tokens after `ev.pods` (see [`event_subject`]): a node's watcher
/// matches the node they are on, the unscheduled watcher the node they came from.
pub fn event_filter(plural: &str, f: &EventFilter<'_>) -> String {
    let ns = f.namespace.map(token).unwrap_or_else(|| "*".to_string());
    let name = f.name.map(token).unwrap_or_else(|| "*".to_string());
    if plural == "pods" {
        match f.node {
            NodeFilter::Any => format!("ev.pods.{ns}.*.{name}.*"),
            NodeFilter::Unscheduled => format!("ev.pods.{ns}.*.{name}.{NONE}"),
            NodeFilter::Node(n) => format!("ev.pods.{ns}.{}.{name}.*", token(n)),
        }
    } else {
        format!("ev.{plural}.{ns}.{name}")
    }
}

/// Where node agent `node` sends its store writes.
pub fn node_write(node: &str) -> String {
    format!("{NODE_PREFIX}.{}.write", token(node))
}

/// Where node agent `node` sends its store reads.
pub fn node_read(node: &str) -> String {
    format!("{NODE_PREFIX}.{}.read", token(node))
}

/// Where node agent `node` asks for its pods' ServiceAccount tokens: the gateway then
/// knows the asker and issues tokens only for pods bound to it.
pub fn node_token_request(node: &str) -> String {
    format!("{NODE_PREFIX}.{}.token", token(node))
}

/// The node a request on a node's write, read or token subject came from, still
/// in its token form (compare with [`token`] of a name).
pub fn node_of_request(subject: &str) -> Option<&str> {
    let rest = subject.strip_prefix(NODE_PREFIX)?.strip_prefix('.')?;
    let (node, verb) = rest.split_once('.')?;
    matches!(verb, "write" | "read" | "token").then_some(node)
}

/// Inbox prefix of a control-plane role: replies and stream frames to it land under it,
/// so permissions can keep every other identity from subscribing there.
pub fn role_inbox(role: &str) -> String {
    format!("_INBOX_R.{}", token(role))
}

/// Every control-plane role's inboxes.
pub const ROLE_INBOXES: &str = "_INBOX_R.>";

/// Inbox prefix of node agent `node`.
pub fn node_inbox(node: &str) -> String {
    format!("_INBOX_N.{}", token(node))
}

/// Every node agent's inboxes.
pub const NODE_INBOXES: &str = "_INBOX_N.>";

/// Everything below an inbox prefix (what its owner subscribes to).
pub fn under(prefix: &str) -> String {
    format!("{prefix}.>")
}

/// Every subject of one node's pods' events (what that node's agent may subscribe to).
pub fn node_pod_events(node: &str) -> String {
    event_filter("pods", &EventFilter { node: NodeFilter::Node(node), ..Default::default() })
}

/// The JetStream API calls a read-only watcher makes (stream info, message get, its own
/// ephemeral consumers), not those that change or delete streams.
pub const JS_READER_API: [&str; 8] = [
    "$JS.API.INFO",
    "$JS.API.STREAM.INFO.*",
    "$JS.API.STREAM.MSG.GET.*",
    "$JS.API.DIRECT.GET.>",
    "$JS.API.CONSUMER.CREATE.>",
    "$JS.API.CONSUMER.DELETE.>",
    "$JS.API.CONSUMER.INFO.>",
    "$JS.FC.>",
];

/// The JetStream calls a watcher makes that read no message by itself: stream info and
/// deleting or looking at its own consumers; creating one is allowed per filter
/// ([`consumer_create`]), so an identity reads only the events its filters cover.
pub const JS_WATCH_API: [&str; 5] = ["$JS.API.INFO", "$JS.API.STREAM.INFO.*", "$JS.API.CONSUMER.DELETE.>", "$JS.API.CONSUMER.INFO.>", "$JS.FC.>"];

/// Creating a named consumer on the events stream whose filter is `filter` (nats-server
/// checks that the request's filter is the one in its subject).
pub fn consumer_create(filter: &str) -> String {
    format!("$JS.API.CONSUMER.CREATE.{EVENTS_STREAM}.*.{filter}")
}

/// Where a node agent answers log requests for its pods.
pub fn node_logs(node: &str) -> String {
    format!("{LOGS_PREFIX}.{}", token(node))
}

/// Where a node agent publishes its node's and pods' resource usage (`metrics::NodeReport`).
pub fn node_metrics(node: &str) -> String {
    format!("{METRICS_PREFIX}.{}", token(node))
}

/// Every node's usage reports.
pub fn all_node_metrics() -> String {
    format!("{METRICS_PREFIX}.*")
}

/// Where a process publishes its actors' stats (`obs::ActorSnapshot`).
pub fn obs_actors(process: &str) -> String {
    format!("{OBS_ACTORS_PREFIX}.{}", token(process))
}

/// Where a process publishes the spans it finished (`obs::SpanBatch`).
pub fn obs_spans(process: &str) -> String {
    format!("{OBS_SPANS_PREFIX}.{}", token(process))
}

/// A dashboard that just started asks here; every process then publishes its actors'
/// stats at its next tick even if unchanged (it otherwise sends only changes).
pub const OBS_RESEND: &str = "flotilla.obs.resend";

/// Every process's actor stats, for the dashboard.
pub fn all_obs_actors() -> String {
    format!("{OBS_ACTORS_PREFIX}.*")
}

/// Every process's spans, for the dashboard.
pub fn all_obs_spans() -> String {
    format!("{OBS_SPANS_PREFIX}.*")
}

/// Where node agents ask for their pods' ServiceAccount tokens (`tokens::TokenRequest`);
/// every gateway answers, one per request (queue group TOKEN_QUEUE).
pub const TOKEN_REQUEST: &str = "flotilla.tokens.request";
pub const TOKEN_QUEUE: &str = "gateways";

/// Where a node agent opens exec, attach and port-forward streams for its pods.
pub fn node_streams(node: &str) -> String {
    format!("{STREAMS_PREFIX}.{}", token(node))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_requests_name_their_node() {
        assert_eq!(node_write("n.1"), "flotilla.node.n%2E1.write");
        assert_eq!(node_of_request(&node_write("n.1")), Some("n%2E1"));
        assert_eq!(untoken(&token("a.b*%c d")), "a.b*%c d");
        assert_eq!(node_of_request(&node_read("n1")), Some("n1"));
        assert_eq!(node_of_request(&node_token_request("n1")), Some("n1"));
        assert_eq!(node_of_request(STATE_WRITE), None);
        assert_eq!(node_pod_events("n1"), "ev.pods.*.n1.*.*");
        assert_eq!(under(&node_inbox("n1")), "_INBOX_N.n1.>");
        assert_eq!(node_write(ANY_NODE), "flotilla.node.*.write");
        assert_eq!(node_pod_events(ANY_NODE), "ev.pods.*.*.*.*");
    }

    #[test]
    fn dots_are_escaped() {
        assert_eq!(token("a.b"), "a%2Eb");
        assert_eq!(object_event("nodes", None, "n.1", None), "ev.nodes._.n%2E1");
    }

    #[test]
    fn pod_subjects_carry_the_node() {
        assert_eq!(object_event("pods", Some("demo"), "p", None), "ev.pods.demo._.p");
        assert_eq!(object_event("pods", Some("demo"), "p", Some("n1")), "ev.pods.demo.n1.p");
        let f = EventFilter { node: NodeFilter::Node("n1"), ..Default::default() };
        assert_eq!(event_filter("pods", &f), "ev.pods.*.n1.*.*");
        let f = EventFilter { namespace: Some("demo"), ..Default::default() };
        assert_eq!(event_filter("deployments", &f), "ev.deployments.demo.*");
    }

    #[test]
    fn a_bind_is_seen_by_the_unscheduled_and_the_node_watcher() {
        let pending = object_event("pods", Some("demo"), "p", None);
        let bound = object_event("pods", Some("demo"), "p", Some("n1"));
        let created = event_subject(&pending, None);
        let bind = event_subject(&bound, Some(&pending));
        let status = event_subject(&bound, Some(&bound));
        assert_eq!((created.as_str(), bind.as_str(), status.as_str()), ("ev.pods.demo._.p._", "ev.pods.demo.n1.p._", "ev.pods.demo.n1.p.n1"));
        let unscheduled = event_filter("pods", &EventFilter { node: NodeFilter::Unscheduled, ..Default::default() });
        let node = event_filter("pods", &EventFilter { node: NodeFilter::Node("n1"), ..Default::default() });
        let any = event_filter("pods", &EventFilter { namespace: Some("demo"), name: Some("p"), ..Default::default() });
        let seen = |f: &str| [&created, &bind, &status].iter().map(|s| crate::natsauth::matches(f, s)).collect::<Vec<_>>();
        assert_eq!(seen(&unscheduled), vec![true, true, false]);
        assert_eq!(seen(&node), vec![false, true, true]);
        assert_eq!(seen(&any), vec![true, true, true]);
        assert!(crate::natsauth::matches(EVENTS_ALL, &bind));
        // Other kinds publish on their own subject.
        assert_eq!(event_subject("ev.nodes._.n1", Some("ev.nodes._.n1")), "ev.nodes._.n1");
    }
}

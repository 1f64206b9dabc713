//! Who may publish and subscribe where on the bus: one NATS identity per component role,
//! and one per node agent. Every subject here comes from `subjects`, so a permission and
//! the subject it guards cannot drift apart. `flotilla up` writes these into the
//! nats-server config; nats-server enforces them (a refused publish or subscribe is a
//! permissions violation the client sees).

use crate::subjects;

/// A component role. Control-plane roles are trusted with the whole bus except other
/// identities' inboxes; node agents, the dashboard and joining nodes get allow lists.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    State,
    Gateway,
    Controllers,
    Scheduler,
    /// Tools, benches and tests: everything, like a cluster-admin kubeconfig.
    Admin,
    /// Read-only observer: reads, status and watches, no writes.
    Dashboard,
    /// A node agent, by node name.
    Node(String),
    /// A node that has a join token and no credentials yet: it may only ask to join.
    Bootstrap,
    /// The wrapper of a hub's nats-server (`flotilla nats`): answers joins, keeps the
    /// joined nodes' users in its server's config.
    Nats,
    /// A remote site's leaf server: its link to the hub and its wrapper's own client.
    /// The link carries what the site's node agents may send and receive, no more.
    Leaf,
}

impl Role {
    pub const CONTROL_PLANE: [Role; 6] = [Role::State, Role::Gateway, Role::Controllers, Role::Scheduler, Role::Admin, Role::Nats];

    /// Every identity a cluster's operator makes once (`flotilla identities create`) and
    /// hands to the machines that run them; node identities come from joins.
    pub const CLUSTER: [Role; 8] = [Role::State, Role::Gateway, Role::Controllers, Role::Scheduler, Role::Admin, Role::Nats, Role::Dashboard, Role::Leaf];

    /// The name its key file is kept under (`<name>.nk`).
    pub fn name(&self) -> String {
        match self {
            Role::State => "state".into(),
            Role::Gateway => "gateway".into(),
            Role::Controllers => "controllers".into(),
            Role::Scheduler => "scheduler".into(),
            Role::Admin => "admin".into(),
            Role::Dashboard => "dashboard".into(),
            Role::Node(n) => format!("node-{}", subjects::token(n)),
            Role::Bootstrap => "bootstrap".into(),
            Role::Nats => "nats".into(),
            Role::Leaf => "leaf".into(),
        }
    }

    /// The inbox prefix this identity's client must use (async-nats `custom_inbox_prefix`).
    pub fn inbox(&self) -> String {
        match self {
            Role::Node(n) => subjects::node_inbox(n),
            r => subjects::role_inbox(&r.name()),
        }
    }
}

/// One identity's permissions, as nats-server's `permissions` block has them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    pub publish_allow: Vec<String>,
    pub publish_deny: Vec<String>,
    pub subscribe_allow: Vec<String>,
    pub subscribe_deny: Vec<String>,
    /// May answer requests it received (one reply each), whatever the reply subject. No
    /// role uses it today (see the node role): their answers go to known inbox prefixes.
    pub allow_responses: bool,
}

fn own(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

pub fn permissions(role: &Role) -> Permissions {
    let inbox = subjects::under(&role.inbox());
    match role {
        Role::State | Role::Gateway | Role::Controllers | Role::Scheduler | Role::Admin | Role::Nats => {
            // Deny wins over allow in nats-server, so "every inbox but mine" is spelled
            // as the other prefixes; node agents' inboxes are never a control-plane
            // subscription (the gateway only publishes stream frames to them).
            let mut deny = vec![subjects::NODE_INBOXES.to_string()];
            deny.extend(Role::CONTROL_PLANE.iter().filter(|r| *r != role && *role != Role::Admin).map(|r| subjects::under(&r.inbox())));
            deny.push(subjects::under(&Role::Dashboard.inbox()));
            deny.push(subjects::under(&Role::Leaf.inbox()));
            if *role == Role::Admin {
                // Tests and tools may look anywhere.
                deny.clear();
            }
            Permissions { publish_allow: own(&[">"]), subscribe_allow: own(&[">"]), subscribe_deny: deny, ..Default::default() }
        }
        Role::Dashboard => {
            let mut publish = own(&[subjects::STATE_READ, subjects::STATE_READ_LOCAL, subjects::STATE_STATUS, subjects::OBS_RESEND]);
            publish.extend(own(&subjects::JS_READER_API));
            // Every process's stats and spans; a dashboard process publishes its own too.
            publish.extend([subjects::all_obs_actors(), subjects::all_obs_spans()]);
            let subscribe = vec![inbox, subjects::all_obs_actors(), subjects::all_obs_spans(), subjects::OBS_RESEND.to_string()];
            Permissions { publish_allow: publish, subscribe_allow: subscribe, ..Default::default() }
        }
        Role::Node(n) => {
            let mut publish = vec![subjects::node_write(n), subjects::node_read(n), subjects::node_metrics(n), subjects::node_token_request(n)];
            // Answers to log and stream requests, and exec, attach, port-forward and
            // log-follow frames, go to the inboxes of the gateway (or of a tool). Not
            // `allow_responses`: nats-server then remembers the reply subject of every
            // message delivered, JetStream's included, and a busy subscriber slows down.
            publish.push(subjects::under(&Role::Gateway.inbox()));
            publish.push(subjects::under(&Role::Admin.inbox()));
            // Its watches' consumers, each on a filter of its own (no message reads by
            // sequence: those would reach any object's events, Secrets' too).
            publish.extend(own(&subjects::JS_WATCH_API));
            publish.extend(node_watches(n).iter().map(|f| subjects::consumer_create(f)));
            // The dashboard's view of this agent's actors. (A process id is not a node
            // name: a node could publish stats under another's; they are only figures.)
            publish.extend([subjects::all_obs_actors(), subjects::all_obs_spans()]);
            let subscribe = vec![inbox, subjects::node_logs(n), subjects::node_streams(n), subjects::node_pod_events(n), subjects::OBS_RESEND.to_string()];
            Permissions { publish_allow: publish, subscribe_allow: subscribe, ..Default::default() }
        }
        Role::Bootstrap => Permissions { publish_allow: vec![subjects::JOIN.to_string()], subscribe_allow: vec![inbox], ..Default::default() },
        Role::Leaf => {
            // On the hub, a leaf link's publish list is what the site may send in and its
            // subscribe list what may flow out to the site: any of its nodes' subjects,
            // joins and their answers, and the joined users list. At the site, the
            // server holds each node agent to its own subjects as the hub would.
            let any = permissions(&Role::Node(subjects::ANY_NODE.into()));
            let mut publish = any.publish_allow;
            publish.extend([subjects::JOIN.to_string(), subjects::NATS_USERS.to_string()]);
            let mut subscribe = any.subscribe_allow;
            subscribe.extend([inbox, subjects::under(&Role::Bootstrap.inbox()), subjects::NATS_USERS_CHANGED.to_string()]);
            Permissions { publish_allow: publish, subscribe_allow: subscribe, ..Default::default() }
        }
    }
}

/// The filters of a node agent's watches: its own pods, and the Services, EndpointSlices
/// and PersistentVolumes its proxy, DNS and volume cleanup follow. Not ConfigMaps or
/// Secrets: it reads those its pods use, by name, through its read subject.
pub fn node_watches(node: &str) -> Vec<String> {
    let all = subjects::EventFilter::default();
    vec![
        subjects::node_pod_events(node),
        subjects::event_filter("services", &all),
        subjects::event_filter("endpointslices", &all),
        subjects::event_filter("persistentvolumes", &all),
    ]
}

/// Whether `subject` falls under NATS pattern `pattern` (`*` one token, `>` the rest).
pub fn matches(pattern: &str, subject: &str) -> bool {
    let (mut p, mut s) = (pattern.split('.'), subject.split('.'));
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

impl Permissions {
    /// The decision nats-server makes (deny wins), for tests and for reasoning.
    pub fn may_publish(&self, subject: &str) -> bool {
        self.publish_allow.iter().any(|p| matches(p, subject)) && !self.publish_deny.iter().any(|p| matches(p, subject))
    }
    pub fn may_subscribe(&self, subject: &str) -> bool {
        self.subscribe_allow.iter().any(|p| matches(p, subject)) && !self.subscribe_deny.iter().any(|p| matches(p, subject))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_publishes_only_its_own_node_subjects() {
        let p = permissions(&Role::Node("n1".into()));
        assert!(p.may_publish(&subjects::node_write("n1")));
        assert!(p.may_publish(&subjects::node_read("n1")));
        assert!(!p.may_publish(&subjects::node_write("n2")));
        assert!(!p.may_publish(subjects::STATE_WRITE));
        assert!(!p.may_publish(subjects::STATE_READ));
        assert!(p.may_publish(&subjects::node_token_request("n1")));
        assert!(!p.may_publish(subjects::TOKEN_REQUEST) && !p.may_publish(&subjects::node_token_request("n2")));
        assert!(!p.may_publish("ev.pods.demo.n1.p.n1"));
        assert!(!p.may_publish("$JS.API.STREAM.DELETE.FLOTILLA_EVENTS"));
        // Consumers only with its own filters, and no reads of messages by sequence.
        assert!(p.may_publish("$JS.API.CONSUMER.CREATE.FLOTILLA_EVENTS.w1.ev.pods.*.n1.*.*"));
        assert!(p.may_publish("$JS.API.CONSUMER.CREATE.FLOTILLA_EVENTS.w1.ev.services.*.*"));
        assert!(!p.may_publish("$JS.API.CONSUMER.CREATE.FLOTILLA_EVENTS"));
        assert!(!p.may_publish("$JS.API.CONSUMER.CREATE.FLOTILLA_EVENTS.w1.ev.secrets.*.*"));
        assert!(!p.may_publish("$JS.API.CONSUMER.CREATE.FLOTILLA_EVENTS.w1.ev.pods.*.n2.*.*"));
        assert!(!p.may_publish("$JS.API.CONSUMER.CREATE.FLOTILLA_EVENTS.w1.ev.>"));
        assert!(!p.may_publish("$JS.API.CONSUMER.DURABLE.CREATE.FLOTILLA_EVENTS.d"));
        assert!(!p.may_publish("$JS.API.STREAM.MSG.GET.FLOTILLA_EVENTS"));
        assert!(!p.may_publish("$JS.API.DIRECT.GET.FLOTILLA_EVENTS"));
    }

    #[test]
    fn a_node_subscribes_only_to_its_own_pods_and_inbox() {
        let p = permissions(&Role::Node("n1".into()));
        assert!(p.may_subscribe("ev.pods.demo.n1.p.n1"));
        assert!(!p.may_subscribe("ev.pods.demo.n2.p.n2"));
        assert!(!p.may_subscribe("ev.secrets.demo.s"));
        assert!(p.may_subscribe("_INBOX_N.n1.abc"));
        assert!(!p.may_subscribe("_INBOX_N.n2.abc"));
        assert!(!p.may_subscribe("_INBOX_R.gateway.abc"));
        assert!(p.may_subscribe(&subjects::node_logs("n1")));
        assert!(!p.may_subscribe(&subjects::node_streams("n2")));
    }

    #[test]
    fn control_plane_roles_cannot_read_each_others_replies() {
        let gw = permissions(&Role::Gateway);
        assert!(gw.may_subscribe("_INBOX_R.gateway.x"));
        assert!(!gw.may_subscribe("_INBOX_R.controllers.x"));
        assert!(!gw.may_subscribe("_INBOX_N.n1.x"));
        assert!(gw.may_subscribe("flotilla.tokens.request"));
        assert!(permissions(&Role::Admin).may_subscribe("_INBOX_N.n1.x"));
    }

    #[test]
    fn a_leaf_link_carries_any_of_its_nodes_subjects_and_joins_only() {
        let p = permissions(&Role::Leaf);
        assert!(p.may_publish(&subjects::node_write("site-1")) && p.may_publish(subjects::JOIN) && p.may_publish(subjects::NATS_USERS));
        assert!(p.may_publish("$JS.API.CONSUMER.CREATE.FLOTILLA_EVENTS.w.ev.pods.*.site-1.*.*"));
        assert!(!p.may_publish(subjects::STATE_WRITE) && !p.may_publish(subjects::STATE_READ) && !p.may_publish(subjects::NATS_USERS_CHANGED));
        assert!(!p.may_publish("$JS.API.CONSUMER.CREATE.FLOTILLA_EVENTS.w.ev.secrets.*.*"));
        assert!(p.may_subscribe("_INBOX_N.site-1.x") && p.may_subscribe("_INBOX_R.bootstrap.x") && p.may_subscribe(subjects::NATS_USERS_CHANGED));
        assert!(!p.may_subscribe("_INBOX_R.gateway.x") && !p.may_subscribe("ev.secrets.demo.s") && !p.may_subscribe(subjects::STATE_WRITE));
    }

    #[test]
    fn dashboard_and_bootstrap_cannot_write() {
        let d = permissions(&Role::Dashboard);
        assert!(d.may_publish(subjects::STATE_READ) && !d.may_publish(subjects::STATE_WRITE));
        let b = permissions(&Role::Bootstrap);
        assert!(b.may_publish(subjects::JOIN) && !b.may_publish(subjects::STATE_READ));
    }
}

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
}

impl Role {
    pub const CONTROL_PLANE: [Role; 5] = [Role::State, Role::Gateway, Role::Controllers, Role::Scheduler, Role::Admin];

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
        Role::State | Role::Gateway | Role::Controllers | Role::Scheduler | Role::Admin => {
            // Deny wins over allow in nats-server, so "every inbox but mine" is spelled
            // as the other prefixes; node agents' inboxes are never a control-plane
            // subscription (the gateway only publishes stream frames to them).
            let mut deny = vec![subjects::NODE_INBOXES.to_string()];
            deny.extend(Role::CONTROL_PLANE.iter().filter(|r| *r != role && *role != Role::Admin).map(|r| subjects::under(&r.inbox())));
            deny.push(subjects::under(&Role::Dashboard.inbox()));
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
            publish.extend(own(&subjects::JS_READER_API));
            // The dashboard's view of this agent's actors. (A process id is not a node
            // name: a node could publish stats under another's; they are only figures.)
            publish.extend([subjects::all_obs_actors(), subjects::all_obs_spans()]);
            let subscribe = vec![inbox, subjects::node_logs(n), subjects::node_streams(n), subjects::node_pod_events(n), subjects::OBS_RESEND.to_string()];
            Permissions { publish_allow: publish, subscribe_allow: subscribe, ..Default::default() }
        }
        Role::Bootstrap => Permissions { publish_allow: vec![subjects::JOIN.to_string()], subscribe_allow: vec![inbox], ..Default::default() },
    }
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
        assert!(p.may_publish("$JS.API.CONSUMER.CREATE.FLOTILLA_EVENTS"));
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
    fn dashboard_and_bootstrap_cannot_write() {
        let d = permissions(&Role::Dashboard);
        assert!(d.may_publish(subjects::STATE_READ) && !d.may_publish(subjects::STATE_WRITE));
        let b = permissions(&Role::Bootstrap);
        assert!(b.may_publish(subjects::JOIN) && !b.may_publish(subjects::STATE_READ));
    }
}

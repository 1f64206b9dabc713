//! The kubelet's prober: what a probe or lifecycle hook asks for (exec, httpGet,
//! tcpSocket, grpc, sleep), parsed once from the Pod into [`Action`]s (pure), run against
//! a container ([`run`], in `check.rs`), and the success/failure thresholds that turn
//! single results into a verdict ([`Counter`], pure).

mod check;

pub use check::{run, run_hook, Target};

use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::time::Duration;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProbeError {
    #[error("the probe names no handler (exec, httpGet, tcpSocket or grpc)")]
    NoHandler,
    #[error("port {0:?} is not a number and no container port has that name")]
    UnknownPort(String),
    #[error("port {0} is out of range")]
    BadPort(i64),
}

/// One check of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Exec(Vec<String>),
    Http { https: bool, host: Option<String>, port: u16, path: String, headers: Vec<(String, String)> },
    Tcp { host: Option<String>, port: u16 },
    Grpc { port: u16, service: String },
    /// A hook's `sleep` action.
    Sleep(Duration),
}

/// A probe with its timings, as the API defaults fill them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSpec {
    pub action: Action,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
    /// The probe's own terminationGracePeriodSeconds (a liveness kill's grace).
    pub grace: Option<Duration>,
}

/// A port given by number or by the name of one of the container's ports.
pub fn resolve_port(port: &IntOrString, c: &Container) -> Result<u16, ProbeError> {
    let n = match port {
        IntOrString::Int(n) => *n as i64,
        IntOrString::String(s) => match s.parse::<i64>() {
            Ok(n) => n,
            Err(_) => c.ports.iter().flatten().find(|p| p.name.as_deref() == Some(s.as_str())).map(|p| p.container_port as i64).ok_or_else(|| ProbeError::UnknownPort(s.clone()))?,
        },
    };
    u16::try_from(n).ok().filter(|p| *p > 0).ok_or(ProbeError::BadPort(n))
}

fn secs(v: Option<i32>, default: u64) -> Duration {
    Duration::from_secs(v.map(|s| s.max(0) as u64).unwrap_or(default))
}

/// The handler of a probe or hook: the same four fields on both (plus a hook's sleep).
fn action(
    exec: Option<&k8s_openapi::api::core::v1::ExecAction>,
    http: Option<&k8s_openapi::api::core::v1::HTTPGetAction>,
    tcp: Option<&k8s_openapi::api::core::v1::TCPSocketAction>,
    grpc: Option<&k8s_openapi::api::core::v1::GRPCAction>,
    c: &Container,
) -> Result<Action, ProbeError> {
    if let Some(e) = exec {
        return Ok(Action::Exec(e.command.clone().unwrap_or_default()));
    }
    if let Some(h) = http {
        let headers = h.http_headers.iter().flatten().map(|h| (h.name.clone(), h.value.clone())).collect();
        let path = h.path.clone().filter(|p| !p.is_empty()).unwrap_or_else(|| "/".into());
        let path = if path.starts_with('/') { path } else { format!("/{path}") };
        return Ok(Action::Http { https: h.scheme.as_deref() == Some("HTTPS"), host: h.host.clone().filter(|h| !h.is_empty()), port: resolve_port(&h.port, c)?, path, headers });
    }
    if let Some(t) = tcp {
        return Ok(Action::Tcp { host: t.host.clone().filter(|h| !h.is_empty()), port: resolve_port(&t.port, c)? });
    }
    if let Some(g) = grpc {
        let port = u16::try_from(g.port).ok().filter(|p| *p > 0).ok_or(ProbeError::BadPort(g.port as i64))?;
        return Ok(Action::Grpc { port, service: g.service.clone().unwrap_or_default() });
    }
    Err(ProbeError::NoHandler)
}

pub fn probe_spec(p: &Probe, c: &Container) -> Result<ProbeSpec, ProbeError> {
    Ok(ProbeSpec {
        action: action(p.exec.as_ref(), p.http_get.as_ref(), p.tcp_socket.as_ref(), p.grpc.as_ref(), c)?,
        initial_delay: secs(p.initial_delay_seconds, 0),
        period: secs(p.period_seconds, 10).max(Duration::from_secs(1)),
        timeout: secs(p.timeout_seconds, 1).max(Duration::from_secs(1)),
        success_threshold: p.success_threshold.unwrap_or(1).max(1) as u32,
        failure_threshold: p.failure_threshold.unwrap_or(3).max(1) as u32,
        grace: p.termination_grace_period_seconds.map(|s| Duration::from_secs(s.max(0) as u64)),
    })
}

pub fn hook_action(h: &LifecycleHandler, c: &Container) -> Result<Action, ProbeError> {
    if let Some(s) = &h.sleep {
        return Ok(Action::Sleep(Duration::from_secs(s.seconds.max(0) as u64)));
    }
    action(h.exec.as_ref(), h.http_get.as_ref(), h.tcp_socket.as_ref(), None, c)
}

/// A container's probes, parsed; a probe that cannot run is reported, not run.
#[derive(Debug, Clone, Default)]
pub struct ContainerProbes {
    pub startup: Option<ProbeSpec>,
    pub liveness: Option<ProbeSpec>,
    pub readiness: Option<ProbeSpec>,
}

impl ContainerProbes {
    pub fn of(c: &Container) -> (ContainerProbes, Vec<ProbeError>) {
        let mut errs = Vec::new();
        let mut parse = |p: Option<&Probe>| p.and_then(|p| probe_spec(p, c).map_err(|e| errs.push(e)).ok());
        let probes = ContainerProbes { startup: parse(c.startup_probe.as_ref()), liveness: parse(c.liveness_probe.as_ref()), readiness: parse(c.readiness_probe.as_ref()) };
        (probes, errs)
    }
}

/// One probe's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// The kubelet's words for why (the event's message).
    Failure(String),
}

/// successThreshold and failureThreshold: a verdict changes after that many results in a
/// row; `record` returns the new verdict when it changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counter {
    success_threshold: u32,
    failure_threshold: u32,
    successes: u32,
    failures: u32,
    verdict: Option<bool>,
}

impl Counter {
    pub fn new(success_threshold: u32, failure_threshold: u32) -> Counter {
        Counter { success_threshold: success_threshold.max(1), failure_threshold: failure_threshold.max(1), successes: 0, failures: 0, verdict: None }
    }

    pub fn record(&mut self, ok: bool) -> Option<bool> {
        if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
        }
        let next = if ok && self.successes >= self.success_threshold {
            Some(true)
        } else if !ok && self.failures >= self.failure_threshold {
            Some(false)
        } else {
            None
        };
        match next {
            Some(v) if self.verdict != Some(v) => {
                self.verdict = Some(v);
                Some(v)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn container(v: serde_json::Value) -> Container {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn thresholds_turn_results_into_verdicts() {
        let mut c = Counter::new(1, 3);
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(false), Some(false));
        assert_eq!(c.record(false), None, "told once");
        assert_eq!(c.record(true), Some(true));
        assert_eq!(c.record(true), None);
        // A success in between starts the failures over.
        assert_eq!((c.record(false), c.record(false), c.record(true), c.record(false), c.record(false)), (None, None, None, None, None));
        assert_eq!(c.record(false), Some(false));
        let mut two = Counter::new(2, 1);
        assert_eq!((two.record(true), two.record(true)), (None, Some(true)));
        // Zero thresholds (invalid) act as one, never panic.
        assert_eq!(Counter::new(0, 0).record(false), Some(false));
    }

    #[test]
    fn handlers_parse_with_ports_by_name_and_defaults() {
        let c = container(json!({"name": "c", "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"httpGet": {"port": "http", "path": "healthz", "httpHeaders": [{"name": "X-A", "value": "1"}]}, "periodSeconds": 2},
            "livenessProbe": {"tcpSocket": {"port": 9000}, "initialDelaySeconds": 5, "terminationGracePeriodSeconds": 3},
            "startupProbe": {"exec": {"command": ["cat", "/tmp/ok"]}}}));
        let (p, errs) = ContainerProbes::of(&c);
        assert!(errs.is_empty());
        let r = p.readiness.unwrap();
        assert_eq!(r.action, Action::Http { https: false, host: None, port: 8080, path: "/healthz".into(), headers: vec![("X-A".into(), "1".into())] });
        assert_eq!((r.period, r.timeout, r.success_threshold, r.failure_threshold), (Duration::from_secs(2), Duration::from_secs(1), 1, 3));
        let l = p.liveness.unwrap();
        assert_eq!((l.action, l.initial_delay, l.grace), (Action::Tcp { host: None, port: 9000 }, Duration::from_secs(5), Some(Duration::from_secs(3))));
        assert_eq!(p.startup.unwrap().action, Action::Exec(vec!["cat".into(), "/tmp/ok".into()]));
    }

    #[test]
    fn bad_probes_are_errors_not_panics() {
        let c = container(json!({"name": "c", "livenessProbe": {"tcpSocket": {"port": "nope"}}, "readinessProbe": {"periodSeconds": -4},
            "startupProbe": {"grpc": {"port": 70000}}}));
        let (p, errs) = ContainerProbes::of(&c);
        assert!(p.liveness.is_none() && p.readiness.is_none() && p.startup.is_none());
        assert_eq!(errs, vec![ProbeError::BadPort(70000), ProbeError::UnknownPort("nope".into()), ProbeError::NoHandler]);
        let h: LifecycleHandler = serde_json::from_value(json!({"sleep": {"seconds": 2}})).unwrap();
        assert_eq!(hook_action(&h, &c), Ok(Action::Sleep(Duration::from_secs(2))));
    }
}

//! The pure part of the kubelet: one container's lifecycle as an explicit state machine
//! (`step(state, event) -> commands`), and the PodStatus kubectl prints, computed from the
//! containers' states. No processes, no clocks: time comes in with the events.

use jiff::Timestamp;
use std::time::Duration;

pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A container that ran this long without failing starts its back-off over.
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, PartialEq)]
pub struct Terminated {
    pub exit_code: i32,
    pub reason: String,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub enum State {
    Waiting { reason: String, message: Option<String> },
    Running { pid: i32, started_at: Timestamp },
    Terminated(Terminated),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Container {
    pub name: String,
    pub image: String,
    pub state: State,
    pub restart_count: i32,
    pub last_state: Option<Terminated>,
    pub backoff: Duration,
    /// Set once the pod is being deleted: nothing restarts any more.
    pub stopping: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    pub fn parse(s: Option<&str>) -> RestartPolicy {
        match s {
            Some("OnFailure") => RestartPolicy::OnFailure,
            Some("Never") => RestartPolicy::Never,
            _ => RestartPolicy::Always,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The runtime started the container's process.
    Started { pid: i32, at: Timestamp },
    /// The runtime could not create it (no command, unknown runtime class …).
    CreateFailed { message: String },
    Exited { code: i32, at: Timestamp },
    /// The back-off timer fired.
    BackoffElapsed,
    /// The pod is being deleted.
    Stop,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Start,
    RestartAfter(Duration),
    /// Signal the process group: SIGTERM now, SIGKILL after the grace period.
    Kill,
}

impl Container {
    pub fn new(name: &str, image: &str) -> Container {
        Container {
            name: name.into(),
            image: image.into(),
            state: State::Waiting { reason: "ContainerCreating".into(), message: None },
            restart_count: 0,
            last_state: None,
            backoff: INITIAL_BACKOFF,
            stopping: false,
        }
    }

    pub fn pid(&self) -> Option<i32> {
        match self.state {
            State::Running { pid, .. } => Some(pid),
            _ => None,
        }
    }

    /// Advances the state machine; returns what the runtime must do next.
    pub fn step(&mut self, ev: Event, policy: RestartPolicy) -> Vec<Command> {
        match (ev, &self.state) {
            (Event::Started { pid, at }, _) => {
                if self.stopping {
                    self.state = State::Running { pid, started_at: at };
                    return vec![Command::Kill];
                }
                self.state = State::Running { pid, started_at: at };
                vec![]
            }
            (Event::CreateFailed { message }, _) => {
                self.state = State::Waiting { reason: "CreateContainerError".into(), message: Some(message) };
                vec![]
            }
            (Event::Exited { code, at }, State::Running { started_at, .. }) => {
                let started_at = *started_at;
                let t = Terminated {
                    exit_code: code,
                    reason: if code == 0 { "Completed".into() } else { "Error".into() },
                    started_at,
                    finished_at: at,
                };
                let ran = at.duration_since(started_at).unsigned_abs();
                if ran >= BACKOFF_RESET_AFTER {
                    self.backoff = INITIAL_BACKOFF;
                }
                let restart = !self.stopping
                    && match policy {
                        RestartPolicy::Always => true,
                        RestartPolicy::OnFailure => code != 0,
                        RestartPolicy::Never => false,
                    };
                if restart {
                    let wait = self.backoff;
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                    self.last_state = Some(t);
                    self.state = State::Waiting {
                        reason: "CrashLoopBackOff".into(),
                        message: Some(format!("back-off {}s restarting failed container={}", wait.as_secs(), self.name)),
                    };
                    vec![Command::RestartAfter(wait)]
                } else {
                    self.state = State::Terminated(t);
                    vec![]
                }
            }
            (Event::Exited { .. }, _) => vec![],
            (Event::BackoffElapsed, State::Waiting { .. }) if !self.stopping => {
                self.restart_count += 1;
                vec![Command::Start]
            }
            (Event::BackoffElapsed, _) => vec![],
            (Event::Stop, State::Running { .. }) => {
                self.stopping = true;
                vec![Command::Kill]
            }
            (Event::Stop, _) => {
                self.stopping = true;
                vec![]
            }
        }
    }

    pub fn finished(&self) -> bool {
        !matches!(self.state, State::Running { .. })
    }
}

fn ts(t: Timestamp) -> String {
    // Kubernetes keeps whole seconds.
    Timestamp::from_second(t.as_second()).unwrap_or(t).to_string()
}

fn terminated_json(t: &Terminated) -> serde_json::Value {
    serde_json::json!({"terminated": {"exitCode": t.exit_code, "reason": t.reason, "startedAt": ts(t.started_at), "finishedAt": ts(t.finished_at)}})
}

/// The pod's phase from its containers, as the kubelet computes it.
pub fn phase(cs: &[Container], policy: RestartPolicy) -> &'static str {
    if cs.is_empty() {
        return "Pending";
    }
    let running = cs.iter().filter(|c| matches!(c.state, State::Running { .. })).count();
    let terminated: Vec<&Terminated> = cs.iter().filter_map(|c| if let State::Terminated(t) = &c.state { Some(t) } else { None }).collect();
    let restarting = cs.iter().any(|c| matches!(&c.state, State::Waiting { reason, .. } if reason == "CrashLoopBackOff"));
    if terminated.len() == cs.len() {
        return if terminated.iter().all(|t| t.exit_code == 0) { "Succeeded" } else { "Failed" };
    }
    if running == cs.len() || (running + terminated.len() > 0 && (restarting || policy == RestartPolicy::Always)) {
        return "Running";
    }
    if restarting && cs.iter().all(|c| c.restart_count > 0 || matches!(c.state, State::Running { .. })) {
        return "Running";
    }
    "Pending"
}

/// The status block the kubelet writes: phase, conditions, IPs and container statuses.
/// `prev` is the stored status, whose condition transition times are kept when unchanged.
pub fn pod_status(cs: &[Container], policy: RestartPolicy, host_ip: &str, start_time: Timestamp, prev: Option<&serde_json::Value>, now: Timestamp) -> serde_json::Value {
    use serde_json::json;
    let all_ready = !cs.is_empty() && cs.iter().all(|c| matches!(c.state, State::Running { .. }));
    let phase = phase(cs, policy);
    let prev_time = |ty: &str, status: &str| -> Option<String> {
        prev.and_then(|p| p.get("conditions"))
            .and_then(|c| c.as_array())
            .and_then(|a| a.iter().find(|c| c["type"] == ty && c["status"] == status))
            .and_then(|c| c.get("lastTransitionTime"))
            .and_then(|t| t.as_str())
            .map(str::to_string)
    };
    let cond = |ty: &str, ok: bool| {
        let status = if ok { "True" } else { "False" };
        let mut c = json!({"type": ty, "status": status, "lastProbeTime": null,
            "lastTransitionTime": prev_time(ty, status).unwrap_or_else(|| ts(now))});
        if !ok && (ty == "Ready" || ty == "ContainersReady") {
            let names: Vec<&str> = cs.iter().filter(|c| !matches!(c.state, State::Running { .. })).map(|c| c.name.as_str()).collect();
            c["reason"] = json!("ContainersNotReady");
            c["message"] = json!(format!("containers with unready status: [{}]", names.join(" ")));
        }
        c
    };
    let statuses: Vec<serde_json::Value> = cs
        .iter()
        .map(|c| {
            let state = match &c.state {
                State::Waiting { reason, message } => {
                    let mut w = json!({"reason": reason});
                    if let Some(m) = message {
                        w["message"] = json!(m);
                    }
                    json!({"waiting": w})
                }
                State::Running { started_at, .. } => json!({"running": {"startedAt": ts(*started_at)}}),
                State::Terminated(t) => terminated_json(t),
            };
            let running = matches!(c.state, State::Running { .. });
            let mut s = json!({
                "name": c.name, "image": c.image, "imageID": "", "ready": running, "started": running,
                "restartCount": c.restart_count, "state": state,
                "lastState": c.last_state.as_ref().map(terminated_json).unwrap_or_else(|| json!({})),
            });
            if let State::Running { pid, .. } = c.state {
                s["containerID"] = json!(format!("flotilla://{pid}"));
            }
            s
        })
        .collect();
    json!({
        "phase": phase,
        "conditions": [cond("PodReadyToStartContainers", true), cond("Initialized", true), cond("Ready", all_ready), cond("ContainersReady", all_ready), cond("PodScheduled", true)],
        "hostIP": host_ip, "hostIPs": [{"ip": host_ip}],
        "podIP": host_ip, "podIPs": [{"ip": host_ip}],
        "startTime": ts(start_time),
        "containerStatuses": statuses,
        "qosClass": "BestEffort",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    #[test]
    fn crash_restarts_with_growing_backoff() {
        let mut c = Container::new("main", "busybox");
        assert!(c.step(Event::Started { pid: 10, at: t(0) }, RestartPolicy::Always).is_empty());
        assert_eq!(c.step(Event::Exited { code: 137, at: t(5) }, RestartPolicy::Always), vec![Command::RestartAfter(INITIAL_BACKOFF)]);
        assert!(matches!(&c.state, State::Waiting { reason, .. } if reason == "CrashLoopBackOff"));
        assert_eq!(c.step(Event::BackoffElapsed, RestartPolicy::Always), vec![Command::Start]);
        assert_eq!(c.restart_count, 1);
        c.step(Event::Started { pid: 11, at: t(7) }, RestartPolicy::Always);
        assert_eq!(c.step(Event::Exited { code: 1, at: t(8) }, RestartPolicy::Always), vec![Command::RestartAfter(INITIAL_BACKOFF * 2)]);
        assert_eq!(c.last_state.as_ref().map(|l| l.exit_code), Some(1));
    }

    #[test]
    fn long_runs_reset_the_backoff() {
        let mut c = Container::new("main", "busybox");
        c.backoff = Duration::from_secs(160);
        c.step(Event::Started { pid: 1, at: t(0) }, RestartPolicy::Always);
        assert_eq!(c.step(Event::Exited { code: 1, at: t(700) }, RestartPolicy::Always), vec![Command::RestartAfter(INITIAL_BACKOFF)]);
    }

    #[test]
    fn policies_decide_restarts() {
        for (policy, code, restarts) in [(RestartPolicy::Never, 1, false), (RestartPolicy::OnFailure, 0, false), (RestartPolicy::OnFailure, 2, true)] {
            let mut c = Container::new("main", "busybox");
            c.step(Event::Started { pid: 1, at: t(0) }, policy);
            let cmds = c.step(Event::Exited { code, at: t(1) }, policy);
            assert_eq!(!cmds.is_empty(), restarts, "{policy:?} exit {code}");
        }
    }

    #[test]
    fn stopping_kills_and_never_restarts() {
        let mut c = Container::new("main", "busybox");
        c.step(Event::Started { pid: 1, at: t(0) }, RestartPolicy::Always);
        assert_eq!(c.step(Event::Stop, RestartPolicy::Always), vec![Command::Kill]);
        assert!(c.step(Event::Exited { code: 143, at: t(2) }, RestartPolicy::Always).is_empty());
        assert!(c.finished());
    }

    #[test]
    fn status_reports_running_and_create_errors() {
        let mut a = Container::new("a", "busybox");
        a.step(Event::Started { pid: 1, at: t(0) }, RestartPolicy::Always);
        let s = pod_status(std::slice::from_ref(&a), RestartPolicy::Always, "127.0.0.1", t(0), None, t(1));
        assert_eq!(s["phase"], "Running");
        assert_eq!(s["containerStatuses"][0]["ready"], true);
        assert!(s["conditions"].as_array().unwrap().iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));

        let mut b = Container::new("b", "busybox");
        b.step(Event::CreateFailed { message: "no command".into() }, RestartPolicy::Always);
        let s = pod_status(&[b], RestartPolicy::Always, "127.0.0.1", t(0), None, t(1));
        assert_eq!(s["phase"], "Pending");
        assert_eq!(s["containerStatuses"][0]["state"]["waiting"]["reason"], "CreateContainerError");
    }

    #[test]
    fn completed_pods_succeed_or_fail() {
        let mut c = Container::new("a", "busybox");
        c.step(Event::Started { pid: 1, at: t(0) }, RestartPolicy::Never);
        c.step(Event::Exited { code: 0, at: t(1) }, RestartPolicy::Never);
        assert_eq!(phase(std::slice::from_ref(&c), RestartPolicy::Never), "Succeeded");
        c.state = State::Terminated(Terminated { exit_code: 3, reason: "Error".into(), started_at: t(0), finished_at: t(1) });
        assert_eq!(phase(&[c], RestartPolicy::Never), "Failed");
    }
}

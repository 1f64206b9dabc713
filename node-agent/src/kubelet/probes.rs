//! The kubelet's probe workers and lifecycle hooks: one task per running container
//! instance runs its startup probe, then its liveness and readiness probes, each on its
//! own period, and tells the actor each failed attempt (an Unhealthy event) and each
//! change of verdict (fed to the state machine). Hooks (postStart, preStop) run with the
//! same handlers. The task ends with its [`ProbeTask`], dropped when the instance ends.

use super::lifecycle::{Event, ProbeKind};
use super::spec;
use super::{Kubelet, SandboxSlot};
use crate::prober::{self, Action, ContainerProbes, Counter, Outcome, ProbeSpec, Target};
use crate::runtime::streams::ExecTarget;
use crate::runtime::Started;
use actix::prelude::*;
use std::time::Duration;

/// A running worker; dropping it stops the worker.
pub(super) struct ProbeTask(tokio::task::AbortHandle);

impl Drop for ProbeTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Report {
    /// One attempt failed, in the kubelet's words.
    Failed(String),
    /// The thresholds turned the results into a verdict.
    Verdict(bool),
}

#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct ProbeReport {
    uid: String,
    idx: usize,
    instance: u64,
    kind: ProbeKind,
    report: Report,
    /// The grace of a kill this verdict causes.
    grace: Duration,
}

fn kind_word(k: ProbeKind) -> &'static str {
    match k {
        ProbeKind::Readiness => "Readiness",
        ProbeKind::Liveness => "Liveness",
        ProbeKind::Startup => "Startup",
    }
}

struct Worker {
    addr: Addr<Kubelet>,
    uid: String,
    idx: usize,
    instance: u64,
    target: Target,
    pod_grace: Duration,
}

impl Worker {
    fn send(&self, kind: ProbeKind, report: Report, spec: &ProbeSpec) {
        let grace = spec.grace.unwrap_or(self.pod_grace);
        self.addr.do_send(ProbeReport { uid: self.uid.clone(), idx: self.idx, instance: self.instance, kind, report, grace });
    }

    /// Probes on the spec's period until `done(verdict)` says so; returns that verdict.
    async fn probe(&self, spec: &ProbeSpec, kind: ProbeKind, done: impl Fn(bool) -> bool) -> bool {
        tokio::time::sleep(spec.initial_delay).await;
        let mut counter = Counter::new(spec.success_threshold, spec.failure_threshold);
        loop {
            let outcome = prober::run(&spec.action, &self.target, spec.timeout).await;
            if let Outcome::Failure(m) = &outcome {
                self.send(kind, Report::Failed(m.clone()), spec);
            }
            if let Some(v) = counter.record(outcome == Outcome::Success) {
                self.send(kind, Report::Verdict(v), spec);
                if done(v) {
                    return v;
                }
            }
            tokio::time::sleep(spec.period).await;
        }
    }

    async fn run(self, probes: ContainerProbes) {
        if let Some(s) = &probes.startup {
            // Liveness and readiness wait until the container has started.
            if !self.probe(s, ProbeKind::Startup, |_| true).await {
                return;
            }
        }
        let live = async {
            if let Some(s) = &probes.liveness {
                // Once failed, the container is killed: nothing more to say.
                self.probe(s, ProbeKind::Liveness, |ok| !ok).await;
            }
        };
        let ready = async {
            if let Some(s) = &probes.readiness {
                self.probe(s, ProbeKind::Readiness, |_| false).await;
            }
        };
        futures::future::join(live, ready).await;
    }
}

impl Kubelet {
    /// What exec and network checks need to reach container `idx` of the pod.
    pub(super) fn probe_target(&self, uid: &str, idx: usize, started: Started) -> Option<Target> {
        let rt = self.pods.get(uid)?;
        let runtime = rt.runtime.clone().ok()?;
        let SandboxSlot::Ready(sandbox) = &rt.sandbox else { return None };
        let restarts = rt.state.containers.get(idx).map(|c| c.restart_count).unwrap_or(0);
        let dir = spec::pod_dir(&self.data_dir, &rt.state.namespace, &rt.state.name, uid);
        let pod_ip = rt.pod_ip.clone().unwrap_or_else(|| self.host_ip.clone());
        // Exec probes see the environment the container was started with.
        let env = rt.envs.get(&idx).cloned().unwrap_or_default();
        let cspec = spec::container_spec(&rt.pod, idx, &dir, restarts, &env)?;
        let working_dir = cspec.working_dir.clone().unwrap_or_else(|| dir.join("work"));
        let exec = ExecTarget { started, sandbox: sandbox.clone(), env: cspec.env, working_dir, log_path: cspec.log_path, security: cspec.security };
        Some(Target { runtime, exec, pod_ip })
    }

    /// Carries out `Command::Probe`: starts the worker of the running `instance`.
    pub(super) fn start_probes(&mut self, uid: &str, idx: usize, instance: u64, ctx: &mut Context<Self>) {
        let Some(rt) = self.pods.get(uid) else { return };
        let Some(c) = rt.pod.spec.as_ref().and_then(|s| spec::container_at(s, idx)).cloned() else { return };
        let Some(started) = rt.procs.get(&idx).filter(|(i, _)| *i == instance).map(|(_, s)| s.clone()) else { return };
        let pod_grace = rt.state.grace;
        let (probes, errs) = ContainerProbes::of(&c);
        for e in errs {
            self.note(uid, "Warning", "Unhealthy", format!("Probe of container {} cannot run: {e}", c.name));
        }
        let Some(target) = self.probe_target(uid, idx, started) else { return };
        let w = Worker { addr: ctx.address(), uid: uid.to_string(), idx, instance, target, pod_grace };
        let task = tokio::spawn(w.run(probes));
        if let Some(rt) = self.pods.get_mut(uid) {
            rt.probe_tasks.insert(idx, ProbeTask(task.abort_handle()));
        }
    }

    /// The pod's preStop (or postStart) handler of container `idx`, parsed.
    pub(super) fn hook(&self, uid: &str, idx: usize, pre_stop: bool) -> Option<Action> {
        let rt = self.pods.get(uid)?;
        let c = spec::container_at(rt.pod.spec.as_ref()?, idx)?;
        let l = c.lifecycle.as_ref()?;
        let h = if pre_stop { l.pre_stop.as_ref()? } else { l.post_start.as_ref()? };
        match prober::hook_action(h, c) {
            Ok(a) => Some(a),
            Err(e) => {
                tracing::warn!(container = %c.name, error = %e, "a lifecycle hook cannot run");
                None
            }
        }
    }

    /// Stops container `idx`: its preStop hook first, within `grace`, then SIGTERM with
    /// what is left of the grace, SIGKILL after it.
    pub(super) fn stop_container(&self, uid: &str, idx: usize, grace: Duration) {
        let Some(rt) = self.pods.get(uid) else { return };
        let Some((_, s)) = rt.procs.get(&idx).cloned() else { return };
        let Ok(runtime) = rt.runtime.clone() else { return };
        let hook = if grace.is_zero() { None } else { self.hook(uid, idx, true).and_then(|a| Some((a, self.probe_target(uid, idx, s.clone())?))) };
        let (client, node, pod, name) = (self.client.clone(), self.node.clone(), rt.pod.clone(), self.container_name(uid, idx));
        let span = self.span();
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let mut left = grace;
                if let Some((action, target)) = hook {
                    let t0 = std::time::Instant::now();
                    if let Outcome::Failure(m) = prober::run_hook(&action, &target, grace).await {
                        let msg = hook_failure(&action, &name, &pod, &m);
                        super::store::record_event(&client, &node, &pod, "Warning", "FailedPreStopHook", &msg);
                    }
                    left = grace.saturating_sub(t0.elapsed());
                }
                runtime.stop_container(&s, left).await;
            },
            span,
        ));
    }
}

/// The kubelet's words for a failed hook (`handlers.go`).
pub(super) fn hook_failure(action: &Action, container: &str, pod: &k8s_openapi::api::core::v1::Pod, message: &str) -> String {
    let p = format!("{}_{}({})", pod.metadata.name.as_deref().unwrap_or(""), pod.metadata.namespace.as_deref().unwrap_or(""), pod.metadata.uid.as_deref().unwrap_or(""));
    match action {
        Action::Exec(cmd) => format!("Exec lifecycle hook ({cmd:?}) for Container {container:?} in Pod {p:?} failed - error: command '{}' exited with non-zero exit code, message: {message:?}", cmd.join(" ")),
        Action::Http { path, .. } => format!("HTTP lifecycle hook ({path}) for Container {container:?} in Pod {p:?} failed - error: {message}"),
        _ => format!("Lifecycle hook for Container {container:?} in Pod {p:?} failed - error: {message}"),
    }
}

impl Handler<ProbeReport> for Kubelet {
    type Result = ();
    fn handle(&mut self, m: ProbeReport, ctx: &mut Context<Self>) {
        let node = self.node.clone();
        bus::metrics::handle_in(super::ACTOR, &node, || {
            let current = self.pods.get(&m.uid).and_then(|rt| rt.procs.get(&m.idx)).is_some_and(|(i, _)| *i == m.instance);
            if !current {
                return;
            }
            match m.report {
                Report::Failed(msg) => self.note(&m.uid, "Warning", "Unhealthy", format!("{} probe failed: {msg}", kind_word(m.kind))),
                Report::Verdict(ok) => self.drive(&m.uid, Event::Probe { idx: m.idx, instance: m.instance, kind: m.kind, ok, grace: m.grace }, ctx),
            }
        })
    }
}

//! The state machine's steps, asserted as exact command lists (no I/O): starts, crashes
//! and back-off, pulls, deletion, init containers, sidecars, probes and deadlines.

use super::fixtures::{ex, pod, t};
use super::*;

/// Feeds events in order, returning the final state and every command issued.
fn run(mut p: PodState, evs: Vec<Event>) -> (PodState, Vec<Command>) {
    let mut all = vec![];
    for ev in evs {
        let (next, cmds) = step(p, ev);
        p = next;
        all.extend(cmds);
    }
    (p, all)
}

fn waiting_reason(c: &Container) -> Option<&str> {
    match &c.state {
        State::Waiting { reason, .. } => Some(reason),
        _ => None,
    }
}

#[test]
fn admission_starts_every_container() {
    let (p, cmds) = step(pod(RestartPolicy::Always, &["a", "b"]), Event::Admitted);
    assert_eq!(cmds, vec![Command::Start { idx: 0 }, Command::Start { idx: 1 }]);
    let (p, cmds) = step(p, Event::Started { idx: 0, instance: 10, id: format!("flotilla://{}", 10), image_id: String::new(), at: t(0) });
    assert!(cmds.is_empty());
    assert_eq!(p.containers[0].state, State::Running { instance: 10, started_at: t(0) });
    assert_eq!(p.containers[0].container_id.as_deref(), Some("flotilla://10"));
}

#[test]
fn crash_restarts_at_once_then_with_growing_backoff() {
    let p = pod(RestartPolicy::Always, &["c"]);
    let (p, _) = run(p, vec![Event::Admitted, Event::Started { idx: 0, instance: 10, id: format!("flotilla://{}", 10), image_id: String::new(), at: t(0) }]);
    // The first crash shows as ended (Error) and restarts on the next sync.
    let (p, cmds) = step(p, Event::Exited { idx: 0, instance: 10, exit: ex(137), at: t(5) });
    assert_eq!(cmds, vec![Command::RestartAfter { idx: 0, after: FIRST_RESTART }]);
    assert!(matches!(&p.containers[0].state, State::Terminated(t) if t.reason == "Error" && t.exit_code == 137));
    let (p, cmds) = step(p, Event::BackoffElapsed { idx: 0 });
    assert_eq!(cmds, vec![Command::Start { idx: 0 }]);
    assert_eq!(p.containers[0].restart_count, 1);
    assert_eq!(p.containers[0].last_state.as_ref().map(|l| (l.exit_code, l.reason.as_str(), l.started_at, l.finished_at)), Some((137, "Error", t(0), t(5))));

    // The next crash waits 10 s in CrashLoopBackOff, and each further one twice as long, up to five minutes.
    let (p, _) = step(p, Event::Started { idx: 0, instance: 11, id: "flotilla://11".into(), image_id: String::new(), at: t(6) });
    let (p, cmds) = step(p, Event::Exited { idx: 0, instance: 11, exit: ex(1), at: t(7) });
    assert_eq!(cmds, vec![Command::RestartAfter { idx: 0, after: INITIAL_BACKOFF }]);
    assert_eq!(waiting_reason(&p.containers[0]), Some("CrashLoopBackOff"));
    let State::Waiting { message: Some(m), .. } = &p.containers[0].state else { panic!("waiting") };
    assert_eq!(m, "back-off 10s restarting failed container=c pod=p_ns(u1)");
    let (mut p, _) = step(p, Event::BackoffElapsed { idx: 0 });
    let mut waits = vec![];
    for i in 0..8 {
        let n = 12 + i;
        let (next, _) = step(p, Event::Started { idx: 0, instance: n, id: format!("flotilla://{n}"), image_id: String::new(), at: t(10 + i as i64) });
        let (next, cmds) = step(next, Event::Exited { idx: 0, instance: n, exit: ex(1), at: t(11 + i as i64) });
        let [Command::RestartAfter { after, .. }] = cmds.as_slice() else { panic!("{cmds:?}") };
        waits.push(after.as_secs());
        let (next, _) = step(next, Event::BackoffElapsed { idx: 0 });
        p = next;
    }
    assert_eq!(waits, vec![20, 40, 80, 160, 300, 300, 300, 300]);
    assert_eq!(p.containers[0].restart_count, 10);
}

#[test]
fn backoff_doubles_and_resets_after_ten_minutes() {
    let m = Duration::from_secs(60);
    assert_eq!(next_backoff(Duration::ZERO, m), (Duration::ZERO, INITIAL_BACKOFF));
    assert_eq!(next_backoff(INITIAL_BACKOFF, m), (INITIAL_BACKOFF, Duration::from_secs(20)));
    assert_eq!(next_backoff(Duration::from_secs(160), m), (Duration::from_secs(160), MAX_BACKOFF));
    assert_eq!(next_backoff(MAX_BACKOFF, m), (MAX_BACKOFF, MAX_BACKOFF));
    assert_eq!(next_backoff(MAX_BACKOFF, BACKOFF_RESET_AFTER), (Duration::ZERO, INITIAL_BACKOFF));
}

#[test]
fn long_runs_reset_the_backoff() {
    let mut p = pod(RestartPolicy::Always, &["c"]);
    p.containers[0].backoff = Duration::from_secs(160);
    let (_, cmds) = run(p, vec![Event::Started { idx: 0, instance: 1, id: format!("flotilla://{}", 1), image_id: String::new(), at: t(0) }, Event::Exited { idx: 0, instance: 1, exit: ex(1), at: t(700) }]);
    assert_eq!(cmds, vec![Command::RestartAfter { idx: 0, after: FIRST_RESTART }]);
}

#[test]
fn an_exit_of_a_replaced_instance_changes_nothing() {
    let p = pod(RestartPolicy::Always, &["c"]);
    let (p, _) = run(p, vec![Event::Started { idx: 0, instance: 1, id: format!("flotilla://{}", 1), image_id: String::new(), at: t(0) }]);
    let (q, cmds) = step(p.clone(), Event::Exited { idx: 0, instance: 99, exit: ex(1), at: t(1) });
    assert!(cmds.is_empty());
    assert_eq!(q, p);
}

#[test]
fn policies_decide_restarts() {
    for (policy, code, restarts) in
        [(RestartPolicy::Never, 1, false), (RestartPolicy::Never, 0, false), (RestartPolicy::OnFailure, 0, false), (RestartPolicy::OnFailure, 2, true), (RestartPolicy::Always, 0, true)]
    {
        let (p, cmds) = run(pod(policy, &["c"]), vec![Event::Started { idx: 0, instance: 1, id: format!("flotilla://{}", 1), image_id: String::new(), at: t(0) }, Event::Exited { idx: 0, instance: 1, exit: ex(code), at: t(1) }]);
        assert_eq!(!cmds.is_empty(), restarts, "{policy:?} exit {code}");
        if !restarts {
            assert!(matches!(&p.containers[0].state, State::Terminated(t) if t.exit_code == code));
        }
    }
}

#[test]
fn a_missing_env_source_waits_as_create_container_config_error_and_is_tried_again() {
    let msg = "couldn't find key nope in ConfigMap default/cfg";
    let (p, cmds) = run(pod(RestartPolicy::Always, &["c"]), vec![Event::Admitted, Event::ConfigFailed { idx: 0, message: msg.into() }]);
    assert_eq!(cmds, vec![Command::Start { idx: 0 }, Command::PullBackoff { idx: 0, after: CREATE_RETRY }]);
    assert_eq!(p.containers[0].state, State::Waiting { reason: "CreateContainerConfigError".into(), message: Some(msg.into()) });
    let (_, cmds) = step(p, Event::BackoffElapsed { idx: 0 });
    assert_eq!(cmds, vec![Command::Start { idx: 0 }]);
}

#[test]
fn a_failed_create_waits_with_its_reason() {
    let msg = "failed to create containerd task: container \"c\" has no command: host-process mode needs spec.containers[].command";
    let (p, cmds) = run(pod(RestartPolicy::Always, &["c"]), vec![Event::Admitted, Event::CreateFailed { idx: 0, message: msg.into() }]);
    assert_eq!(cmds, vec![Command::Start { idx: 0 }, Command::PullBackoff { idx: 0, after: CREATE_RETRY }]);
    assert_eq!(p.containers[0].state, State::Waiting { reason: "CreateContainerError".into(), message: Some(msg.into()) });
    assert_eq!(p.lifecycle, Lifecycle::Active);
}

#[test]
fn a_failed_pull_shows_err_image_pull_then_backs_off() {
    let p = pod(RestartPolicy::Always, &["c"]);
    let msg = "rpc error: code = NotFound desc = failed to pull and unpack image \"docker.io/library/nope:latest\"";
    let (p, cmds) = run(p, vec![Event::Admitted, Event::PullFailed { idx: 0, message: msg.into() }]);
    assert_eq!(cmds, vec![Command::Start { idx: 0 }, Command::PullBackoff { idx: 0, after: PULL_RESYNC }]);
    assert_eq!(p.containers[0].state, State::Waiting { reason: "ErrImagePull".into(), message: Some(msg.into()) });
    let (p, cmds) = step(p, Event::BackoffElapsed { idx: 0 });
    assert_eq!(cmds, vec![Command::PullBackoff { idx: 0, after: INITIAL_PULL_BACKOFF }]);
    assert_eq!(p.containers[0].state, State::Waiting { reason: "ImagePullBackOff".into(), message: Some("Back-off pulling image \"busybox\"".into()) });
    let (p, cmds) = step(p, Event::BackoffElapsed { idx: 0 });
    assert_eq!(cmds, vec![Command::Start { idx: 0 }]);
    // The next failure waits twice as long; restarts are not counted for pulls.
    let (p, _) = run(p, vec![Event::PullFailed { idx: 0, message: msg.into() }]);
    let (p, cmds) = step(p, Event::BackoffElapsed { idx: 0 });
    assert_eq!(cmds, vec![Command::PullBackoff { idx: 0, after: INITIAL_PULL_BACKOFF * 2 }]);
    assert_eq!(p.containers[0].restart_count, 0);
    assert_eq!(crate::kubelet::status::phase(&p.containers, p.policy), "Pending");
}

#[test]
fn deletion_stops_then_removes_from_the_store() {
    let grace = Duration::from_secs(30);
    let (p, _) = run(pod(RestartPolicy::Always, &["a", "b"]), vec![Event::Admitted, Event::Started { idx: 0, instance: 1, id: format!("flotilla://{}", 1), image_id: String::new(), at: t(0) }, Event::Started { idx: 1, instance: 2, id: format!("flotilla://{}", 2), image_id: String::new(), at: t(0) }]);
    let (p, cmds) = step(p, Event::DeletionRequested { grace });
    assert_eq!(cmds, vec![Command::Stop { idx: 0, grace }, Command::Stop { idx: 1, grace }]);
    assert_eq!(p.lifecycle, Lifecycle::Terminating { grace });

    // The first exit neither restarts nor finishes the pod.
    let (p, cmds) = step(p, Event::Exited { idx: 0, instance: 1, exit: ex(143), at: t(3) });
    assert!(cmds.is_empty());
    let (p, cmds) = step(p, Event::BackoffElapsed { idx: 0 });
    assert!(cmds.is_empty());
    // The last one does: the pod is deleted from the store.
    let (p, cmds) = step(p, Event::Exited { idx: 1, instance: 2, exit: ex(137), at: t(30) });
    assert_eq!(cmds, vec![Command::DeleteFromStore]);
    assert_eq!(p.lifecycle, Lifecycle::Removing);
    // Seen again before the store's delete event: ask again; then forget it.
    let (p, cmds) = step(p, Event::DeletionRequested { grace });
    assert_eq!(cmds, vec![Command::DeleteFromStore]);
    let (p, cmds) = step(p, Event::Removed);
    assert!(cmds.is_empty());
    assert_eq!(p.lifecycle, Lifecycle::Gone);
}

#[test]
fn a_pod_with_nothing_running_is_removed_at_once() {
    let (p, cmds) = run(
        pod(RestartPolicy::Always, &["c"]),
        vec![Event::Admitted, Event::CreateFailed { idx: 0, message: "no command".into() }, Event::DeletionRequested { grace: DEFAULT_GRACE }],
    );
    assert_eq!(cmds, vec![Command::Start { idx: 0 }, Command::PullBackoff { idx: 0, after: CREATE_RETRY }, Command::DeleteFromStore]);
    assert_eq!(p.lifecycle, Lifecycle::Removing);
}

#[test]
fn a_shorter_grace_takes_over() {
    let (p, _) = run(pod(RestartPolicy::Always, &["c"]), vec![Event::Started { idx: 0, instance: 1, id: format!("flotilla://{}", 1), image_id: String::new(), at: t(0) }, Event::DeletionRequested { grace: DEFAULT_GRACE }]);
    let (p, cmds) = step(p, Event::DeletionRequested { grace: Duration::from_secs(60) });
    assert!(cmds.is_empty());
    let (_, cmds) = step(p, Event::DeletionRequested { grace: Duration::ZERO });
    assert_eq!(cmds, vec![Command::Stop { idx: 0, grace: Duration::ZERO }]);
}

#[test]
fn force_deletion_kills_at_once() {
    let (p, _) = run(pod(RestartPolicy::Always, &["c"]), vec![Event::Started { idx: 0, instance: 1, id: format!("flotilla://{}", 1), image_id: String::new(), at: t(0) }]);
    let (p, cmds) = step(p, Event::Removed);
    assert_eq!(cmds, vec![Command::Stop { idx: 0, grace: Duration::ZERO }]);
    assert_eq!(p.lifecycle, Lifecycle::Gone);
    // Its exit, and a pending restart timer, do nothing any more.
    let (p, cmds) = step(p, Event::Exited { idx: 0, instance: 1, exit: ex(137), at: t(1) });
    assert!(cmds.is_empty());
    let (_, cmds) = step(p, Event::BackoffElapsed { idx: 0 });
    assert!(cmds.is_empty());
}

#[test]
fn a_crash_looping_container_does_not_restart_while_terminating() {
    let (p, _) = run(pod(RestartPolicy::Always, &["c"]), vec![Event::Started { idx: 0, instance: 1, id: format!("flotilla://{}", 1), image_id: String::new(), at: t(0) }, Event::Exited { idx: 0, instance: 1, exit: ex(1), at: t(1) }]);
    let (p, cmds) = step(p, Event::DeletionRequested { grace: DEFAULT_GRACE });
    assert_eq!(cmds, vec![Command::DeleteFromStore], "nothing runs: removed at once");
    let (_, cmds) = step(p, Event::BackoffElapsed { idx: 0 });
    assert!(cmds.is_empty());
}

#[test]
fn unknown_indexes_are_ignored() {
    let p = pod(RestartPolicy::Always, &["c"]);
    for ev in [Event::Started { idx: 5, instance: 1, id: format!("flotilla://{}", 1), image_id: String::new(), at: t(0) }, Event::Exited { idx: 5, instance: 1, exit: ex(0), at: t(0) }, Event::BackoffElapsed { idx: 5 }, Event::CreateFailed { idx: 5, message: "x".into() }] {
        let (q, cmds) = step(p.clone(), ev);
        assert!(cmds.is_empty());
        assert_eq!(q, p);
    }
}

fn started(idx: usize, instance: u64, at: i64) -> Event {
    Event::Started { idx, instance, id: format!("flotilla://{instance}"), image_id: String::new(), at: t(at) }
}

/// Init containers "i1", "i2" (sidecar "s" when asked) and main container "c".
fn with_init(policy: RestartPolicy, sidecar: Option<Probes>) -> PodState {
    let mut cs = vec![Container::with_role("i1", "busybox", Role::Init, Probes::default()), Container::with_role("i2", "busybox", Role::Init, Probes::default())];
    if let Some(probes) = sidecar {
        cs.push(Container::with_role("s", "busybox", Role::Sidecar, probes));
    }
    cs.push(Container::new("c", "busybox"));
    PodState::new("ns", "p", "u1", policy, cs)
}

#[test]
fn init_containers_run_one_at_a_time_in_order() {
    let p = with_init(RestartPolicy::Always, None);
    assert_eq!(waiting_reason(&p.containers[2]), Some("PodInitializing"));
    let (p, cmds) = step(p, Event::Admitted);
    assert_eq!(cmds, vec![Command::Start { idx: 0 }]);
    let (p, cmds) = step(p, started(0, 1, 0));
    assert!(cmds.is_empty(), "i2 waits for i1 to complete: {cmds:?}");
    assert_eq!(crate::kubelet::status::phase(&p.containers, p.policy), "Pending");
    let (p, cmds) = step(p, Event::Exited { idx: 0, instance: 1, exit: ex(0), at: t(1) });
    assert_eq!(cmds, vec![Command::Start { idx: 1 }]);
    let (p, _) = step(p, started(1, 2, 1));
    let (p, cmds) = step(p, Event::Exited { idx: 1, instance: 2, exit: ex(0), at: t(2) });
    assert_eq!(cmds, vec![Command::Start { idx: 2 }]);
    assert!(p.initialized);
    assert_eq!(waiting_reason(&p.containers[2]), Some("ContainerCreating"));
    let (p, cmds) = step(p, started(2, 3, 2));
    assert!(cmds.is_empty());
    assert_eq!(crate::kubelet::status::phase(&p.containers, p.policy), "Running");
    // A second Admitted (the pod seen again) starts nothing twice.
    assert!(step(p, Event::Admitted).1.is_empty());
}

#[test]
fn a_failing_init_container_errors_then_backs_off_and_holds_the_rest() {
    let (p, _) = run(with_init(RestartPolicy::Always, None), vec![Event::Admitted, started(0, 1, 0)]);
    let (p, cmds) = step(p, Event::Exited { idx: 0, instance: 1, exit: ex(1), at: t(1) });
    assert_eq!(cmds, vec![Command::RestartAfter { idx: 0, after: FIRST_RESTART }]);
    assert!(matches!(&p.containers[0].state, State::Terminated(t) if t.reason == "Error"), "Init:Error");
    let (p, cmds) = run(p, vec![Event::BackoffElapsed { idx: 0 }, started(0, 2, 2), Event::Exited { idx: 0, instance: 2, exit: ex(1), at: t(3) }]);
    assert_eq!(cmds, vec![Command::Start { idx: 0 }, Command::RestartAfter { idx: 0, after: INITIAL_BACKOFF }]);
    assert_eq!(waiting_reason(&p.containers[0]), Some("CrashLoopBackOff"), "Init:CrashLoopBackOff");
    assert_eq!(waiting_reason(&p.containers[1]), Some("PodInitializing"));
    assert_eq!(crate::kubelet::status::phase(&p.containers, p.policy), "Pending");

    // With restartPolicy Never the pod fails instead.
    let (p, cmds) = run(with_init(RestartPolicy::Never, None), vec![Event::Admitted, started(0, 1, 0), Event::Exited { idx: 0, instance: 1, exit: ex(2), at: t(1) }]);
    assert_eq!(cmds, vec![Command::Start { idx: 0 }]);
    assert_eq!(crate::kubelet::status::phase(&p.containers, p.policy), "Failed");
}

#[test]
fn a_sidecar_starts_before_the_main_container_restarts_and_stops_after_it() {
    let (p, cmds) = run(with_init(RestartPolicy::Never, Some(Probes::default())), vec![Event::Admitted, started(0, 1, 0), Event::Exited { idx: 0, instance: 1, exit: ex(0), at: t(1) }, started(1, 2, 1), Event::Exited { idx: 1, instance: 2, exit: ex(0), at: t(2) }]);
    assert_eq!(cmds, vec![Command::Start { idx: 0 }, Command::Start { idx: 1 }, Command::Start { idx: 2 }]);
    // The running sidecar lets the main container start.
    let (p, cmds) = step(p, started(2, 3, 2));
    assert_eq!(cmds, vec![Command::Start { idx: 3 }]);
    let (p, _) = step(p, started(3, 4, 3));
    // It restarts whatever the pod's policy, and the main container is left running.
    let (p, cmds) = step(p, Event::Exited { idx: 2, instance: 3, exit: ex(0), at: t(4) });
    assert_eq!(cmds, vec![Command::RestartAfter { idx: 2, after: FIRST_RESTART }]);
    let (p, cmds) = run(p, vec![Event::BackoffElapsed { idx: 2 }, started(2, 5, 5)]);
    assert_eq!(cmds, vec![Command::Start { idx: 2 }]);
    assert_eq!(p.containers[2].restart_count, 1);
    assert!(p.containers[3].running());
    // The main container ends (Never): the sidecar is stopped with the pod's grace.
    let (p, cmds) = step(p, Event::Exited { idx: 3, instance: 4, exit: ex(0), at: t(6) });
    assert_eq!(cmds, vec![Command::Stop { idx: 2, grace: DEFAULT_GRACE }]);
    let (p, cmds) = step(p, Event::Exited { idx: 2, instance: 5, exit: ex(143), at: t(7) });
    assert!(cmds.is_empty(), "{cmds:?}");
    assert_eq!(crate::kubelet::status::phase(&p.containers, p.policy), "Succeeded");
}

#[test]
fn a_sidecar_with_a_startup_probe_holds_the_next_until_it_passes() {
    let probes = Probes { startup: true, ..Default::default() };
    let mut p = with_init(RestartPolicy::Always, Some(probes));
    p.containers.drain(0..2);
    p.initialized = false;
    let (p, cmds) = run(p, vec![Event::Admitted, started(0, 1, 0)]);
    assert_eq!(cmds, vec![Command::Start { idx: 0 }, Command::Probe { idx: 0, instance: 1 }]);
    let (p, cmds) = step(p, Event::Probe { idx: 0, instance: 1, kind: ProbeKind::Startup, ok: true, grace: DEFAULT_GRACE });
    assert_eq!(cmds, vec![Command::Start { idx: 1 }]);
    assert!(p.containers[0].started());
}

#[test]
fn deletion_stops_the_main_containers_before_the_sidecars() {
    let grace = Duration::from_secs(5);
    let mut p = with_init(RestartPolicy::Always, Some(Probes::default()));
    p.containers.drain(0..2);
    let (p, _) = run(p, vec![Event::Admitted, started(0, 1, 0), started(1, 2, 0)]);
    let (p, cmds) = step(p, Event::DeletionRequested { grace });
    assert_eq!(cmds, vec![Command::Stop { idx: 1, grace }]);
    let (p, cmds) = step(p, Event::Exited { idx: 1, instance: 2, exit: ex(143), at: t(1) });
    assert_eq!(cmds, vec![Command::Stop { idx: 0, grace }]);
    let (_, cmds) = step(p, Event::Exited { idx: 0, instance: 1, exit: ex(143), at: t(2) });
    assert_eq!(cmds, vec![Command::DeleteFromStore]);
}

#[test]
fn readiness_and_liveness_verdicts() {
    let probes = Probes { readiness: true, liveness: true, startup: false };
    let p = PodState::new("ns", "p", "u1", RestartPolicy::Always, vec![Container::with_role("c", "busybox", Role::Main, probes)]);
    let (p, cmds) = run(p, vec![Event::Admitted, started(0, 7, 0)]);
    assert_eq!(cmds, vec![Command::Start { idx: 0 }, Command::Probe { idx: 0, instance: 7 }]);
    assert!(p.containers[0].started() && !p.containers[0].is_ready(), "running, not ready until the probe says so");
    let (p, _) = step(p, Event::Probe { idx: 0, instance: 7, kind: ProbeKind::Readiness, ok: true, grace: DEFAULT_GRACE });
    assert!(p.containers[0].is_ready());
    // A verdict about another instance changes nothing.
    let (q, cmds) = step(p.clone(), Event::Probe { idx: 0, instance: 6, kind: ProbeKind::Readiness, ok: false, grace: DEFAULT_GRACE });
    assert!(cmds.is_empty() && q == p);
    let grace = Duration::from_secs(3);
    let (p, cmds) = step(p, Event::Probe { idx: 0, instance: 7, kind: ProbeKind::Liveness, ok: false, grace });
    assert_eq!(cmds, vec![Command::Kill { idx: 0, grace, why: KillWhy::Liveness }]);
    let (p, cmds) = step(p, Event::Probe { idx: 0, instance: 7, kind: ProbeKind::Liveness, ok: false, grace });
    assert!(cmds.is_empty(), "killed once");
    let (p, cmds) = step(p, Event::Exited { idx: 0, instance: 7, exit: ex(137), at: t(30) });
    assert_eq!(cmds, vec![Command::RestartAfter { idx: 0, after: FIRST_RESTART }]);
    assert!(!p.containers[0].is_ready());
}

#[test]
fn a_failed_post_start_hook_kills_the_container() {
    let (p, _) = run(pod(RestartPolicy::Always, &["c"]), vec![Event::Admitted, started(0, 1, 0)]);
    let (p, cmds) = step(p, Event::PostStartFailed { idx: 0, instance: 1 });
    assert_eq!(cmds, vec![Command::Kill { idx: 0, grace: DEFAULT_GRACE, why: KillWhy::PostStartHook }]);
    assert!(step(p, Event::PostStartFailed { idx: 0, instance: 1 }).1.is_empty());
}

#[test]
fn the_active_deadline_fails_the_pod_and_nothing_restarts() {
    let (p, _) = run(pod(RestartPolicy::Always, &["a", "b"]), vec![Event::Admitted, started(0, 1, 0), started(1, 2, 0), Event::Exited { idx: 1, instance: 2, exit: ex(1), at: t(1) }]);
    let (p, cmds) = step(p, Event::DeadlineExceeded);
    assert_eq!(cmds, vec![Command::Stop { idx: 0, grace: DEFAULT_GRACE }]);
    assert_eq!(p.lifecycle, Lifecycle::Failed);
    assert_eq!(p.failure.as_ref().map(|f| f.reason.as_str()), Some("DeadlineExceeded"));
    let (p, cmds) = run(p, vec![Event::BackoffElapsed { idx: 1 }, Event::Exited { idx: 0, instance: 1, exit: ex(137), at: t(2) }]);
    assert!(cmds.is_empty(), "{cmds:?}");
    assert_eq!(crate::kubelet::status::pod_phase(&p), "Failed");
    // Deleting it still works.
    let (_, cmds) = step(p, Event::DeletionRequested { grace: DEFAULT_GRACE });
    assert_eq!(cmds, vec![Command::DeleteFromStore]);
}

#[test]
fn exit_reasons_and_messages() {
    let (p, _) = run(pod(RestartPolicy::Never, &["a", "b", "c"]), vec![Event::Admitted, started(0, 1, 0), started(1, 2, 0), started(2, 3, 0)]);
    let oom = ExitDetail { code: 137, oom: true, message: None };
    let msg = ExitDetail { code: 3, oom: false, message: Some("bad config".into()) };
    let (p, _) = run(p, vec![Event::Exited { idx: 0, instance: 1, exit: oom, at: t(1) }, Event::Exited { idx: 1, instance: 2, exit: msg, at: t(1) }, Event::Exited { idx: 2, instance: 3, exit: ex(0), at: t(1) }]);
    let reasons: Vec<(String, Option<String>)> = p.containers.iter().map(|c| match &c.state {
        State::Terminated(t) => (t.reason.clone(), t.message.clone()),
        s => panic!("{s:?}"),
    }).collect();
    assert_eq!(reasons, vec![("OOMKilled".into(), None), ("Error".into(), Some("bad config".into())), ("Completed".into(), None)]);
    assert_eq!(crate::kubelet::status::phase(&p.containers, p.policy), "Failed");
}

fn resumed(idx: usize, instance: u64, restarts: i32) -> Resumed {
    Resumed { idx, instance, id: format!("containerd://{instance}"), image_id: "img".into(), started_at: t(0), restarts }
}

fn completed_at(s: i64) -> Terminated {
    Terminated { exit_code: 0, reason: "Completed".into(), message: None, started_at: t(s), finished_at: t(s + 1) }
}

#[test]
fn adopted_containers_run_on_without_a_start() {
    // After an agent restart: "a" still runs (with its restart count), "b" is not found.
    let (p, cmds) = step(pod(RestartPolicy::Always, &["a", "b"]), Event::Adopted { running: vec![resumed(0, 7, 3)], finished: vec![] });
    assert_eq!(cmds, vec![Command::Start { idx: 1 }]);
    assert_eq!(p.containers[0].state, State::Running { instance: 7, started_at: t(0) });
    assert_eq!((p.containers[0].restart_count, p.containers[0].container_id.as_deref()), (3, Some("containerd://7")));
    // Its exit is handled as any other.
    let (_, cmds) = step(p, Event::Exited { idx: 0, instance: 7, exit: ex(1), at: t(9) });
    assert_eq!(cmds, vec![Command::RestartAfter { idx: 0, after: FIRST_RESTART }]);
}

#[test]
fn adopted_probed_containers_are_probed_again() {
    let probes = Probes { readiness: true, ..Default::default() };
    let p = PodState::new("ns", "p", "u1", RestartPolicy::Always, vec![Container::with_role("web", "nginx", Role::Main, probes)]);
    let (p, cmds) = step(p, Event::Adopted { running: vec![resumed(0, 4, 0)], finished: vec![] });
    assert_eq!(cmds, vec![Command::Probe { idx: 0, instance: 4 }]);
    assert!(!p.containers[0].is_ready(), "ready once its probe says so again");
}

#[test]
fn adoption_keeps_completed_init_containers_and_finished_mains() {
    // init "setup" completed before the restart; main "job" had completed under
    // OnFailure (stays), main "srv" still runs.
    let cs = vec![Container::with_role("setup", "busybox", Role::Init, Probes::default()), Container::new("job", "busybox"), Container::new("srv", "busybox")];
    let p = PodState::new("ns", "p", "u1", RestartPolicy::OnFailure, cs);
    let (p, cmds) = step(p, Event::Adopted { running: vec![resumed(2, 5, 0)], finished: vec![(0, 0, completed_at(0)), (1, 0, completed_at(2))] });
    assert!(cmds.is_empty(), "nothing starts again: {cmds:?}");
    assert!(p.initialized);
    assert!(p.containers[0].completed() && p.containers[1].completed());
    // A main that failed under OnFailure is started again instead.
    let cs = vec![Container::new("job", "busybox")];
    let failed = Terminated { exit_code: 2, reason: "Error".into(), ..completed_at(0) };
    let (_, cmds) = step(PodState::new("ns", "p", "u1", RestartPolicy::OnFailure, cs), Event::Adopted { running: vec![], finished: vec![(0, 1, failed)] });
    assert_eq!(cmds, vec![Command::Start { idx: 0 }]);
}

//! The PodStatus the kubelet writes, computed from the pod's state machine (pure): phase,
//! conditions, IPs and container statuses, in the shape `kubectl get/describe pods` reads.
//! Same rules as the kubelet's `getPhase` and `generateAPIPodStatus`.

use super::lifecycle::{Container, PodState, RestartPolicy, Role, State, Terminated};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::PodSpec;
use serde_json::{json, Value};

/// Kubernetes keeps whole seconds.
pub fn ts(t: Timestamp) -> String {
    Timestamp::from_second(t.as_second()).unwrap_or(t).to_string()
}

fn terminated_json(t: &Terminated) -> Value {
    let mut v = json!({"exitCode": t.exit_code, "reason": t.reason, "startedAt": ts(t.started_at), "finishedAt": ts(t.finished_at)});
    if let Some(m) = t.message.as_ref().filter(|m| !m.is_empty()) {
        v["message"] = json!(m);
    }
    json!({"terminated": v})
}

/// The pod's phase from its containers, as the kubelet's `getPhase` computes it: a
/// container waiting to restart counts as stopped, one waiting for its first start keeps
/// the pod Pending. Only main containers count; before they start, an init container
/// that failed for good fails the pod, otherwise it is Pending.
pub fn phase(cs: &[Container], policy: RestartPolicy) -> &'static str {
    let init_failed = cs.iter().any(|c| c.role == Role::Init && policy == RestartPolicy::Never && matches!(&c.state, State::Terminated(t) if t.exit_code != 0));
    if init_failed {
        return "Failed";
    }
    let initializing = cs.iter().any(|c| c.role == Role::Main && matches!(&c.state, State::Waiting { reason, .. } if reason == "PodInitializing"));
    if initializing {
        return "Pending";
    }
    let mains: Vec<&Container> = cs.iter().filter(|c| c.role == Role::Main).collect();
    if mains.is_empty() {
        return "Pending";
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for c in mains {
        match &c.state {
            State::Running { .. } => running += 1,
            State::Terminated(t) => {
                stopped += 1;
                if t.exit_code == 0 {
                    succeeded += 1;
                }
            }
            State::Waiting { .. } if c.last_state.is_some() => stopped += 1,
            State::Waiting { .. } => waiting += 1,
        }
    }
    if waiting > 0 {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    match policy {
        _ if stopped == 0 => "Pending",
        RestartPolicy::Always => "Running",
        _ if stopped == succeeded => "Succeeded",
        RestartPolicy::Never => "Failed",
        // OnFailure: the failed ones are restarting.
        RestartPolicy::OnFailure => "Running",
    }
}

/// The phase of the pod as a whole: a pod failure (DeadlineExceeded) overrides the
/// containers' phase.
pub fn pod_phase(pod: &PodState) -> &'static str {
    if pod.failure.is_some() {
        return "Failed";
    }
    phase(&pod.containers, pod.policy)
}

/// BestEffort without requests or limits; Guaranteed when every container limits cpu and
/// memory with requests equal to the limits; Burstable otherwise.
pub fn qos_class(spec: Option<&PodSpec>) -> &'static str {
    let Some(spec) = spec else { return "BestEffort" };
    let mut any = false;
    let mut guaranteed = true;
    for c in super::spec::all_containers(spec) {
        let r = c.resources.clone().unwrap_or_default();
        let (req, lim) = (r.requests.unwrap_or_default(), r.limits.unwrap_or_default());
        any |= !req.is_empty() || !lim.is_empty();
        for res in ["cpu", "memory"] {
            let l = lim.get(res);
            guaranteed &= l.is_some() && req.get(res).is_none_or(|q| Some(q) == l);
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

fn container_status(c: &Container) -> Value {
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
    let mut s = json!({
        "name": c.name, "image": c.image, "imageID": c.image_id, "ready": c.is_ready(), "started": c.started(),
        "restartCount": c.restart_count, "state": state,
        "lastState": c.last_state.as_ref().map(terminated_json).unwrap_or_else(|| json!({})),
    });
    if let Some(id) = &c.container_id {
        s["containerID"] = json!(id);
    }
    s
}

/// The status block the kubelet writes. `prev` is the stored status: condition transition
/// times are kept while a condition's status stays the same, so rewriting an unchanged pod
/// yields an identical status (and no write).
pub fn pod_status(pod: &PodState, host_ip: &str, pod_ip: Option<&str>, start_time: Timestamp, qos: &str, prev: Option<&Value>, now: Timestamp) -> Value {
    let cs = &pod.containers;
    // Ready counts the main containers and the sidecars (which keep running beside them).
    let serving: Vec<&Container> = cs.iter().filter(|c| c.role != Role::Init).collect();
    let all_ready = cs.iter().any(|c| c.role == Role::Main) && serving.iter().all(|c| c.is_ready());
    let phase = pod_phase(pod);
    let completed = matches!(phase, "Succeeded" | "Failed");
    let prev_time = |ty: &str, status: &str| -> Option<String> {
        prev.and_then(|p| p.get("conditions"))
            .and_then(Value::as_array)
            .and_then(|a| a.iter().find(|c| c["type"] == ty && c["status"] == status))
            .and_then(|c| c.get("lastTransitionTime"))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let cond = |ty: &str, ok: bool| {
        let status = if ok { "True" } else { "False" };
        let mut c = json!({"type": ty, "status": status, "lastProbeTime": null,
            "lastTransitionTime": prev_time(ty, status).unwrap_or_else(|| ts(now))});
        if !ok && (ty == "Ready" || ty == "ContainersReady") {
            if completed {
                c["reason"] = json!("PodCompleted");
            } else {
                let names: Vec<&str> = serving.iter().filter(|c| !c.is_ready()).map(|c| c.name.as_str()).collect();
                c["reason"] = json!("ContainersNotReady");
                c["message"] = json!(format!("containers with unready status: [{}]", names.join(" ")));
            }
        }
        if !ok && ty == "Initialized" {
            let names: Vec<&str> = cs.iter().filter(|c| match c.role {
                    Role::Main => false,
                    Role::Init => !matches!(&c.state, State::Terminated(t) if t.exit_code == 0),
                    Role::Sidecar => !c.started(),
                }).map(|c| c.name.as_str()).collect();
            c["reason"] = json!("ContainersNotInitialized");
            c["message"] = json!(format!("containers with incomplete status: [{}]", names.join(" ")));
        }
        c
    };
    let ready_to_start = !completed;
    let mut s = json!({
        "phase": phase,
        "conditions": [cond("PodReadyToStartContainers", ready_to_start), cond("Initialized", pod.initialized), cond("Ready", all_ready),
            cond("ContainersReady", all_ready), cond("PodScheduled", true)],
        "hostIP": host_ip, "hostIPs": [{"ip": host_ip}],
        "startTime": ts(start_time),
        "containerStatuses": cs.iter().filter(|c| c.role == Role::Main).map(container_status).collect::<Vec<_>>(),
        "qosClass": qos,
    });
    if cs.iter().any(|c| c.role != Role::Main) {
        s["initContainerStatuses"] = json!(cs.iter().filter(|c| c.role != Role::Main).map(container_status).collect::<Vec<_>>());
    }
    if let Some(f) = &pod.failure {
        s["reason"] = json!(f.reason);
        s["message"] = json!(f.message);
    }
    // Known once the pod's sandbox exists.
    if let Some(ip) = pod_ip {
        s["podIP"] = json!(ip);
        s["podIPs"] = json!([{"ip": ip}]);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubelet::lifecycle::fixtures::{ex, pod, t};
    use crate::kubelet::lifecycle::{step, Event};
    use k8s_openapi::api::core::v1::PodStatus;

    fn feed(mut p: PodState, evs: Vec<Event>) -> PodState {
        for ev in evs {
            p = step(p, ev).0;
        }
        p
    }

    fn cond<'a>(s: &'a Value, ty: &str) -> &'a Value {
        s["conditions"].as_array().unwrap().iter().find(|c| c["type"] == ty).unwrap()
    }

    #[test]
    fn pending_until_every_container_started() {
        let p = feed(pod(RestartPolicy::Always, &["a", "b"]), vec![Event::Admitted, Event::Started { idx: 0, instance: 1, id: format!("flotilla://{}", 1), image_id: String::new(), at: t(0) }]);
        let s = pod_status(&p, "127.0.0.1", Some("127.0.0.1"), t(0), "BestEffort", None, t(1));
        assert_eq!(s["phase"], "Pending");
        assert_eq!(cond(&s, "Ready")["status"], "False");
        assert_eq!(cond(&s, "Ready")["message"], "containers with unready status: [b]");
        assert_eq!(s["containerStatuses"][1]["state"]["waiting"]["reason"], "ContainerCreating");
    }

    #[test]
    fn running_and_ready_when_all_run() {
        let p = feed(pod(RestartPolicy::Always, &["a"]), vec![Event::Admitted, Event::Started { idx: 0, instance: 7, id: format!("flotilla://{}", 7), image_id: String::new(), at: t(0) }]);
        let s = pod_status(&p, "127.0.0.1", Some("127.0.0.1"), t(0), "BestEffort", None, t(1));
        assert_eq!(s["phase"], "Running");
        for ty in ["PodScheduled", "Initialized", "ContainersReady", "Ready"] {
            assert_eq!(cond(&s, ty)["status"], "True", "{ty}");
        }
        let c = &s["containerStatuses"][0];
        assert_eq!((c["ready"].clone(), c["started"].clone(), c["containerID"].clone()), (json!(true), json!(true), json!("flotilla://7")));
        assert_eq!(c["state"]["running"]["startedAt"], "2023-11-14T22:13:20Z");
        assert_eq!((s["podIP"].clone(), s["hostIPs"][0]["ip"].clone()), (json!("127.0.0.1"), json!("127.0.0.1")));
        // It is a valid PodStatus.
        let typed: PodStatus = serde_json::from_value(s.clone()).expect("PodStatus");
        assert_eq!(typed.phase.as_deref(), Some("Running"));

        // Recomputed later with the stored status: identical, so nothing is written.
        assert_eq!(pod_status(&p, "127.0.0.1", Some("127.0.0.1"), t(0), "BestEffort", Some(&s), t(100)), s);
    }

    #[test]
    fn a_crash_loop_keeps_the_pod_running_but_unready() {
        // The second crash in a row waits in CrashLoopBackOff (the first restarts at once).
        let p = feed(pod(RestartPolicy::Always, &["a"]), vec![Event::Started { idx: 0, instance: 6, id: "flotilla://6".into(), image_id: String::new(), at: t(0) }, Event::Exited { idx: 0, instance: 6, exit: ex(1), at: t(1) }, Event::BackoffElapsed { idx: 0 },
            Event::Started { idx: 0, instance: 7, id: format!("flotilla://{}", 7), image_id: String::new(), at: t(1) }, Event::Exited { idx: 0, instance: 7, exit: ex(1), at: t(2) }]);
        let s = pod_status(&p, "127.0.0.1", Some("127.0.0.1"), t(0), "BestEffort", None, t(3));
        assert_eq!(s["phase"], "Running");
        assert_eq!(cond(&s, "Ready")["status"], "False");
        let c = &s["containerStatuses"][0];
        assert_eq!(c["state"]["waiting"]["reason"], "CrashLoopBackOff");
        assert_eq!(c["lastState"]["terminated"]["exitCode"], 1);
        assert_eq!(c["lastState"]["terminated"]["reason"], "Error");
    }

    #[test]
    fn create_errors_stay_pending() {
        let p = feed(pod(RestartPolicy::Always, &["b"]), vec![Event::Admitted, Event::CreateFailed { idx: 0, message: "has no command".into() }]);
        let s = pod_status(&p, "127.0.0.1", Some("127.0.0.1"), t(0), "BestEffort", None, t(1));
        assert_eq!(s["phase"], "Pending");
        assert_eq!(s["containerStatuses"][0]["state"]["waiting"]["reason"], "CreateContainerError");
        assert_eq!(s["containerStatuses"][0]["state"]["waiting"]["message"], "has no command");
    }

    #[test]
    fn completed_pods_succeed_or_fail() {
        let done = |policy, code| {
            let p = feed(pod(policy, &["a"]), vec![Event::Started { idx: 0, instance: 1, id: format!("flotilla://{}", 1), image_id: String::new(), at: t(0) }, Event::Exited { idx: 0, instance: 1, exit: ex(code), at: t(1) }]);
            pod_status(&p, "127.0.0.1", Some("127.0.0.1"), t(0), "BestEffort", None, t(2))
        };
        let s = done(RestartPolicy::Never, 0);
        assert_eq!(s["phase"], "Succeeded");
        assert_eq!(cond(&s, "Ready")["reason"], "PodCompleted");
        assert_eq!(s["containerStatuses"][0]["state"]["terminated"]["reason"], "Completed");
        assert_eq!(done(RestartPolicy::Never, 3)["phase"], "Failed");
        assert_eq!(done(RestartPolicy::OnFailure, 0)["phase"], "Succeeded");
        assert_eq!(done(RestartPolicy::OnFailure, 3)["phase"], "Running");
    }

    #[test]
    fn transition_times_move_only_on_change() {
        let p = feed(pod(RestartPolicy::Always, &["a"]), vec![Event::Started { idx: 0, instance: 1, id: format!("flotilla://{}", 1), image_id: String::new(), at: t(0) }]);
        let first = pod_status(&p, "127.0.0.1", Some("127.0.0.1"), t(0), "BestEffort", None, t(1));
        let p = feed(p, vec![Event::Exited { idx: 0, instance: 1, exit: ex(1), at: t(50) }]);
        let second = pod_status(&p, "127.0.0.1", Some("127.0.0.1"), t(0), "BestEffort", Some(&first), t(50));
        assert_eq!(cond(&second, "Ready")["lastTransitionTime"], ts(t(50)));
        assert_eq!(cond(&second, "PodScheduled")["lastTransitionTime"], ts(t(1)));
    }

    #[test]
    fn init_containers_have_their_own_statuses_and_hold_initialized() {
        use crate::kubelet::lifecycle::{Container, Probes, Role};
        let cs = vec![Container::with_role("i", "busybox", Role::Init, Probes::default()), Container::with_role("s", "busybox", Role::Sidecar, Probes { readiness: true, ..Default::default() }), Container::new("c", "busybox")];
        let p = feed(PodState::new("ns", "p", "u1", RestartPolicy::Always, cs), vec![Event::Admitted, Event::Started { idx: 0, instance: 1, id: "x://1".into(), image_id: String::new(), at: t(0) }]);
        let s = pod_status(&p, "127.0.0.1", None, t(0), "BestEffort", None, t(1));
        assert_eq!(cond(&s, "Initialized")["status"], "False");
        assert_eq!(cond(&s, "Initialized")["message"], "containers with incomplete status: [i s]");
        assert_eq!(s["initContainerStatuses"].as_array().unwrap().len(), 2);
        assert_eq!(s["containerStatuses"][0]["state"]["waiting"]["reason"], "PodInitializing");
        let p = feed(p, vec![Event::Exited { idx: 0, instance: 1, exit: ex(0), at: t(1) }, Event::Started { idx: 1, instance: 2, id: "x://2".into(), image_id: String::new(), at: t(1) },
            Event::Started { idx: 2, instance: 3, id: "x://3".into(), image_id: String::new(), at: t(2) }]);
        let s = pod_status(&p, "127.0.0.1", None, t(0), "BestEffort", None, t(3));
        assert_eq!((cond(&s, "Initialized")["status"].clone(), s["phase"].clone()), (json!("True"), json!("Running")));
        // The sidecar's readiness counts in Ready.
        assert_eq!(cond(&s, "Ready")["message"], "containers with unready status: [s]");
        let _: PodStatus = serde_json::from_value(s).expect("PodStatus");
    }

    #[test]
    fn qos_classes() {
        let spec = |res: Value| serde_json::from_value::<PodSpec>(json!({"containers": [{"name": "c", "resources": res}]})).unwrap();
        assert_eq!(qos_class(None), "BestEffort");
        assert_eq!(qos_class(Some(&spec(json!({})))), "BestEffort");
        assert_eq!(qos_class(Some(&spec(json!({"requests": {"cpu": "100m"}})))), "Burstable");
        assert_eq!(qos_class(Some(&spec(json!({"limits": {"cpu": "1", "memory": "1Gi"}})))), "Guaranteed");
    }
}

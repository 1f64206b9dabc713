//! The scheduler actor itself, driven through its streams with a recording binder on a
//! paused clock: double placement, a relist while bindings are in flight, and rest when
//! nothing changes.

use super::*;
use futures::channel::mpsc::{unbounded, UnboundedSender};
use std::sync::Mutex;
use std::time::Duration;

#[derive(Default)]
struct Recorder {
    binds: Mutex<Vec<(String, String)>>,
    /// (preemptor, node, victims) of each preemption.
    preempted: Mutex<Vec<(String, String, Vec<String>)>>,
    /// While set, bindings wait for it to be released.
    gate: Option<Arc<tokio::sync::Semaphore>>,
}

impl Binder for Recorder {
    fn bind(&self, pod: Pod, node: String) -> BoxFuture<'static, BindResult> {
        self.binds.lock().unwrap().push((pod.metadata.name.clone().unwrap_or_default(), node));
        let gate = self.gate.clone();
        Box::pin(async move {
            if let Some(g) = gate {
                let _ = g.acquire().await.map(|p| p.forget());
            }
            BindResult::Bound
        })
    }
    fn unschedulable(&self, _pod: Pod, _why: String) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
    fn preempt(&self, pod: Pod, node: String, victims: Vec<Pod>) -> BoxFuture<'static, ()> {
        let names = victims.iter().filter_map(|v| v.metadata.name.clone()).collect();
        self.preempted.lock().unwrap().push((pod.metadata.name.clone().unwrap_or_default(), node, names));
        Box::pin(async {})
    }
}

impl Recorder {
    fn binds(&self) -> Vec<(String, String)> {
        self.binds.lock().unwrap().clone()
    }
}

fn node(name: &str, pods: u32, heartbeat: u32) -> Node {
    let heartbeat = format!("2026-01-01T00:{:02}:{:02}Z", heartbeat / 60, heartbeat % 60);
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "status": {
            "allocatable": {"cpu": "2", "memory": "4Gi", "pods": pods.to_string()},
            "conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": heartbeat}]
        }
    }))
    .unwrap()
}

fn pod(name: &str, cpu: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "demo", "uid": format!("uid-{name}")},
        "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]}
    }))
    .unwrap()
}

fn on(mut p: Pod, n: &str) -> Pod {
    p.spec.as_mut().unwrap().node_name = Some(n.into());
    p
}

struct Rig {
    addr: Addr<Scheduler>,
    nodes: UnboundedSender<InformerEvent<Node>>,
    pods: UnboundedSender<InformerEvent<Pod>>,
    rec: Arc<Recorder>,
    rev: u64,
}

impl Rig {
    fn start(rec: Recorder) -> Rig {
        let rec = Arc::new(rec);
        let (nodes, nrx) = unbounded();
        let (pods, prx) = unbounded();
        let b = rec.clone();
        let addr = Scheduler::create(move |ctx| {
            ctx.add_stream(nrx);
            ctx.add_stream(prx);
            Scheduler::with_binder(b)
        });
        Rig { addr, nodes, pods, rec, rev: 1 }
    }
    fn rev(&mut self) -> u64 {
        self.rev += 1;
        self.rev
    }
    fn pod(&mut self, p: Pod) {
        let r = self.rev();
        self.pods.unbounded_send(InformerEvent::Applied(p, r)).unwrap();
    }
    fn node(&mut self, n: Node) {
        let r = self.rev();
        self.nodes.unbounded_send(InformerEvent::Applied(n, r)).unwrap();
    }
    async fn stats(&self) -> Stats {
        self.addr.send(GetStats).await.unwrap()
    }
    async fn settle(&self) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn until(cond: impl Fn() -> bool) {
    for _ in 0..10_000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition never held");
}

fn total(s: &Stats) -> u64 {
    s.pods_per_node.iter().map(|(_, n)| n).sum()
}

#[test]
fn a_stale_unbound_copy_after_the_bind_is_not_placed_again() {
    actix::System::new().block_on(async {
        tokio::time::pause();
        let mut rig = Rig::start(Recorder::default());
        rig.nodes.unbounded_send(InformerEvent::Listed(vec![node("n1", 10, 0), node("n2", 10, 0)], 1)).unwrap();
        rig.pods.unbounded_send(InformerEvent::Listed(vec![pod("a", "100m")], 1)).unwrap();
        let rec = rig.rec.clone();
        until(|| rec.binds().len() == 1).await;
        rig.settle().await;
        // The Bound answer is in; now a status write committed before the bind arrives.
        let mut stale = pod("a", "100m");
        stale.status = Some(Default::default());
        rig.pod(stale);
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(rig.rec.binds().len(), 1, "placed twice: {:?}", rig.rec.binds());
        let s = rig.stats().await;
        assert_eq!(total(&s), 1, "counted on one node only: {s:?}");
        // The binding's own event confirms the assumption, on the same node.
        let node_of_a = rig.rec.binds()[0].1.clone();
        rig.pod(on(pod("a", "100m"), &node_of_a));
        rig.settle().await;
        let s = rig.stats().await;
        assert_eq!((total(&s), s.assumed, s.waiting), (1, 0, 0), "{s:?}");
    });
}

#[test]
fn a_relist_while_bindings_are_in_flight_keeps_their_places() {
    actix::System::new().block_on(async {
        tokio::time::pause();
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let rig = Rig::start(Recorder { gate: Some(gate.clone()), ..Default::default() });
        // Room for one pod on each node.
        rig.nodes.unbounded_send(InformerEvent::Listed(vec![node("n1", 1, 0), node("n2", 1, 0)], 1)).unwrap();
        rig.pods.unbounded_send(InformerEvent::Listed(vec![pod("a", "100m")], 1)).unwrap();
        let rec = rig.rec.clone();
        until(|| rec.binds().len() == 1).await;
        // The watch re-lists while a's binding is still being written.
        rig.pods.unbounded_send(InformerEvent::Listed(vec![pod("a", "100m"), pod("b", "100m")], 5)).unwrap();
        until(|| rec.binds().len() == 2).await;
        gate.add_permits(10);
        tokio::time::sleep(Duration::from_secs(30)).await;
        let binds = rig.rec.binds();
        assert_eq!(binds.len(), 2, "{binds:?}");
        assert_ne!(binds[0].1, binds[1].1, "both pods went to one node with room for one: {binds:?}");
        let s = rig.stats().await;
        assert!(s.pods_per_node.iter().all(|(_, n)| *n <= 1), "{s:?}");
    });
}

#[test]
fn an_idle_scheduler_handles_nothing() {
    actix::System::new().block_on(async {
        tokio::time::pause();
        let mut rig = Rig::start(Recorder::default());
        rig.nodes.unbounded_send(InformerEvent::Listed(vec![node("n1", 110, 0), node("n2", 110, 0)], 1)).unwrap();
        let pods: Vec<Pod> = (0..20).map(|i| pod(&format!("p{i}"), "10m")).collect();
        // One pod that fits nowhere (3 CPUs on 2-CPU nodes).
        let big = pod("big", "3");
        rig.pods.unbounded_send(InformerEvent::Listed(pods.iter().cloned().chain([big]).collect(), 1)).unwrap();
        let rec = rig.rec.clone();
        until(|| rec.binds().len() == 20).await;
        // The watch brings each binding back, then the node agents' status writes.
        for (name, n) in rig.rec.binds() {
            rig.pod(on(pod(&name, "10m"), &n));
        }
        for (name, n) in rig.rec.binds() {
            let mut p = on(pod(&name, "10m"), &n);
            p.status = Some(k8s_openapi::api::core::v1::PodStatus { phase: Some("Running".into()), ..Default::default() });
            rig.pod(p);
        }
        rig.settle().await;
        let before = rig.stats().await;
        assert_eq!(total(&before), 20);
        // Four minutes of heartbeats and status writes: nothing to schedule.
        for i in 0..24 {
            tokio::time::sleep(Duration::from_secs(10)).await;
            rig.node(node("n1", 110, i));
            rig.node(node("n2", 110, i));
            let mut p = on(pod("p0", "10m"), &rig.rec.binds()[0].1);
            p.status = Some(k8s_openapi::api::core::v1::PodStatus { phase: Some("Running".into()), message: Some(format!("{i}")), ..Default::default() });
            rig.pod(p);
        }
        let after = rig.stats().await;
        assert_eq!((after.passes, after.attempts), (before.passes, before.attempts), "woke with nothing to do: {before:?} → {after:?}");
        assert_eq!(rig.rec.binds().len(), 20);
        // The pod that fits nowhere is tried again once its unschedulable time is up, not
        // every few seconds.
        tokio::time::sleep(queue::MAX_UNSCHEDULABLE).await;
        let later = rig.stats().await;
        assert_eq!(later.attempts, before.attempts + 1, "{later:?}");
        // A pending pod's deletion frees nothing and wakes nothing.
        rig.pods.unbounded_send(InformerEvent::Applied(pod("extra-big", "3"), 900)).unwrap();
        rig.settle().await;
        let s1 = rig.stats().await;
        rig.pods.unbounded_send(InformerEvent::Deleted(pod("extra-big", "3"), 901)).unwrap();
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert_eq!(rig.stats().await.attempts, s1.attempts);
    });
}

fn prio(mut p: Pod, priority: i32) -> Pod {
    p.spec.as_mut().unwrap().priority = Some(priority);
    p
}

#[test]
fn a_preemptor_keeps_the_room_it_made_from_lower_priority_pods() {
    actix::System::new().block_on(async {
        tokio::time::pause();
        let mut rig = Rig::start(Recorder::default());
        rig.nodes.unbounded_send(InformerEvent::Listed(vec![node("n1", 10, 0)], 1)).unwrap();
        let victim = on(prio(pod("low", "2"), 0), "n1");
        rig.pods.unbounded_send(InformerEvent::Listed(vec![victim.clone(), prio(pod("vip", "1"), 100)], 1)).unwrap();
        let rec = rig.rec.clone();
        until(|| !rec.preempted.lock().unwrap().is_empty()).await;
        assert_eq!(rec.preempted.lock().unwrap()[0], ("vip".to_string(), "n1".to_string(), vec!["low".to_string()]));
        // The victim goes; its replacement (priority 0) arrives first but may not take the
        // room the nominated preemptor is waiting for.
        let r = rig.rev();
        rig.pods.unbounded_send(InformerEvent::Deleted(victim, r)).unwrap();
        rig.pod(prio(pod("replacement", "1500m"), 0));
        until(|| rec.binds().iter().any(|(p, _)| p == "vip")).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(rig.rec.binds(), vec![("vip".to_string(), "n1".to_string())], "only the preemptor was placed");
        assert_eq!(rec.preempted.lock().unwrap().len(), 1, "no second round of preemption");
    });
}

#[test]
fn a_relabelled_pod_wakes_a_pod_waiting_for_affinity_to_it() {
    actix::System::new().block_on(async {
        tokio::time::pause();
        let mut rig = Rig::start(Recorder::default());
        let mut n1 = node("n1", 10, 0);
        n1.metadata.labels = Some([("kubernetes.io/hostname".to_string(), "n1".to_string())].into());
        rig.nodes.unbounded_send(InformerEvent::Listed(vec![n1], 1)).unwrap();
        let mut web = pod("web", "10m");
        web.spec.as_mut().unwrap().affinity = Some(serde_json::from_value(serde_json::json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "cache"}}, "topologyKey": "kubernetes.io/hostname"}
        ]}})).unwrap());
        let mut other = on(pod("c", "10m"), "n1");
        other.metadata.labels = Some([("app".to_string(), "other".to_string())].into());
        rig.pods.unbounded_send(InformerEvent::Listed(vec![other.clone(), web], 1)).unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(rig.rec.binds().is_empty(), "nothing it has affinity to runs yet");
        // Well inside the five-minute flush: only the label change can wake it.
        other.metadata.labels = Some([("app".to_string(), "cache".to_string())].into());
        rig.pod(other);
        tokio::time::sleep(Duration::from_secs(15)).await;
        assert_eq!(rig.rec.binds(), vec![("web".to_string(), "n1".to_string())]);
    });
}

#[test]
fn a_gated_pod_is_not_tried_until_its_gates_are_gone() {
    actix::System::new().block_on(async {
        tokio::time::pause();
        let mut rig = Rig::start(Recorder::default());
        rig.nodes.unbounded_send(InformerEvent::Listed(vec![node("n1", 10, 0)], 1)).unwrap();
        let mut gated = pod("g", "10m");
        gated.spec.as_mut().unwrap().scheduling_gates = Some(vec![k8s_openapi::api::core::v1::PodSchedulingGate { name: "example.com/wait".into() }]);
        rig.pods.unbounded_send(InformerEvent::Listed(vec![gated], 1)).unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
        let s = rig.stats().await;
        assert_eq!((s.attempts, s.waiting), (0, 0), "a gated pod stays out of the queue: {s:?}");
        rig.pod(pod("g", "10m"));
        let rec = rig.rec.clone();
        until(|| rec.binds().len() == 1).await;
    });
}

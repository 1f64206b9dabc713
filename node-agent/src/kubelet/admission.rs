//! The kubelet's own admission: a node refuses a pod that would take it past its pod
//! limit or its allocatable CPU or memory, whatever the scheduler thought, with the
//! reasons the kubelet gives (`OutOfpods`, `OutOfcpu`, `OutOfmemory`).

use k8s_openapi::api::core::v1::Pod;
use schema::quantity::pod_requests;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocatable {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub pods: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: String,
    pub message: String,
}

fn rejected(resource: &str, requested: u64, used: u64, capacity: u64) -> Rejection {
    Rejection {
        reason: format!("OutOf{resource}"),
        message: format!("Pod was rejected: Node didn't have enough resource: {resource}, requested: {requested}, used: {used}, capacity: {capacity}"),
    }
}

/// Whether `pod` may join `running` (the pods this node already admitted and has not
/// finished) on a node with `alloc`. A request of zero always fits, as in the kubelet.
pub fn admit<'a>(pod: &Pod, running: impl Iterator<Item = &'a Pod>, alloc: Allocatable) -> Result<(), Rejection> {
    let (mut cpu, mut mem, mut count) = (0u64, 0u64, 0u64);
    for p in running {
        let (c, m) = pod_requests(p);
        cpu += c;
        mem += m;
        count += 1;
    }
    if count + 1 > alloc.pods {
        return Err(rejected("pods", 1, count, alloc.pods));
    }
    let (want_cpu, want_mem) = pod_requests(pod);
    if want_cpu > 0 && cpu + want_cpu > alloc.cpu_millis {
        return Err(rejected("cpu", want_cpu, cpu, alloc.cpu_millis));
    }
    if want_mem > 0 && mem + want_mem > alloc.memory_bytes {
        return Err(rejected("memory", want_mem, mem, alloc.memory_bytes));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(cpu: &str) -> Pod {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]}})).unwrap()
    }

    const NODE: Allocatable = Allocatable { cpu_millis: 2000, memory_bytes: 4 << 30, pods: 3 };

    #[test]
    fn the_pod_limit_is_kept() {
        let running = [pod("0"), pod("0"), pod("0")];
        let r = admit(&pod("0"), running.iter().take(2), NODE);
        assert!(r.is_ok());
        let r = admit(&pod("0"), running.iter(), NODE).unwrap_err();
        assert_eq!(r.reason, "OutOfpods");
        assert_eq!(r.message, "Pod was rejected: Node didn't have enough resource: pods, requested: 1, used: 3, capacity: 3");
    }

    #[test]
    fn cpu_past_allocatable_is_refused() {
        let running = [pod("1500m")];
        let r = admit(&pod("600m"), running.iter(), NODE).unwrap_err();
        assert_eq!(r.reason, "OutOfcpu");
        assert!(r.message.contains("cpu, requested: 600, used: 1500, capacity: 2000"), "{}", r.message);
        assert!(admit(&pod("500m"), running.iter(), NODE).is_ok());
        assert!(admit(&pod("0"), [pod("2")].iter(), NODE).is_ok(), "nothing requested always fits");
    }
}

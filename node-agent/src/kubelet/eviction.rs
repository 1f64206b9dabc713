//! The kubelet's eviction manager, in small: hard thresholds on the node's signals
//! (`--eviction-hard`, the kubelet's defaults), the pressure conditions they give, and
//! which pod goes first when the node is short (BestEffort, then Burstable, then
//! Guaranteed; lower priority first; the newest first). Observation reads /proc and
//! statvfs; everything else is pure.

use k8s_openapi::api::core::v1::Pod;
use std::path::Path;

/// The default `--eviction-hard`: the kubelet's memory and inode thresholds, and disk at
/// 5% rather than its nodefs 10% / imagefs 15%. Here images, volumes and logs share the
/// node's data dir on one file system (often a developer's own disk), where the kubelet's
/// imagefs threshold would evict every pod of a disk 85% full.
pub const DEFAULT_HARD: &str = "memory.available<100Mi,nodefs.available<5%,nodefs.inodesFree<5%";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    MemoryAvailable,
    NodefsAvailable,
    NodefsInodesFree,
    ImagefsAvailable,
    PidAvailable,
}

impl Signal {
    fn parse(s: &str) -> Option<Signal> {
        Some(match s {
            "memory.available" => Signal::MemoryAvailable,
            "nodefs.available" => Signal::NodefsAvailable,
            "nodefs.inodesFree" => Signal::NodefsInodesFree,
            "imagefs.available" => Signal::ImagefsAvailable,
            "pid.available" => Signal::PidAvailable,
            _ => return None,
        })
    }

    /// The resource named in the eviction message.
    fn resource(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory",
            Signal::NodefsAvailable | Signal::ImagefsAvailable => "ephemeral-storage",
            Signal::NodefsInodesFree => "inodes",
            Signal::PidAvailable => "pids",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Quantity {
    Absolute(u64),
    Percent(f64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub signal: Signal,
    pub value: Quantity,
    /// As written, for the message.
    pub text: String,
}

/// Parses `signal<quantity` pairs separated by commas, as the kubelet's flag.
pub fn parse(spec: &str) -> Result<Vec<Threshold>, String> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (sig, q) = part.split_once('<').ok_or_else(|| format!("invalid eviction threshold {part:?}: want signal<quantity"))?;
        let signal = Signal::parse(sig.trim()).ok_or_else(|| format!("unknown eviction signal {:?}", sig.trim()))?;
        let q = q.trim();
        let value = match q.strip_suffix('%') {
            Some(p) => Quantity::Percent(p.parse::<f64>().ok().filter(|p| (0.0..=100.0).contains(p)).ok_or_else(|| format!("invalid percentage in {part:?}"))?),
            None => Quantity::Absolute(schema::quantity::value(q).ok_or_else(|| format!("invalid quantity in {part:?}"))?),
        };
        out.push(Threshold { signal, value, text: q.to_string() });
    }
    Ok(out)
}

/// The node's signals: (available, capacity) of each.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Observed {
    pub memory: (u64, u64),
    pub nodefs: (u64, u64),
    pub inodes: (u64, u64),
    pub pids: (u64, u64),
}

impl Observed {
    fn of(&self, s: Signal) -> (u64, u64) {
        match s {
            Signal::MemoryAvailable => self.memory,
            Signal::NodefsAvailable | Signal::ImagefsAvailable => self.nodefs,
            Signal::NodefsInodesFree => self.inodes,
            Signal::PidAvailable => self.pids,
        }
    }
}

/// The node's pressures, and the threshold crossed for each (for the message).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pressures {
    pub memory: Option<String>,
    pub disk: Option<String>,
    pub pid: Option<String>,
}

impl Pressures {
    pub fn any_evicting(&self) -> Option<&String> {
        self.memory.as_ref().or(self.disk.as_ref()).or(self.pid.as_ref())
    }
}

/// What the eviction loop saw last, read by the heartbeat for the node's conditions.
pub type Shared = std::sync::Arc<std::sync::Mutex<Pressures>>;

/// How often the signals are read (the kubelet's housekeeping interval).
pub const PERIOD: std::time::Duration = std::time::Duration::from_secs(10);

/// Every PERIOD: observes, records the pressures, and while the node is short asks the
/// kubelet to evict one pod (it picks the victim). A tokio task: an unpressed node sends
/// the kubelet nothing.
pub async fn run(kubelet: actix::Addr<super::Kubelet>, thresholds: Vec<Threshold>, data_dir: std::path::PathBuf, shared: Shared, stop: tokio_util::sync::CancellationToken) {
    loop {
        let o = observe(&data_dir);
        let p = pressures(&thresholds, &o);
        let evict = p.any_evicting().cloned();
        let changed = shared.lock().map(|mut s| std::mem::replace(&mut *s, p.clone()) != p).unwrap_or(false);
        if changed {
            tracing::info!(memory = p.memory.is_some(), disk = p.disk.is_some(), pid = p.pid.is_some(), "node pressure changed");
        }
        if let Some(message) = evict {
            kubelet.do_send(super::Evict { message });
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(PERIOD) => {}
        }
    }
}

fn human(bytes: u64) -> String {
    format!("{}Ki", bytes / 1024)
}

/// Which thresholds `o` crosses, as the conditions and eviction messages say them.
pub fn pressures(thresholds: &[Threshold], o: &Observed) -> Pressures {
    let mut p = Pressures::default();
    for t in thresholds {
        let (avail, cap) = o.of(t.signal);
        if cap == 0 {
            continue;
        }
        let limit = match t.value {
            Quantity::Absolute(v) => v,
            Quantity::Percent(pc) => (cap as f64 * pc / 100.0) as u64,
        };
        if avail >= limit {
            continue;
        }
        let shown = if matches!(t.signal, Signal::NodefsInodesFree | Signal::PidAvailable) { avail.to_string() } else { human(avail) };
        let why = format!("The node was low on resource: {}. Threshold quantity: {}, available: {}. ", t.signal.resource(), t.text, shown);
        let slot = match t.signal {
            Signal::MemoryAvailable => &mut p.memory,
            Signal::PidAvailable => &mut p.pid,
            _ => &mut p.disk,
        };
        slot.get_or_insert(why);
    }
    p
}

fn qos_rank(pod: &Pod) -> u8 {
    match super::status::qos_class(pod.spec.as_ref()) {
        "BestEffort" => 0,
        "Burstable" => 1,
        _ => 2,
    }
}

/// The pod to evict first among `pods` (uid, pod), or None.
pub fn victim<'a>(pods: impl Iterator<Item = (&'a String, &'a Pod)>) -> Option<&'a String> {
    pods.min_by(|(_, a), (_, b)| {
        let prio = |p: &Pod| p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
        let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second()).unwrap_or(0);
        qos_rank(a).cmp(&qos_rank(b)).then(prio(a).cmp(&prio(b))).then(created(b).cmp(&created(a)))
    })
    .map(|(uid, _)| uid)
}

/// Reads the signals of this node (memory from /proc/meminfo, the data dir's file system,
/// processes against pid_max).
pub fn observe(data_dir: &Path) -> Observed {
    let mut o = Observed::default();
    if let Ok(m) = std::fs::read_to_string("/proc/meminfo") {
        let field = |k: &str| m.lines().find_map(|l| l.strip_prefix(k)).and_then(|r| r.split_whitespace().next()?.parse::<u64>().ok()).map(|kb| kb * 1024);
        if let (Some(a), Some(t)) = (field("MemAvailable:"), field("MemTotal:")) {
            o.memory = (a, t);
        }
    }
    if let Ok(c) = std::ffi::CString::new(data_dir.as_os_str().as_encoded_bytes()) {
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: a valid NUL-terminated path and a zeroed out-parameter of the right type.
        if unsafe { libc::statvfs(c.as_ptr(), &mut s) } == 0 {
            let f = s.f_frsize as u64;
            o.nodefs = (s.f_bavail as u64 * f, s.f_blocks as u64 * f);
            o.inodes = (s.f_favail as u64, s.f_files as u64);
        }
    }
    let max = std::fs::read_to_string("/proc/sys/kernel/pid_max").ok().and_then(|s| s.trim().parse::<u64>().ok());
    let running = std::fs::read_to_string("/proc/loadavg").ok().and_then(|s| s.split_whitespace().nth(3)?.split_once('/')?.1.parse::<u64>().ok());
    if let (Some(max), Some(n)) = (max, running) {
        o.pids = (max.saturating_sub(n), max);
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_kubelets_defaults_parse_and_bad_ones_are_refused() {
        let t = parse(DEFAULT_HARD).unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t[0], Threshold { signal: Signal::MemoryAvailable, value: Quantity::Absolute(100 << 20), text: "100Mi".into() });
        assert_eq!(t[1].value, Quantity::Percent(5.0));
        assert_eq!(parse("imagefs.available<15%").unwrap()[0].signal, Signal::ImagefsAvailable);
        assert!(parse("memory.available>1Gi").is_err());
        assert!(parse("cpu.available<1").is_err());
        assert!(parse("nodefs.available<150%").is_err());
        assert_eq!(parse("").unwrap(), vec![]);
    }

    #[test]
    fn crossing_a_threshold_is_pressure_with_the_kubelets_message() {
        let t = parse(DEFAULT_HARD).unwrap();
        let fine = Observed { memory: (4 << 30, 8 << 30), nodefs: (50, 100), inodes: (50, 100), pids: (1000, 4096) };
        assert_eq!(pressures(&t, &fine), Pressures::default());
        let short = Observed { memory: (50 << 20, 8 << 30), nodefs: (4, 100), ..fine };
        let p = pressures(&t, &short);
        assert_eq!(p.memory.as_deref(), Some("The node was low on resource: memory. Threshold quantity: 100Mi, available: 51200Ki. "));
        assert!(p.disk.as_deref().unwrap().starts_with("The node was low on resource: ephemeral-storage. Threshold quantity: 5%"));
        assert!(p.pid.is_none());
        let pids = parse("pid.available<10%").unwrap();
        assert!(pressures(&pids, &Observed { pids: (100, 4096), ..fine }).pid.is_some());
    }

    #[test]
    fn best_effort_low_priority_and_new_pods_go_first() {
        let pod = |name: &str, resources: serde_json::Value, priority: i32, created: &str| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": name, "creationTimestamp": created}, "spec": {"priority": priority, "containers": [{"name": "c", "resources": resources}]}})).unwrap()
        };
        let guaranteed = json!({"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}});
        let pods = vec![
            ("g".to_string(), pod("g", guaranteed, 0, "2026-01-01T00:00:00Z")),
            ("b".to_string(), pod("b", json!({"requests": {"cpu": "1"}}), 0, "2026-01-01T00:00:00Z")),
            ("old".to_string(), pod("old", json!({}), 0, "2026-01-01T00:00:00Z")),
            ("new".to_string(), pod("new", json!({}), 0, "2026-01-02T00:00:00Z")),
            ("vip".to_string(), pod("vip", json!({}), 1000, "2026-01-03T00:00:00Z")),
        ];
        assert_eq!(victim(pods.iter().map(|(u, p)| (u, p))).map(String::as_str), Some("new"));
        assert_eq!(victim(pods.iter().filter(|(u, _)| u == "g" || u == "b").map(|(u, p)| (u, p))).map(String::as_str), Some("b"));
        assert_eq!(victim(std::iter::empty()), None);
    }

    #[test]
    fn this_node_is_observed() {
        let o = observe(Path::new("/"));
        assert!(o.memory.1 > 0 && o.nodefs.1 > 0 && o.pids.1 > 0, "{o:?}");
    }
}

//! containerd as the node agent's own child, as k3s runs it: a config flotilla writes
//! (root, state, socket and CNI config inside the agent's data dir, so several agents on
//! one host each have their own containerd and never see each other's sandboxes), started
//! and waited for, and stopped on exit together with the shims it started.

use super::client::{Cri, ConnectError};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Debian's place for the CNI plugins (containernetworking-plugins).
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";
const START_LIMIT: Duration = Duration::from_secs(30);
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Where one agent's containerd keeps everything.
#[derive(Debug, Clone)]
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    pub fn new(dir: PathBuf) -> Layout {
        Layout { dir }
    }
    /// The containerd of the node agent whose data dir this is.
    pub fn for_node(data_dir: &Path) -> Layout {
        Layout { dir: data_dir.join("containerd") }
    }
    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.toml")
    }
    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }
    pub fn state(&self) -> PathBuf {
        self.dir.join("state")
    }
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.dir.join("cni/net.d")
    }
    pub fn cni_ipam_dir(&self) -> PathBuf {
        self.dir.join("cni/ipam")
    }
    pub fn registry_config_dir(&self) -> PathBuf {
        self.dir.join("certs.d")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("containerd.log")
    }
}

/// Whether this host can run containerd pods: the binaries are there and we are root.
pub fn available() -> bool {
    let root = unsafe { libc::geteuid() } == 0;
    root && which("containerd").is_some() && which("runc").is_some() && which("ctr").is_some()
}

pub fn which(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path).map(|d| d.join(prog)).find(|p| p.is_file())
}

/// The cgroup driver that matches the host: systemd only when systemd manages cgroups.
fn systemd_cgroup() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// containerd's config (version 2 schema, containerd 1.6).
/// `registry_auth` holds `registry.configs.<host>.auth` tables (`mirrors::Registries::auth_toml`).
pub fn config_toml(l: &Layout, sandbox_image: &str, registry_auth: &str) -> String {
    let s = |p: PathBuf| p.to_string_lossy().into_owned();
    format!(
        r#"# Written by the flotilla node agent at every start; edits are overwritten.
version = 2
root = "{root}"
state = "{state}"
# Snapshotters this host does not use stay off, so their start-up checks stay quiet.
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  # Root in a container lacks CAP_SYS_RESOURCE: without this every sandbox fails with
  # "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  # Network namespaces live in our state dir, not in the host's /var/run/netns.
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{cni_conf}"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = {systemd}
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{registry}"
{registry_auth}"#,
        root = s(l.root()),
        state = s(l.state()),
        sock = s(l.socket()),
        cni_bin = CNI_BIN_DIR,
        cni_conf = s(l.cni_conf_dir()),
        registry = s(l.registry_config_dir()),
        systemd = systemd_cgroup(),
    )
}

#[derive(Debug, thiserror::Error)]
pub enum ContainerdError {
    #[error("starting containerd: {0}")]
    Spawn(std::io::Error),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("containerd exited at start ({0}); its log is {1}")]
    Exited(std::process::ExitStatus, PathBuf),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A running containerd this agent started.
pub struct Containerd {
    pub layout: Layout,
    child: std::process::Child,
    pub cri: Cri,
    pub version: super::client::pb::VersionResponse,
}

impl Containerd {
    /// Writes the config, starts containerd and waits until its CRI answers Version.
    pub async fn start(layout: Layout, sandbox_image: &str, registry_auth: &str) -> Result<Containerd, ContainerdError> {
        for d in [layout.dir.clone(), layout.cni_conf_dir(), layout.cni_ipam_dir(), layout.registry_config_dir()] {
            std::fs::create_dir_all(d)?;
        }
        std::fs::write(layout.config(), config_toml(&layout, sandbox_image, registry_auth))?;
        // A socket left by a killed predecessor would be taken for a live containerd.
        let _ = std::fs::remove_file(layout.socket());
        let log = std::fs::OpenOptions::new().create(true).append(true).open(layout.log())?;
        let mut cmd = std::process::Command::new("containerd");
        cmd.arg("--config").arg(layout.config()).stdin(std::process::Stdio::null()).stdout(log.try_clone()?).stderr(log);
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe. containerd dies with the agent's thread; its
        // shims and containers are stopped by `stop`, or by the next start's sweep.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(ContainerdError::Spawn)?;
        let cri = Cri::new(&layout.socket())?;
        let deadline = tokio::time::Instant::now() + START_LIMIT;
        let version = loop {
            if let Some(st) = child.try_wait()? {
                return Err(ContainerdError::Exited(st, layout.log()));
            }
            match cri.wait_version(&layout.socket(), Duration::from_millis(500)).await {
                Ok(v) => break v,
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(e.into());
                }
                Err(_) => {}
            }
        };
        tracing::info!(pid = child.id(), socket = %layout.socket().display(), version = %version.runtime_version, "containerd ready");
        Ok(Containerd { layout, child, cri, version })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, SIGKILL after a grace period, then every shim this containerd started
    /// (they outlive it by design, holding their containers).
    pub async fn stop(self) {
        let socket = self.layout.socket();
        self.stop_keeping_shims().await;
        kill_shims(&socket);
    }

    /// Stops containerd alone: its shims keep the containers running for the next
    /// containerd on the same state to reconnect to.
    pub async fn stop_keeping_shims(mut self) {
        let pid = self.child.id() as i32;
        // SAFETY: signals our own child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = tokio::time::Instant::now() + STOP_GRACE;
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Processes whose command line names this socket: the shims (`-address <socket>`) of
/// this containerd, and nothing of any other.
pub fn shims_of(socket: &Path) -> Vec<i32> {
    let want = socket.to_string_lossy().into_owned();
    let me = std::process::id() as i32;
    let Ok(rd) = std::fs::read_dir("/proc") else { return vec![] };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
            let args: Vec<&[u8]> = raw.split(|b| *b == 0).collect();
            let is_shim = args.first().is_some_and(|a| a.ends_with(b"containerd-shim-runc-v2") || a.windows(15).any(|w| w == b"containerd-shim"));
            is_shim && args.iter().any(|a| *a == want.as_bytes())
        })
        .collect()
}

/// SIGKILLs the shims of this containerd (by PID, found by their `-address`).
pub fn kill_shims(socket: &Path) {
    for pid in shims_of(socket) {
        tracing::info!(pid, "killing a containerd shim left running");
        // SAFETY: a pid read from /proc whose command line names our socket.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keeps_everything_in_the_data_dir() {
        let l = Layout::new("/data/n1/containerd".into());
        let c = config_toml(&l, "localhost/flotilla/pause:1", "  [plugins.\"io.containerd.grpc.v1.cri\".registry.configs.\"r:1\".auth]\n    username = \"u\"\n");
        for want in [
            "root = \"/data/n1/containerd/root\"",
            "state = \"/data/n1/containerd/state\"",
            "address = \"/data/n1/containerd/containerd.sock\"",
            "bin_dir = \"/usr/lib/cni\"",
            "conf_dir = \"/data/n1/containerd/cni/net.d\"",
            "restrict_oom_score_adj = true",
            "sandbox_image = \"localhost/flotilla/pause:1\"",
            "stream_server_address = \"127.0.0.1\"",
            "netns_mounts_under_state_dir = true",
            "config_path = \"/data/n1/containerd/certs.d\"\n  [plugins.\"io.containerd.grpc.v1.cri\".registry.configs.\"r:1\".auth]\n    username = \"u\"",
        ] {
            assert!(c.contains(want), "{want} missing from\n{c}");
        }
    }
}

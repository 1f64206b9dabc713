//! The process runtime (host mode): each container is a host process running the
//! container's command, in its own process group so that signals reach every child, its
//! output appended to a log file, and tied to the agent so a crashed agent leaves no
//! direct children behind. Its "sandbox" is the node itself: pods share the host's
//! network and filesystem, and there is no image to pull. Output goes through the agent
//! into a CRI-format log, so every line carries its time as containerd's do.

use super::{ContainerSpec, ImageReady, OnExit, PullPolicy, Runtime, RuntimeError, Sandbox, SandboxSpec, Started};
use futures::future::BoxFuture;
use std::process::Stdio;
use std::time::Duration;

/// How long a SIGKILLed group may take to disappear before stop gives up waiting.
const KILL_WAIT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(25);
/// How long an exited container's output may take to reach its log.
const DRAIN_WAIT: Duration = Duration::from_secs(2);

/// Copies one output stream into the log as CRI entries, each written whole (stdout and
/// stderr share the file, opened for appending), each line stamped when it arrived.
async fn copy_to_log(r: Box<dyn tokio::io::AsyncRead + Send + Unpin>, stream: &'static str, log: std::sync::Arc<std::fs::File>) {
    use crate::logs::cri::{encode, MAX_ENTRY};
    use std::io::Write;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let mut r = tokio::io::BufReader::with_capacity(MAX_ENTRY, r);
    loop {
        let mut line = Vec::new();
        let n = match (&mut r).take(MAX_ENTRY as u64).read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // No newline: a line longer than an entry goes on in the next one (partial); at
        // the end of the stream the last words are a line of their own.
        let complete = if line.last() == Some(&b'\n') {
            line.pop();
            true
        } else {
            n < MAX_ENTRY
        };
        let _ = (&*log).write_all(&encode(jiff::Timestamp::now(), stream, &line, complete));
    }
}

pub struct ProcessRuntime {
    /// The address host-mode pods report as their pod IP.
    pub host_ip: String,
    /// The cgroup parent of containers with resources (`process_cgroups`); None: no limits.
    pub cgroup_parent: Option<String>,
}

impl Default for ProcessRuntime {
    fn default() -> Self {
        ProcessRuntime { host_ip: "127.0.0.1".into(), cgroup_parent: None }
    }
}

/// The pod uid in a host-mode sandbox's id (`host/<uid>`).
fn sandbox_uid(sandbox: &Sandbox) -> Option<&str> {
    sandbox.id.strip_prefix("host/").filter(|u| !u.is_empty())
}

fn pid_of(started: &Started) -> i32 {
    started.pid.unwrap_or(0)
}

/// Signals a whole process group. Groups 0 and 1 would mean "our own group" and "every
/// process": never signalled, whatever a caller passes.
fn signal_group(pgid: i32, sig: i32) {
    if pgid > 1 {
        // SAFETY: plain syscall on a process group this runtime created.
        unsafe { libc::kill(-pgid, sig) };
    }
}

/// Whether a live (non-zombie) process is left in the group. `kill(-pgid, 0)` alone also
/// succeeds for zombies that nobody reaped yet (an orphan's reaper may be slow or absent
/// in a container), and those hold nothing but a pid.
pub fn group_alive(pgid: i32) -> bool {
    if pgid <= 1 {
        return false;
    }
    // SAFETY: signal 0 only checks for existence.
    if unsafe { libc::kill(-pgid, 0) } != 0 {
        return false;
    }
    let Ok(rd) = std::fs::read_dir("/proc") else { return true };
    rd.flatten().filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok())).any(|pid| {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
        // "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        let Some((_, rest)) = stat.rsplit_once(')') else { return false };
        let mut f = rest.split_whitespace();
        let state = f.next();
        let pgrp = f.nth(1).and_then(|p| p.parse::<i32>().ok());
        pgrp == Some(pgid) && state != Some("Z")
    })
}

async fn wait_gone(pgid: i32, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if !group_alive(pgid) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Makes `cmd` run as the container's securityContext says. Of it only the identity and
/// no_new_privs mean something for a host process: there is no root filesystem,
/// capability set or device list of its own. Container processes and their execs alike.
pub(super) fn set_identity(cmd: &mut tokio::process::Command, sec: &super::Security) {
    let ident = (sec.run_as_user.is_some() || sec.run_as_group.is_some() || !sec.supplemental_groups.is_empty())
        .then(|| (sec.run_as_user.map(|u| u as libc::uid_t), sec.run_as_group.map(|g| g as libc::gid_t), sec.supplemental_groups.iter().map(|g| *g as libc::gid_t).collect::<Vec<_>>()));
    let no_new_privs = sec.no_new_privs;
    if ident.is_none() && !no_new_privs {
        return;
    }
    // SAFETY: only async-signal-safe syscalls between fork and exec: groups, then gid,
    // then uid, since changing the uid first would take away the right to change the others.
    unsafe {
        cmd.pre_exec(move || {
            if let Some((uid, gid, groups)) = &ident {
                if libc::setgroups(groups.len(), groups.as_ptr()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(g) = gid {
                    if libc::setgid(*g) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if let Some(u) = uid {
                    if libc::setuid(*u) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
            }
            if no_new_privs && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

impl ProcessRuntime {
    /// Spawns the container's process in its own group, output appended to its log.
    pub fn spawn(&self, spec: &ContainerSpec, on_exit: OnExit) -> Result<Started, RuntimeError> {
        self.spawn_in(None, spec, on_exit)
    }

    /// `spawn`, in cgroups of its own under the pod `uid`'s when it has resources and this
    /// runtime has a cgroup parent (an agent that is not root runs it without).
    fn spawn_in(&self, uid: Option<&str>, spec: &ContainerSpec, on_exit: OnExit) -> Result<Started, RuntimeError> {
        let cgroup = match (&self.cgroup_parent, uid) {
            (Some(parent), Some(uid)) if !super::process_cgroups::settings(&spec.resources).is_empty() => {
                let rel = super::process_cgroups::container_rel(parent, uid, &spec.name, spec.attempt);
                match super::process_cgroups::create(&rel, &spec.resources) {
                    Ok(procs) => Some((rel, procs)),
                    Err(e) => {
                        tracing::warn!(container = %spec.name, error = %e, "no cgroup for a host-mode container: it runs without its limits");
                        super::process_cgroups::remove(&rel);
                        None
                    }
                }
            }
            _ => None,
        };
        // Kubernetes semantics: command replaces the entrypoint, args follow it; without a
        // command there is no image entrypoint to fall back on in host mode.
        let argv: Vec<String> = if spec.command.is_empty() { vec![] } else { spec.command.iter().chain(&spec.args).cloned().collect() };
        let Some((prog, args)) = argv.split_first() else {
            return Err(RuntimeError::Create(format!(
                "failed to create containerd task: container \"{}\" has no command: host-process mode needs spec.containers[].command (there is no image entrypoint to fall back on)",
                spec.name
            )));
        };
        if let Some(dir) = spec.log_path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        // Host mode runs in the host's filesystem: a workingDir is used as it is, never
        // created; without one, the pod's own directory (`<pod dir>/work`) is made and used.
        let working_dir = match &spec.working_dir {
            Some(w) => w.clone(),
            None => {
                let pod_dir = spec.log_path.parent().and_then(|p| p.parent()).ok_or_else(|| RuntimeError::Create("the log path has no pod directory".into()))?;
                let w = pod_dir.join("work");
                std::fs::create_dir_all(&w)?;
                w
            }
        };
        if !working_dir.is_dir() {
            return Err(RuntimeError::Create(format!(
                "failed to create containerd task: working directory {:?} of container \"{}\" does not exist on the host",
                working_dir, spec.name
            )));
        }
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&spec.log_path)?;
        let mut cmd = tokio::process::Command::new(prog);
        cmd.args(args)
            .env_clear()
            .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            // No mount namespace for a host process: each mounted volume's directory is
            // named in FLOTILLA_VOLUME_<NAME> (and linked at <pod dir>/volumes/<name>).
            .envs(spec.mounts.iter().map(|m| (super::volume_env(&m.volume), m.host_path.as_os_str())))
            .current_dir(&working_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(false);
        let procs: Vec<std::ffi::CString> = cgroup.iter().flat_map(|(_, p)| p).filter_map(|p| std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).ok()).collect();
        // SAFETY: only async-signal-safe syscalls between fork and exec. PDEATHSIG asks the
        // kernel to SIGKILL this child when the thread that spawned it dies (the kubelet's
        // thread, which lives as long as the agent).
        unsafe {
            cmd.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                // "0" is the writer itself: it enters its cgroups before exec (and before
                // it gives up root), so everything it forks is inside them too.
                for p in &procs {
                    let fd = libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                        let e = std::io::Error::last_os_error();
                        if fd >= 0 {
                            libc::close(fd);
                        }
                        return Err(e);
                    }
                    libc::close(fd);
                }
                Ok(())
            });
        }
        set_identity(&mut cmd, &spec.security);
        let cgroup_rel = cgroup.map(|(rel, _)| rel);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                if let Some(rel) = &cgroup_rel {
                    super::process_cgroups::remove(rel);
                }
                return Err(RuntimeError::Create(format!("failed to create containerd task: starting {prog:?} for container \"{}\": {e}", spec.name)));
            }
        };
        let pid = child.id().map(|p| p as i32).ok_or_else(|| RuntimeError::Create("the process exited before it was seen".into()))?;
        let log = std::sync::Arc::new(log);
        let copies: Vec<_> = [child.stdout.take().map(|o| Box::new(o) as Box<dyn tokio::io::AsyncRead + Send + Unpin>), child.stderr.take().map(|e| Box::new(e) as Box<_>)]
            .into_iter()
            .zip(["stdout", "stderr"])
            .filter_map(|(r, stream)| r.map(|r| tokio::spawn(copy_to_log(r, stream, log.clone()))))
            .collect();
        tokio::spawn(async move {
            let status = child.wait().await;
            // The last lines are in the pipes still: an exit is reported after they are in
            // the log (a grandchild holding the pipe open is not waited for long).
            let _ = tokio::time::timeout(DRAIN_WAIT, futures::future::join_all(copies)).await;
            let code = match status {
                Ok(st) => {
                    use std::os::unix::process::ExitStatusExt;
                    st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0))
                }
                Err(_) => 255,
            };
            let mut exit = super::Exit::code(code);
            if let Some(rel) = cgroup_rel {
                // Under runc a SIGKILL by the cgroup's OOM killer is OOMKilled; a shell
                // whose child was killed exits 137 itself.
                if code == 128 + libc::SIGKILL && super::process_cgroups::oom_killed(&rel) {
                    exit.reason = Some("OOMKilled".into());
                }
                super::process_cgroups::remove(&rel);
            }
            on_exit(exit);
        });
        Ok(Started { id: format!("flotilla://{pid}"), pid: Some(pid) })
    }
}

impl Runtime for ProcessRuntime {
    fn handler(&self) -> &'static str {
        "host"
    }

    fn container_usage(&self, started: &Started) -> BoxFuture<'static, Option<super::Usage>> {
        // A host-mode container is its process group: the leader and what it forked.
        let pgid = started.pid;
        Box::pin(async move { tokio::task::spawn_blocking(move || crate::metrics::procfs::group_usage(pgid?)).await.ok().flatten() })
    }

    fn version(&self) -> String {
        "flotilla-process://0.1".into()
    }

    fn ensure_image(&self, _image: &str, _policy: PullPolicy, _auth: Vec<super::PullAuth>) -> BoxFuture<'static, Result<ImageReady, RuntimeError>> {
        // Host mode runs commands from the machine: nothing is pulled.
        Box::pin(async { Ok(ImageReady { image_id: String::new(), pulled: None, user: Default::default() }) })
    }

    fn run_sandbox(&self, spec: &SandboxSpec) -> BoxFuture<'static, Result<Sandbox, RuntimeError>> {
        let s = Sandbox { id: format!("host/{}", spec.uid), ip: Some(self.host_ip.clone()) };
        Box::pin(async move { Ok(s) })
    }

    fn start_container(&self, sandbox: &Sandbox, spec: &ContainerSpec, on_exit: OnExit) -> BoxFuture<'static, Result<Started, RuntimeError>> {
        // Spawned now, on the caller's (the kubelet's) thread; the future only carries the answer.
        let r = self.spawn_in(sandbox_uid(sandbox), spec, on_exit);
        Box::pin(async move { r })
    }

    fn remove_sandbox(&self, sandbox: &Sandbox) -> BoxFuture<'static, ()> {
        if let (Some(parent), Some(uid)) = (&self.cgroup_parent, sandbox_uid(sandbox)) {
            super::process_cgroups::remove_pod(parent, uid);
        }
        Box::pin(async {})
    }

    fn stop_container(&self, started: &Started, grace: Duration) -> BoxFuture<'static, ()> {
        let pgid = pid_of(started);
        Box::pin(async move {
            if !grace.is_zero() {
                signal_group(pgid, libc::SIGTERM);
                if wait_gone(pgid, grace).await {
                    return;
                }
            }
            signal_group(pgid, libc::SIGKILL);
            if !wait_gone(pgid, KILL_WAIT).await {
                tracing::warn!(pgid, "processes survived SIGKILL");
            }
        })
    }

    fn exec(&self, target: &super::streams::ExecTarget, command: Vec<String>, s: super::streams::Streams) -> BoxFuture<'static, Result<super::streams::Session, RuntimeError>> {
        let r = super::process_streams::exec(target, command, s);
        Box::pin(async move { r })
    }

    fn exec_sync(&self, target: &super::streams::ExecTarget, command: Vec<String>, timeout: Duration) -> BoxFuture<'static, Result<super::ExecOutput, RuntimeError>> {
        let (env, dir, sec) = (target.env.clone(), target.working_dir.clone(), target.security.clone());
        Box::pin(async move {
            let Some((prog, args)) = command.split_first() else { return Err(RuntimeError::Stream("no command given to exec".into())) };
            let mut cmd = tokio::process::Command::new(prog);
            cmd.args(args)
                .env_clear()
                .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
                .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .current_dir(&dir)
                .stdin(Stdio::null())
                .process_group(0)
                .kill_on_drop(true);
            set_identity(&mut cmd, &sec);
            let child = cmd.output();
            match tokio::time::timeout(timeout, child).await {
                Ok(Ok(out)) => {
                    use std::os::unix::process::ExitStatusExt;
                    let exit_code = out.status.code().unwrap_or_else(|| 128 + out.status.signal().unwrap_or(0));
                    Ok(super::ExecOutput { exit_code, stdout: out.stdout, stderr: out.stderr })
                }
                Ok(Err(e)) => Err(RuntimeError::Stream(format!("exec failed: unable to start container process: {prog}: {e}"))),
                Err(_) => Err(RuntimeError::Stream(format!("command timed out after {}s", timeout.as_secs_f64()))),
            }
        })
    }

    fn attach(&self, target: &super::streams::ExecTarget, s: super::streams::Streams) -> BoxFuture<'static, Result<super::streams::Session, RuntimeError>> {
        let r = super::process_streams::attach(target, s);
        Box::pin(async move { Ok(r) })
    }

    fn port_forward(&self, sandbox: &Sandbox, port: u16) -> BoxFuture<'static, Result<super::streams::Session, RuntimeError>> {
        let id = sandbox.id.clone();
        Box::pin(async move { Ok(super::process_streams::port_forward(&id, port).await) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_command_is_a_create_error() {
        let spec = ContainerSpec {
            pod_key: "t/p".into(),
            name: "c".into(),
            image: "busybox".into(),
            command: vec![],
            args: vec!["x".into()],
            env: vec![],
            working_dir: Some("/tmp".into()),
            log_path: "/tmp/x.log".into(),
            attempt: 0,
            stdin: false,
            stdin_once: false,
            tty: false,
            mounts: vec![],
            resources: Default::default(),
            security: Default::default(),
        };
        let e = ProcessRuntime::default().spawn(&spec, Box::new(|_| {})).unwrap_err();
        assert!(e.to_string().contains("container \"c\" has no command"), "{e}");
    }

    #[test]
    fn never_signals_our_own_group_or_everything() {
        assert!(!group_alive(0));
        assert!(!group_alive(1));
        assert!(!group_alive(-5));
    }
}

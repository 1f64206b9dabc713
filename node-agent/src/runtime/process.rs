//! The process runtime (host mode): each container is a host process running the
//! container's command, in its own process group so that signals reach every child, its
//! output appended to a log file, and tied to the agent so a crashed agent leaves no
//! direct children behind.

use super::{ContainerSpec, OnExit, Runtime, RuntimeError, Started};
use std::process::Stdio;

#[derive(Default)]
pub struct ProcessRuntime;

impl Runtime for ProcessRuntime {
    fn start(&self, spec: &ContainerSpec, on_exit: OnExit) -> Result<Started, RuntimeError> {
        let Some((prog, args)) = spec.command.split_first() else {
            return Err(RuntimeError::Create(format!(
                "container \"{}\" has no command: host-process mode runs spec.containers[].command (and args), there is no image entrypoint to fall back on",
                spec.name
            )));
        };
        if let Some(dir) = spec.log_path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::create_dir_all(&spec.working_dir)?;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&spec.log_path)?;
        let mut cmd = tokio::process::Command::new(prog);
        cmd.args(args)
            .env_clear()
            .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(&spec.working_dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .kill_on_drop(false);
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to SIGKILL this child
        // if the thread that spawned it dies.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| RuntimeError::Create(format!("starting {prog:?}: {e}")))?;
        let pid = child.id().map(|p| p as i32).ok_or_else(|| RuntimeError::Create("the process exited before it was seen".into()))?;
        tokio::spawn(async move {
            let code = match child.wait().await {
                Ok(st) => {
                    use std::os::unix::process::ExitStatusExt;
                    st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0))
                }
                Err(_) => 255,
            };
            on_exit(Started { pid }, code);
        });
        Ok(Started { pid })
    }

    fn signal(&self, started: Started, signal: i32) {
        // SAFETY: signalling a process group this runtime created.
        unsafe { libc::kill(-started.pid, signal) };
    }

    fn alive(&self, started: Started) -> bool {
        // SAFETY: signal 0 only checks for existence.
        unsafe { libc::kill(-started.pid, 0) == 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn runs_logs_and_stops_the_whole_group() {
        let dir = std::env::temp_dir().join(format!("flotilla-rt-{}", std::process::id()));
        let spec = ContainerSpec {
            pod_key: "t/p".into(),
            name: "c".into(),
            command: vec!["sh".into(), "-c".into(), "echo hi; sleep 100 & wait".into()],
            env: vec![("HOSTNAME".into(), "p".into())],
            working_dir: dir.clone(),
            log_path: dir.join("c/0.log"),
        };
        let rt = ProcessRuntime;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let s = rt.start(&spec, Box::new(move |_, code| {
            let _ = tx.send(code);
        })).expect("start");
        let mut logged = false;
        for _ in 0..100 {
            if std::fs::read_to_string(&spec.log_path).unwrap_or_default().contains("hi") {
                logged = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(logged, "the container's output reaches its log file");
        assert!(rt.alive(s));
        rt.signal(s, libc::SIGKILL);
        let code = tokio::time::timeout(Duration::from_secs(5), rx).await.expect("exit seen").expect("code");
        assert_eq!(code, 128 + libc::SIGKILL);
        for _ in 0..100 {
            if !rt.alive(s) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!rt.alive(s), "no process of the group survives");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn no_command_is_a_create_error() {
        let spec = ContainerSpec { pod_key: "t/p".into(), name: "c".into(), command: vec![], env: vec![], working_dir: "/tmp".into(), log_path: "/tmp/x.log".into() };
        let e = ProcessRuntime.start(&spec, Box::new(|_, _| {})).unwrap_err();
        assert!(e.to_string().contains("has no command"));
    }
}

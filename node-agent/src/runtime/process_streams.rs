//! `exec`, `attach` and `port-forward` for host-mode pods: the command runs as a host
//! process with the container's environment and working directory (on a terminal of its
//! own with `-t`), a port is the node's own (pods share the host network), and attach
//! follows the container's output.

use super::process::group_alive;
use super::streams::{self, End, ExecTarget, Session, Streams};
use super::RuntimeError;
use schema::streaming::{STDERR, STDOUT};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Stdio;
use std::time::Duration;

/// A new pseudo-terminal: (master, slave).
fn openpty() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two new descriptors, which we own from here on.
    let r = unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), std::ptr::null()) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both were just returned by openpty and are not owned elsewhere.
    Ok(unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) })
}

fn set_size(fd: i32, width: u16, height: u16) {
    let ws = libc::winsize { ws_row: height, ws_col: width, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer.
    unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) };
}

fn exit_code(st: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0))
}

pub fn exec(target: &ExecTarget, command: Vec<String>, s: Streams) -> Result<Session, RuntimeError> {
    let Some((prog, args)) = command.split_first() else { return Err(RuntimeError::Stream("no command given to exec".into())) };
    let mut cmd = tokio::process::Command::new(prog);
    cmd.args(args)
        .env_clear()
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(target.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .current_dir(&target.working_dir)
        .kill_on_drop(true);
    super::process::set_identity(&mut cmd, &target.security);
    let (session, parts) = streams::session(s.stdin, s.tty);
    let mut master = None;
    if s.tty {
        let (m, slave) = openpty()?;
        let (a, b, c) = (slave.try_clone()?, slave.try_clone()?, slave);
        cmd.stdin(Stdio::from(a)).stdout(Stdio::from(b)).stderr(Stdio::from(c));
        // SAFETY: setsid and ioctl are async-signal-safe; the child gets its own session
        // with the terminal (its stdin) as the controlling one, so ^C reaches it.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                libc::ioctl(0, libc::TIOCSCTTY, 0);
                Ok(())
            });
        }
        master = Some(m);
    } else {
        cmd.stdin(if s.stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(if s.stdout { Stdio::piped() } else { Stdio::null() })
            .stderr(if s.stderr { Stdio::piped() } else { Stdio::null() })
            .process_group(0);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(streams::failed(format!("exec failed: unable to start container process: exec: \"{prog}\": executable file not found in $PATH")))
        }
        Err(e) => return Ok(streams::failed(format!("exec failed: unable to start container process: {prog}: {e}"))),
    };
    let pgid = child.id().map(|p| p as i32).unwrap_or(0);
    let mut pumps = Vec::new();
    if let Some(m) = master {
        let fd = m.as_raw_fd();
        let reader = tokio::fs::File::from_std(std::fs::File::from(m.try_clone()?));
        let writer = tokio::fs::File::from_std(std::fs::File::from(m.try_clone()?));
        pumps.push(tokio::spawn(streams::pump_out(reader, STDOUT, parts.output.clone())));
        if let Some(stdin) = parts.stdin {
            tokio::spawn(streams::pump_in(stdin, writer));
        }
        if let Some(mut rs) = parts.resize {
            tokio::spawn(async move {
                // `m` lives here: the terminal stays open as long as resizes may come.
                let _keep = m;
                while let Some((w, h)) = rs.recv().await {
                    set_size(fd, w, h);
                }
            });
        }
    } else {
        if let (Some(stdin), Some(w)) = (parts.stdin, child.stdin.take()) {
            tokio::spawn(streams::pump_in(stdin, w));
        }
        if let Some(r) = child.stdout.take() {
            pumps.push(tokio::spawn(streams::pump_out(r, STDOUT, parts.output.clone())));
        }
        if let Some(r) = child.stderr.take() {
            pumps.push(tokio::spawn(streams::pump_out(r, STDERR, parts.output.clone())));
        }
    }
    drop(parts.output);
    let end = parts.end;
    tokio::spawn(async move {
        let mut end = end;
        tokio::select! {
            st = child.wait() => {
                let code = st.map(exit_code).unwrap_or(255);
                // The output a process wrote before it ended comes first. A terminal's reader
                // ends with the last writer; pipes may be held by children left behind, so
                // waiting for them is bounded.
                let _ = tokio::time::timeout(Duration::from_secs(2), futures::future::join_all(pumps)).await;
                let _ = end.send(End::Exited(code));
            }
            _ = end.closed() => {
                // The client went away: the command and what it started go too.
                if pgid > 1 {
                    // SAFETY: signals the group this exec made (its own session with -t).
                    unsafe { libc::kill(-pgid, libc::SIGKILL) };
                }
                let _ = child.wait().await;
            }
        }
    });
    Ok(session)
}

/// Pods share the node's network: the port is the node's loopback one.
pub async fn port_forward(sandbox_id: &str, port: u16) -> Session {
    match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
        Ok(s) => streams::over_stream(s),
        Err(e) => streams::failed(format!("error forwarding port {port} to pod {sandbox_id}: failed to connect to localhost:{port}: {e}")),
    }
}

/// Follows the container's output from now on (host processes have no stdin to attach
/// to), until the container ends.
pub fn attach(target: &ExecTarget, s: Streams) -> Session {
    let log_path = target.log_path.clone();
    if s.stdin {
        return streams::failed("attaching to the stdin of a host-mode container is not supported: it reads no stdin".into());
    }
    let (session, parts) = streams::session(false, false);
    let pgid = target.started.pid.unwrap_or(0);
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let Ok(mut f) = tokio::fs::File::open(&log_path).await else {
            let _ = parts.end.send(End::Error(format!("the container's output {} cannot be read", log_path.display())));
            return;
        };
        let _ = f.seek(std::io::SeekFrom::End(0)).await;
        let mut buf = vec![0u8; 32 * 1024];
        // The log is in the CRI format: whole entries are turned back into the output
        // they hold, on the stream they came from.
        let mut pending: Vec<u8> = Vec::new();
        loop {
            match f.read(&mut buf).await {
                Ok(n) if n > 0 => {
                    pending.extend_from_slice(&buf[..n]);
                    let Some(end) = pending.iter().rposition(|b| *b == b'\n') else { continue };
                    let whole: Vec<u8> = pending.drain(..=end).collect();
                    for e in crate::logs::cri::entries(&whole) {
                        let mut out = e.text.to_vec();
                        if e.complete {
                            out.push(b'\n');
                        }
                        if parts.output.send((if e.stderr { STDERR } else { STDOUT }, out)).await.is_err() {
                            return;
                        }
                    }
                }
                _ if !group_alive(pgid) => break,
                _ => {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                        _ = parts.output.closed() => return,
                    }
                }
            }
        }
        let _ = parts.end.send(End::Exited(0));
    });
    session
}

//! A flotilla process started beside a cluster (`flotilla controllers`, `scheduler`,
//! `gateway`, `node`), its stderr in a log file; SIGKILL or SIGTERM by PID on demand,
//! and killed by PID when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Process {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Process {
    /// `flotilla <args>`, logging to `log`.
    pub fn flotilla(args: &[&str], log: &Path) -> Process {
        let logf = std::fs::File::create(log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_flotilla"))
            .args(args)
            .env("RUST_LOG", "info,async_nats=warn,openraft=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .expect("starting flotilla");
        Process { child: Some(child), log: log.to_path_buf() }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log has `what` in it; panics with the log after `within`.
    pub fn wait_log(&self, within: Duration, what: &str) {
        let deadline = Instant::now() + within;
        while !self.log_text().contains(what) {
            assert!(Instant::now() < deadline, "{what:?} not logged within {within:?}:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL, as a crash: nothing is cleaned up by the process itself.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits for it to exit (SIGKILL after 30 s).
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        // SAFETY: signalling our own child by PID.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                return c.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A child process this test started some other way (its own arguments, environment or
/// output): SIGTERM by PID on drop, then SIGKILL if it has not exited after 30 s.
pub struct TermOnDrop(pub Child);

impl Drop for TermOnDrop {
    fn drop(&mut self) {
        // SAFETY: signalling our own child by PID.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        for _ in 0..300 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

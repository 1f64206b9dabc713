//! Test fixture: a real `flotilla up` process (which starts its own nats-server on a free
//! port inside the data dir) driven by the real kubectl. Stopped by PID on drop.



use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

pub struct Cluster {
    child: Option<Child>,
    pub data_dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub addr: String,
    pub log: PathBuf,
    /// Where `up` serves the dashboard (a free port: tests run side by side).
    pub dashboard: String,
}


pub struct Out {
    pub code: Option<i32>,
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Cluster {
    /// Starts `flotilla up` on `data_dir` and waits until `/readyz` answers `ok`.
    pub fn up(data_dir: &Path, nodes: u32) -> Cluster {
        Cluster::up_with(data_dir, nodes, &[])
    }

    /// `up` with more arguments for `flotilla up` (e.g. `--state-members 3`). Pods run as
    /// host processes unless `extra` picks a `--runtime`: the tests that need containerd
    /// say so (tests/containerd_pods.rs).
    pub fn up_with(data_dir: &Path, nodes: u32, extra: &[&str]) -> Cluster {
        let addr = format!("127.0.0.1:{}", free_port());
        let runtime: &[&str] = if extra.contains(&"--runtime") { &[] } else { &["--runtime", "process"] };
        let dashboard = format!("127.0.0.1:{}", free_port());
        let dash_args: Vec<&str> = if extra.contains(&"--dashboard-addr") { vec![] } else { vec!["--dashboard-addr", &dashboard] };
        let log = data_dir.with_extension(format!("up-{}.log", free_port()));
        let logf = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_flotilla"))
            .args(["up", "--data-dir"])
            .arg(data_dir)
            .args(["--nodes", &nodes.to_string(), "--gateway-addr", &addr])
            .args(runtime)
            .args(&dash_args)
            .args(extra)
            .env("RUST_LOG", "info,async_nats=warn,openraft=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(logf)
            .spawn()
            .expect("starting flotilla up");
        let mut c = Cluster { child: Some(child), data_dir: data_dir.to_path_buf(), kubeconfig: data_dir.join("kubeconfig"), addr, log, dashboard: dashboard.clone() };
        // `up` prints the export line once it is ready.
        let stdout = c.child.as_mut().and_then(|ch| ch.stdout.take()).expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx.recv_timeout(Duration::from_secs(120)).unwrap_or_else(|_| panic!("flotilla up did not become ready; log:\n{}", c.log_tail()));
        assert!(line.starts_with("export KUBECONFIG="), "unexpected first line {line:?}");
        assert_eq!(line.trim_start_matches("export KUBECONFIG="), c.kubeconfig.to_string_lossy());
        c.eventually(Duration::from_secs(30), "readyz ok", || {
            let o = c.kubectl(&["get", "--raw", "/readyz"]);
            if o.ok && o.stdout.trim() == "ok" { Ok(()) } else { Err(format!("{} {}", o.stdout, o.stderr)) }
        });
        c
    }

    /// The address of `up`'s own nats-server (for agents joining from outside).
    pub fn nats_url(&self) -> String {
        let conf = std::fs::read_to_string(self.data_dir.join("nats").join("nats.conf")).expect("up's nats.conf");
        let listen = conf.lines().find_map(|l| l.strip_prefix("listen: ")).expect("a listen line");
        format!("nats://{}", listen.trim())
    }

    /// The admin NATS identity `up` wrote, for agents and tools started beside it.
    pub fn admin_creds(&self) -> std::path::PathBuf {
        self.data_dir.join("nats").join("admin.creds")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    pub fn kubectl(&self, args: &[&str]) -> Out {
        self.kubectl_stdin(args, None)
    }

    pub fn kubectl_stdin(&self, args: &[&str], stdin: Option<&str>) -> Out {
        use std::io::Write;
        let mut cmd = Command::new("kubectl");
        cmd.arg("--request-timeout=20s").args(args).env("KUBECONFIG", &self.kubeconfig);
        cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() }).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("running kubectl");
        if let (Some(s), Some(mut w)) = (stdin, child.stdin.take()) {
            w.write_all(s.as_bytes()).expect("kubectl stdin");
        }
        let o = child.wait_with_output().expect("kubectl output");
        Out { ok: o.status.success(), code: o.status.code(), stdout: String::from_utf8_lossy(&o.stdout).into(), stderr: String::from_utf8_lossy(&o.stderr).into() }
    }

    /// Starts a long-running kubectl (`get -w`, `logs -f`); stopped by PID on `stop` or drop.
    /// Its output is read as it comes, so a test can wait for what it printed.
    pub fn kubectl_background(&self, args: &[&str]) -> Background {
        let mut child = Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting kubectl");
        let out = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let stdout = child.stdout.take().expect("stdout");
        let sink = out.clone();
        let reader = std::thread::spawn(move || {
            use std::io::Read;
            let mut r = BufReader::new(stdout);
            let mut buf = [0u8; 8192];
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Background { child: Some(child), out, reader: Some(reader) }
    }

    /// Runs the flotilla binary itself (state status, backup, …) against this cluster's
    /// data dir.
    pub fn flotilla(&self, args: &[&str]) -> Out {
        let o = Command::new(env!("CARGO_BIN_EXE_flotilla")).args(args).stdin(Stdio::null()).output().expect("running flotilla");
        Out { ok: o.status.success(), code: o.status.code(), stdout: String::from_utf8_lossy(&o.stdout).into(), stderr: String::from_utf8_lossy(&o.stderr).into() }
    }

    /// Runs kubectl and fails the test with its output when it fails.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.kubectl(args);
        assert!(o.ok, "kubectl {args:?} failed:\nstdout: {}\nstderr: {}\nflotilla log:\n{}", o.stdout, o.stderr, self.log_tail());
        o.stdout
    }

    pub fn eventually<T>(&self, within: Duration, what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
        let deadline = Instant::now() + within;
        loop {
            match f() {
                Ok(v) => return v,
                Err(e) if Instant::now() > deadline => panic!("{what}: not within {within:?}; last: {e}\nflotilla log:\n{}", self.log_tail()),
                Err(_) => std::thread::sleep(Duration::from_millis(250)),
            }
        }
    }

    /// SIGTERM, then waits for a clean exit (SIGKILL after 30 s).
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        // SAFETY: signalling our own child by PID.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A kubectl running beside the test; stopped even when an assertion fails first.
pub struct Background {
    child: Option<Child>,
    out: std::sync::Arc<std::sync::Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Background {
    /// What it has printed so far.
    pub fn output(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    /// Waits until what it printed satisfies `pred`; panics with the output after `within`.
    pub fn wait_for(&self, within: Duration, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + within;
        loop {
            let out = self.output();
            if pred(&out) {
                return out;
            }
            assert!(Instant::now() < deadline, "{what}: not within {within:?}; printed so far:\n{out}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then everything it printed.
    pub fn stop(mut self) -> String {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling a child this test started, by PID.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        self.output()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// PIDs of live processes whose environment has `HOSTNAME=<pod>`: the node agent sets it
/// for every container process, so this finds a pod's processes without matching names.
pub fn pod_pids(pod: &str) -> Vec<i32> {
    let want = format!("HOSTNAME={pod}");
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else { return out };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(env) = std::fs::read(e.path().join("environ")) else { continue };
        if env.split(|b| *b == 0).any(|kv| kv == want.as_bytes()) {
            // Zombies have no environment left; a live process does.
            out.push(pid);
        }
    }
    out
}

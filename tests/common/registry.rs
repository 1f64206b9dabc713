//! A real image registry for tests: Debian's `docker-registry` (distribution 2.8) on a
//! free port of 127.0.0.1 with its storage in a private directory, optionally behind
//! htpasswd basic auth; images are pushed into it with skopeo from the offline image
//! archives. Killed by PID when dropped.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Registry {
    /// `127.0.0.1:<port>`
    pub host: String,
    /// (username, password) when the registry wants them.
    pub creds: Option<(String, String)>,
    child: Child,
    dir: tempfile::TempDir,
}

/// A bcrypt htpasswd line (the only hash distribution accepts), made by the host's crypt(3).
fn htpasswd(user: &str, password: &str) -> String {
    let script = "import crypt, sys; print(sys.argv[1] + ':' + crypt.crypt(sys.argv[2], crypt.mksalt(crypt.METHOD_BLOWFISH)))";
    let o = Command::new("/usr/bin/python3").args(["-W", "ignore", "-c", script, user, password]).output().expect("python3 for htpasswd");
    assert!(o.status.success(), "htpasswd: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

impl Registry {
    /// Starts the registry; with `creds`, every request needs them (basic auth).
    pub fn start(creds: Option<(&str, &str)>) -> Registry {
        let dir = tempfile::tempdir().expect("registry dir");
        let port = super::free_port();
        let host = format!("127.0.0.1:{port}");
        let mut conf = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {host}\n",
            dir.path().join("data").display()
        );
        if let Some((u, p)) = creds {
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, htpasswd(u, p)).unwrap();
            conf.push_str(&format!("auth:\n  htpasswd:\n    realm: flotilla-test\n    path: {}\n", file.display()));
        }
        let conf_path = dir.path().join("config.yml");
        std::fs::write(&conf_path, conf).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting docker-registry (deploy/install-deps.sh installs it)");
        let mut r = Registry { host, creds: creds.map(|(u, p)| (u.to_string(), p.to_string())), child, dir };
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(st)) = r.child.try_wait() {
                panic!("docker-registry exited with {st}:\n{}", r.log());
            }
            assert!(Instant::now() < deadline, "docker-registry did not listen within 15 s:\n{}", r.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Pushes the image `tag` of an OCI archive as `<host>/<name>`.
    pub fn push(&self, archive: &Path, tag: &str, name: &str) {
        let mut cmd = Command::new("skopeo");
        cmd.args(["--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false"]);
        if let Some((u, p)) = &self.creds {
            cmd.arg(format!("--dest-creds={u}:{p}"));
        }
        let o = cmd.arg(format!("oci-archive:{}:{tag}", archive.display())).arg(format!("docker://{}/{name}", self.host)).output().expect("running skopeo");
        assert!(o.status.success(), "skopeo copy to {}/{name}: {}\n{}", self.host, String::from_utf8_lossy(&o.stderr), self.log());
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The offline image archives (deploy/offline-images.sh, built once per machine outside
/// the repository; FLOTILLA_IMAGE_CACHE overrides where).
pub fn offline_images() -> std::path::PathBuf {
    let dir = std::env::var_os("FLOTILLA_IMAGE_CACHE").map(std::path::PathBuf::from).unwrap_or_else(|| "/var/cache/flotilla/images".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/offline-images.sh");
    let out = Command::new("bash").arg(script).arg(&dir).output().expect("running deploy/offline-images.sh");
    assert!(out.status.success(), "deploy/offline-images.sh failed:\n{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    dir
}

/// An air-gap folder holding only the busybox archive (a quick import).
pub fn busybox_only(images: &Path, into: &Path) -> std::path::PathBuf {
    let dir = into.join("airgap");
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(images.join("busybox.tar"), dir.join("busybox.tar")).unwrap();
    dir
}

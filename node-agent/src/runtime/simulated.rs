//! The simulated runtime for hollow nodes (as kwok and kubemark do): pods "run" without
//! processes, images are always present, so thousands of node agents fit in one process
//! for scale tests of the control plane. A container runs until it is stopped, then
//! "exits" with 143 (SIGTERM honoured) or 137 (no grace).

use super::{ContainerSpec, ImageReady, OnExit, PullPolicy, Runtime, RuntimeError, Sandbox, SandboxSpec, Started};
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
pub struct SimulatedRuntime {
    next: AtomicU64,
    /// Running containers by id, with what to call when they stop.
    running: Arc<Mutex<HashMap<String, OnExit>>>,
    /// Sandboxes by id, with the containers in each.
    sandboxes: Arc<Mutex<HashMap<String, Vec<String>>>>,
    /// How long a container takes to "start" (an image pull and a process start, as a
    /// real node has them).
    start_delay: Duration,
}

impl SimulatedRuntime {
    pub fn with_start_delay(start_delay: Duration) -> SimulatedRuntime {
        SimulatedRuntime { start_delay, ..Default::default() }
    }

    /// Containers that are "running".
    pub fn running(&self) -> usize {
        self.running.lock().map(|m| m.len()).unwrap_or(0)
    }

    fn id(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed) + 1
    }
}

fn stop(running: &Mutex<HashMap<String, OnExit>>, id: &str, code: i32) {
    let exit = running.lock().ok().and_then(|mut m| m.remove(id));
    if let Some(f) = exit {
        f(super::Exit::code(code));
    }
}

impl Runtime for SimulatedRuntime {
    fn handler(&self) -> &'static str {
        "simulated"
    }

    fn version(&self) -> String {
        "simulated://0.1".into()
    }

    fn ensure_image(&self, image: &str, _policy: PullPolicy, _auth: Vec<super::PullAuth>) -> BoxFuture<'static, Result<ImageReady, RuntimeError>> {
        let image_id = format!("simulated://{image}");
        Box::pin(async move { Ok(ImageReady { image_id, pulled: None, user: Default::default() }) })
    }

    fn run_sandbox(&self, _spec: &SandboxSpec) -> BoxFuture<'static, Result<Sandbox, RuntimeError>> {
        // Addresses from TEST-NET-2 (RFC 5737): documentation only, never routed.
        let n = self.id();
        let s = Sandbox { id: format!("sandbox-{n}"), ip: Some(format!("198.51.{}.{}", (n / 254) % 256, n % 254 + 1)) };
        if let Ok(mut m) = self.sandboxes.lock() {
            m.insert(s.id.clone(), Vec::new());
        }
        Box::pin(async move { Ok(s) })
    }

    fn start_container(&self, sandbox: &Sandbox, _spec: &ContainerSpec, on_exit: OnExit) -> BoxFuture<'static, Result<Started, RuntimeError>> {
        let r = match self.sandboxes.lock().ok().as_mut().and_then(|m| m.get_mut(&sandbox.id)) {
            Some(list) => {
                let id = format!("simulated://{}", self.id());
                list.push(id.clone());
                if let Ok(mut m) = self.running.lock() {
                    m.insert(id.clone(), on_exit);
                }
                Ok(Started { id, pid: None })
            }
            None => Err(RuntimeError::Create(format!("sandbox {} not found", sandbox.id))),
        };
        let delay = self.start_delay;
        Box::pin(async move {
            if !delay.is_zero() && r.is_ok() {
                tokio::time::sleep(delay).await;
            }
            r
        })
    }

    fn stop_container(&self, started: &Started, grace: Duration) -> BoxFuture<'static, ()> {
        stop(&self.running, &started.id, if grace.is_zero() { 137 } else { 143 });
        Box::pin(async {})
    }

    fn remove_sandbox(&self, sandbox: &Sandbox) -> BoxFuture<'static, ()> {
        let ids = self.sandboxes.lock().ok().and_then(|mut m| m.remove(&sandbox.id)).unwrap_or_default();
        for id in ids {
            stop(&self.running, &id, 137);
        }
        Box::pin(async {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox_spec() -> SandboxSpec {
        SandboxSpec {
            namespace: "ns".into(),
            name: "p".into(),
            uid: "u".into(),
            attempt: 0,
            hostname: "p".into(),
            log_dir: "/nonexistent".into(),
            host_network: false,
            ports: vec![],
            labels: Default::default(),
            dns: None,
            privileged: false,
        }
    }

    fn container() -> ContainerSpec {
        ContainerSpec {
            pod_key: "ns/p".into(),
            name: "c".into(),
            image: "nginx".into(),
            command: vec![],
            args: vec![],
            env: vec![],
            working_dir: None,
            log_path: "c/0.log".into(),
            attempt: 0,
            stdin: false,
            stdin_once: false,
            tty: false,
            mounts: vec![],
            resources: Default::default(),
            security: Default::default(),
        }
    }

    #[tokio::test]
    async fn containers_run_until_stopped_or_their_sandbox_goes() {
        let rt = SimulatedRuntime::default();
        let sb = rt.run_sandbox(&sandbox_spec()).await.unwrap();
        assert!(sb.ip.is_some());
        let (tx, rx) = std::sync::mpsc::channel();
        let tx2 = tx.clone();
        let a = rt.start_container(&sb, &container(), Box::new(move |c| tx.send(("a", c)).unwrap())).await.unwrap();
        let _b = rt.start_container(&sb, &container(), Box::new(move |c| tx2.send(("b", c)).unwrap())).await.unwrap();
        assert_eq!(rt.running(), 2);
        rt.stop_container(&a, Duration::from_secs(30)).await;
        assert_eq!(rx.try_recv().map(|(n, e)| (n, e.code)), Ok(("a", 143)));
        // Stopping again reports nothing twice.
        rt.stop_container(&a, Duration::ZERO).await;
        rt.remove_sandbox(&sb).await;
        assert_eq!(rx.try_recv().map(|(n, e)| (n, e.code)), Ok(("b", 137)));
        assert!(rx.try_recv().is_err());
        assert_eq!(rt.running(), 0);
        let e = rt.start_container(&sb, &container(), Box::new(|_| {})).await.unwrap_err();
        assert!(e.to_string().contains("not found"), "{e}");
    }
}

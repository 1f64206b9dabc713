//! The service proxy (kube-proxy, nftables mode) inside the node agent: informers of
//! Services and EndpointSlices feed one cache; after each burst of events the whole
//! ruleset is rebuilt as data (`rules::ruleset`, pure); the first time it is written in
//! full, afterwards only its difference from what the kernel holds (`diff`, pure), with
//! `nft -f -` in one transaction. The table goes when the agent stops (shutdown.rs).
//! Runs only where pods have their own addresses.

pub mod diff;
pub mod rules;
pub mod userspace;

use bus::informer::{watch_objects, InformerEvent, Scope};
use bus::Client;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::collections::HashMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const ACTOR: &str = "service-proxy";
/// A failed apply is tried again this soon (nft missing a module, a busy netlink).
const RETRY: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("running nft: {0}")]
    Spawn(#[from] std::io::Error),
    #[error("nft refused the ruleset: {0}")]
    Nft(String),
}

/// Whether the nftables tool is here to drive (kube-proxy's nftables mode needs it).
pub fn available() -> bool {
    std::process::Command::new("nft").arg("--version").output().map(|o| o.status.success()).unwrap_or(false)
}

/// Feeds `script` to `nft -f -`.
pub async fn apply(script: &str) -> Result<(), ProxyError> {
    nft(&["-f", "-"], Some(script)).await
}

async fn nft(args: &[&str], stdin: Option<&str>) -> Result<(), ProxyError> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("nft").args(args).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).kill_on_drop(true).spawn()?;
    if let (Some(text), Some(mut w)) = (stdin, child.stdin.take()) {
        w.write_all(text.as_bytes()).await?;
    }
    let out = child.wait_with_output().await?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ProxyError::Nft(String::from_utf8_lossy(&out.stderr).trim().to_string()))
    }
}

/// Removes the agent's table (nothing to do when it is not there).
pub async fn remove(table: &str) {
    let listed = tokio::process::Command::new("nft").args(["list", "table", "ip", table]).output().await;
    if !listed.map(|o| o.status.success()).unwrap_or(false) {
        return;
    }
    match nft(&["delete", "table", "ip", table], None).await {
        Ok(()) => tracing::info!(table, "removed the service proxy's nftables table"),
        Err(e) => tracing::warn!(table, error = %e, "removing the service proxy's table failed"),
    }
}

/// Lets DNAT send pods' Service traffic to the node's loopback-bound listeners (the
/// `kubernetes` Service's gateway, NodePorts on 127.0.0.1): the kernel drops such
/// packets as martians unless the bridge has route_localnet.
fn route_localnet(bridge: &str) {
    let p = format!("/proc/sys/net/ipv4/conf/{bridge}/route_localnet");
    if std::fs::read_to_string(&p).map(|s| s.trim() == "0").unwrap_or(false) {
        if let Err(e) = std::fs::write(&p, "1") {
            tracing::warn!(bridge, error = %e, "cannot set route_localnet: Services backed by loopback addresses are unreachable from pods");
        }
    }
}

#[derive(Default)]
struct Cache {
    services: HashMap<String, Service>,
    slices: HashMap<String, EndpointSlice>,
    listed: u8,
}

fn key(m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    format!("{}/{}", m.namespace.as_deref().unwrap_or(""), m.name.as_deref().unwrap_or(""))
}

/// Folds one informer event into a cache by namespace/name; true on a (re)list.
pub(super) fn put<K: bus::client::Object>(map: &mut HashMap<String, K>, ev: InformerEvent<K>) -> bool {
    match ev {
        InformerEvent::Listed(items, _) => {
            *map = items.into_iter().map(|k| (key(k.metadata()), k)).collect();
            true
        }
        InformerEvent::Applied(k, _) => {
            map.insert(key(k.metadata()), k);
            false
        }
        InformerEvent::Deleted(k, _) => {
            map.remove(&key(k.metadata()));
            false
        }
    }
}

/// Runs the proxy until `stop`; the caller removes the table afterwards.
pub fn start(client: Client, table: String, node: rules::NodeInfo, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut services = watch_objects::<Service>(client.clone(), Scope::default()).boxed();
        let mut slices = watch_objects::<EndpointSlice>(client.clone(), Scope::default()).boxed();
        let mut cache = Cache::default();
        // What the kernel holds; None (at start, after a failed apply) writes in full.
        let mut applied: Option<rules::Ruleset> = None;
        let mut retry_at: Option<tokio::time::Instant> = None;
        tracing::info!(table = %table, node = %node.name, "service proxy (nftables) starting");
        loop {
            let retry = async {
                match retry_at {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                Some(ev) = services.next() => if put(&mut cache.services, ev) { cache.listed |= 1 },
                Some(ev) = slices.next() => if put(&mut cache.slices, ev) { cache.listed |= 2 },
                _ = retry => retry_at = None,
            }
            // Coalesce: whatever else is already waiting joins this pass.
            loop {
                if let Some(Some(ev)) = services.next().now_or_never() {
                    if put(&mut cache.services, ev) {
                        cache.listed |= 1;
                    }
                } else if let Some(Some(ev)) = slices.next().now_or_never() {
                    if put(&mut cache.slices, ev) {
                        cache.listed |= 2;
                    }
                } else {
                    break;
                }
            }
            if cache.listed != 3 {
                continue;
            }
            let (want, script) = bus::metrics::handle(ACTOR, || {
                let svcs: Vec<&Service> = cache.services.values().collect();
                let sl: Vec<&EndpointSlice> = cache.slices.values().collect();
                let want = rules::ruleset(&table, &node, &svcs, &sl);
                // Most events (a slice's resourceVersion, a Service's annotation) change
                // nothing in the kernel: those cost no nft run.
                let script = match &applied {
                    Some(old) => diff::diff(old, &want),
                    None => Some(want.full()),
                };
                (want, script)
            });
            let Some(script) = script else { continue };
            if let Some(br) = &node.bridge {
                route_localnet(br);
            }
            match apply(&script).await {
                Ok(()) => {
                    tracing::debug!(table = %table, bytes = script.len(), "service rules applied");
                    applied = Some(want);
                }
                Err(e) => {
                    applied = None;
                    tracing::warn!(table = %table, error = %e, "applying the service rules failed; retrying");
                    retry_at = Some(tokio::time::Instant::now() + RETRY);
                }
            }
        }
    })
}

#[cfg(test)]
mod tests;

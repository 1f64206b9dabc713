//! Joining nodes with bootstrap tokens: `flotilla join-token create` stores a kubeadm
//! token as a Secret; `up` answers join requests (token + the node's own public nkey)
//! by adding that key as the node's NATS user and reloading nats-server; `flotilla node
//! --join` makes its key, joins once, keeps its identity on disk and reuses it after;
//! deleting a joined node's Node object removes its user, so its connections are refused.

use crate::identities::{self, Identities, BOOTSTRAP_PASSWORD, BOOTSTRAP_USER};
use crate::natsd;
use anyhow::{bail, Context, Result};
use bus::creds::Credentials;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use schema::join::{self, JoinError, JoinReply, JoinRequest, StoredToken};
use schema::natsauth::Role;
use schema::{codec, subjects};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(clap::Args)]
pub struct JoinTokenArgs {
    #[command(subcommand)]
    cmd: JoinTokenCmd,
}

#[derive(clap::Subcommand)]
enum JoinTokenCmd {
    /// Makes a bootstrap token and prints it (`<id>.<secret>`).
    Create {
        #[command(flatten)]
        target: crate::status::Target,
        /// How long the token may be used: `24h`, `30m`, `90s`, `7d`; `0` never expires.
        #[arg(long, default_value = "24h")]
        ttl: String,
    },
}

/// `24h`, `30m`, `90s`, `7d` (0: none).
pub fn parse_ttl(s: &str) -> Result<Option<Duration>> {
    let s = s.trim();
    if s == "0" {
        return Ok(None);
    }
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n.parse().with_context(|| format!("--ttl {s:?}: expected a number and a unit (s, m, h, d)"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => bail!("--ttl {s:?}: the unit must be s, m, h or d"),
    };
    Ok(Some(Duration::from_secs(secs)))
}

pub async fn run(a: JoinTokenArgs) -> Result<()> {
    match a.cmd {
        JoinTokenCmd::Create { target, ttl } => {
            let ttl = parse_ttl(&ttl)?;
            let url = crate::status::find_nats(target.nats_url.as_deref(), target.data_dir.as_deref(), target.kubeconfig.as_deref())?;
            let creds = crate::status::find_creds(&target)?;
            let bus = bus::Bus::connect_as(&url, creds.as_ref()).await?;
            let token = join::token_from(&rand::random());
            let (id, secret) = join::parse_token(&token).map_err(|e| anyhow::anyhow!("{e}"))?;
            let mut data = std::collections::BTreeMap::new();
            let mut put = |k: &str, v: &str| data.insert(k.to_string(), ByteString(v.as_bytes().to_vec()));
            put("token-id", id);
            put("token-secret", secret);
            put("usage-bootstrap-authentication", "true");
            put("description", "made by flotilla join-token create");
            if let Some(ttl) = ttl {
                let at = jiff::Timestamp::now() + jiff::SignedDuration::try_from(ttl)?;
                put("expiration", &at.to_string());
            }
            let s = Secret {
                metadata: ObjectMeta { name: Some(join::secret_name(id)), namespace: Some(join::TOKEN_NAMESPACE.into()), ..Default::default() },
                type_: Some(join::TOKEN_SECRET_TYPE.into()),
                data: Some(data),
                ..Default::default()
            };
            bus::Client::new(bus).create(&s).await.context("storing the token's Secret")?;
            println!("{token}");
            Ok(())
        }
    }
}

/// What `up` keeps to answer joins: the identities and the server to reload.
pub struct Registry {
    pub ids: Identities,
    pub reloader: natsd::Reloader,
}

pub type Shared = Arc<Mutex<Registry>>;

fn stored_token(s: &Secret) -> StoredToken {
    let get = |k: &str| s.data.as_ref().and_then(|d| d.get(k)).map(|b| String::from_utf8_lossy(&b.0).to_string());
    StoredToken { secret: get("token-secret").unwrap_or_default(), expiration: get("expiration"), type_: s.type_.clone().unwrap_or_default() }
}

fn valid_node_name(n: &str) -> Result<(), String> {
    let ok = !n.is_empty() && n.len() <= 253 && n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if ok { Ok(()) } else { Err("a node name is lower-case letters, digits, '-' and '.'".into()) }
}

async fn answer(client: &bus::Client, reg: &Shared, ca_pem: &Option<String>, req: JoinRequest) -> Result<JoinReply, JoinError> {
    let (id, _) = join::parse_token(&req.token)?;
    valid_node_name(&req.node).map_err(|why| JoinError::BadName(req.node.clone(), why))?;
    if nkeys::KeyPair::from_public_key(&req.nkey).is_err() || !req.nkey.starts_with('U') {
        return Err(JoinError::BadName(req.node.clone(), "the request carries no user nkey".into()));
    }
    let secret = client.get::<Secret>(Some(join::TOKEN_NAMESPACE), &join::secret_name(id)).await.map_err(|e| JoinError::Internal(e.to_string()))?;
    join::check(&req.token, secret.as_ref().map(stored_token).as_ref(), jiff::Timestamp::now())?;
    let mut r = reg.lock().map_err(|_| JoinError::Internal("the join registry is poisoned".into()))?;
    if identities::file(&r.ids.dir(), &Role::Node(req.node.clone())).exists() {
        return Err(JoinError::BadName(req.node.clone(), "flotilla up runs a node agent of this name itself".into()));
    }
    r.ids.join(&req.node, &req.nkey).map_err(|e| JoinError::Internal(format!("{e:#}")))?;
    let users = r.ids.users().map_err(|e| JoinError::Internal(format!("{e:#}")))?;
    r.reloader.reload(&users).map_err(|e| JoinError::Internal(format!("{e:#}")))?;
    tracing::info!(node = %req.node, token = id, "join: node joined");
    Ok(JoinReply { inbox: Role::Node(req.node).inbox(), ca_pem: ca_pem.clone() })
}

/// Answers join requests, and revokes a joined node's identity when its Node is deleted.
pub async fn serve(bus: bus::Bus, reg: Shared, ca_pem: Option<String>, stop: CancellationToken) -> Result<()> {
    let client = bus::Client::new(bus.clone());
    let mut sub = bus.nats.subscribe(subjects::JOIN).await?;
    let mut nodes = bus::informer::watch_objects::<Node>(client.clone(), Default::default()).boxed();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            Some(msg) = sub.next() => {
                let Some(reply) = msg.reply.clone() else { continue };
                let result = match codec::decode::<JoinRequest>(&msg.payload) {
                    Ok(req) => answer(&client, &reg, &ca_pem, req).await,
                    Err(e) => Err(JoinError::Internal(format!("undecodable join request: {e}"))),
                };
                if let Err(e) = &result {
                    tracing::warn!("join: refused: {e}");
                }
                if let Ok(bytes) = codec::encode(&result) {
                    let _ = bus.nats.publish(reply, bytes.into()).await;
                }
            }
            Some(ev) = nodes.next() => {
                let bus::informer::InformerEvent::Deleted(n, _) = ev else { continue };
                let Some(name) = n.metadata.name else { continue };
                let Ok(mut r) = reg.lock() else { continue };
                if r.ids.revoke_joined(&name) {
                    match r.ids.users().and_then(|u| r.reloader.reload(&u)) {
                        Ok(()) => tracing::info!(node = %name, "join: node deleted; its NATS identity is revoked"),
                        Err(e) => tracing::error!(node = %name, "join: revoking the deleted node's identity failed: {e:#}"),
                    }
                }
            }
        }
    }
}

/// A node agent's identity for `--join`: the one stored in `node_dir` by an earlier join,
/// or a new key accepted by presenting `token`.
pub async fn node_identity(url: &str, token: Option<&str>, name: &str, node_dir: &Path) -> Result<Credentials> {
    let path = node_dir.join("nats.creds");
    if path.exists() {
        return Ok(Credentials::load(&path)?);
    }
    let Some(token) = token else { bail!("{} holds no credentials from an earlier join: give --token", path.display()) };
    join::parse_token(token).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut creds = identities::mint(&Role::Node(name.into()))?;
    let nkey = identities::public_key(&creds)?;
    let nats = async_nats::ConnectOptions::with_user_and_password(BOOTSTRAP_USER.into(), BOOTSTRAP_PASSWORD.into())
        .custom_inbox_prefix(Role::Bootstrap.inbox())
        .connection_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .with_context(|| format!("connecting to {url} to join"))?;
    let req = codec::encode(&JoinRequest { token: token.to_string(), node: name.to_string(), nkey })?;
    let msg = tokio::time::timeout(Duration::from_secs(15), nats.request(subjects::JOIN, req.into()))
        .await
        .with_context(|| format!("{url} did not answer the join request within 15 s"))?
        .with_context(|| format!("asking {url} to join (is it a flotilla up with NATS authorization?)"))?;
    let reply: Result<JoinReply, JoinError> = codec::decode(&msg.payload)?;
    let reply = reply.map_err(|e| anyhow::anyhow!("joining {url} as node {name:?} was refused: {e}"))?;
    creds.inbox = reply.inbox;
    creds.store(&path)?;
    if let Some(ca) = reply.ca_pem {
        std::fs::write(node_dir.join("ca.crt"), ca)?;
    }
    Ok(creds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls() {
        assert_eq!(parse_ttl("24h").unwrap(), Some(Duration::from_secs(86400)));
        assert_eq!(parse_ttl("90s").unwrap(), Some(Duration::from_secs(90)));
        assert_eq!(parse_ttl("0").unwrap(), None);
        assert!(parse_ttl("1y").is_err() && parse_ttl("h").is_err());
    }
}

//! Joining nodes with bootstrap tokens: `flotilla join-token create` stores a kubeadm
//! token as a Secret; `up`, or the wrapper of each hub server (`flotilla nats
//! --identities`), answers join requests (token + the node's own public nkey) by adding
//! that key to the joined list (a Secret in kube-system), which every server's wrapper
//! applies as the node's NATS user (config rewritten, SIGHUP) and leaf sites' wrappers
//! fetch from the hub; `flotilla node --join` makes its key, joins once, keeps its
//! identity on disk and reuses it after; deleting a joined node's Node object removes
//! its key from the list, so its connections are refused.

use crate::identities::{self, BOOTSTRAP_PASSWORD, BOOTSTRAP_USER};
use crate::natsd;
use anyhow::{bail, Context, Result};
use bus::creds::Credentials;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use schema::join::{self, JoinError, JoinReply, JoinRequest, JoinedNodes, StoredToken};
use schema::natsauth::Role;
use schema::{codec, subjects};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
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

/// A server's users and the joined nodes it admits besides them; applying a new joined
/// list rewrites the servers' config and has them reload (SIGHUP).
pub struct Registry {
    base: natsd::Users,
    /// Node agents with identities of the server's own (`up`'s): a join may not take
    /// their names.
    own_nodes: BTreeSet<String>,
    reloader: natsd::Reloader,
    joined: JoinedNodes,
    /// Where the last applied list is kept, so that a restarted server admits the
    /// joined nodes before it can reach the state group (a cut-off site).
    cache: PathBuf,
}

pub type Shared = Arc<Mutex<Registry>>;

/// `base` with the `joined` nodes as users, each with its node's permissions.
pub fn users(base: &natsd::Users, own_nodes: &BTreeSet<String>, joined: &JoinedNodes) -> natsd::Users {
    let mut out = base.clone();
    for (node, key) in joined {
        if !own_nodes.contains(node) {
            out.push((natsd::Who::Nkey(key.clone()), schema::natsauth::permissions(&Role::Node(node.clone()))));
        }
    }
    out
}

/// The joined list a server applied last (none yet: empty).
pub fn cached(path: &Path) -> JoinedNodes {
    std::fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

impl Registry {
    pub fn new(base: natsd::Users, own_nodes: BTreeSet<String>, reloader: natsd::Reloader, cache: PathBuf) -> Registry {
        let joined = cached(&cache);
        Registry { base, own_nodes, reloader, joined, cache }
    }

    pub fn joined(&self) -> &JoinedNodes {
        &self.joined
    }

    /// Admits exactly `joined` from now on; false when that is what it admits already.
    pub fn apply(&mut self, joined: JoinedNodes) -> Result<bool> {
        if joined == self.joined {
            return Ok(false);
        }
        self.reloader.reload(&users(&self.base, &self.own_nodes, &joined))?;
        std::fs::write(&self.cache, serde_json::to_vec(&joined)?).with_context(|| format!("keeping {}", self.cache.display()))?;
        self.joined = joined;
        Ok(true)
    }
}

fn apply_and_tell(bus: &bus::Bus, reg: &Shared, joined: JoinedNodes) {
    let changed = match reg.lock() {
        Ok(mut r) => r.apply(joined.clone()),
        Err(_) => return,
    };
    match changed {
        Ok(true) => {
            tracing::info!(nodes = joined.len(), "join: the joined nodes' NATS users changed; servers reloaded");
            // Leaf sites' servers follow the hub's list.
            if let Ok(bytes) = codec::encode(&joined) {
                let nats = bus.nats.clone();
                tokio::spawn(async move {
                    let _ = nats.publish(subjects::NATS_USERS_CHANGED, bytes.into()).await;
                });
            }
        }
        Ok(false) => {}
        Err(e) => tracing::error!("join: applying the joined nodes' users failed: {e:#}"),
    }
}

fn stored_token(s: &Secret) -> StoredToken {
    let get = |k: &str| s.data.as_ref().and_then(|d| d.get(k)).map(|b| String::from_utf8_lossy(&b.0).to_string());
    StoredToken { secret: get("token-secret").unwrap_or_default(), expiration: get("expiration"), type_: s.type_.clone().unwrap_or_default() }
}

fn joined_of(s: &Secret) -> JoinedNodes {
    s.data.iter().flatten().map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).to_string())).collect()
}

fn joined_secret(joined: &JoinedNodes, resource_version: Option<String>) -> Secret {
    Secret {
        metadata: ObjectMeta { name: Some(join::JOINED_SECRET.into()), namespace: Some(join::TOKEN_NAMESPACE.into()), resource_version, ..Default::default() },
        type_: Some(join::JOINED_SECRET_TYPE.into()),
        data: Some(joined.iter().map(|(k, v)| (k.clone(), ByteString(v.as_bytes().to_vec()))).collect()),
        ..Default::default()
    }
}

/// Changes the stored joined list with `f` (compare-and-swap, again on a conflict); the
/// new list, or None when `f` left it as it was.
async fn modify_joined(client: &bus::Client, f: impl Fn(&mut JoinedNodes) -> Result<bool, JoinError>) -> Result<Option<JoinedNodes>, JoinError> {
    let internal = |e: bus::client::ClientError| JoinError::Internal(e.to_string());
    for _ in 0..20 {
        let stored = client.get::<Secret>(Some(join::TOKEN_NAMESPACE), join::JOINED_SECRET).await.map_err(internal)?;
        let mut joined = stored.as_ref().map(joined_of).unwrap_or_default();
        if !f(&mut joined)? {
            return Ok(None);
        }
        let written = match stored {
            Some(s) => client.update(&joined_secret(&joined, s.metadata.resource_version)).await.map(|_| ()),
            None => client.create(&joined_secret(&joined, None)).await.map(|_| ()),
        };
        match written {
            Ok(()) => return Ok(Some(joined)),
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(internal(e)),
        }
    }
    Err(JoinError::Internal("the joined nodes' list kept changing under this join; try again".into()))
}

fn valid_node_name(n: &str) -> Result<(), String> {
    let ok = !n.is_empty() && n.len() <= 253 && n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if ok { Ok(()) } else { Err("a node name is lower-case letters, digits, '-' and '.'".into()) }
}

async fn answer(bus: &bus::Bus, client: &bus::Client, reg: &Shared, ca: &Option<PathBuf>, req: JoinRequest) -> Result<JoinReply, JoinError> {
    let (id, _) = join::parse_token(&req.token)?;
    valid_node_name(&req.node).map_err(|why| JoinError::BadName(req.node.clone(), why))?;
    if nkeys::KeyPair::from_public_key(&req.nkey).is_err() || !req.nkey.starts_with('U') {
        return Err(JoinError::BadName(req.node.clone(), "the request carries no user nkey".into()));
    }
    let internal = |e: bus::client::ClientError| JoinError::Internal(e.to_string());
    let secret = client.get::<Secret>(Some(join::TOKEN_NAMESPACE), &join::secret_name(id)).await.map_err(internal)?;
    join::check(&req.token, secret.as_ref().map(stored_token).as_ref(), jiff::Timestamp::now())?;
    if reg.lock().map_err(|_| JoinError::Internal("the join registry is poisoned".into()))?.own_nodes.contains(&req.node) {
        return Err(JoinError::BadName(req.node.clone(), "flotilla up runs a node agent of this name itself".into()));
    }
    let node_exists = client.get::<Node>(None, &req.node).await.map_err(internal)?.is_some();
    if let Some(joined) = modify_joined(client, |j| join::admit(j, &req.node, &req.nkey, node_exists)).await? {
        // Here first, before the answer: the node connects here next.
        apply_and_tell(bus, reg, joined);
    }
    tracing::info!(node = %req.node, token = id, "join: node joined");
    let ca_pem = ca.as_ref().and_then(|p| std::fs::read_to_string(p).ok());
    Ok(JoinReply { inbox: Role::Node(req.node).inbox(), ca_pem })
}

/// Answers join requests (one server of a cluster answers each), keeps this server's
/// users in step with the stored joined list, answers leaf sites asking for it, and
/// revokes a joined node's identity when its Node is deleted.
pub async fn serve(bus: bus::Bus, reg: Shared, ca: Option<PathBuf>, stop: CancellationToken) -> Result<()> {
    use bus::informer::{watch_objects, InformerEvent, Scope};
    let client = bus::Client::new(bus.clone());
    let mut joins = bus.nats.queue_subscribe(subjects::JOIN, "flotilla-join".into()).await?;
    let mut asks = bus.nats.queue_subscribe(subjects::NATS_USERS, "flotilla-users".into()).await?;
    let mut nodes = watch_objects::<Node>(client.clone(), Default::default()).boxed();
    let mut secrets = watch_objects::<Secret>(client.clone(), Scope { namespace: Some(join::TOKEN_NAMESPACE.into()), ..Default::default() }).boxed();
    let is_list = |s: &Secret| s.metadata.name.as_deref() == Some(join::JOINED_SECRET);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            Some(msg) = joins.next() => {
                let Some(reply) = msg.reply.clone() else { continue };
                let result = match codec::decode::<JoinRequest>(&msg.payload) {
                    Ok(req) => answer(&bus, &client, &reg, &ca, req).await,
                    Err(e) => Err(JoinError::Internal(format!("undecodable join request: {e}"))),
                };
                if let Err(e) = &result {
                    tracing::warn!("join: refused: {e}");
                }
                if let Ok(bytes) = codec::encode(&result) {
                    let _ = bus.nats.publish(reply, bytes.into()).await;
                }
            }
            Some(msg) = asks.next() => {
                let Some(reply) = msg.reply.clone() else { continue };
                let joined = reg.lock().map(|r| r.joined().clone()).unwrap_or_default();
                if let Ok(bytes) = codec::encode(&joined) {
                    let _ = bus.nats.publish(reply, bytes.into()).await;
                }
            }
            Some(ev) = secrets.next() => {
                let joined = match ev {
                    InformerEvent::Listed(items, _) => items.iter().find(|s| is_list(s)).map(joined_of).unwrap_or_default(),
                    InformerEvent::Applied(s, _) if is_list(&s) => joined_of(&s),
                    InformerEvent::Deleted(s, _) if is_list(&s) => JoinedNodes::new(),
                    _ => continue,
                };
                apply_and_tell(&bus, &reg, joined);
            }
            Some(ev) = nodes.next() => {
                let InformerEvent::Deleted(n, _) = ev else { continue };
                let Some(name) = n.metadata.name else { continue };
                match modify_joined(&client, |j| Ok(j.remove(&name).is_some())).await {
                    Ok(Some(joined)) => {
                        tracing::info!(node = %name, "join: node deleted; its NATS identity is revoked");
                        apply_and_tell(&bus, &reg, joined);
                    }
                    Ok(None) => {}
                    Err(e) => tracing::error!(node = %name, "join: revoking the deleted node's identity failed: {e}"),
                }
            }
        }
    }
}

/// A leaf site's wrapper: admits the nodes the hub says joined, asking when it starts,
/// when told of a change, and every so often (a change told while the link was down).
pub async fn follow(bus: bus::Bus, reg: Shared, stop: CancellationToken) -> Result<()> {
    let mut changes = bus.nats.subscribe(subjects::NATS_USERS_CHANGED).await?;
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        let joined = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            Some(msg) = changes.next() => codec::decode::<JoinedNodes>(&msg.payload).ok(),
            _ = tick.tick() => match tokio::time::timeout(Duration::from_secs(5), bus.nats.request(subjects::NATS_USERS, Vec::new().into())).await {
                Ok(Ok(msg)) => codec::decode::<JoinedNodes>(&msg.payload).ok(),
                _ => None,
            },
        };
        let Some(joined) = joined else { continue };
        let r = reg.lock().map_err(|_| anyhow::anyhow!("the join registry is poisoned"))?.apply(joined);
        match r {
            Ok(true) => tracing::info!("leaf: the joined nodes' NATS users changed; server reloaded"),
            Ok(false) => {}
            Err(e) => tracing::error!("leaf: applying the joined nodes' users failed: {e:#}"),
        }
    }
}

/// Sets `cfg`'s users to `base` and the joined nodes this server admitted last (kept in
/// `data_dir`, so a restart admits them before it can reach anyone), and makes the task
/// that keeps them current: connected as `creds`, `keep` applies each new list.
fn admit_joined<F, Fut>(cfg: &mut natsd::ServerConfig, data_dir: &Path, base: natsd::Users, own: BTreeSet<String>, creds: Credentials, what: &'static str, keep: F) -> Result<natsd::Side>
where
    F: FnOnce(bus::Bus, Shared, CancellationToken) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send + 'static,
{
    std::fs::create_dir_all(data_dir)?;
    let cache = data_dir.join("joined-nodes.json");
    cfg.users = Some(users(&base, &own, &cached(&cache)));
    Ok(Box::new(move |reloader, url, stop| {
        Box::pin(async move {
            let reg = Arc::new(Mutex::new(Registry::new(base, own, reloader, cache)));
            let run = async {
                let bus = bus::Bus::connect_as(&url, Some(&creds)).await?;
                keep(bus, reg, stop).await
            };
            if let Err(e) = run.await {
                tracing::error!("{what}: keeping the joined nodes' users failed: {e:#}");
            }
        })
    }))
}

/// `flotilla nats`: its server's config, and with `--identities` the users it admits and
/// the join service beside it.
pub fn hub(a: &natsd::NatsArgs) -> Result<(natsd::ServerConfig, Option<natsd::Side>)> {
    let mut cfg = a.config()?;
    let Some(dir) = &a.identities else { return Ok((cfg, None)) };
    let ids = identities::Identities::load_cluster(dir)?;
    let creds = Credentials::load(&ids.path(&Role::Nats))?;
    let ca = a.ca.clone();
    let side = admit_joined(&mut cfg, &a.data_dir, ids.users()?, ids.own_nodes(), creds, "nats", move |bus, reg, stop| serve(bus, reg, ca, stop))?;
    Ok((cfg, Some(side)))
}

/// `flotilla leaf`: with `--credentials`, the link logs in as the leaf identity and the
/// site's server admits the joined nodes (and joining ones) only.
pub fn leaf(a: &natsd::LeafArgs) -> Result<(natsd::ServerConfig, Option<natsd::Side>)> {
    let mut cfg = a.config();
    let Some(path) = &a.credentials else { return Ok((cfg, None)) };
    let creds = Credentials::load(path)?;
    if let Some(r) = &mut cfg.leaf_remote {
        r.login = Some((identities::LEAF_USER.into(), identities::leaf_password(&creds)?));
    }
    let base = identities::leaf_users(&creds)?;
    let side = admit_joined(&mut cfg, &a.data_dir, base, BTreeSet::new(), creds, "leaf", follow)?;
    Ok((cfg, Some(side)))
}

/// How long `node --join` keeps asking when nobody answers.
const JOIN_PATIENCE: Duration = Duration::from_secs(60);

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
    let req: bytes::Bytes = codec::encode(&JoinRequest { token: token.to_string(), node: name.to_string(), nkey })?.into();
    // No one answering may be a site whose link to the hub is not up yet (or a hub whose
    // join service is starting): asked again for a while, before giving up.
    let deadline = tokio::time::Instant::now() + JOIN_PATIENCE;
    let msg = loop {
        let err = match tokio::time::timeout(Duration::from_secs(15), nats.request(subjects::JOIN, req.clone())).await {
            Ok(Ok(msg)) => break msg,
            Ok(Err(e)) => anyhow::Error::new(e).context(format!("asking {url} to join (is it a flotilla cluster with NATS authorization?)")),
            Err(_) => anyhow::anyhow!("{url} did not answer the join request within 15 s"),
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(err);
        }
        tracing::warn!("join: {err:#}; asking again");
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
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

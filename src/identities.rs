//! The NATS identities `flotilla up` keeps in its data dir: one nkey per role and per
//! node agent, each in `<data-dir>/nats/<name>.creds` (0600), made on first start and
//! reused after. From them comes the nats-server config's user list.

use anyhow::{Context, Result};
use bus::creds::Credentials;
use schema::natsauth::{permissions, Role};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub struct Identities {
    dir: PathBuf,
    known: BTreeMap<Role, Credentials>,
}

/// The bootstrap identity is public (user and password are in the docs): it may only ask
/// to join, and a join answer carries nothing secret.
pub const BOOTSTRAP_USER: &str = "bootstrap";
pub const BOOTSTRAP_PASSWORD: &str = "bootstrap";
/// The user a leaf site's link logs in to the hub as (nats-server's leaf remotes take a
/// user and password, or JWT credentials; flotilla's identities are plain nkeys).
pub const LEAF_USER: &str = "leaf";

pub fn file(dir: &Path, role: &Role) -> PathBuf {
    dir.join(format!("{}.creds", role.name()))
}

/// A fresh identity for `role` (not stored).
pub fn mint(role: &Role) -> Result<Credentials> {
    let kp = nkeys::KeyPair::new_user();
    Ok(Credentials { name: role.name(), inbox: role.inbox(), seed: kp.seed().context("encoding a new nkey seed")? })
}

pub fn public_key(c: &Credentials) -> Result<String> {
    Ok(nkeys::KeyPair::from_seed(&c.seed).with_context(|| format!("the seed of {} is not an nkey", c.name))?.public_key())
}

/// The leaf link's password: the leaf identity's signature of a fixed text (ed25519
/// signs deterministically), so the hub, holding the same identity file, knows it and
/// no second secret has to be handed to the site.
pub fn leaf_password(c: &Credentials) -> Result<String> {
    use base64::Engine;
    let kp = nkeys::KeyPair::from_seed(&c.seed).with_context(|| format!("the seed of {} is not an nkey", c.name))?;
    let sig = kp.sign(b"flotilla leaf link").context("signing with the leaf identity")?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig))
}

fn bootstrap_user() -> (crate::natsd::Who, schema::natsauth::Permissions) {
    (crate::natsd::Who::Password(BOOTSTRAP_USER.into(), BOOTSTRAP_PASSWORD.into()), permissions(&Role::Bootstrap))
}

impl Identities {
    pub fn new(dir: &Path) -> Identities {
        Identities { dir: dir.to_path_buf(), known: BTreeMap::new() }
    }

    /// `role`'s identity: the one on disk, or a new one stored now.
    pub fn ensure(&mut self, role: &Role) -> Result<Credentials> {
        if let Some(c) = self.known.get(role) {
            return Ok(c.clone());
        }
        let path = file(&self.dir, role);
        let c = match Credentials::load(&path) {
            Ok(c) if c.inbox == role.inbox() => c,
            _ => {
                let c = mint(role)?;
                c.store(&path)?;
                c
            }
        };
        self.known.insert(role.clone(), c.clone());
        Ok(c)
    }

    /// Every cluster role whose identity file is in the dir (a hub server's wrapper
    /// admits those its operator copied there); the wrapper's own must be among them.
    pub fn load_cluster(dir: &Path) -> Result<Identities> {
        let mut ids = Identities::new(dir);
        for role in Role::CLUSTER {
            let path = file(dir, &role);
            if path.exists() {
                ids.known.insert(role.clone(), Credentials::load(&path)?);
            }
        }
        if !ids.known.contains_key(&Role::Nats) {
            anyhow::bail!("{} is missing: make the cluster's identities with `flotilla identities create --dir {}`", file(dir, &Role::Nats).display(), dir.display());
        }
        Ok(ids)
    }

    pub fn path(&self, role: &Role) -> PathBuf {
        file(&self.dir, role)
    }

    /// The node agents this server runs identities for itself (not joined).
    pub fn own_nodes(&self) -> std::collections::BTreeSet<String> {
        self.known.keys().filter_map(|r| if let Role::Node(n) = r { Some(n.clone()) } else { None }).collect()
    }

    /// Every identity as a nats-server user, the bootstrap one and (when the leaf
    /// identity is here) the leaf sites' link user included.
    pub fn users(&self) -> Result<crate::natsd::Users> {
        use crate::natsd::Who;
        let mut out = self.known.iter().map(|(r, c)| Ok((Who::Nkey(public_key(c)?), permissions(r)))).collect::<Result<Vec<_>>>()?;
        if let Some(leaf) = self.known.get(&Role::Leaf) {
            out.push((Who::Password(LEAF_USER.into(), leaf_password(leaf)?), permissions(&Role::Leaf)));
        }
        out.push(bootstrap_user());
        Ok(out)
    }
}

/// A leaf site's own users: its wrapper (as the leaf identity) and joining nodes.
pub fn leaf_users(leaf: &Credentials) -> Result<crate::natsd::Users> {
    Ok(vec![(crate::natsd::Who::Nkey(public_key(leaf)?), permissions(&Role::Leaf)), bootstrap_user()])
}

#[derive(clap::Args)]
pub struct IdentitiesArgs {
    #[command(subcommand)]
    cmd: IdentitiesCmd,
}

#[derive(clap::Subcommand)]
enum IdentitiesCmd {
    /// Makes every cluster role's NATS identity (state, gateway, controllers, scheduler,
    /// admin, nats, dashboard, leaf) in a directory, keeping those already there. Copy
    /// it to the machines that run them; a site needs only leaf.creds.
    Create {
        #[arg(long, default_value = "/etc/flotilla/nats")]
        dir: PathBuf,
    },
}

pub fn run(a: IdentitiesArgs) -> Result<()> {
    match a.cmd {
        IdentitiesCmd::Create { dir } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let mut ids = Identities::new(&dir);
            for role in Role::CLUSTER {
                ids.ensure(&role)?;
                println!("{}", ids.path(&role).display());
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_kept_and_reused() {
        let dir = std::env::temp_dir().join(format!("flotilla-ids-{}", std::process::id()));
        let mut ids = Identities::new(&dir);
        let a = ids.ensure(&Role::Node("n1".into())).unwrap();
        assert!(public_key(&a).unwrap().starts_with('U'));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(ids.path(&Role::Node("n1".into()))).unwrap().permissions().mode() & 0o777, 0o600);
        let again = Identities::new(&dir).ensure(&Role::Node("n1".into())).unwrap();
        assert_eq!(a, again);
        assert_eq!(ids.users().unwrap().len(), 2, "n1 and bootstrap");
        assert_eq!(ids.own_nodes().into_iter().collect::<Vec<_>>(), vec!["n1".to_string()]);
        assert!(Identities::load_cluster(&dir).is_err(), "no nats identity there");
        ids.ensure(&Role::Nats).unwrap();
        let leaf = ids.ensure(&Role::Leaf).unwrap();
        let loaded = Identities::load_cluster(&dir).unwrap();
        let users = loaded.users().unwrap();
        let pw = leaf_password(&leaf).unwrap();
        assert_eq!(pw, leaf_password(&leaf).unwrap(), "the same every time");
        assert!(users.iter().any(|(w, _)| *w == crate::natsd::Who::Password(LEAF_USER.into(), pw.clone())));
        assert_eq!(users.len(), 4, "nats, leaf (nkey and link), bootstrap; a node file is no cluster role");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

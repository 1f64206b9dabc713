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
    /// Nodes that joined with a token: only their public key is here (the node made the
    /// key and keeps the seed), in `joined-<name>.pub`.
    joined: BTreeMap<String, String>,
}

/// The bootstrap identity is public (user and password are in the docs): it may only ask
/// to join, and a join answer carries nothing secret.
pub const BOOTSTRAP_USER: &str = "bootstrap";
pub const BOOTSTRAP_PASSWORD: &str = "bootstrap";

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

impl Identities {
    pub fn new(dir: &Path) -> Identities {
        let mut joined = BTreeMap::new();
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with("joined-") && name.ends_with(".pub") {
                if let Some((node, key)) = std::fs::read_to_string(e.path()).ok().as_deref().and_then(|t| t.trim().split_once('\n')) {
                    joined.insert(node.trim().to_string(), key.trim().to_string());
                }
            }
        }
        Identities { dir: dir.to_path_buf(), known: BTreeMap::new(), joined }
    }

    fn joined_file(&self, node: &str) -> PathBuf {
        self.dir.join(format!("joined-{}.pub", Role::Node(node.into()).name()))
    }

    /// Accepts `nkey` as node `node`'s identity (replacing the key it joined with before).
    pub fn join(&mut self, node: &str, nkey: &str) -> Result<()> {
        std::fs::write(self.joined_file(node), format!("{node}\n{nkey}\n")).context("keeping a joined node's key")?;
        self.joined.insert(node.to_string(), nkey.to_string());
        Ok(())
    }

    /// Forgets a joined node's key: its connections are refused from the next reload.
    pub fn revoke_joined(&mut self, node: &str) -> bool {
        let _ = std::fs::remove_file(self.joined_file(node));
        self.joined.remove(node).is_some()
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

    pub fn dir(&self) -> PathBuf {
        self.dir.clone()
    }

    pub fn path(&self, role: &Role) -> PathBuf {
        file(&self.dir, role)
    }

    /// Every identity as a nats-server user, the bootstrap one included.
    pub fn users(&self) -> Result<crate::natsd::Users> {
        use crate::natsd::Who;
        let mut out = self.known.iter().map(|(r, c)| Ok((Who::Nkey(public_key(c)?), permissions(r)))).collect::<Result<Vec<_>>>()?;
        for (node, key) in &self.joined {
            // An identity `up` made itself for this name wins (it runs that agent).
            if !self.known.contains_key(&Role::Node(node.clone())) {
                out.push((Who::Nkey(key.clone()), permissions(&Role::Node(node.clone()))));
            }
        }
        out.push((Who::Password(BOOTSTRAP_USER.into(), BOOTSTRAP_PASSWORD.into()), permissions(&Role::Bootstrap)));
        Ok(out)
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
        ids.join("far", "UFAR").unwrap();
        assert_eq!(Identities::new(&dir).joined.get("far").map(String::as_str), Some("UFAR"));
        assert!(ids.users().unwrap().iter().any(|(w, _)| *w == crate::natsd::Who::Nkey("UFAR".into())));
        assert!(ids.revoke_joined("far"));
        assert_eq!(ids.users().unwrap().len(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

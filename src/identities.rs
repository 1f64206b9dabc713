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

    /// Forgets `role` and removes its file: its key is no longer in the user list.
    pub fn revoke(&mut self, role: &Role) -> bool {
        let _ = std::fs::remove_file(file(&self.dir, role));
        self.known.remove(role).is_some()
    }

    pub fn path(&self, role: &Role) -> PathBuf {
        file(&self.dir, role)
    }

    /// Every identity as a nats-server user.
    pub fn users(&self) -> Result<crate::natsd::Users> {
        self.known.iter().map(|(r, c)| Ok((public_key(c)?, permissions(r)))).collect()
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
        assert_eq!(ids.users().unwrap().len(), 1);
        assert!(ids.revoke(&Role::Node("n1".into())));
        assert!(ids.users().unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! A component's NATS identity on disk: its nkey seed and the inbox prefix its
//! permissions allow. A small text file, mode 0600:
//!
//! ```text
//! # flotilla NATS identity: node-n1
//! inbox: _INBOX_N.n1
//! seed: SU…
//! ```

use std::path::Path;

#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Which identity this is (for messages).
    pub name: String,
    pub inbox: String,
    pub seed: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the seed: it is the secret.
        f.debug_struct("Credentials").field("name", &self.name).field("inbox", &self.inbox).finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CredsError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: not a flotilla NATS identity file ({why})")]
    Format { path: String, why: &'static str },
}

impl Credentials {
    pub fn parse(text: &str) -> Option<Credentials> {
        let mut c = Credentials { name: String::new(), inbox: String::new(), seed: String::new() };
        for line in text.lines() {
            let line = line.trim();
            if let Some(n) = line.strip_prefix("# flotilla NATS identity:") {
                c.name = n.trim().to_string();
            } else if let Some(v) = line.strip_prefix("inbox:") {
                c.inbox = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("seed:") {
                c.seed = v.trim().to_string();
            }
        }
        (!c.seed.is_empty() && !c.inbox.is_empty()).then_some(c)
    }

    pub fn render(&self) -> String {
        format!("# flotilla NATS identity: {}\ninbox: {}\nseed: {}\n", self.name, self.inbox, self.seed)
    }

    pub fn load(path: &Path) -> Result<Credentials, CredsError> {
        let text = std::fs::read_to_string(path).map_err(|source| CredsError::Io { path: path.display().to_string(), source })?;
        Credentials::parse(&text).ok_or(CredsError::Format { path: path.display().to_string(), why: "no seed or inbox line" })
    }

    /// Writes the file readable by its owner only (made so before the seed is in it).
    pub fn store(&self, path: &Path) -> Result<(), CredsError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let io = |source| CredsError::Io { path: path.display().to_string(), source };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(io)?;
        f.write_all(self.render().as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_hides_the_seed() {
        let c = Credentials { name: "node-n1".into(), inbox: "_INBOX_N.n1".into(), seed: "SUSECRET".into() };
        assert_eq!(Credentials::parse(&c.render()), Some(c.clone()));
        assert!(!format!("{c:?}").contains("SUSECRET"));
        assert_eq!(Credentials::parse("inbox: x\n"), None);
    }
}

//! Backups: a consistent copy of the state machine taken from a running group, and the
//! restore that makes a new single-member group from one. A backup holds every key with
//! its revision and the store's revision counter; the history of events before it is not
//! kept (a watch from before the backup gets "expired" and re-lists, as Kubernetes
//! clients do after an etcd restore).

use super::store::{self, SnapshotData};
use anyhow::{bail, Context as _};
use schema::codec;
use schema::store::Revision;
use serde::{Deserialize, Serialize};
use std::path::Path;

const MAGIC: &str = "flotilla-state-backup";
const FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
struct BackupFile {
    magic: String,
    format: u32,
    data: SnapshotData,
}

/// The state machine now, as backup bytes, and the revision it is at.
pub fn encode(db: &store::Db) -> anyhow::Result<(Revision, Vec<u8>)> {
    let (mut data, _, _) = store::snapshot_data(db)?;
    // A restored group starts a new history at this revision: neither the events nor the
    // remembered request ids of this group mean anything there.
    data.events.clear();
    data.dedup.clear();
    data.history_base = data.last_rev;
    let rev = data.last_rev;
    Ok((rev, codec::encode(&BackupFile { magic: MAGIC.into(), format: FORMAT, data })?))
}

/// What a backup file holds, checked.
fn decode(bytes: &[u8]) -> anyhow::Result<SnapshotData> {
    let f: BackupFile = codec::decode(bytes).context("not a flotilla state backup")?;
    if f.magic != MAGIC {
        bail!("not a flotilla state backup");
    }
    if f.format != FORMAT {
        bail!("backup format {} is not supported (this build reads format {FORMAT})", f.format);
    }
    Ok(f.data)
}

/// Makes `state_dir` hold a new, not yet initialized member whose state machine is the
/// backup; its first start initializes a single-member group. Refuses a directory that
/// already holds a store, so a restore never overwrites a cluster. Returns the revision
/// and the number of keys restored.
pub fn restore(backup: &[u8], state_dir: &Path) -> anyhow::Result<(Revision, usize)> {
    let data = decode(backup)?;
    let path = state_dir.join("state.redb");
    if path.exists() {
        bail!("{} already exists: restore into a new data directory", path.display());
    }
    let db = store::open(&path)?;
    let rev = store::install_data(&db, &data, None)?;
    Ok((rev, data.kv.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_not_a_backup() {
        assert!(decode(b"hello").is_err());
        let wrong = codec::encode(&BackupFile {
            magic: "other".into(),
            format: FORMAT,
            data: SnapshotData { last_rev: 0, kv: vec![], events: vec![], dedup: vec![], history_base: 0 },
        })
        .expect("encode");
        assert!(decode(&wrong).is_err());
    }
}

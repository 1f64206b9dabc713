//! Whether an object matched a selector watch just before an event. The real server
//! decides ADDED/MODIFIED/DELETED from the object's state before and after each event;
//! a watch from an old resourceVersion cannot take "before" from a list made now.

use super::objects::decode_stored;
use super::selectors::{FieldSelector, LabelSelector};
use super::status::ApiError;
use schema::registry::ResourceInfo;
use schema::store::{Event, EventType, Stored};
use serde_json::Value;

/// Whether the object of `ev` (its value decoded as `obj`) matched the selectors just
/// before `ev`, for an object this watch has not seen an event of yet. A create had no
/// state before; a delete carries the state it removed; a modification names the
/// revision the object was at (`prev`), whose event in the stream holds that state: read
/// it, rather than guess from the current state, which may be many changes later. When
/// the stream no longer holds it the watch cannot be told correctly: 410, so the client
/// lists again (as it does when etcd compacted the revision it watches from).
pub async fn matched_before(bus: &bus::Bus, res: &ResourceInfo, ev: &Event, obj: &Value, ls: &LabelSelector, fs: &FieldSelector) -> Result<bool, ApiError> {
    let matches = |v: &Value| ls.matches(v) && fs.matches(v);
    match ev.typ {
        EventType::Added => Ok(false),
        EventType::Deleted => Ok(matches(obj)),
        EventType::Modified => {
            let gone = || ApiError::expired(format!("too old resource version: the state of {} before revision {} is no longer retained", ev.key, ev.rev));
            let Some(prev) = ev.prev else { return Err(gone()) };
            let before = match bus.event_at(prev).await {
                Ok(Some(p)) if p.key == ev.key => p,
                Ok(_) => return Err(gone()),
                Err(e) => return Err(ApiError::internal(format!("reading revision {prev} for the watch: {e}"))),
            };
            let v = decode_stored(res, &Stored { key: before.key, rev: before.rev, value: before.value })
                .map_err(|e| ApiError::internal(format!("the event at revision {prev} cannot be decoded: {e}")))?;
            Ok(matches(&v))
        }
    }
}

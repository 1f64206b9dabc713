//! The event recorder every component shares (controllers, scheduler, node agents): what
//! `kubectl describe` and `kubectl get events` show. Best effort: a failed Event write is
//! logged, never retried at the expense of the work it describes.

use crate::Client;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

pub fn reference<K: crate::client::Object>(obj: &K) -> ObjectReference {
    let m = obj.metadata();
    ObjectReference {
        api_version: Some(K::API_VERSION.into()),
        kind: Some(K::KIND.into()),
        name: m.name.clone(),
        namespace: m.namespace.clone(),
        uid: m.uid.clone(),
        resource_version: m.resource_version.clone(),
        ..Default::default()
    }
}

pub fn event(involved: ObjectReference, type_: &str, reason: &str, message: &str, component: &str) -> Event {
    let now = schema::object::now();
    let suffix = format!("{:016x}", rand::random::<u64>());
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{}.{suffix}", involved.name.clone().unwrap_or_default())),
            namespace: Some(involved.namespace.clone().unwrap_or_else(|| "default".into())),
            ..Default::default()
        },
        involved_object: involved,
        type_: Some(type_.into()),
        reason: Some(reason.into()),
        message: Some(message.into()),
        count: Some(1),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        source: Some(EventSource { component: Some(component.into()), host: None }),
        reporting_component: Some(component.into()),
        reporting_instance: Some(component.into()),
        ..Default::default()
    }
}

/// What makes two events the same event, as the real recorder's correlator sees it.
type Identity = (String, String, String, String, String);

fn identity(ev: &Event) -> Identity {
    let o = &ev.involved_object;
    (
        o.namespace.clone().unwrap_or_default(),
        o.uid.clone().or_else(|| o.name.clone()).unwrap_or_default(),
        ev.reason.clone().unwrap_or_default(),
        ev.message.clone().unwrap_or_default(),
        ev.source.as_ref().and_then(|s| s.component.clone()).unwrap_or_default(),
    )
}

/// Events recorded lately, by identity: a repeat bumps `count` and `lastTimestamp` of
/// the stored event instead of writing a new one (a crash-looping container would
/// otherwise add events without end). Bounded; the oldest are forgotten first.
struct Recent {
    names: std::collections::HashMap<Identity, String>,
    order: std::collections::VecDeque<Identity>,
}

const RECENT: usize = 4096;

static SEEN: std::sync::Mutex<Option<Recent>> = std::sync::Mutex::new(None);

/// The stored event's name if this one repeats it; otherwise remembers it.
fn repeat_of(ev: &Event) -> Option<String> {
    let id = identity(ev);
    let mut guard = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    let recent = guard.get_or_insert_with(|| Recent { names: Default::default(), order: Default::default() });
    if let Some(name) = recent.names.get(&id) {
        return Some(name.clone());
    }
    if recent.order.len() >= RECENT {
        if let Some(old) = recent.order.pop_front() {
            recent.names.remove(&old);
        }
    }
    recent.names.insert(id.clone(), ev.metadata.name.clone().unwrap_or_default());
    recent.order.push_back(id);
    None
}

fn forget(ev: &Event) {
    if let Some(r) = SEEN.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
        r.names.remove(&identity(ev));
    }
}

/// Writes the event in the background; a repeat of a recent one is counted on it.
pub fn record(client: &Client, ev: Event) {
    let client = client.clone();
    let earlier = repeat_of(&ev);
    tokio::spawn(async move {
        if let Some(name) = earlier {
            let ns = ev.metadata.namespace.clone();
            match client.get::<Event>(ns.as_deref(), &name).await {
                Ok(Some(mut stored)) => {
                    stored.count = Some(stored.count.unwrap_or(1) + 1);
                    stored.last_timestamp = ev.last_timestamp.clone();
                    if let Err(e) = client.update(&stored).await {
                        tracing::debug!(reason = ev.reason.as_deref().unwrap_or(""), error = %e, "counting a repeated event failed");
                    }
                    return;
                }
                // Gone (its namespace emptied, or collected): record it anew.
                _ => forget(&ev),
            }
            let _ = repeat_of(&ev);
        }
        if let Err(e) = client.create(&ev).await {
            tracing::debug!(reason = ev.reason.as_deref().unwrap_or(""), error = %e, "recording an event failed");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_its_object_and_source() {
        let involved = ObjectReference { kind: Some("ReplicaSet".into()), name: Some("web-abc".into()), namespace: Some("demo".into()), ..Default::default() };
        let e = event(involved, "Normal", "SuccessfulCreate", "Created pod: web-abc-x", "replicaset-controller");
        let name = e.metadata.name.clone().unwrap_or_default();
        let (object, suffix) = name.rsplit_once('.').unwrap_or_default();
        assert_eq!((object, suffix.len()), ("web-abc", 16));
        assert_eq!(e.metadata.namespace.as_deref(), Some("demo"));
        assert_eq!((e.count, e.source.and_then(|s| s.component)), (Some(1), Some("replicaset-controller".into())));
        assert_eq!(e.first_timestamp, e.last_timestamp);
    }

    #[test]
    fn a_repeat_is_recognised_until_forgotten() {
        let involved = ObjectReference { kind: Some("Pod".into()), name: Some("p".into()), namespace: Some("demo".into()), uid: Some("u-repeat".into()), ..Default::default() };
        let first = event(involved.clone(), "Warning", "BackOff", "Back-off restarting failed container c", "kubelet");
        let again = event(involved.clone(), "Warning", "BackOff", "Back-off restarting failed container c", "kubelet");
        let other = event(involved, "Normal", "Started", "Started container c", "kubelet");
        assert_eq!(repeat_of(&first), None);
        assert_eq!(repeat_of(&again), first.metadata.name.clone());
        assert_eq!(repeat_of(&other), None);
        forget(&again);
        assert_eq!(repeat_of(&again), None);
    }
}

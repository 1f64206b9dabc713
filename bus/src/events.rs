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

/// Writes the event in the background.
pub fn record(client: &Client, ev: Event) {
    let client = client.clone();
    tokio::spawn(async move {
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
}

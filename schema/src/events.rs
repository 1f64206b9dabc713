//! events.k8s.io/v1 Event and core/v1 Event are two versions of one stored object, as on
//! the real server: the store keeps the core form, and these conversions give the
//! events.k8s.io view to clients that ask for it (and take their writes back).

use serde_json::{Map, Value};

/// (core/v1 field, events.k8s.io/v1 field) for every field whose name differs.
const RENAMED: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("reportingComponent", "reportingController"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
];

fn rename(v: &Value, api_version: &str, to_events: bool) -> Value {
    let Some(o) = v.as_object() else { return v.clone() };
    let mut out = Map::new();
    for (k, x) in o {
        let renamed = RENAMED.iter().find(|(core, ev)| if to_events { core == k } else { ev == k }).map(|(core, ev)| if to_events { *ev } else { *core });
        out.insert(renamed.unwrap_or(k).to_string(), x.clone());
    }
    out.insert("apiVersion".into(), Value::String(api_version.into()));
    out.insert("kind".into(), Value::String("Event".into()));
    Value::Object(out)
}

/// The events.k8s.io/v1 view of a stored core/v1 Event.
pub fn to_events_v1(core: &Value) -> Value {
    rename(core, "events.k8s.io/v1", true)
}

/// The core/v1 form to store for an events.k8s.io/v1 Event.
pub fn to_core(ev: &Value) -> Value {
    rename(ev, "v1", false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip() {
        let core = json!({"apiVersion":"v1","kind":"Event","metadata":{"name":"e","namespace":"d"},
            "involvedObject":{"kind":"Pod","name":"p"},"message":"hi","reason":"Started","count":2,
            "source":{"component":"kubelet"},"type":"Normal","reportingComponent":"kubelet"});
        let ev = to_events_v1(&core);
        assert_eq!(ev["apiVersion"], "events.k8s.io/v1");
        assert_eq!(ev["regarding"]["name"], "p");
        assert_eq!(ev["note"], "hi");
        assert_eq!(ev["deprecatedCount"], 2);
        assert_eq!(ev["reportingController"], "kubelet");
        assert!(ev.get("message").is_none());
        assert_eq!(to_core(&ev), core);
    }
}

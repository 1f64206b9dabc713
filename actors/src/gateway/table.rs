//! Server-side printing: the `meta.k8s.io/v1` Table that `kubectl get` asks for, built
//! from the columns and cells the registry's printers give (schema::printers), with rows
//! carrying PartialObjectMetadata so that `-A` and `--show-labels` work.

use schema::printers::cells;
use schema::registry::ResourceInfo;
use serde_json::{json, Value};

/// Does the Accept header ask for a Table?
pub fn wants_table(accept: &str) -> bool {
    accept.split(',').any(|a| a.contains("as=Table"))
}

pub fn row(res: &ResourceInfo, obj: &Value, now: i64) -> Value {
    let meta = obj.get("metadata").cloned().unwrap_or_else(|| json!({}));
    json!({"cells": cells(res, obj, now),
           "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta}})
}

/// A Table of `objs`. `with_columns` is false for the second and later watch events.
pub fn table(res: &ResourceInfo, objs: &[Value], meta: Value, with_columns: bool) -> Value {
    let now = jiff::Timestamp::now().as_second();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta,
           "columnDefinitions": if with_columns { Value::Array(schema::printers::columns(res)) } else { Value::Null },
           "rows": objs.iter().map(|o| row(res, o, now)).collect::<Vec<_>>()})
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::registry::by_plural;

    #[test]
    fn table_shape() {
        let ns = by_plural("", "v1", "namespaces").unwrap();
        let obj = json!({"metadata":{"name":"demo","uid":"u"},"status":{"phase":"Active"}});
        let t = table(ns, &[obj], json!({"resourceVersion":"5"}), true);
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["columnDefinitions"][0]["format"], "name");
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(t["rows"][0]["object"]["metadata"]["uid"], "u");
        assert_eq!(t["rows"][0]["cells"][1], "Active");
        let t = table(ns, &[], json!({}), false);
        assert!(t["columnDefinitions"].is_null());
        assert!(wants_table("application/json;as=Table;v=v1;g=meta.k8s.io,application/json"));
        assert!(!wants_table("application/json"));
    }
}

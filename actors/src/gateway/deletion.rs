//! DELETE of one object and of a collection, as the real server does them: preconditions,
//! grace periods for pods on a node, namespaces handed to their controller, finalizers
//! (an object that has any stays, marked with a deletionTimestamp, until they are gone)
//! and the three propagation policies — Background deletes now and leaves dependents to
//! the garbage collector, Orphan and Foreground add the finalizer it works through.

use super::objects::{decode_body, list_objects, read_existing, selectors, update_op, write, CAS_RETRIES};
use super::status::{self, ApiError};
use super::{json_response, AppState, Req};
use axum::http::StatusCode;
use axum::response::Response;
use schema::registry::ResourceInfo;
use schema::store::{Revision, WriteOp};
use schema::{keys, object};
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    Orphan,
    Background,
    Foreground,
}

impl Propagation {
    /// The finalizer this policy puts on the object being deleted, if any.
    fn finalizer(self) -> Option<&'static str> {
        match self {
            Propagation::Orphan => Some(object::ORPHAN_FINALIZER),
            Propagation::Foreground => Some(object::FOREGROUND_FINALIZER),
            Propagation::Background => None,
        }
    }
}

/// DeleteOptions from the body and the query string (kubectl sends a body; other clients
/// use the query).
#[derive(Debug, Clone, PartialEq)]
pub struct DeleteOpts {
    pub dry_run: bool,
    pub grace: Option<i64>,
    pub propagation: Propagation,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

fn invalid_options(msg: String) -> ApiError {
    ApiError::new(422, "Invalid", format!("DeleteOptions \"\" is invalid: {msg}"))
}

/// Reads DeleteOptions the way the real server validates them.
pub fn delete_opts(body: &Value, query: &dyn Fn(&str) -> Option<String>) -> Result<DeleteOpts, ApiError> {
    let dry_run = body.get("dryRun").and_then(Value::as_array).is_some_and(|a| a.iter().any(|x| x == "All")) || query("dryRun").is_some_and(|d| d == "All");
    let grace = match body.get("gracePeriodSeconds").and_then(Value::as_i64) {
        Some(g) => Some(g),
        None => match query("gracePeriodSeconds") {
            Some(g) => Some(g.parse().map_err(|_| ApiError::bad_request(format!("invalid gracePeriodSeconds {g:?}")))?),
            None => None,
        },
    };
    if grace.is_some_and(|g| g < 0) {
        return Err(invalid_options(format!("gracePeriodSeconds: Invalid value: {}: must be greater than or equal to 0", grace.unwrap_or(0))));
    }
    let policy = body.get("propagationPolicy").and_then(Value::as_str).map(str::to_string).or_else(|| query("propagationPolicy"));
    let orphan = match body.get("orphanDependents").and_then(Value::as_bool) {
        Some(b) => Some(b),
        None => query("orphanDependents").map(|s| s == "true"),
    };
    let propagation = match (policy.as_deref(), orphan) {
        (Some(_), Some(_)) => return Err(invalid_options("propagationPolicy: Invalid value: \"\": orphanDependents and deletionPropagation cannot be both set".into())),
        (Some("Orphan"), None) | (None, Some(true)) => Propagation::Orphan,
        (Some("Foreground"), None) => Propagation::Foreground,
        (Some("Background"), None) | (None, Some(false)) | (None, None) => Propagation::Background,
        (Some(other), None) => {
            return Err(invalid_options(format!("propagationPolicy: Unsupported value: \"{other}\": supported values: \"Foreground\", \"Background\", \"Orphan\"")))
        }
    };
    Ok(DeleteOpts {
        dry_run,
        grace,
        propagation,
        uid: body.pointer("/preconditions/uid").and_then(Value::as_str).map(str::to_string),
        resource_version: body.pointer("/preconditions/resourceVersion").and_then(Value::as_str).map(str::to_string),
    })
}

fn opts_of(req: &Req) -> Result<DeleteOpts, ApiError> {
    let body = if req.body.iter().all(u8::is_ascii_whitespace) { json!({}) } else { decode_body(req)? };
    delete_opts(&body, &|k| req.q(k).map(str::to_string))
}

fn precondition_failed(res: &ResourceInfo, name: &str, what: &str, want: &str, have: &str) -> ApiError {
    ApiError::conflict_msg(res, name, &format!("Precondition failed: {what} in precondition: {want}, {what} in object meta: {have}"))
}

/// What deleting `cur` turns it into when it cannot go at once: the object marked for
/// deletion with the finalizers it must wait for, or None when it can be removed now.
pub fn mark_for_deletion(cur: &Value, propagation: Propagation, now: &str) -> Option<Value> {
    let mut fins: Vec<String> = object::finalizers(cur).into_iter().map(str::to_string).collect();
    if let Some(f) = propagation.finalizer() {
        // One policy at a time: asking again with another replaces the earlier one.
        fins.retain(|x| x != object::ORPHAN_FINALIZER && x != object::FOREGROUND_FINALIZER);
        fins.push(f.to_string());
    }
    if fins.is_empty() {
        return None;
    }
    let mut v = cur.clone();
    if !object::is_deleting(cur) {
        object::set_meta(&mut v, "deletionTimestamp", json!(now));
        object::set_meta(&mut v, "deletionGracePeriodSeconds", json!(0));
    }
    object::set_meta(&mut v, "finalizers", json!(fins));
    Some(v)
}

/// Deletes one object; answers the object when it stays for a while (grace period,
/// finalizers, a terminating namespace) and a Success Status when it is gone.
pub async fn delete_one(st: &AppState, res: &ResourceInfo, ns: Option<&str>, name: &str, opts: &DeleteOpts) -> Result<Value, ApiError> {
    for _ in 0..CAS_RETRIES {
        let (cur, cur_rev) = read_existing(st, res, ns, name).await?;
        let uid = cur.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or("").to_string();
        if let Some(want) = &opts.uid {
            if *want != uid {
                return Err(precondition_failed(res, name, "UID", want, &uid));
            }
        }
        if let Some(want) = &opts.resource_version {
            if *want != cur_rev.to_string() {
                return Err(precondition_failed(res, name, "ResourceVersion", want, &cur_rev.to_string()));
            }
        }
        let next = if res.kind == "Pod" && res.group.is_empty() {
            pod_deletion(&cur, opts)
        } else if res.kind == "Namespace" && res.group.is_empty() {
            // The namespace controller deletes what is inside, then the namespace itself.
            if object::is_deleting(&cur) {
                return Ok(cur);
            }
            let mut v = cur.clone();
            object::set_meta(&mut v, "deletionTimestamp", json!(object::now_string()));
            v["status"]["phase"] = json!("Terminating");
            Some(v)
        } else {
            mark_for_deletion(&cur, opts.propagation, &object::now_string())
        };
        let outcome = match next {
            Some(v) if v == cur => return Ok(cur),
            Some(v) if opts.dry_run => return Ok(v),
            Some(v) => write(st, res, name, &update_op(res, &v, Some(cur_rev))?).await,
            None if opts.dry_run => return Ok(status::success(res, name, Some(&uid), None)),
            None => remove(st, res, ns, name, cur_rev).await.map(|_| status::success(res, name, Some(&uid), None)),
        };
        match outcome {
            Err(e) if e.reason == "Conflict" => continue,
            other => return other,
        }
    }
    Err(ApiError::conflict(res, name))
}

/// A pod bound to a node gets its grace period: the node agent stops the containers and
/// then deletes the object. Unbound or finished pods, and a zero grace period, go now.
fn pod_deletion(cur: &Value, opts: &DeleteOpts) -> Option<Value> {
    let grace = opts.grace.or_else(|| cur.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64)).unwrap_or(30);
    let phase = cur.pointer("/status/phase").and_then(Value::as_str).unwrap_or("");
    let graceful = object::node_name(cur).is_some() && grace > 0 && !matches!(phase, "Succeeded" | "Failed");
    if !graceful {
        return mark_for_deletion(cur, opts.propagation, &object::now_string());
    }
    if object::is_deleting(cur) {
        return Some(cur.clone());
    }
    let mut v = cur.clone();
    object::set_meta(&mut v, "deletionTimestamp", json!(object::deletion_deadline(grace)));
    object::set_meta(&mut v, "deletionGracePeriodSeconds", json!(grace));
    Some(v)
}

async fn remove(st: &AppState, res: &ResourceInfo, ns: Option<&str>, name: &str, rev: Revision) -> Result<(), ApiError> {
    let key = keys::object(res.plural, if res.namespaced { ns } else { None }, name);
    st.bus.write(&WriteOp::Delete { key, expected_rev: Some(rev) }).await.map(drop).map_err(|e| ApiError::store(res, name, e))
}

pub async fn delete(st: &AppState, res: &ResourceInfo, ns: Option<&str>, name: &str, req: &Req) -> Result<Response, ApiError> {
    let opts = opts_of(req)?;
    let out = delete_one(st, res, ns, name, &opts).await?;
    Ok(json_response(StatusCode::OK, &out))
}

/// DELETE on a collection: every object the selectors match, each deleted as a single
/// DELETE with the same options would; answers the list of what was deleted.
pub async fn delete_collection(st: &AppState, res: &ResourceInfo, ns: Option<&str>, req: &Req) -> Result<Response, ApiError> {
    let opts = opts_of(req)?;
    let (ls, fs) = selectors(req, res)?;
    let mut deleted = Vec::new();
    let mut cont: Option<String> = None;
    let rev = loop {
        let page = list_objects(st, res, ns, &ls, &fs, 500, cont.as_deref()).await?;
        for item in &page.items {
            let (Some(name), item_ns) = (object::name(item), object::namespace(item)) else { continue };
            match delete_one(st, res, item_ns.or(ns), name, &opts).await {
                Ok(_) => deleted.push(item.clone()),
                // Gone already (another deleter, the garbage collector): nothing to do.
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        match page.cont {
            Some(c) => cont = Some(c),
            None => break page.rev.to_string(),
        }
    };
    let list = json!({"kind": res.list_kind(), "apiVersion": res.api_version(), "metadata": {"resourceVersion": rev}, "items": deleted});
    Ok(json_response(StatusCode::OK, &list))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(body: Value, q: &[(&str, &str)]) -> Result<DeleteOpts, ApiError> {
        let q: Vec<(String, String)> = q.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        delete_opts(&body, &|k| q.iter().find(|(a, _)| a == k).map(|(_, b)| b.clone()))
    }

    #[test]
    fn options_from_body_or_query() {
        assert_eq!(opts(json!({}), &[]).unwrap().propagation, Propagation::Background);
        assert_eq!(opts(json!({"propagationPolicy": "Orphan"}), &[]).unwrap().propagation, Propagation::Orphan);
        assert_eq!(opts(json!({}), &[("propagationPolicy", "Foreground")]).unwrap().propagation, Propagation::Foreground);
        assert_eq!(opts(json!({"orphanDependents": true}), &[]).unwrap().propagation, Propagation::Orphan);
        let o = opts(json!({"gracePeriodSeconds": 0, "dryRun": ["All"], "preconditions": {"uid": "u"}}), &[]).unwrap();
        assert_eq!((o.grace, o.dry_run, o.uid.as_deref()), (Some(0), true, Some("u")));
        let bad = opts(json!({"propagationPolicy": "Sideways"}), &[]).unwrap_err();
        assert_eq!(bad.code, 422);
        assert!(bad.message.contains("Unsupported value: \"Sideways\""), "{}", bad.message);
        assert_eq!(opts(json!({"propagationPolicy": "Orphan", "orphanDependents": true}), &[]).unwrap_err().code, 422);
        assert_eq!(opts(json!({}), &[("gracePeriodSeconds", "-1")]).unwrap_err().code, 422);
        assert_eq!(opts(json!({}), &[("gracePeriodSeconds", "soon")]).unwrap_err().code, 400);
    }

    #[test]
    fn finalizers_keep_an_object_until_they_are_done() {
        let plain = json!({"metadata": {"name": "d"}});
        assert_eq!(mark_for_deletion(&plain, Propagation::Background, "T"), None);
        let orphaned = mark_for_deletion(&plain, Propagation::Orphan, "T").unwrap();
        assert_eq!(orphaned["metadata"], json!({"name": "d", "deletionTimestamp": "T", "deletionGracePeriodSeconds": 0, "finalizers": ["orphan"]}));
        // Asking again with Foreground swaps the policy's finalizer, keeps the timestamp.
        let fg = mark_for_deletion(&orphaned, Propagation::Foreground, "T2").unwrap();
        assert_eq!(fg["metadata"]["finalizers"], json!(["foregroundDeletion"]));
        assert_eq!(fg["metadata"]["deletionTimestamp"], "T");
        // Someone else's finalizer holds a Background delete too.
        let held = json!({"metadata": {"name": "d", "finalizers": ["example.com/keep"]}});
        let v = mark_for_deletion(&held, Propagation::Background, "T").unwrap();
        assert_eq!(v["metadata"]["finalizers"], json!(["example.com/keep"]));
        assert!(object::is_deleting(&v) && !object::finalized(&v));
    }

    #[test]
    fn pods_on_a_node_get_their_grace_period() {
        let bound = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 5}, "status": {"phase": "Running"}});
        let o = opts(json!({}), &[]).unwrap();
        let v = pod_deletion(&bound, &o).unwrap();
        assert_eq!(v["metadata"]["deletionGracePeriodSeconds"], 5);
        let now = opts(json!({"gracePeriodSeconds": 0}), &[]).unwrap();
        assert_eq!(pod_deletion(&bound, &now), None);
        let unbound = json!({"metadata": {"name": "p"}, "spec": {}});
        assert_eq!(pod_deletion(&unbound, &o), None);
    }
}

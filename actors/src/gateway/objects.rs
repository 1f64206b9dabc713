//! The object plumbing every verb shares: reads at a freshness, CAS writes, body
//! decoding and type checks, paged lists with continue tokens, selectors, and the
//! create path (namespace lifecycle, allocation, admission) that POST and server-side
//! apply both take. Every write goes to the state group as a CAS write; read-modify-writes
//! retry on conflict (`CAS_RETRIES`).

use super::consistency::Freshness;
use super::fields;
use super::selectors::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::{protobuf, AppState, Req};
use schema::admission;
use schema::fieldmanager::Writer;
use schema::registry::{self, ResourceInfo};
use schema::store::{Consistency, ReadOp, ReadResult, Revision, WriteOp};
use schema::{keys, object};
use serde_json::{json, Value};

/// How often a read-modify-write retries after losing a CAS race.
pub const CAS_RETRIES: usize = 5;

/// Reads one object with its revision stamped as resourceVersion: the most recent state.
pub async fn read(st: &AppState, res: &ResourceInfo, ns: Option<&str>, name: &str) -> Result<Option<(Value, Revision)>, ApiError> {
    read_at(st, res, ns, name, Freshness::MostRecent).await
}

/// Reads one object as fresh as `fresh` asks: a serializable read from any state member
/// when an older state may do, a linearizable one when it may not (or when that member
/// turned out to be behind the revision asked for).
pub async fn read_at(st: &AppState, res: &ResourceInfo, ns: Option<&str>, name: &str, fresh: Freshness) -> Result<Option<(Value, Revision)>, ApiError> {
    let key = keys::object(res.plural, if res.namespaced { ns } else { None }, name);
    let mut consistency = fresh.first_read();
    loop {
        let r = st.bus.read_with(&ReadOp::Get { key: key.clone() }, consistency).await.map_err(|e| ApiError::store(res, name, e))?;
        let ReadResult::Get { item, rev } = r else { return Ok(None) };
        if !fresh.judge(rev, consistency == Consistency::Linearizable)? {
            consistency = Consistency::Linearizable;
            continue;
        }
        return match item {
            Some(s) => Ok(Some((decode_stored(res, &s).map_err(|e| ApiError::internal(e.to_string()))?, s.rev))),
            None => Ok(None),
        };
    }
}

/// A stored value as `res` shows it (events.k8s.io Events are stored as core Events).
pub fn decode_stored(res: &ResourceInfo, s: &schema::store::Stored) -> Result<Value, object::ObjectError> {
    let v = object::from_stored(s)?;
    Ok(schema::conversion::from_storage(res, v))
}

/// The bytes to store for `v`, in its storage version.
fn store_bytes(res: &ResourceInfo, v: &Value) -> Result<Vec<u8>, object::ObjectError> {
    if schema::conversion::converted(res) {
        object::to_store_bytes(&schema::conversion::to_storage(res, v))
    } else {
        object::to_store_bytes(v)
    }
}

pub async fn read_existing(st: &AppState, res: &ResourceInfo, ns: Option<&str>, name: &str) -> Result<(Value, Revision), ApiError> {
    read(st, res, ns, name).await?.ok_or_else(|| ApiError::not_found(res, name))
}

/// The write that stores `v` over the current object — or removes it, when `v` takes the
/// last finalizer off an object that is being deleted.
pub fn update_op(res: &ResourceInfo, v: &Value, expected_rev: Option<Revision>) -> Result<WriteOp, ApiError> {
    let bad = |e: object::ObjectError| ApiError::bad_request(e.to_string());
    if object::finalized(v) {
        return Ok(WriteOp::Delete { key: object::key_of(res, v).map_err(bad)?, expected_rev });
    }
    Ok(WriteOp::Update { key: object::key_of(res, v).map_err(bad)?, subject: object::subject_of(res, v).map_err(bad)?, value: store_bytes(res, v).map_err(bad)?, expected_rev })
}

/// Writes `op` and answers the stored object (resourceVersion = the write's revision).
pub async fn write(st: &AppState, res: &ResourceInfo, name: &str, op: &WriteOp) -> Result<Value, ApiError> {
    let wr = st.bus.write(op).await.map_err(|e| ApiError::store(res, name, e))?;
    decode_stored(res, &wr.stored).map_err(|e| ApiError::internal(e.to_string()))
}

/// Writes `v` over `cur` unless nothing changed: the real store answers an unchanged
/// object without a new revision. A managedFields entry whose only change is its
/// timestamp is no change (the same write a second later must not count as one).
pub async fn write_if_changed(st: &AppState, res: &ResourceInfo, name: &str, cur: &Value, v: &Value, expected_rev: Option<Revision>) -> Result<Value, ApiError> {
    let strip = |x: &Value| {
        let mut x = x.clone();
        object::remove_meta(&mut x, "resourceVersion");
        if let Some(entries) = x.pointer_mut("/metadata/managedFields").and_then(Value::as_array_mut) {
            for e in entries.iter_mut().filter_map(Value::as_object_mut) {
                e.remove("time");
            }
        }
        x
    };
    if strip(cur) == strip(v) {
        return Ok(cur.clone());
    }
    write(st, res, name, &update_op(res, v, expected_rev)?).await
}

/// Resources with a status subresource: their main resource ignores status changes.
pub fn status_is_separate(res: &ResourceInfo) -> bool {
    res.subresources.contains(&"status")
}

pub fn copy_status(from: &Value, to: &mut Value) {
    if let Some(o) = to.as_object_mut() {
        match from.get("status") {
            Some(s) => o.insert("status".into(), s.clone()),
            None => o.remove("status"),
        };
    }
}

/// JSON, YAML or Kubernetes protobuf, by Content-Type.
pub fn decode_body(req: &Req) -> Result<Value, ApiError> {
    let ct = req.content_type().split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let v: Value = match ct.as_str() {
        "" | "application/json" | "*/*" => serde_json::from_slice(&req.body).map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?,
        "application/yaml" | "application/x-yaml" | "text/yaml" => serde_yaml::from_slice(&req.body).map_err(|e| ApiError::bad_request(format!("the request body is not valid YAML: {e}")))?,
        protobuf::CONTENT_TYPE => protobuf::decode(&req.body).map_err(|e| match e {
            protobuf::ProtoError::Bad(m) => ApiError::bad_request(m),
            protobuf::ProtoError::Unsupported(m) => ApiError::unsupported_media(m),
        })?,
        other => {
            return Err(ApiError::unsupported_media(format!(
                "the body of the request was in an unknown format ({other}) - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf"
            )))
        }
    };
    if !v.is_object() {
        return Err(ApiError::bad_request("the request body must be a JSON object"));
    }
    Ok(v)
}

/// Checks apiVersion/kind in a body against the resource, when the body sets them.
pub fn check_type(res: &ResourceInfo, v: &Value) -> Result<(), ApiError> {
    if let Some(k) = v.get("kind").and_then(Value::as_str).filter(|k| !k.is_empty()) {
        if k != res.kind {
            return Err(ApiError::bad_request(format!("the kind in the data ({k}) does not match the expected kind ({})", res.kind)));
        }
    }
    if let Some(a) = v.get("apiVersion").and_then(Value::as_str).filter(|a| !a.is_empty()) {
        if a != res.api_version() {
            return Err(ApiError::bad_request(format!("the API version in the data ({a}) does not match the expected API version ({})", res.api_version())));
        }
    }
    Ok(())
}

/// Makes the body's namespace agree with the path's (or clears it for cluster scope).
pub fn set_namespace(res: &ResourceInfo, ns: Option<&str>, v: &mut Value) -> Result<(), ApiError> {
    if !res.namespaced {
        object::remove_meta(v, "namespace");
        return Ok(());
    }
    let Some(ns) = ns else { return Err(ApiError::bad_request("a namespace is required for this resource")) };
    if let Some(b) = object::namespace(v) {
        if b != ns {
            return Err(ApiError::bad_request("the namespace of the provided object does not match the namespace sent on the request"));
        }
    }
    object::set_meta(v, "namespace", json!(ns));
    Ok(())
}
pub struct ListPage {
    pub items: Vec<Value>,
    pub rev: Revision,
    pub cont: Option<String>,
}

/// A page of objects matching the selectors, `limit` 0 meaning all. The continue token
/// is the base64 of the last key returned.
pub async fn list_objects(st: &AppState, res: &ResourceInfo, ns: Option<&str>, ls: &LabelSelector, fs: &FieldSelector, limit: usize, cont: Option<&str>) -> Result<ListPage, ApiError> {
    list_objects_at(st, res, ns, ls, fs, limit, cont, Freshness::MostRecent).await
}

/// `list_objects` as fresh as `fresh` asks (see `read_at`).
#[allow(clippy::too_many_arguments)]
pub async fn list_objects_at(
    st: &AppState,
    res: &ResourceInfo,
    ns: Option<&str>,
    ls: &LabelSelector,
    fs: &FieldSelector,
    limit: usize,
    cont: Option<&str>,
    fresh: Freshness,
) -> Result<ListPage, ApiError> {
    let mut consistency = fresh.first_read();
    let prefix = keys::prefix(res.plural, if res.namespaced { ns } else { None });
    let (mut start_after, mut at) = match cont.filter(|c| !c.is_empty()) {
        None => (None, None),
        Some(c) => {
            let (key, rev) = continue_token::decode(c)?;
            if !key.starts_with(&prefix) {
                return Err(ApiError::bad_request("continue key is not valid for this list"));
            }
            (Some(key), rev)
        }
    };
    // A continued list is read at its first page's revision, as etcd's are; one the store
    // can no longer rebuild is 410 with the real server's words, so the client lists anew.
    let too_old = |e: bus::BusError| match e {
        bus::BusError::Store(schema::store::StoreError::Compacted { .. }) if cont.is_some() => ApiError::expired(
            "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
        ),
        e => ApiError::store(res, "", e),
    };
    let mut out = Vec::new();
    let mut list_rev: Option<Revision> = at;
    loop {
        let r = st.bus.read_with(&ReadOp::List { prefix: prefix.clone(), start_after: start_after.clone(), limit: 500, at }, consistency).await.map_err(too_old)?;
        let ReadResult::List { items, rev, more } = r else { return Err(ApiError::internal("the store answered a list with something else")) };
        if list_rev.is_none() && !fresh.judge(rev, consistency == Consistency::Linearizable)? {
            consistency = Consistency::Linearizable;
            continue;
        }
        let rev = *list_rev.get_or_insert(rev);
        // Every further page at the same revision as the first.
        at = Some(rev);
        let n = items.len();
        for (idx, s) in items.iter().enumerate() {
            let v = match decode_stored(res, s) {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(key = %s.key, error = %e, "gateway: undecodable stored object skipped");
                    continue;
                }
            };
            if ls.matches(&v) && fs.matches(&v) {
                out.push(v);
                if limit > 0 && out.len() == limit {
                    let remaining = idx + 1 < n || more;
                    let cont = remaining.then(|| continue_token::encode(&s.key, rev));
                    return Ok(ListPage { items: out, rev, cont });
                }
            }
        }
        match items.last() {
            Some(last) if more => start_after = Some(last.key.clone()),
            _ => return Ok(ListPage { items: out, rev, cont: None }),
        }
    }
}

/// `continue` tokens: the last key returned and the revision of the list's first page,
/// as kube-apiserver's carry (base64 of JSON). A token of only a key (from before tokens
/// carried the revision) continues at the current revision.
mod continue_token {
    use super::ApiError;
    use base64::Engine as _;
    use schema::store::Revision;

    pub fn encode(key: &str, rev: Revision) -> String {
        base64::engine::general_purpose::STANDARD.encode(serde_json::json!({"v": "meta.k8s.io/v1", "rv": rev, "start": key}).to_string())
    }

    pub fn decode(c: &str) -> Result<(String, Option<Revision>), ApiError> {
        let invalid = || ApiError::bad_request("continue key is not valid");
        let raw = base64::engine::general_purpose::STANDARD.decode(c).map_err(|_| invalid())?;
        let text = String::from_utf8(raw).map_err(|_| invalid())?;
        match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(v) if v.is_object() => {
                let key = v["start"].as_str().ok_or_else(invalid)?.to_string();
                Ok((key, Some(v["rv"].as_u64().ok_or_else(invalid)?)))
            }
            _ => Ok((text, None)),
        }
    }
}

/// The label and field selectors of a list, watch or deletecollection; a field the
/// resource cannot be selected by is refused the way the real server words it.
pub fn selectors(req: &Req, res: &ResourceInfo) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let (lq, fq) = (req.q("labelSelector").unwrap_or(""), req.q("fieldSelector").unwrap_or(""));
    let ls = LabelSelector::parse(lq).map_err(ApiError::bad_request)?;
    let fs = FieldSelector::parse(fq).map_err(ApiError::bad_request)?;
    if let Some(f) = fs.fields().find(|f| !registry::selectable(res, f)) {
        let gvr = if res.group.is_empty() { format!("/{}, Resource={}", res.version, res.plural) } else { format!("{}/{}, Resource={}", res.group, res.version, res.plural) };
        return Err(ApiError::bad_request(format!("Unable to find \"{gvr}\" that match label selector \"{lq}\", field selector \"{fq}\": field label not supported: {f}")));
    }
    Ok((ls, fs))
}

async fn read_namespace(st: &AppState, ns: &str) -> Result<Option<Value>, ApiError> {
    let nsres = registry::by_plural("", "v1", "namespaces").ok_or_else(|| ApiError::internal("namespaces are not registered"))?;
    Ok(read(st, nsres, None, ns).await?.map(|(v, _)| v))
}

/// Create, shared by POST and by server-side apply of an absent object.
/// `writer`: who the create is recorded as (None when server-side apply already recorded
/// its configuration).
pub async fn create_value(st: &AppState, res: &ResourceInfo, ns: Option<&str>, mut v: Value, dry_run: bool, writer: Option<Writer>) -> Result<Value, ApiError> {
    check_type(res, &v)?;
    set_namespace(res, ns, &mut v)?;
    if let Some(ns) = ns.filter(|_| res.namespaced) {
        // NamespaceLifecycle: nothing new in a namespace that is absent or going away.
        match read_namespace(st, ns).await? {
            None => return Err(ApiError::namespace_not_found(ns)),
            Some(n) if n.pointer("/metadata/deletionTimestamp").is_some_and(|d| !d.is_null()) => {
                return Err(ApiError::new(403, "Forbidden", format!("{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated", res.plural, object::name(&v).unwrap_or(""))));
            }
            Some(_) => {}
        }
    }
    if status_is_separate(res) && res.kind != "Node" {
        // As the apiserver does: a new object's status is the server's to fill (nodes
        // alone may be created with theirs).
        if let Some(o) = v.as_object_mut() {
            o.remove("status");
        }
    }
    if let Some(w) = writer {
        fields::record_update(res, w, None, &mut v);
    }
    allocate(st, res, &mut v, None).await?;
    admission::admit_create(res, &mut v).map_err(ApiError::admission)?;
    let name = object::name(&v).unwrap_or("").to_string();
    bus::admission::on_create(&st.bus, res, &mut v, dry_run).await.map_err(|e| ApiError::client(res, &name, e))?;
    if dry_run {
        return Ok(v);
    }
    let bad = |e: object::ObjectError| ApiError::bad_request(e.to_string());
    let op = WriteOp::Create { key: object::key_of(res, &v).map_err(bad)?, subject: object::subject_of(res, &v).map_err(bad)?, value: store_bytes(res, &v).map_err(bad)? };
    let created = write(st, res, &name, &op).await?;
    bus::admission::after_create(&st.bus, res, &created).await.map_err(|e| ApiError::client(res, &name, e))?;
    Ok(created)
}

/// What the server allocates before admission: a Service's cluster IP and node ports,
/// chosen among those no other stored Service holds (on update, the allocated values the
/// client left out are kept).
pub async fn allocate(st: &AppState, res: &ResourceInfo, v: &mut Value, old: Option<&Value>) -> Result<(), ApiError> {
    if res.kind != "Service" || !res.group.is_empty() {
        return Ok(());
    }
    if let Some(o) = old {
        schema::services::carry_allocated(v, o);
        schema::services::drop_type_dependent(v, o);
    }
    schema::services::defaults(v);
    let all = list_objects(st, res, None, &LabelSelector::parse("").map_err(ApiError::bad_request)?, &FieldSelector::parse("").map_err(ApiError::bad_request)?, 0, None).await?;
    let (ns, name) = (object::namespace(v).unwrap_or("").to_string(), object::name(v).unwrap_or("").to_string());
    let taken = schema::services::Taken::from_services(&all.items, Some((&ns, &name)));
    let seed = uuid::Uuid::new_v4().as_u128() as u64;
    schema::services::allocate(v, &taken, seed).map_err(|causes| ApiError::invalid("Service", "", &name, &causes))
}

pub fn check_name(v: &Value, name: &str) -> Result<(), ApiError> {
    match object::name(v) {
        Some(n) if n != name => Err(ApiError::bad_request(format!("the name of the object ({n}) does not match the name on the URL ({name})"))),
        _ => Ok(()),
    }
}

/// The resourceVersion a body pins, if any; a malformed one is a 400.
pub fn pinned_rv(v: &Value) -> Result<Option<Revision>, ApiError> {
    match v.pointer("/metadata/resourceVersion").and_then(Value::as_str).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {s:?}"))),
    }
}


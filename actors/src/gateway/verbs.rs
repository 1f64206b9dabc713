//! The plain object verbs: get, list, create and update (patch is `patching`, delete
//! `deletion`, watch `watch`), for every stored entry of the registry.

use super::consistency::Freshness;
use super::fields;
use super::objects::{check_name, check_type, copy_status, create_value, decode_body, list_objects_at, pinned_rv, read_at, read_existing, selectors, set_namespace, status_is_separate, write_if_changed, allocate};
use super::status::ApiError;
use super::{json_response, table, validation, AppState, Req};
use axum::http::StatusCode;
use axum::response::Response;
use schema::admission;
use schema::registry::ResourceInfo;
use schema::object;
use serde_json::{json, Value};

fn table_or_json(res: &ResourceInfo, req: &Req, code: StatusCode, obj: &Value) -> Response {
    if table::wants_table(req.accept()) {
        let rv = obj.pointer("/metadata/resourceVersion").cloned().unwrap_or(Value::Null);
        return json_response(code, &table::table(res, std::slice::from_ref(obj), json!({"resourceVersion": rv}), true));
    }
    json_response(code, obj)
}

pub async fn get(st: &AppState, res: &ResourceInfo, ns: Option<&str>, name: &str, req: &Req) -> Result<Response, ApiError> {
    let fresh = Freshness::parse(req.q("resourceVersion"), None)?;
    let (v, _) = read_at(st, res, ns, name, fresh).await?.ok_or_else(|| ApiError::not_found(res, name))?;
    Ok(table_or_json(res, req, StatusCode::OK, &v))
}

pub async fn list(st: &AppState, res: &ResourceInfo, ns: Option<&str>, req: &Req) -> Result<Response, ApiError> {
    let (ls, fs) = selectors(req, res)?;
    let limit = req.q("limit").and_then(|l| l.parse::<i64>().ok()).unwrap_or(0).max(0) as usize;
    // A continued list goes on from where its first page was; only a first page chooses.
    let fresh = match req.q("continue").filter(|c| !c.is_empty()) {
        Some(_) => Freshness::MostRecent,
        None => Freshness::parse(req.q("resourceVersion"), req.q("resourceVersionMatch"))?,
    };
    let page = list_objects_at(st, res, ns, &ls, &fs, limit, req.q("continue"), fresh).await?;
    let mut meta = json!({"resourceVersion": page.rev.to_string()});
    if let Some(c) = &page.cont {
        meta["continue"] = json!(c);
    }
    if table::wants_table(req.accept()) {
        return Ok(json_response(StatusCode::OK, &table::table(res, &page.items, meta, true)));
    }
    Ok(json_response(StatusCode::OK, &json!({"kind": res.list_kind(), "apiVersion": res.api_version(), "metadata": meta, "items": page.items})))
}

pub async fn create(st: &AppState, res: &ResourceInfo, ns: Option<&str>, req: &Req) -> Result<Response, ApiError> {
    let mut v = decode_body(req)?;
    let warnings = validation::check(res, req, validation::json_text(req), &mut v)?;
    let w = fields::writer(res, req, "", "CreateOptions")?;
    let created = create_value(st, res, ns, v, req.dry_run(), Some(w)).await?;
    Ok(validation::with_warnings(json_response(StatusCode::CREATED, &created), &warnings))
}

pub async fn update(st: &AppState, res: &ResourceInfo, ns: Option<&str>, name: &str, req: &Req) -> Result<Response, ApiError> {
    let mut v = decode_body(req)?;
    let warnings = validation::check(res, req, validation::json_text(req), &mut v)?;
    let w = fields::writer(res, req, "", "UpdateOptions")?;
    check_type(res, &v)?;
    check_name(&v, name)?;
    object::set_meta(&mut v, "name", json!(name));
    set_namespace(res, ns, &mut v)?;
    let (cur, cur_rev) = read_existing(st, res, ns, name).await?;
    let pinned = pinned_rv(&v)?;
    if pinned.is_some_and(|p| p != cur_rev) {
        return Err(ApiError::conflict(res, name));
    }
    if status_is_separate(res) {
        copy_status(&cur, &mut v);
    }
    fields::record_update(res, w, Some(&cur), &mut v);
    allocate(st, res, &mut v, Some(&cur)).await?;
    admission::admit_update(res, &mut v, &cur).map_err(ApiError::admission)?;
    if req.dry_run() {
        return Ok(validation::with_warnings(json_response(StatusCode::OK, &v), &warnings));
    }
    let out = write_if_changed(st, res, name, &cur, &v, Some(pinned.unwrap_or(cur_rev))).await?;
    Ok(validation::with_warnings(json_response(StatusCode::OK, &out), &warnings))
}


//! The router below `/api` and `/apis`: it names the target of a request, checks the
//! verb against the registry, and hands the request to the verb's file (the object verbs
//! in `verbs`, `patching`, `deletion`, `watch`, subresources in `subresources`). Nothing
//! imports this file but `mod.rs`.

use super::status::ApiError;
use super::target::{parse_target, Target};
use super::{deletion, metrics_api, patching, reviews, subresources, verbs, watch, AppState, Req};
use axum::http::Method;
use axum::response::Response;
use schema::registry;

/// The verb a request on `target` is, for the registry's verbs list.
fn verb_of(target: &Target, req: &Req) -> &'static str {
    match (target, &req.method) {
        (Target::Collection { .. }, &Method::GET) if is_watch(req) => "watch",
        (Target::Collection { .. }, &Method::GET) => "list",
        (Target::Collection { .. }, &Method::POST) => "create",
        (Target::Collection { .. }, &Method::DELETE) => "deletecollection",
        (Target::Object { .. }, &Method::GET) => "get",
        (Target::Object { .. }, &Method::PUT) => "update",
        (Target::Object { .. }, &Method::PATCH) => "patch",
        (Target::Object { .. }, &Method::DELETE) => "delete",
        _ => "",
    }
}

pub async fn handle(st: &AppState, group: &str, version: &str, rest: &[&str], req: &Req) -> Result<Response, ApiError> {
    let target = parse_target(group, version, rest)?;
    let m = &req.method;
    if let Target::Collection { res, .. } | Target::Object { res, .. } = &target {
        // A verb the resource does not offer (a GET of selfsubjectaccessreviews) is a 405.
        if !res.verbs.contains(&verb_of(&target, req)) {
            return Err(ApiError::method_not_allowed(m.as_str(), res.plural));
        }
        if res.group == "metrics.k8s.io" {
            return metrics_api::serve(st, &target, req);
        }
        if !registry::is_stored(res) {
            return reviews::create(st, res.kind, req);
        }
    }
    match target {
        Target::Collection { res, ns } => match *m {
            Method::GET if is_watch(req) => watch::serve(st, res, ns, req).await,
            Method::GET => verbs::list(st, res, ns.as_deref(), req).await,
            Method::POST if ns.is_some() || !res.namespaced => verbs::create(st, res, ns.as_deref(), req).await,
            Method::DELETE => deletion::delete_collection(st, res, ns.as_deref(), req).await,
            _ => Err(ApiError::method_not_allowed(m.as_str(), res.plural)),
        },
        Target::Object { res, ns, name } => match *m {
            Method::GET => verbs::get(st, res, ns.as_deref(), &name, req).await,
            Method::PUT => verbs::update(st, res, ns.as_deref(), &name, req).await,
            Method::PATCH => patching::patch(st, res, ns.as_deref(), &name, req).await,
            Method::DELETE => deletion::delete(st, res, ns.as_deref(), &name, req).await,
            _ => Err(ApiError::method_not_allowed(m.as_str(), res.plural)),
        },
        Target::Sub { res, ns, name, sub } => subresources::handle(st, res, ns.as_deref(), &name, &sub, req).await,
    }
}

fn is_watch(req: &Req) -> bool {
    req.flag("watch")
}


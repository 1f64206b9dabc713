//! The admission plugins' side that needs the store: reading what each plugin consults
//! (the pod's ServiceAccount, LimitRanges, PriorityClasses, ResourceQuotas) and charging
//! quotas with a CAS write on their status. Shared by the gateway and `Client::create`,
//! so an internal writer's pod passes the same plugins as a kubectl user's.

use crate::client::ClientError;
use crate::{Bus, BusError};
use schema::admission::{self, AdmissionError, Writer};
use schema::plugins::{limit_ranger, priority, resource_quota, service_account, storage_class, tolerations};
use schema::registry::{self, ResourceInfo};
use schema::store::{ReadOp, ReadResult, Revision, StoreError, WriteOp};
use schema::{keys, object};
use serde_json::Value;

/// How often a quota charge retries after another writer changed the quota first.
const QUOTA_RETRIES: usize = 10;

fn core(plural: &str) -> &'static ResourceInfo {
    registry::by_plural("", "v1", plural).expect("core resources are registered")
}

fn other(e: impl std::fmt::Display) -> ClientError {
    ClientError::Other(e.to_string())
}

/// Every stored object under `res` (in `ns`, or everywhere) with its revision.
pub async fn list_values(bus: &Bus, res: &ResourceInfo, ns: Option<&str>) -> Result<Vec<(Value, Revision)>, ClientError> {
    let prefix = keys::prefix(res.plural, if res.namespaced { ns } else { None });
    let (items, _) = bus.list_all(&prefix, 1000).await?;
    items.iter().map(|s| Ok((object::from_stored(s).map_err(other)?, s.rev))).collect()
}

async fn get_value(bus: &Bus, res: &ResourceInfo, ns: Option<&str>, name: &str) -> Result<Option<(Value, Revision)>, ClientError> {
    let key = keys::object(res.plural, if res.namespaced { ns } else { None }, name);
    match bus.read(&ReadOp::Get { key }).await? {
        ReadResult::Get { item: Some(s), .. } => Ok(Some((object::from_stored(&s).map_err(other)?, s.rev))),
        _ => Ok(None),
    }
}

fn values(v: Vec<(Value, Revision)>) -> Vec<Value> {
    v.into_iter().map(|(v, _)| v).collect()
}

/// The mutating and validating plugins for a new object that has passed defaulting and
/// validation, quota last. `dry_run` checks quotas without charging them.
pub async fn on_create(bus: &Bus, res: &ResourceInfo, v: &mut Value, dry_run: bool) -> Result<(), ClientError> {
    let ns = object::namespace(v).unwrap_or("").to_string();
    let core_kind = res.group.is_empty() || res.group == "scheduling.k8s.io";
    match res.kind {
        "Pod" if core_kind => {
            let sa = service_account::default_name(v);
            let (sa_obj, ranges, classes) = futures::try_join!(
                get_value(bus, core("serviceaccounts"), Some(&ns), &sa),
                list_values(bus, core("limitranges"), Some(&ns)),
                list_values(bus, registry::by_plural("scheduling.k8s.io", "v1", "priorityclasses").expect("registered"), None),
            )?;
            service_account::check(v, &ns, &sa, sa_obj.is_some())?;
            let account_automount = sa_obj.as_ref().and_then(|(a, _)| a.get("automountServiceAccountToken")).and_then(Value::as_bool);
            service_account::mount_token(v, account_automount);
            limit_ranger::admit_pod(v, &values(ranges))?;
            tolerations::apply(v);
            priority::resolve(v, &values(classes))?;
        }
        "PersistentVolumeClaim" if core_kind => {
            let classes = list_values(bus, registry::by_plural("storage.k8s.io", "v1", "storageclasses").expect("registered"), None).await?;
            storage_class::admit_claim(v, &values(classes));
        }
        "PriorityClass" if core_kind => {
            let classes = list_values(bus, res, None).await?;
            priority::check_class(v, &values(classes))?;
        }
        "ResourceQuota" if core_kind => {
            // A new quota starts with its namespace's current usage, so `describe quota`
            // is right from the first moment.
            let used = namespace_usage(bus, v, &ns).await?;
            v["status"] = resource_quota::status(v, &used);
            return Ok(());
        }
        _ => {}
    }
    if res.namespaced {
        charge_quotas(bus, res, v, &ns, dry_run).await?;
    }
    Ok(())
}

/// What the objects of `ns` use of what `quota` tracks.
pub async fn namespace_usage(bus: &Bus, quota: &Value, ns: &str) -> Result<resource_quota::Usage, ClientError> {
    let mut tracked: Vec<&'static ResourceInfo> = Vec::new();
    for k in quota.pointer("/spec/hard").and_then(Value::as_object).into_iter().flatten().map(|(k, _)| k) {
        let Some((group, plural)) = resource_quota::counted_resource(k) else { continue };
        if let Some(r) = registry::RESOURCES.iter().find(|r| r.group == group && r.plural == plural && r.namespaced && registry::is_stored(r)) {
            let r = registry::storage_of(r);
            if !tracked.contains(&r) {
                tracked.push(r);
            }
        }
    }
    let mut objects = Vec::new();
    for r in tracked {
        for (v, _) in list_values(bus, r, Some(ns)).await? {
            objects.push((r, v));
        }
    }
    Ok(resource_quota::total(quota, &objects))
}

/// Charges every quota of `ns` that tracks `v`: a CAS write of its new `status.used`, so
/// of two creates racing for the last unit one sees the other's charge and is refused.
async fn charge_quotas(bus: &Bus, res: &ResourceInfo, v: &Value, ns: &str, dry_run: bool) -> Result<(), ClientError> {
    let quotas = core("resourcequotas");
    let all = list_values(bus, quotas, Some(ns)).await?;
    // Every quota is asked first, so a refusal by one charges none of the others.
    for (quota, _) in &all {
        resource_quota::charge(res, v, quota)?;
    }
    for (mut quota, mut rev) in all {
        let name = object::name(&quota).unwrap_or("").to_string();
        for attempt in 0.. {
            let Some(status) = resource_quota::charge(res, v, &quota)? else { break };
            if dry_run {
                break;
            }
            if attempt == QUOTA_RETRIES {
                return Err(AdmissionError::Forbidden(format!("{} \"{}\" is forbidden: Operation cannot be fulfilled on resourcequotas \"{name}\": the object has been modified; please apply your changes to the latest version and try again", res.plural, object::name(v).unwrap_or(""))).into());
            }
            let mut next = quota.clone();
            next["status"] = status;
            admission::admit_update_as(quotas, &mut next, &quota, Writer::Actor)?;
            let op = WriteOp::Update { key: object::key_of(quotas, &next).map_err(other)?, subject: object::subject_of(quotas, &next).map_err(other)?, value: object::to_store_bytes(&next).map_err(other)?, expected_rev: Some(rev) };
            match bus.write(&op).await {
                Ok(_) => break,
                Err(BusError::Store(StoreError::Conflict { .. })) => match get_value(bus, quotas, Some(ns), &name).await? {
                    Some((q, r)) => (quota, rev) = (q, r),
                    None => break,
                },
                Err(BusError::Store(StoreError::NotFound(_))) => break,
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// What follows a client's create: a new namespace gets its `default` ServiceAccount at
/// once, so pods can be created in it right away (the real server's controller does this
/// a moment later, and kubectl users meet "serviceaccount default not found"). Internal
/// writers' namespaces get theirs from the serviceaccount controller.
pub async fn after_create(bus: &Bus, res: &ResourceInfo, created: &Value) -> Result<(), ClientError> {
    if res.kind != "Namespace" || !res.group.is_empty() {
        return Ok(());
    }
    let ns = object::name(created).unwrap_or("");
    ensure_default_service_account(bus, ns).await
}

pub async fn ensure_default_service_account(bus: &Bus, ns: &str) -> Result<(), ClientError> {
    let res = core("serviceaccounts");
    let mut v = serde_json::json!({"metadata": {"name": "default", "namespace": ns}});
    admission::admit_create(res, &mut v)?;
    let op = WriteOp::Create { key: object::key_of(res, &v).map_err(other)?, subject: object::subject_of(res, &v).map_err(other)?, value: object::to_store_bytes(&v).map_err(other)? };
    match bus.write(&op).await {
        Ok(_) | Err(BusError::Store(StoreError::AlreadyExists(_))) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

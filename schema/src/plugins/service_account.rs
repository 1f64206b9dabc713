//! The ServiceAccount plugin: a pod runs as a ServiceAccount of its namespace, `default`
//! unless it names one, and is refused when that account does not exist.

use super::forbidden;
use crate::admission::AdmissionError;
use serde_json::{json, Value};

/// Sets `spec.serviceAccountName` (and its deprecated twin `serviceAccount`) to `default`
/// when unset; answers the name the pod runs as.
pub fn default_name(pod: &mut Value) -> String {
    let set = |v: Option<&Value>| v.and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
    let name = set(pod.pointer("/spec/serviceAccountName")).or_else(|| set(pod.pointer("/spec/serviceAccount"))).unwrap_or_else(|| "default".into());
    if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("serviceAccountName".into(), json!(name));
        spec.insert("serviceAccount".into(), json!(name));
    }
    name
}

/// Refuses a pod whose ServiceAccount is missing, with the real server's words.
pub fn check(pod: &Value, ns: &str, sa: &str, exists: bool) -> Result<(), AdmissionError> {
    if exists {
        return Ok(());
    }
    Err(forbidden("pods", pod, format!("error looking up service account {ns}/{sa}: serviceaccount \"{sa}\" not found")))
}

/// Where the token volume is mounted in every container.
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// What the admission plugin asks for; the kubelet refreshes the token long before.
const TOKEN_EXPIRATION: i64 = 3607;

/// kube's utilrand alphabet (no vowels, no look-alikes), for the volume's suffix.
fn suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut n = uuid::Uuid::new_v4().as_u128();
    (0..5)
        .map(|_| {
            let c = ALPHABET[(n % ALPHABET.len() as u128) as usize] as char;
            n /= ALPHABET.len() as u128;
            c
        })
        .collect()
}

/// Mounts the account's token, the cluster CA and the namespace at TOKEN_MOUNT_PATH in
/// every container (a projected `kube-api-access-xxxxx` volume, as the real plugin adds),
/// unless the pod, or else its account, turns automounting off, or a container mounts
/// something there already.
pub fn mount_token(pod: &mut Value, account_automount: Option<bool>) {
    let automount = pod.pointer("/spec/automountServiceAccountToken").and_then(Value::as_bool).or(account_automount).unwrap_or(true);
    if !automount {
        return;
    }
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else { return };
    let has_volume = spec.get("volumes").and_then(Value::as_array).is_some_and(|vs| vs.iter().any(|v| v["name"].as_str().is_some_and(|n| n.starts_with("kube-api-access-"))));
    if has_volume {
        return;
    }
    let name = format!("kube-api-access-{}", suffix());
    let mut mounted_any = false;
    for list in ["initContainers", "containers"] {
        for c in spec.get_mut(list).and_then(Value::as_array_mut).into_iter().flatten() {
            let mounts = c.as_object_mut().map(|o| o.entry("volumeMounts").or_insert_with(|| json!([])));
            let Some(mounts) = mounts.and_then(Value::as_array_mut) else { continue };
            if mounts.iter().any(|m| m["mountPath"].as_str().map(|p| p.trim_end_matches('/')) == Some(TOKEN_MOUNT_PATH)) {
                continue;
            }
            mounts.push(json!({"name": name, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH}));
            mounted_any = true;
        }
    }
    if !mounted_any {
        return;
    }
    let volume = json!({"name": name, "projected": {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"expirationSeconds": TOKEN_EXPIRATION, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
    ]}});
    match spec.get_mut("volumes").and_then(Value::as_array_mut) {
        Some(vs) => vs.push(volume),
        None => {
            spec.insert("volumes".into(), json!([volume]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_volume_is_mounted_in_every_container_unless_turned_off() {
        let mut p = json!({"spec": {"containers": [{"name": "a"}, {"name": "b", "volumeMounts": [{"name": "mine", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount/"}]}], "initContainers": [{"name": "i"}]}});
        mount_token(&mut p, None);
        let vol = &p["spec"]["volumes"][0];
        let name = vol["name"].as_str().unwrap();
        assert!(name.starts_with("kube-api-access-") && name.len() == "kube-api-access-".len() + 5, "{name}");
        assert_eq!(vol["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"], 3607);
        assert_eq!(vol["projected"]["sources"][1]["configMap"]["name"], "kube-root-ca.crt");
        assert_eq!(p["spec"]["containers"][0]["volumeMounts"][0], json!({"name": name, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH}));
        assert_eq!(p["spec"]["containers"][1]["volumeMounts"].as_array().unwrap().len(), 1, "its own mount there wins");
        assert_eq!(p["spec"]["initContainers"][0]["volumeMounts"][0]["name"], name);
        let again = p.clone();
        mount_token(&mut p, None);
        assert_eq!(p, again, "not twice");

        let mut off = json!({"spec": {"automountServiceAccountToken": false, "containers": [{"name": "a"}]}});
        mount_token(&mut off, Some(true));
        assert!(off["spec"].get("volumes").is_none());
        let mut by_account = json!({"spec": {"containers": [{"name": "a"}]}});
        mount_token(&mut by_account, Some(false));
        assert!(by_account["spec"].get("volumes").is_none());
        let mut pod_wins = json!({"spec": {"automountServiceAccountToken": true, "containers": [{"name": "a"}]}});
        mount_token(&mut pod_wins, Some(false));
        assert!(pod_wins["spec"]["volumes"].is_array());
    }

    #[test]
    fn defaults_and_refuses() {
        let mut p = json!({"metadata":{"name":"p"},"spec":{"containers":[]}});
        assert_eq!(default_name(&mut p), "default");
        assert_eq!(p["spec"]["serviceAccountName"], "default");
        assert_eq!(p["spec"]["serviceAccount"], "default");
        let mut q = json!({"metadata":{"name":"q"},"spec":{"serviceAccountName":"bot"}});
        assert_eq!(default_name(&mut q), "bot");
        assert!(check(&q, "x", "bot", true).is_ok());
        assert_eq!(
            check(&q, "x", "bot", false).unwrap_err().to_string(),
            "pods \"q\" is forbidden: error looking up service account x/bot: serviceaccount \"bot\" not found"
        );
    }
}

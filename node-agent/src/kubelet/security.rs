//! securityContext, as the kubelet reads it: the pod's settings overridden field by field
//! by the container's (`determineEffectiveSecurityContext`), the runAsNonRoot check
//! against the image's user (`verifyRunAsNonRoot`), and fsGroup's ownership of the
//! volumes the kubelet writes (`SetVolumeOwnership`).

use crate::runtime::{ImageUser, Security};
use k8s_openapi::api::core::v1::{Container, Pod};
use std::path::Path;

/// The container's effective security settings.
pub fn effective(pod: &Pod, c: &Container) -> Security {
    let p = pod.spec.as_ref().and_then(|s| s.security_context.clone()).unwrap_or_default();
    let s = c.security_context.clone().unwrap_or_default();
    let caps = s.capabilities.unwrap_or_default();
    let mut groups: Vec<i64> = p.fs_group.into_iter().collect();
    groups.extend(p.supplemental_groups.iter().flatten().copied().filter(|g| !groups.contains(g)).collect::<Vec<_>>());
    Security {
        run_as_user: s.run_as_user.or(p.run_as_user),
        run_as_username: String::new(),
        run_as_group: s.run_as_group.or(p.run_as_group),
        supplemental_groups: groups,
        readonly_rootfs: s.read_only_root_filesystem.unwrap_or(false),
        privileged: s.privileged.unwrap_or(false),
        add_capabilities: caps.add.unwrap_or_default(),
        drop_capabilities: caps.drop.unwrap_or_default(),
        no_new_privs: s.allow_privilege_escalation == Some(false),
        run_as_non_root: s.run_as_non_root.or(p.run_as_non_root).unwrap_or(false),
    }
}

/// Whether any of the pod's containers is privileged (its sandbox must be too).
pub fn any_privileged(pod: &Pod) -> bool {
    pod.spec.as_ref().is_some_and(|s| super::spec::all_containers(s).any(|c| c.security_context.as_ref().and_then(|s| s.privileged).unwrap_or(false)))
}

/// `format.Pod`: how the kubelet names a pod in its messages.
fn pod_words(pod: &Pod) -> String {
    let m = &pod.metadata;
    format!("{}_{}({})", m.name.as_deref().unwrap_or(""), m.namespace.as_deref().unwrap_or(""), m.uid.as_deref().unwrap_or(""))
}

/// runAsNonRoot's verdict, in the kubelet's words (CreateContainerConfigError).
pub fn verify_non_root(sec: &Security, image: &ImageUser, pod: &Pod, container: &str) -> Result<(), String> {
    if !sec.run_as_non_root {
        return Ok(());
    }
    let pod = pod_words(pod);
    match sec.run_as_user {
        Some(0) => Err(format!("container's runAsUser breaks non-root policy (pod: {pod:?}, container: {container})")),
        Some(_) => Ok(()),
        None => match (image.uid, image.username.as_str()) {
            (Some(0), _) | (None, "") => Err(format!("container has runAsNonRoot and image will run as root (pod: {pod:?}, container: {container})")),
            (Some(_), _) => Ok(()),
            (None, name) => Err(format!("container has runAsNonRoot and image has non-numeric user ({name}), cannot verify user is non-root (pod: {pod:?}, container: {container})")),
        },
    }
}

/// Names the image's user when a group is asked without a uid: CRI takes a group only
/// beside a user, and the kubelet always passes the image's (root when it names none).
pub fn with_image_user(mut sec: Security, image: &ImageUser) -> Security {
    if sec.run_as_group.is_some() && sec.run_as_user.is_none() && sec.run_as_username.is_empty() {
        match (image.uid, image.username.as_str()) {
            (Some(uid), _) => sec.run_as_user = Some(uid),
            (None, "") => sec.run_as_user = Some(0),
            (None, name) => sec.run_as_username = name.to_string(),
        }
    }
    sec
}

/// The pod's fsGroup, when it asks the kubelet to own its volumes.
pub fn fs_group(pod: &Pod) -> Option<i64> {
    pod.spec.as_ref()?.security_context.as_ref()?.fs_group
}

/// The mode a file or directory gets in a volume owned by fsGroup: group read (and write
/// unless read-only), directories searchable and setgid so new files join the group.
pub fn owned_mode(mode: u32, dir: bool, read_only: bool) -> u32 {
    let mut m = mode | if read_only { 0o440 } else { 0o660 };
    if dir {
        m |= 0o2000 | 0o110;
    }
    m
}

/// Gives everything under `root` (itself included) to `gid` with `owned_mode`; symlinks
/// are re-owned but never followed (the atomic writer's links point inside `root`).
pub fn own_volume(root: &Path, gid: i64, read_only: bool) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let md = std::fs::symlink_metadata(root)?;
    std::os::unix::fs::lchown(root, None, Some(gid as u32))?;
    if md.file_type().is_symlink() {
        return Ok(());
    }
    let mode = md.mode() & 0o7777;
    let want = owned_mode(mode, md.is_dir(), read_only);
    if want != mode {
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(want))?;
    }
    if md.is_dir() {
        for e in std::fs::read_dir(root)? {
            own_volume(&e?.path(), gid, read_only)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(sc: serde_json::Value, csc: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
            "spec": {"securityContext": sc, "containers": [{"name": "c", "securityContext": csc}]}}))
        .unwrap()
    }

    fn eff(p: &Pod) -> Security {
        effective(p, &p.spec.as_ref().unwrap().containers[0])
    }

    #[test]
    fn the_container_overrides_the_pod_field_by_field_and_fs_group_joins_the_groups() {
        let p = pod(json!({"runAsUser": 1000, "runAsGroup": 3000, "fsGroup": 2000, "supplementalGroups": [4000, 2000], "runAsNonRoot": true}), json!({"runAsUser": 1001}));
        let s = eff(&p);
        assert_eq!((s.run_as_user, s.run_as_group), (Some(1001), Some(3000)));
        assert_eq!(s.supplemental_groups, vec![2000, 4000]);
        assert!(s.run_as_non_root && !s.no_new_privs && !s.privileged && !s.readonly_rootfs);
        let p = pod(json!({"runAsNonRoot": true}), json!({"runAsNonRoot": false, "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false, "privileged": true,
            "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]}}));
        let s = eff(&p);
        assert!(!s.run_as_non_root && s.readonly_rootfs && s.no_new_privs && s.privileged);
        assert_eq!((s.add_capabilities, s.drop_capabilities), (vec!["NET_ADMIN".to_string()], vec!["ALL".to_string()]));
        assert!(any_privileged(&p));
        assert_eq!(eff(&pod(json!({}), json!({}))), Security::default());
        assert!(!any_privileged(&pod(json!({}), json!({}))));
    }

    #[test]
    fn run_as_non_root_refuses_root_in_the_kubelets_words() {
        let p = pod(json!({"runAsNonRoot": true}), json!({}));
        let s = eff(&p);
        let root = ImageUser::default();
        assert_eq!(verify_non_root(&s, &root, &p, "c").unwrap_err(), "container has runAsNonRoot and image will run as root (pod: \"p_ns(u1)\", container: c)");
        assert_eq!(verify_non_root(&s, &ImageUser { uid: Some(0), username: String::new() }, &p, "c").unwrap_err(), "container has runAsNonRoot and image will run as root (pod: \"p_ns(u1)\", container: c)");
        assert!(verify_non_root(&s, &ImageUser { uid: Some(65534), username: String::new() }, &p, "c").is_ok());
        assert!(verify_non_root(&s, &ImageUser { uid: None, username: "nginx".into() }, &p, "c").unwrap_err().contains("image has non-numeric user (nginx)"));
        let zero = Security { run_as_user: Some(0), ..s.clone() };
        assert_eq!(verify_non_root(&zero, &ImageUser { uid: Some(5), username: String::new() }, &p, "c").unwrap_err(), "container's runAsUser breaks non-root policy (pod: \"p_ns(u1)\", container: c)");
        assert!(verify_non_root(&Security { run_as_user: Some(1000), ..s }, &root, &p, "c").is_ok());
        assert!(verify_non_root(&Security::default(), &root, &p, "c").is_ok());
    }

    #[test]
    fn a_group_without_a_user_takes_the_images_user() {
        let group = Security { run_as_group: Some(3000), ..Default::default() };
        assert_eq!(with_image_user(group.clone(), &ImageUser::default()).run_as_user, Some(0));
        assert_eq!(with_image_user(group.clone(), &ImageUser { uid: Some(101), username: String::new() }).run_as_user, Some(101));
        let named = with_image_user(group.clone(), &ImageUser { uid: None, username: "nginx".into() });
        assert_eq!((named.run_as_user, named.run_as_username.as_str()), (None, "nginx"));
        let user = Security { run_as_user: Some(5), ..group };
        assert_eq!(with_image_user(user.clone(), &ImageUser { uid: Some(101), username: String::new() }), user);
        assert_eq!(with_image_user(Security::default(), &ImageUser::default()), Security::default(), "nothing asked, nothing named");
    }

    #[test]
    fn owned_volumes_are_group_readable_and_setgid() {
        assert_eq!(owned_mode(0o644, false, true), 0o644);
        assert_eq!(owned_mode(0o400, false, true), 0o440);
        assert_eq!(owned_mode(0o600, false, false), 0o660);
        assert_eq!(owned_mode(0o777, true, false), 0o2777);
        assert_eq!(owned_mode(0o755, true, true), 0o2755);
        assert_eq!(owned_mode(0o700, true, true), 0o2750);
    }
}

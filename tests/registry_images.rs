//! Images from registries, with real containerd and Debian's docker-registry: a
//! registries.yaml mirror serving docker.io images the air-gap folder does not have (the
//! air-gap folder still answering for the rest), imagePullSecrets opening a registry
//! that wants basic auth, registries.yaml `configs` auth doing the same for every pod,
//! and image garbage collection taking an unused image while a running pod's stays.

mod common;

use common::cluster::Cluster;
use common::registry::{busybox_only, offline_images, Registry};
use std::path::Path;
use std::time::Duration;

fn root_with_containerd() {
    assert!(unsafe { libc::geteuid() } == 0, "this test runs containerd: run it as root (CI does, after deploy/install-deps.sh)");
}


fn waiting_reason(c: &Cluster, pod: &str) -> String {
    c.ok(&["get", "pod", pod, "-o", "jsonpath={.status.containerStatuses[0].state.waiting.reason}"])
}

fn running(c: &Cluster, pod: &str, within: Duration) {
    c.eventually(within, &format!("{pod} Running"), || {
        let s = c.ok(&["get", "pod", pod, "-o", "jsonpath={.status.phase} {.status.containerStatuses[0].state.waiting}"]);
        if s.starts_with("Running") { Ok(()) } else { Err(s) }
    });
}

fn pod(name: &str, image: &str, secret: Option<&str>, restart: &str, text: &str) -> String {
    let secrets = secret.map(|s| format!("  imagePullSecrets: [{{name: {s}}}]\n")).unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  restartPolicy: {restart}\n{secrets}  containers:\n  - name: c\n    image: {image}\n    command: [sh, -c, 'echo {text}; sleep 3600']\n"
    )
}

fn apply(c: &Cluster, yaml: &str) {
    let o = c.kubectl_stdin(&["apply", "-f", "-"], Some(yaml));
    assert!(o.ok, "{}", o.stderr);
}

#[test]
fn mirrors_and_pull_secrets() {
    root_with_containerd();
    let images = offline_images();
    let tmp = tempfile::tempdir().expect("tempdir");
    let airgap = busybox_only(&images, tmp.path());
    let mirror = Registry::start(None);
    mirror.push(&images.join("busybox.tar"), "latest", "flotilla-test/mirrored:1");
    let private = Registry::start(Some(("flotilla", "s3cret")));
    private.push(&images.join("busybox.tar"), "latest", "private/busybox:1");
    let registries = tmp.path().join("registries.yaml");
    std::fs::write(&registries, format!("mirrors:\n  docker.io:\n    endpoint: [\"http://{}\"]\n", mirror.host)).unwrap();
    let (airgap_s, registries_s, cidr) = (airgap.to_string_lossy().into_owned(), registries.to_string_lossy().into_owned(), common::pod_cidr());
    let c = Cluster::up_with(&tmp.path().join("c"), 1, &["--runtime", "containerd", "--images", &airgap_s, "--registries", &registries_s, "--cluster-cidr", &cidr]);

    // A docker.io name only the mirror has; busybox itself still comes from the air-gap
    // folder, after the mirror answered 404.
    apply(&c, &pod("mirrored", "flotilla-test/mirrored:1", None, "Always", "through-the-mirror"));
    apply(&c, &pod("local", "busybox", None, "Always", "from-the-airgap-folder"));
    running(&c, "mirrored", Duration::from_secs(90));
    running(&c, "local", Duration::from_secs(60));
    c.eventually(Duration::from_secs(10), "mirrored's log", || {
        let l = c.ok(&["logs", "mirrored"]);
        if l == "through-the-mirror\n" { Ok(()) } else { Err(l) }
    });
    let id = c.ok(&["get", "pod", "mirrored", "-o", "jsonpath={.status.containerStatuses[0].imageID}"]);
    assert!(id.starts_with("docker.io/flotilla-test/mirrored@sha256:"), "{id}");
    let hosts = std::fs::read_to_string(tmp.path().join("c/nodes/node-1/containerd/certs.d/docker.io/hosts.toml")).unwrap();
    assert!(hosts.find(&mirror.host).unwrap() < hosts.rfind("[host.").unwrap(), "the mirror first, the air-gap registry last:\n{hosts}");

    // The registry that wants basic auth: refused without the secret...
    let image = format!("{}/private/busybox:1", private.host);
    apply(&c, &pod("noauth", &image, None, "Always", "should-not-run"));
    c.eventually(Duration::from_secs(60), "noauth cannot pull", || {
        let w = waiting_reason(&c, "noauth");
        if w == "ErrImagePull" || w == "ImagePullBackOff" { Ok(()) } else { Err(w) }
    });
    let events = c.eventually(Duration::from_secs(20), "noauth's pull failure", || {
        let e = c.ok(&["get", "events", "--field-selector", "involvedObject.name=noauth", "-o", "jsonpath={range .items[*]}{.message}\n{end}"]);
        if e.contains("Failed to pull image") { Ok(e) } else { Err(e) }
    });
    assert!(events.contains("401 Unauthorized") || events.contains("unauthorized"), "{events}");
    // ...and pulled with it.
    let o = c.kubectl(&["create", "secret", "docker-registry", "regcred", &format!("--docker-server={}", private.host), "--docker-username=flotilla", "--docker-password=s3cret"]);
    assert!(o.ok, "{}", o.stderr);
    apply(&c, &pod("withauth", &image, Some("regcred"), "Always", "private"));
    running(&c, "withauth", Duration::from_secs(60));
    assert_eq!(c.ok(&["logs", "withauth"]), "private\n");
    // A secret that does not exist is warned about, as the kubelet does.
    apply(&c, &pod("nosecret", "busybox", Some("absent"), "Always", "x"));
    c.eventually(Duration::from_secs(30), "FailedToRetrieveImagePullSecret", || {
        let e = c.ok(&["get", "events", "--field-selector", "involvedObject.name=nosecret", "-o", "jsonpath={range .items[*]}{.reason}: {.message}\n{end}"]);
        let want = "FailedToRetrieveImagePullSecret: Unable to retrieve some image pull secrets (absent); attempting to pull the image may not succeed.";
        if e.contains(want) { Ok(()) } else { Err(e) }
    });
    running(&c, "nosecret", Duration::from_secs(30));
}

/// The images a node's containerd holds, as `ctr` lists them.
fn ctr_images(data: &Path) -> String {
    let sock = data.join("nodes/node-1/containerd/containerd.sock");
    let o = std::process::Command::new("ctr").arg("--address").arg(&sock).args(["-n", "k8s.io", "images", "ls", "-q"]).output().expect("ctr");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn registry_auth_from_registries_yaml_and_image_gc() {
    root_with_containerd();
    let images = offline_images();
    let tmp = tempfile::tempdir().expect("tempdir");
    let airgap = busybox_only(&images, tmp.path());
    let private = Registry::start(Some(("flotilla", "s3cret")));
    // An image of its own (busybox's would share the running pod's image id).
    let once_tar = tmp.path().join("once.tar");
    let busybox = std::fs::read("/bin/busybox").expect("Debian's busybox-static");
    std::fs::write(&once_tar, node_agent::images::pause::archive("flotilla-test/once:1", &busybox, &["/bin/busybox", "sleep", "3600"]).unwrap()).unwrap();
    private.push(&once_tar, "1", "private/once:1");
    let data = tmp.path().join("c");
    std::fs::create_dir_all(&data).unwrap();
    // The default place: <data-dir>/registries.yaml.
    std::fs::write(data.join("registries.yaml"), format!("configs:\n  \"{}\":\n    auth: {{username: flotilla, password: s3cret}}\n", private.host)).unwrap();
    let (airgap_s, cidr) = (airgap.to_string_lossy().into_owned(), common::pod_cidr());
    // A short minimum age: the image just pulled for a pod is spared, the unused one goes soon.
    let gc = ["--image-gc-high-threshold", "1", "--image-gc-low-threshold", "0", "--image-gc-period", "1", "--image-minimum-gc-age", "5s"];
    let mut args = vec!["--runtime", "containerd", "--images", &airgap_s, "--cluster-cidr", &cidr];
    args.extend(gc);
    let c = Cluster::up_with(&data, 1, &args);

    // A running pod's image stays whatever the disk says.
    apply(&c, &pod("keep", "busybox", None, "Always", "kept"));
    running(&c, "keep", Duration::from_secs(60));
    // No secret: the node's registries.yaml has the credentials.
    let image = format!("{}/private/once:1", private.host);
    apply(&c, &format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: once}}\nspec:\n  containers:\n  - {{name: c, image: \"{image}\"}}\n"));
    running(&c, "once", Duration::from_secs(60));
    let name = format!("{}/private/once:1", private.host);
    assert!(ctr_images(&data).contains(&name), "{}", ctr_images(&data));
    // Once its pod is gone the image is unused: the next pass removes it.
    c.ok(&["delete", "pod", "once", "--grace-period=1", "--wait=true"]);
    c.eventually(Duration::from_secs(60), "the unused image removed", || {
        let l = ctr_images(&data);
        if !l.contains(&name) { Ok(()) } else { Err(l) }
    });
    let left = ctr_images(&data);
    assert!(left.contains("docker.io/library/busybox:latest"), "the running pod's image stays: {left}");
    assert!(left.contains("localhost/flotilla/pause:1"), "the sandbox image stays: {left}");
    running(&c, "keep", Duration::from_secs(5));
    // A 0% target cannot be reached: the kubelet's events on the Node.
    let events = c.eventually(Duration::from_secs(30), "FreeDiskSpaceFailed and ImageGCFailed", || {
        let e = c.ok(&["get", "events", "--field-selector", "involvedObject.kind=Node", "-o", "jsonpath={range .items[*]}{.reason}: {.message}\n{end}"]);
        if e.contains("FreeDiskSpaceFailed: Failed to garbage collect required amount of images. Attempted to free ") && e.contains("ImageGCFailed: ") { Ok(e) } else { Err(e) }
    });
    assert!(events.contains("bytes eligible to free."), "{events}");
}

//! Image references as Docker and containerd read them (`nginx` is
//! `docker.io/library/nginx:latest`): the pull policy's default depends on the tag, and
//! the air-gap folder's images are matched by their full names.

/// The tag of a reference, `latest` when it has none (a digest counts as a tag).
pub fn tag_or_latest(image: &str) -> &str {
    if let Some((_, digest)) = image.split_once('@') {
        return digest;
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, tag)) => tag,
        None => "latest",
    }
}

/// The fully qualified name: registry host, `library/` for Docker Hub's official images,
/// and `:latest` when there is no tag or digest.
pub fn normalize(image: &str) -> String {
    let (name, suffix) = match image.split_once('@') {
        Some((n, d)) => (n, format!("@{d}")),
        None => {
            let last = image.rsplit('/').next().unwrap_or(image);
            if last.contains(':') {
                let (n, t) = image.rsplit_once(':').unwrap_or((image, "latest"));
                (n, format!(":{t}"))
            } else {
                (image, ":latest".to_string())
            }
        }
    };
    let first = name.split('/').next().unwrap_or("");
    let has_host = name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let full = if has_host {
        name.to_string()
    } else if name.contains('/') {
        format!("docker.io/{name}")
    } else {
        format!("docker.io/library/{name}")
    };
    format!("{full}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_as_docker_reads_them() {
        assert_eq!(normalize("nginx"), "docker.io/library/nginx:latest");
        assert_eq!(normalize("nginx:1.22"), "docker.io/library/nginx:1.22");
        assert_eq!(normalize("bitnami/redis"), "docker.io/bitnami/redis:latest");
        assert_eq!(normalize("localhost:5000/x/y:2"), "localhost:5000/x/y:2");
        assert_eq!(normalize("registry.k8s.io/pause:3.9"), "registry.k8s.io/pause:3.9");
        assert_eq!(normalize("busybox@sha256:abc"), "docker.io/library/busybox@sha256:abc");
        assert_eq!(tag_or_latest("nginx"), "latest");
        assert_eq!(tag_or_latest("localhost:5000/nginx"), "latest");
        assert_eq!(tag_or_latest("nginx:1.22"), "1.22");
    }
}

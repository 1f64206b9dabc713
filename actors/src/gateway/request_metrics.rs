//! kube-apiserver's request series, `apiserver_request_total` and
//! `apiserver_request_duration_seconds`, with its label names and verb names, so the
//! dashboards written for a real apiserver read the gateway's /metrics unchanged.

use axum::http::Method;

/// What the apiserver labels a request with, before its answer is known.
#[derive(Debug, PartialEq)]
pub struct RequestLabels {
    pub verb: String,
    pub group: String,
    pub version: String,
    pub resource: String,
    pub subresource: String,
    pub scope: &'static str,
}

/// Subresources the apiserver serves as CONNECT, whatever the HTTP method.
const CONNECT: &[&str] = &["exec", "attach", "portforward", "proxy"];

/// The labels of a request on `path` (`segs` its decoded segments).
pub fn classify(method: &Method, path: &str, segs: &[&str], query: &[(String, String)], content_type: Option<&str>) -> RequestLabels {
    let a = super::authz::attributes(method, path, segs, query);
    if !a.resource_request {
        return RequestLabels { verb: method.as_str().to_ascii_uppercase(), group: String::new(), version: String::new(), resource: String::new(), subresource: String::new(), scope: "" };
    }
    let version = match segs {
        ["api", v, ..] | ["apis", _, v, ..] => v.to_string(),
        _ => String::new(),
    };
    let apply = content_type.is_some_and(|c| c.split(';').next().unwrap_or("").trim().starts_with("application/apply-patch"));
    let verb = match a.verb.as_str() {
        _ if CONNECT.contains(&a.subresource.as_str()) => "CONNECT".to_string(),
        "patch" if apply => "APPLY".to_string(),
        v => v.to_ascii_uppercase(),
    };
    // The apiserver's CleanScope: a named object or a create is "resource".
    let scope = if !a.name.is_empty() && verb != "LIST" && verb != "WATCH" || verb == "CREATE" {
        "resource"
    } else if !a.namespace.is_empty() {
        "namespace"
    } else {
        "cluster"
    };
    RequestLabels { verb, group: a.api_group, version, resource: a.resource, subresource: a.subresource, scope }
}

/// Counts one answered request and its time to the answer's head (for a watch, the
/// time to open it, as the apiserver measures).
pub fn record(l: &RequestLabels, code: u16, took: std::time::Duration) {
    let base = [("verb", l.verb.as_str()), ("group", l.group.as_str()), ("version", l.version.as_str()), ("resource", l.resource.as_str()), ("subresource", l.subresource.as_str()), ("scope", l.scope), ("component", "apiserver")];
    let code = code.to_string();
    let mut with_code = base.to_vec();
    with_code.push(("code", &code));
    bus::metrics::inc("apiserver_request_total", "Counter of apiserver requests broken out for each verb, dry run value, group, version, resource, scope, component, and HTTP response code.", bus::metrics::labels(&with_code), 1.0);
    bus::metrics::observe(
        "apiserver_request_duration_seconds",
        "Response latency distribution in seconds for each verb, dry run value, group, version, resource, subresource, scope and component.",
        bus::metrics::APISERVER_BUCKETS,
        bus::metrics::labels(&base),
        took.as_secs_f64(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(method: Method, path: &str, query: &str, ct: Option<&str>) -> RequestLabels {
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        classify(&method, path, &segs, &super::super::parse_query(query), ct)
    }

    fn short(l: &RequestLabels) -> (&str, &str, &str, &str, &str, &str) {
        (&l.verb, &l.group, &l.version, &l.resource, &l.subresource, l.scope)
    }

    #[test]
    fn verbs_are_named_as_the_apiserver_names_them() {
        assert_eq!(short(&of(Method::POST, "/apis/apps/v1/namespaces/default/deployments", "", None)), ("CREATE", "apps", "v1", "deployments", "", "resource"));
        assert_eq!(short(&of(Method::GET, "/api/v1/namespaces/default/pods", "", None)), ("LIST", "", "v1", "pods", "", "namespace"));
        assert_eq!(short(&of(Method::GET, "/api/v1/pods", "watch=true", None)), ("WATCH", "", "v1", "pods", "", "cluster"));
        assert_eq!(short(&of(Method::GET, "/api/v1/namespaces/default/pods/web", "", None)), ("GET", "", "v1", "pods", "", "resource"));
        assert_eq!(short(&of(Method::PUT, "/api/v1/namespaces/default/pods/web/status", "", None)), ("UPDATE", "", "v1", "pods", "status", "resource"));
        assert_eq!(short(&of(Method::PATCH, "/apis/apps/v1/namespaces/d/deployments/x", "", Some("application/strategic-merge-patch+json"))).0, "PATCH");
        assert_eq!(short(&of(Method::PATCH, "/apis/apps/v1/namespaces/d/deployments/x", "fieldManager=kubectl", Some("application/apply-patch+yaml"))).0, "APPLY");
        assert_eq!(short(&of(Method::DELETE, "/api/v1/namespaces/d/pods", "", None)).0, "DELETECOLLECTION");
        assert_eq!(short(&of(Method::DELETE, "/api/v1/namespaces/d/pods/web", "", None)).0, "DELETE");
        assert_eq!(short(&of(Method::POST, "/api/v1/namespaces/d/pods/web/exec", "command=sh", None)).0, "CONNECT");
        assert_eq!(short(&of(Method::GET, "/api/v1/nodes", "", None)), ("LIST", "", "v1", "nodes", "", "cluster"));
    }

    #[test]
    fn non_resource_requests_have_empty_resource_labels() {
        assert_eq!(short(&of(Method::GET, "/healthz", "", None)), ("GET", "", "", "", "", ""));
        assert_eq!(short(&of(Method::GET, "/apis", "", None)), ("GET", "", "", "", "", ""));
    }

    #[test]
    fn recorded_requests_render_with_kubernetes_label_names() {
        let l = of(Method::POST, "/apis/batch/v1/namespaces/t-rm/jobs", "", None);
        record(&l, 201, std::time::Duration::from_millis(3));
        let text = bus::metrics::render();
        assert!(text.contains("apiserver_request_total{verb=\"CREATE\",group=\"batch\",version=\"v1\",resource=\"jobs\",subresource=\"\",scope=\"resource\",component=\"apiserver\",code=\"201\"} 1\n"), "{text}");
        assert!(text.contains("apiserver_request_duration_seconds_bucket{verb=\"CREATE\",group=\"batch\",version=\"v1\",resource=\"jobs\",subresource=\"\",scope=\"resource\",component=\"apiserver\",le=\"0.005\"} 1\n"));
    }
}

//! The service controller's decisions, without a bus.

use super::*;
use k8s_openapi::api::core::v1::{ServiceSpec, ServiceStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

fn svc(typ: &str, ingress_ip: Option<&str>) -> Service {
    Service {
        metadata: ObjectMeta { name: Some("web".into()), namespace: Some("default".into()), ..Default::default() },
        spec: Some(ServiceSpec { type_: Some(typ.into()), ..Default::default() }),
        status: ingress_ip.map(|ip| ServiceStatus { load_balancer: Some(LoadBalancerStatus { ingress: Some(vec![LoadBalancerIngress { ip: Some(ip.into()), ..Default::default() }]) }), ..Default::default() }),
    }
}

#[test]
fn load_balancer_services_are_ensured_and_others_released() {
    assert_eq!(reconcile(Some(&svc("LoadBalancer", None)), false), Some(Step::Ensure));
    assert_eq!(reconcile(Some(&svc("LoadBalancer", Some("127.0.100.1"))), true), Some(Step::Ensure));
    // Changed type: the balancer goes and so do the addresses shown.
    assert_eq!(reconcile(Some(&svc("ClusterIP", Some("127.0.100.1"))), true), Some(Step::Release { clear_status: true }));
    assert_eq!(reconcile(Some(&svc("NodePort", None)), true), Some(Step::Release { clear_status: false }));
    assert_eq!(reconcile(None, true), Some(Step::Release { clear_status: false }));
    assert_eq!(reconcile(None, false), None);
    assert_eq!(reconcile(Some(&svc("ClusterIP", None)), false), None);
}

#[test]
fn another_class_or_a_deletion_is_not_ours() {
    let mut s = svc("LoadBalancer", None);
    s.spec.as_mut().unwrap().load_balancer_class = Some("example.com/lb".into());
    assert!(!wants_balancer(&s));
    let mut s = svc("LoadBalancer", None);
    s.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH));
    assert!(!wants_balancer(&s));
}

#[test]
fn the_status_is_written_only_when_it_differs() {
    let want = vec![LoadBalancerIngress { ip: Some("127.0.100.1".into()), ..Default::default() }];
    assert_eq!(status_change(&svc("LoadBalancer", None), &want), Some(LoadBalancerStatus { ingress: Some(want.clone()) }));
    assert_eq!(status_change(&svc("LoadBalancer", Some("127.0.100.1")), &want), None);
    assert_eq!(status_change(&svc("ClusterIP", Some("127.0.100.1")), &[]), Some(LoadBalancerStatus { ingress: None }));
    assert_eq!(status_change(&svc("ClusterIP", None), &[]), None);
}

#[tokio::test]
async fn the_local_provider_gives_each_service_its_address_until_released() {
    let mut p = local::LocalPool::new("127.0.100.0/24").unwrap();
    let a = p.ensure("default/a", &svc("LoadBalancer", None)).await.unwrap();
    let b = p.ensure("default/b", &svc("LoadBalancer", None)).await.unwrap();
    assert_eq!((a[0].ip.as_deref(), b[0].ip.as_deref()), (Some("127.0.100.1"), Some("127.0.100.2")));
    p.release("default/a").await;
    let c = p.ensure("default/c", &svc("LoadBalancer", None)).await.unwrap();
    assert_eq!(c[0].ip.as_deref(), Some("127.0.100.1"));
    let mut bad = svc("LoadBalancer", None);
    bad.spec.as_mut().unwrap().load_balancer_ip = Some("nope".into());
    assert!(matches!(p.ensure("default/d", &bad).await, Err(ProviderError::Refused(_))));
}

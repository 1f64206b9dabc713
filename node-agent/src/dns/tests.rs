//! The server shell's wire behaviour without NATS: queries in, replies out, and
//! forwarding to an upstream that is a socket on loopback.

use super::*;
use hickory_proto::op::Query;
use hickory_proto::rr::{Name, RecordType};

fn shared(upstreams: Vec<SocketAddr>) -> Shared {
    let mut snap = Snapshot::default();
    snap.services.insert(("default".into(), "web".into()), resolve::ServiceEntry { cluster_ip: Some("10.96.0.20".parse().unwrap()), ..Default::default() });
    Shared { snap: Arc::new(RwLock::new(snap)), upstreams }
}

fn query(name: &str, t: RecordType) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = 4242;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    m.to_vec().unwrap()
}

#[tokio::test]
async fn cluster_names_are_answered_with_the_query_id() {
    let reply = Message::from_vec(&answer(&shared(vec![]), &query("web.default.svc.cluster.local.", RecordType::A)).await.unwrap()).unwrap();
    assert_eq!(reply.metadata.id, 4242);
    assert_eq!(reply.metadata.message_type, MessageType::Response);
    assert!(reply.metadata.authoritative && reply.metadata.recursion_desired);
    assert_eq!(reply.queries.len(), 1);
    assert_eq!(reply.answers.iter().map(|r| r.data.to_string()).collect::<Vec<_>>(), vec!["10.96.0.20"]);

    let reply = Message::from_vec(&answer(&shared(vec![]), &query("nope.default.svc.cluster.local.", RecordType::A)).await.unwrap()).unwrap();
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
}

#[tokio::test]
async fn other_names_go_upstream_as_they_came() {
    let up = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let up_addr = up.local_addr().unwrap();
    let fake = tokio::spawn(async move {
        let mut buf = vec![0u8; 512];
        let (n, from) = up.recv_from(&mut buf).await.unwrap();
        let req = Message::from_vec(&buf[..n]).unwrap();
        let mut resp = Message::response(req.metadata.id, OpCode::Query);
        resp.add_query(req.queries[0].clone());
        resp.metadata.response_code = ResponseCode::Refused;
        up.send_to(&resp.to_vec().unwrap(), from).await.unwrap();
        req.queries[0].name.to_ascii()
    });
    let reply = answer(&shared(vec![up_addr]), &query("example.com.", RecordType::A)).await.unwrap();
    let reply = Message::from_vec(&reply).unwrap();
    assert_eq!(fake.await.unwrap(), "example.com.");
    assert_eq!(reply.metadata.id, 4242);
    assert_eq!(reply.metadata.response_code, ResponseCode::Refused);
}

#[tokio::test(start_paused = true)]
async fn a_silent_upstream_is_a_server_failure() {
    let up = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let reply = answer(&shared(vec![up.local_addr().unwrap()]), &query("example.com.", RecordType::A)).await.unwrap();
    assert_eq!(Message::from_vec(&reply).unwrap().metadata.response_code, ResponseCode::ServFail);
}

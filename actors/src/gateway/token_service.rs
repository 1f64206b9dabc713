//! ServiceAccount tokens for the node agents: a kubelet mounting a projected
//! `serviceAccountToken` asks on `subjects::TOKEN_REQUEST` (it has no signing key); one
//! gateway answers, signing as it does for `kubectl create token`, with the token bound
//! to the pod so that it dies with it.

use super::tokens::{ObjectRef, TokenIssuer};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use schema::codec;
use schema::tokens::{TokenReply, TokenRequest, MIN_EXPIRATION};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// `node`: the node agent that asked on its own subject (None: a trusted identity asked).
async fn answer(client: &bus::Client, issuer: &TokenIssuer, r: TokenRequest, node: Option<&str>) -> TokenReply {
    let ns = Some(r.namespace.as_str());
    let sa = match client.get::<ServiceAccount>(ns, &r.service_account).await {
        Ok(Some(sa)) => sa,
        Ok(None) => return TokenReply::Refused(format!("serviceaccounts \"{}\" not found", r.service_account)),
        Err(e) => return TokenReply::Refused(format!("reading serviceaccount \"{}\": {e}", r.service_account)),
    };
    match client.get::<Pod>(ns, &r.pod).await {
        // The Node authorizer's rule: a node gets tokens only for the pods bound to it.
        Ok(Some(p)) if node.is_some() && p.spec.as_ref().and_then(|s| s.node_name.as_deref()) != node => {
            return TokenReply::Refused(format!("node {:?} may not request a token for pod \"{}\": the pod is not bound to it", node.unwrap_or_default(), r.pod));
        }
        Ok(Some(p)) if p.metadata.uid.as_deref() == Some(r.pod_uid.as_str()) => {}
        Ok(Some(_)) => return TokenReply::Refused(format!("the UID in the bound object reference ({}) does not match the UID in record. The object might have been deleted and then recreated", r.pod_uid)),
        Ok(None) => return TokenReply::Refused(format!("pods \"{}\" not found", r.pod)),
        Err(e) => return TokenReply::Refused(format!("reading pod \"{}\": {e}", r.pod)),
    }
    let uid = sa.metadata.uid.clone().unwrap_or_default();
    let aud = if r.audiences.is_empty() { issuer.audiences() } else { r.audiences.clone() };
    let seconds = r.expiration_seconds.max(MIN_EXPIRATION);
    let now = jiff::Timestamp::now().as_second();
    match issuer.issue(&r.namespace, &r.service_account, &uid, aud, seconds, now, Some(("Pod", ObjectRef { name: r.pod.clone(), uid: r.pod_uid.clone() }))) {
        Ok(token) => TokenReply::Token { token, expires_at: now + seconds },
        Err(e) => TokenReply::Refused(e.to_string()),
    }
}

/// Answers token requests until `stop`; without a signing key there is nothing to serve.
pub async fn serve(bus: bus::Bus, issuer: Arc<TokenIssuer>, stop: CancellationToken) {
    let nats = bus.nats.clone();
    let client = bus::Client::new(bus);
    let subscribed = async {
        let shared = nats.queue_subscribe(schema::subjects::TOKEN_REQUEST, schema::subjects::TOKEN_QUEUE.to_string()).await?;
        let per_node = nats.queue_subscribe(schema::subjects::NODE_TOKEN_REQUESTS, schema::subjects::TOKEN_QUEUE.to_string()).await?;
        Ok::<_, async_nats::SubscribeError>(futures::stream::select(shared, per_node))
    };
    let mut sub = match subscribed.await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "gateway: cannot serve ServiceAccount tokens to the nodes");
            return;
        }
    };
    loop {
        let msg = tokio::select! {
            _ = stop.cancelled() => return,
            m = sub.next() => match m { Some(m) => m, None => return },
        };
        let Some(reply) = msg.reply.clone() else { continue };
        let (client, issuer, nats) = (client.clone(), issuer.clone(), nats.clone());
        let span = tracing::info_span!("actor", actor = "gateway", op = "token");
        use tracing::Instrument;
        tokio::spawn(
            async move {
                let out = match codec::decode::<TokenRequest>(&msg.payload) {
                    Ok(r) => {
                        let node = schema::subjects::node_of_request(msg.subject.as_str()).map(schema::subjects::untoken);
                        answer(&client, &issuer, r, node.as_deref()).await
                    }
                    Err(e) => TokenReply::Refused(format!("bad token request: {e}")),
                };
                if let Ok(bytes) = codec::encode(&out) {
                    let _ = nats.publish(reply, bytes.into()).await;
                }
            }
            .instrument(span),
        );
    }
}

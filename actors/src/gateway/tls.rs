//! The listener: rustls (ring provider) in front of hyper's HTTP/1.1 + HTTP/2 server,
//! or plain TCP when no certificate is given. The TLS server asks for (and does not
//! require) a client certificate, verified against the cluster CA; the user it names is
//! worked out once per connection and handed to every request on it. Each connection
//! runs in its own task and is shut down gracefully when the gateway stops.

use super::TlsFiles;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

pub fn acceptor(files: &TlsFiles) -> anyhow::Result<TlsAcceptor> {
    // Another component may have installed it already; either way ring is the provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certs = CertificateDer::pem_slice_iter(files.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("gateway: reading the serving certificate: {e:?}"))?;
    if certs.is_empty() {
        anyhow::bail!("gateway: the serving certificate PEM holds no certificate");
    }
    let key = PrivateKeyDer::from_pem_slice(files.key_pem.as_bytes()).map_err(|e| anyhow::anyhow!("gateway: reading the serving key: {e:?}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = match &files.client_ca_pem {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                roots.add(c.map_err(|e| anyhow::anyhow!("gateway: reading the client CA: {e:?}"))?)?;
            }
            // Asked for, not required: kubectl with a token, curl and anonymous callers
            // present none and are authenticated another way.
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).allow_unauthenticated().build()?
        }
        None => rustls::server::WebPkiClientVerifier::no_client_auth(),
    };
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider).with_safe_default_protocol_versions()?.with_client_cert_verifier(verifier).with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

/// Accepts until `shutdown` fires, then lets open connections finish (bounded).
pub async fn accept_loop(listener: TcpListener, tls: Option<TlsAcceptor>, router: axum::Router, shutdown: CancellationToken) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "gateway: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let (tls, router, stop) = (tls.clone(), router.clone(), shutdown.clone());
        conns.spawn(async move {
            match tls {
                Some(acc) => match tokio::time::timeout(Duration::from_secs(10), acc.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let user = peer_user(stream.get_ref().1.peer_certificates());
                        serve_conn(TokioIo::new(stream), router, PeerUser(user), stop).await
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "gateway: TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "gateway: TLS handshake timed out"),
                },
                None => serve_conn(TokioIo::new(tcp), router, PeerUser(None), stop).await,
            }
        });
        // Reap finished connection tasks so the set does not grow without bound.
        while conns.try_join_next().is_some() {}
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(10), async { while conns.join_next().await.is_some() {} }).await;
    conns.abort_all();
}

/// The user a connection's verified client certificate names, carried on each request.
#[derive(Clone, Debug)]
pub struct PeerUser(pub Option<schema::rbac::UserInfo>);

fn peer_user(certs: Option<&[CertificateDer<'static>]>) -> Option<schema::rbac::UserInfo> {
    let leaf = certs?.first()?;
    match super::authn::user_from_cert(leaf.as_ref()) {
        Ok(u) => Some(u),
        Err(e) => {
            // The chain verified, so this is a certificate without a usable subject:
            // the connection carries no user and the request falls back to its token.
            tracing::debug!(error = %e, "gateway: client certificate names no user");
            None
        }
    }
}

async fn serve_conn<I>(io: TokioIo<I>, router: axum::Router, peer: PeerUser, stop: CancellationToken)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use tower::Layer;
    let builder = Builder::new(TokioExecutor::new());
    let svc = axum::Extension(peer).layer(router);
    let conn = builder.serve_connection_with_upgrades(io, TowerToHyperService::new(svc));
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "gateway: connection ended with an error");
            }
        }
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn.as_mut()).await;
        }
    }
}

//! The CRI v1 gRPC client (generated from proto/cri.proto) over the runtime's unix
//! socket, and the error text the kubelet shows for a failed call (Go's gRPC wording,
//! `rpc error: code = NotFound desc = …`, as `kubectl describe` users know it).

#[allow(clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("runtime.v1");
}

use pb::image_service_client::ImageServiceClient;
use pb::runtime_service_client::RuntimeServiceClient;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

#[derive(Clone)]
pub struct Cri {
    pub runtime: RuntimeServiceClient<Channel>,
    pub images: ImageServiceClient<Channel>,
}

/// A gRPC status as Go's grpc-go prints it (the kubelet passes that text on).
pub fn go_error(s: &tonic::Status) -> String {
    let code = match s.code() {
        tonic::Code::Ok => "OK",
        tonic::Code::Cancelled => "Canceled",
        tonic::Code::Unknown => "Unknown",
        tonic::Code::InvalidArgument => "InvalidArgument",
        tonic::Code::DeadlineExceeded => "DeadlineExceeded",
        tonic::Code::NotFound => "NotFound",
        tonic::Code::AlreadyExists => "AlreadyExists",
        tonic::Code::PermissionDenied => "PermissionDenied",
        tonic::Code::ResourceExhausted => "ResourceExhausted",
        tonic::Code::FailedPrecondition => "FailedPrecondition",
        tonic::Code::Aborted => "Aborted",
        tonic::Code::OutOfRange => "OutOfRange",
        tonic::Code::Unimplemented => "Unimplemented",
        tonic::Code::Internal => "Internal",
        tonic::Code::Unavailable => "Unavailable",
        tonic::Code::DataLoss => "DataLoss",
        tonic::Code::Unauthenticated => "Unauthenticated",
    };
    format!("rpc error: code = {code} desc = {}", s.message())
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connecting to the CRI socket {0}: {1}")]
    Transport(PathBuf, tonic::transport::Error),
    #[error("the CRI runtime at {0} did not answer Version within {1:?}: {2}")]
    NoAnswer(PathBuf, Duration, String),
}

impl Cri {
    /// A lazily connecting channel to `socket` (a unix socket path, or `unix://path`).
    pub fn new(socket: &Path) -> Result<Cri, ConnectError> {
        let path = PathBuf::from(socket.to_string_lossy().trim_start_matches("unix://"));
        let p = path.clone();
        // The URI is required by the builder and ignored by the connector.
        let channel = Endpoint::from_static("http://cri.invalid")
            .connect_timeout(Duration::from_secs(5))
            .connect_with_connector_lazy(tower::service_fn(move |_: tonic::transport::Uri| {
                let p = p.clone();
                async move { tokio::net::UnixStream::connect(p).await.map(hyper_util::rt::TokioIo::new) }
            }));
        Ok(Cri { runtime: RuntimeServiceClient::new(channel.clone()), images: ImageServiceClient::new(channel) })
    }

    /// Asks Version until the runtime answers or `limit` passes (a runtime just started
    /// needs a moment before its socket exists).
    pub async fn wait_version(&self, socket: &Path, limit: Duration) -> Result<pb::VersionResponse, ConnectError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let mut rt = self.runtime.clone();
            let err = match tokio::time::timeout(Duration::from_secs(5), rt.version(pb::VersionRequest { version: "v1".into() })).await {
                Ok(Ok(v)) => return Ok(v.into_inner()),
                Ok(Err(e)) => go_error(&e),
                Err(_) => "timed out".to_string(),
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(ConnectError::NoAnswer(socket.to_path_buf(), limit, err));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

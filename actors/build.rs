//! Generates the state group's Raft gRPC service from a Rust description (no .proto and
//! no protoc): messages are openraft's own serde types, carried as MessagePack by
//! `state::transport::MsgPackCodec`.

use tonic_build::manual::{Builder, Method, Service};

fn method(name: &str, route: &str, input: &str, output: &str) -> Method {
    Method::builder()
        .name(name)
        .route_name(route)
        .input_type(format!("crate::state::transport::{input}"))
        .output_type(format!("crate::state::transport::{output}"))
        .codec_path("crate::state::transport::MsgPackCodec")
        .build()
}

fn main() {
    let raft = Service::builder()
        .name("Raft")
        .package("flotilla.state")
        .method(method("append_entries", "AppendEntries", "AppendReq", "AppendResp"))
        .method(method("vote", "Vote", "VoteReq", "VoteResp"))
        .method(method("install_snapshot", "InstallSnapshot", "SnapshotReq", "SnapshotResp"))
        .method(method("set_fault", "SetFault", "Fault", "Fault"))
        .build();
    Builder::new().compile(&[raft]);
    println!("cargo:rerun-if-changed=build.rs");
}

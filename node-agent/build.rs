//! Generates the CRI v1 gRPC client (RuntimeService, ImageService) from proto/cri.proto and
//! grpc.health.v1 from proto/health.proto (the client for grpc probes; its server only
//! serves the prober's own tests), parsed by protox in Rust so that building needs no protoc.

fn main() {
    let cri = protox::compile(["proto/cri.proto"], ["proto"]).expect("parsing proto/cri.proto");
    tonic_prost_build::configure().build_server(false).compile_fds(cri).expect("generating the CRI client");
    let health = protox::compile(["proto/health.proto"], ["proto"]).expect("parsing proto/health.proto");
    tonic_prost_build::configure().build_server(true).compile_fds(health).expect("generating grpc.health.v1");
    println!("cargo:rerun-if-changed=proto/cri.proto");
    println!("cargo:rerun-if-changed=proto/health.proto");
}

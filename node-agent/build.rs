//! Generates the CRI v1 gRPC client (RuntimeService, ImageService) from proto/cri.proto and
//! the grpc.health.v1 client (grpc probes) from proto/health.proto,
//! parsed by protox in Rust so that building needs no protoc.

fn main() {
    let fds = protox::compile(["proto/cri.proto", "proto/health.proto"], ["proto"]).expect("parsing the protos");
    tonic_prost_build::configure()
        .build_server(false)
        .compile_fds(fds)
        .expect("generating the CRI client");
    println!("cargo:rerun-if-changed=proto/cri.proto");
    println!("cargo:rerun-if-changed=proto/health.proto");
}

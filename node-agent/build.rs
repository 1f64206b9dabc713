//! Generates the CRI v1 gRPC client (RuntimeService, ImageService) from proto/cri.proto,
//! parsed by protox in Rust so that building needs no protoc.

fn main() {
    let fds = protox::compile(["proto/cri.proto"], ["proto"]).expect("parsing proto/cri.proto");
    tonic_prost_build::configure()
        .build_server(false)
        .compile_fds(fds)
        .expect("generating the CRI client");
    println!("cargo:rerun-if-changed=proto/cri.proto");
}

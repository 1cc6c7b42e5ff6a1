//! Compiles `pss.proto` with protox (pure Rust), so no system `protoc` is needed. The gRPC
//! clients and servers are generated only with the `grpc` feature: the pure core uses the
//! messages alone and must not link tonic or tokio.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=pss.proto");
    let grpc = std::env::var_os("CARGO_FEATURE_GRPC").is_some();
    let fds = protox::compile(["pss.proto"], ["."])?;
    tonic_prost_build::configure()
        .build_server(grpc)
        .build_client(grpc)
        .compile_fds(fds)?;
    Ok(())
}

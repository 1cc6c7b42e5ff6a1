//! Compiles etcd's v3 API protos (copied from etcd 3.5 as trimmed by the `etcd-client` crate,
//! Apache-2.0) with protox, so no system `protoc` is needed. Only clients are generated.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["etcd/api/etcdserverpb/rpc.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}

//! Compiles proto/ with protox (pure Rust), so building needs no system `protoc`,
//! and keeps the encoded descriptors for the API's server reflection.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/ra/v1/ra.proto", "proto/ra/v1/lock.proto"];
    // compile_fds does not emit rerun-if-changed for the inputs itself.
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("ra_descriptors.bin"), descriptors.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Buffers sized for our small messages (see `wire::codec`).
        .codec_path("crate::wire::codec::SmallBuffers")
        .compile_fds(descriptors)?;
    // The benchmark's floor, kept out of the descriptors above: reflection on
    // a node's API lists only what the node serves.
    let floor = "proto/ra/bench/v1/floor.proto";
    println!("cargo:rerun-if-changed={floor}");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(protox::compile([floor], ["proto"])?)?;
    Ok(())
}

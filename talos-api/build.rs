//! Compiles the Talos API protos (reference/talos/api, Talos v1.13) into Rust with protox, a
//! protobuf compiler in Rust, so building needs no `protoc` on the machine.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let talos = manifest.join("../reference/talos/api");
    let ours = manifest.join("proto");
    let files = ["machine/machine.proto", "cluster/cluster.proto"];
    for dir in [&talos, &ours] {
        println!("cargo:rerun-if-changed={}", dir.display());
    }
    let descriptors = protox::compile(files, [&talos, &ours])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // The stand-in implements the calls lab-bootstrap makes; the rest answer Unimplemented.
        .generate_default_stubs(true)
        .compile_fds(descriptors)?;
    Ok(())
}

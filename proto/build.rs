//! Compiles the `.proto` files with `protox` (pure Rust, no system `protoc`), generates
//! prost types, tonic services (the xDS transport) and the proto3-JSON serde impls
//! (pbjson) of the `agentmesh.*` packages, and writes the descriptor set that the JSON
//! Schema generator reads.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Every .proto under proto/ is compiled: adding a file needs no change here.
    let mut protos = Vec::new();
    collect_protos(std::path::Path::new("proto"), &mut protos)?;
    protos.sort();
    println!("cargo:rerun-if-changed=proto");
    for p in &protos {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let fds = protox::compile(&protos, ["proto"])?;
    let descriptor_path = out.join("descriptor.bin");
    std::fs::write(&descriptor_path, fds.encode_to_vec())?;

    let mut config = prost_build::Config::new();
    config
        .file_descriptor_set_path(&descriptor_path)
        .skip_protoc_run()
        .compile_well_known_types()
        .extern_path(".google.protobuf", "::pbjson_types")
        // tonic client and server code for the services (the xDS transport).
        .service_generator(tonic_prost_build::configure().service_generator());
    config.compile_fds(fds)?;

    let descriptors = std::fs::read(&descriptor_path)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .extern_path(".google.protobuf", "::pbjson_types")
        .build(&[".agentmesh"])?;
    Ok(())
}

fn collect_protos(
    dir: &std::path::Path,
    out: &mut Vec<PathBuf>,
) -> Result<(), Box<dyn std::error::Error>> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
    Ok(())
}

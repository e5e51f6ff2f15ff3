// Code generation shared by the three build scripts (control plane: servers;
// data plane and the `gatehouse` binary: clients). Each build.rs `include!`s this
// file, so the rules for running protoc live in one place.

/// Generates Rust for `proto/gatehouse/v1`, with servers and/or clients, and a
/// file descriptor set (`gatehouse_descriptor.bin`) for server reflection.
#[allow(dead_code)]
fn generate_gatehouse_proto(servers: bool, clients: bool) -> Result<(), Box<dyn std::error::Error>> {
    // Read when the script runs, not baked in when it was compiled: a target
    // directory shared by two checkouts may run a script compiled in the other.
    let root = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_dir = root.join(PROTO_DIR);
    let files: Vec<std::path::PathBuf> = ["common", "flow", "token", "admin"]
        .iter()
        .map(|name| proto_dir.join(format!("gatehouse/v1/{name}.proto")))
        .collect();
    println!("cargo:rerun-if-changed={}", proto_dir.display());
    println!("cargo:rerun-if-env-changed=PROTOC");

    let mut config = tonic_prost_build::Config::new();
    // A fresh machine has no protoc: use the vendored one unless PROTOC names another.
    if std::env::var_os("PROTOC").is_none() {
        config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    }
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .build_server(servers)
        .build_client(clients)
        // RPCs whose issue has not landed answer UNIMPLEMENTED, never a fake success.
        .generate_default_stubs(true)
        .file_descriptor_set_path(out_dir.join("gatehouse_descriptor.bin"))
        .compile_with_config(config, &files, &[proto_dir])?;
    Ok(())
}

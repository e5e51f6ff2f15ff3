//! Generates the control plane's side of `proto/`: the gRPC servers.
const PROTO_DIR: &str = "../proto";
include!("../proto/codegen.rs");

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../migrations");
    generate_gatehouse_proto(true, false)
}

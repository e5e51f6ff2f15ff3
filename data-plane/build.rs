//! Generates the data plane's side of `proto/`: the gRPC clients.
const PROTO_DIR: &str = "../proto";
include!("../proto/codegen.rs");

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=templates");
    println!("cargo:rerun-if-changed=../templates");
    generate_gatehouse_proto(false, true)
}

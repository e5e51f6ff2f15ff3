//! Generates gRPC clients for the binary's admin commands and the tests.
const PROTO_DIR: &str = "proto";
include!("proto/codegen.rs");

fn main() -> Result<(), Box<dyn std::error::Error>> {
    generate_gatehouse_proto(false, true)
}

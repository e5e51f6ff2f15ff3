//! Generated types of `proto/gatehouse/v1` (servers only). They stop at `grpc/`:
//! domain code never names them.

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("gatehouse.v1");

/// The encoded file descriptor set, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("gatehouse_descriptor");

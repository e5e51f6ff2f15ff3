//! Generated gRPC clients of `proto/gatehouse/v1`, for the admin commands and the tests.

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("gatehouse.v1");

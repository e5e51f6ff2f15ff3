//! Generated clients of `proto/gatehouse/v1`. They stop at `cp_client`: the
//! rest of the data plane never names them.

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("gatehouse.v1");

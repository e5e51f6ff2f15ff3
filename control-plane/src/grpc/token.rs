//! `gatehouse.v1.TokenService`. Every RPC answers UNIMPLEMENTED (the generated
//! default) until the consent-flow and gateway issues land.

use std::sync::Arc;

use crate::Core;
use crate::pb::token_service_server::TokenService;

pub struct Token {
    #[allow(dead_code)]
    core: Arc<Core>,
}

impl Token {
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }
}

#[tonic::async_trait]
impl TokenService for Token {}

//! `gatehouse.v1.FlowService`. Every RPC answers UNIMPLEMENTED (the generated
//! default) until the consent-flow issue lands.

use std::sync::Arc;

use crate::Core;
use crate::pb::flow_service_server::FlowService;

pub struct Flow {
    #[allow(dead_code)]
    core: Arc<Core>,
}

impl Flow {
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }
}

#[tonic::async_trait]
impl FlowService for Flow {}

//! A gRPC client for administrators (and tests): any Gatehouse service, with
//! a bearer credential on every call.

use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use crate::pb::admin_service_client::AdminServiceClient;
use crate::pb::flow_service_client::FlowServiceClient;
use crate::pb::token_service_client::TokenServiceClient;

/// Adds `authorization: Bearer …` to every call.
#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request.metadata_mut().insert("authorization", self.0.clone());
        Ok(request)
    }
}

pub type Authorized = InterceptedService<Channel, Bearer>;

/// A connected client.
#[derive(Clone)]
pub struct GrpcClient {
    channel: Channel,
    bearer: Bearer,
}

impl GrpcClient {
    /// Connects to `url` (`http://host:port`) presenting `credential`.
    pub async fn connect(url: &str, credential: &str) -> anyhow::Result<Self> {
        let channel = Endpoint::from_shared(url.to_string())?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(120))
            .connect()
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach the control plane at {url}: {e}"))?;
        let bearer = Bearer(
            format!("Bearer {}", credential.trim())
                .parse()
                .map_err(|_| anyhow::anyhow!("the credential has characters a header cannot carry"))?,
        );
        Ok(Self { channel, bearer })
    }

    pub fn admin(&self) -> AdminServiceClient<Authorized> {
        AdminServiceClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }

    pub fn flows(&self) -> FlowServiceClient<Authorized> {
        FlowServiceClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }

    pub fn tokens(&self) -> TokenServiceClient<Authorized> {
        TokenServiceClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }

    /// The raw channel (health, reflection).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }
}

/// The machine-readable refusal a Gatehouse status carries (its `ErrorDetail`,
/// inside the google.rpc.Status-shaped details), if any.
pub fn error_detail(status: &Status) -> Option<crate::pb::ErrorDetail> {
    use prost::Message as _;
    let details = crate::pb::StatusDetails::decode(status.details()).ok()?;
    details
        .details
        .iter()
        .find(|d| d.type_url == "type.googleapis.com/gatehouse.v1.ErrorDetail")
        .and_then(|d| crate::pb::ErrorDetail::decode(d.value.as_slice()).ok())
}

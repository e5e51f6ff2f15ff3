//! The data plane's only gRPC client: a channel to the control plane (balanced
//! across every configured address) that presents the data-plane credential
//! on each call and gives each call a deadline.

use std::time::Duration;

use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};

use crate::config::ControlPlaneClientConfig;
use crate::pb::flow_service_client::FlowServiceClient;
use crate::pb::token_service_client::TokenServiceClient;

#[derive(Debug, thiserror::Error)]
pub enum CpClientError {
    #[error("no control-plane URL configured")]
    NoUrls,
    #[error("control-plane URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("no control-plane credential: set data_plane.control_plane.token_file or GATEHOUSE_DATA_PLANE__CONTROL_PLANE__TOKEN")]
    NoCredential,
    #[error("control-plane credential file {0}: {1}")]
    CredentialFile(String, std::io::Error),
    #[error("control-plane CA file {0}: {1}")]
    CaFile(String, std::io::Error),
}

/// Adds the credential and the deadline to every call.
#[derive(Clone)]
pub struct Authorize {
    bearer: MetadataValue<tonic::metadata::Ascii>,
    deadline: Duration,
}

impl Interceptor for Authorize {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request.metadata_mut().insert("authorization", self.bearer.clone());
        request.set_timeout(self.deadline);
        Ok(request)
    }
}

type Authorized = InterceptedService<Channel, Authorize>;

/// Clients of the control plane's services. Cheap to clone.
#[derive(Clone)]
pub struct ControlPlaneClient {
    channel: Channel,
    authorize: Authorize,
}

impl std::fmt::Debug for ControlPlaneClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ControlPlaneClient")
    }
}

impl ControlPlaneClient {
    /// Builds the channel. Connections are made lazily, so a data plane starts
    /// while its control plane is still coming up.
    pub fn new(config: &ControlPlaneClientConfig) -> Result<Self, CpClientError> {
        if config.urls.is_empty() {
            return Err(CpClientError::NoUrls);
        }
        let credential = match (&config.token_file, config.token.is_empty()) {
            (Some(path), _) => std::fs::read_to_string(path)
                .map_err(|e| CpClientError::CredentialFile(path.display().to_string(), e))?
                .trim()
                .to_string(),
            (None, false) => config.token.expose().trim().to_string(),
            (None, true) => return Err(CpClientError::NoCredential),
        };
        if credential.is_empty() {
            return Err(CpClientError::NoCredential);
        }
        let tls = match &config.ca_file {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| CpClientError::CaFile(path.display().to_string(), e))?;
                Some(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
            }
            None => None,
        };
        let mut endpoints = Vec::with_capacity(config.urls.len());
        for url in &config.urls {
            let bad = |reason: String| CpClientError::BadUrl {
                url: url.clone(),
                reason,
            };
            let mut endpoint = Endpoint::from_shared(url.clone())
                .map_err(|e| bad(e.to_string()))?
                .connect_timeout(Duration::from_secs(3))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(20))
                .keep_alive_while_idle(true);
            if let Some(tls) = &tls {
                endpoint = endpoint.tls_config(tls.clone()).map_err(|e| bad(e.to_string()))?;
            }
            endpoints.push(endpoint);
        }
        let channel = Channel::balance_list(endpoints.into_iter());
        let bearer = format!("Bearer {credential}")
            .parse()
            .map_err(|_| CpClientError::NoCredential)?;
        Ok(Self {
            channel,
            authorize: Authorize {
                bearer,
                deadline: config.deadline(),
            },
        })
    }

    /// The flow service.
    pub fn flows(&self) -> FlowServiceClient<Authorized> {
        FlowServiceClient::with_interceptor(self.channel.clone(), self.authorize.clone())
    }

    /// The token service.
    pub fn tokens(&self) -> TokenServiceClient<Authorized> {
        TokenServiceClient::with_interceptor(self.channel.clone(), self.authorize.clone())
    }

    /// Whether the control plane reports itself serving (standard gRPC health).
    pub async fn is_serving(&self) -> bool {
        let mut health = tonic_health::pb::health_client::HealthClient::new(self.channel.clone());
        let mut request = Request::new(tonic_health::pb::HealthCheckRequest { service: String::new() });
        request.set_timeout(Duration::from_secs(2));
        match health.check(request).await {
            Ok(reply) => reply.into_inner().status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            Err(status) => {
                tracing::debug!(target: "gatehouse::cp_client", code = ?status.code(), error = %status, "control-plane health check failed");
                false
            }
        }
    }
}

//! The control plane's `/mcp` RPCs on their own: `ResolveAccessToken` (bearer
//! → caller) and `GetUpstreamCredential` (grant + service → the sealed
//! upstream token, opened), closed loop over one HTTP/2 channel (as a data
//! plane holds one), each call as a random seeded user.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse::pb::token_service_client::TokenServiceClient;
use gatehouse::pb::{GetUpstreamCredentialRequest, ResolveAccessTokenRequest};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::load::{Rng, RunResult, merge, micros};

#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        request.metadata_mut().insert("authorization", self.0.clone());
        request.set_timeout(Duration::from_secs(10));
        Ok(request)
    }
}

pub type Client = TokenServiceClient<InterceptedService<Channel, Bearer>>;

/// A client of the control plane at `url` presenting the data-plane `credential`.
pub async fn client(url: &str, credential: &str) -> anyhow::Result<Client> {
    let channel = Endpoint::from_shared(url.to_owned())?.tcp_nodelay(true).connect().await?;
    let bearer = Bearer(format!("Bearer {credential}").parse()?);
    Ok(TokenServiceClient::with_interceptor(channel, bearer))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rpc {
    Resolve,
    Credential,
}

/// Users the calls pick from: their access tokens and grant ids.
pub struct Users {
    pub tokens: Vec<String>,
    pub grants: Vec<String>,
    pub service: String,
}

/// `concurrency` tasks calling `rpc` back to back for `duration`, each call
/// as a random user among the first `users` (every call must succeed).
pub async fn closed_loop(
    client: &Client,
    users: &Arc<Users>,
    count: usize,
    rpc: Rpc,
    concurrency: usize,
    duration: Duration,
    seed: u64,
) -> RunResult {
    let started = Instant::now();
    let end = started + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let (mut client, users) = (client.clone(), users.clone());
        tasks.spawn(async move {
            let mut rng = Rng::new(seed ^ ((worker as u64 + 1) << 32));
            let mut result = RunResult::default();
            while Instant::now() < end {
                let user = rng.below(count);
                let sent = Instant::now();
                let outcome = match rpc {
                    Rpc::Resolve => client
                        .resolve_access_token(ResolveAccessTokenRequest {
                            access_token: users.tokens[user].clone(),
                        })
                        .await
                        .map(|r| r.into_inner().grant_id.is_empty()),
                    Rpc::Credential => client
                        .get_upstream_credential(GetUpstreamCredentialRequest {
                            grant_id: users.grants[user].clone(),
                            service: users.service.clone(),
                        })
                        .await
                        .map(|r| r.into_inner().headers.is_empty()),
                };
                match outcome {
                    Ok(false) => result.latencies_us.push(micros(sent.elapsed())),
                    Ok(true) => {
                        result.errors += 1;
                        result.first_error.get_or_insert_with(|| "empty answer".into());
                    }
                    Err(status) => {
                        result.errors += 1;
                        result.first_error.get_or_insert_with(|| format!("{status:?}"));
                    }
                }
            }
            result
        });
    }
    let mut total = RunResult::default();
    while let Some(joined) = tasks.join_next().await {
        if let Ok(result) = joined {
            merge(&mut total, result);
        }
    }
    total.elapsed = started.elapsed();
    total
}

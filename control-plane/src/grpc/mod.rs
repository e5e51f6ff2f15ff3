//! The gRPC edge: authentication of callers, the services, health and
//! reflection, and the mapping of domain errors to statuses.
//!
//! `pb` types stop here: services convert them to domain values, make one
//! domain call and convert the answer back.

mod admin;
mod flow;
mod flow_links;
mod flow_upstream;
pub mod status;
mod token;
mod token_gateway;

use std::sync::Arc;

use tonic::service::Interceptor;
use tonic::transport::server::Router;
use tonic::transport::{Server, ServerTlsConfig};
use tonic::{Request, Status};
use tower::layer::util::{Identity, Stack};

use crate::config::Role;
use crate::metrics::GrpcLayer;
use crate::pb;
use crate::pb::admin_service_server::AdminServiceServer;
use crate::pb::flow_service_server::FlowServiceServer;
use crate::pb::token_service_server::TokenServiceServer;
use crate::secret;
use crate::{Core, StartError};

/// Who is calling, as established by [`Authenticator`]; found in request extensions.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

impl Caller {
    /// The caller of a request that passed [`Authenticator`].
    pub fn of<T>(request: &Request<T>) -> Result<&Caller, Status> {
        // Invariant: every service is wrapped by Authenticator, which inserts a
        // Caller or refuses the request; a missing one is a wiring bug.
        request
            .extensions()
            .get::<Caller>()
            .ok_or_else(|| Status::internal("internal error"))
    }

    /// Refuses callers without `role`.
    pub fn require(&self, role: Role) -> Result<(), Status> {
        if self.role == role {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "this call needs the {} role; caller {:?} has {}",
                role.as_str(),
                self.name,
                role_name(self.role)
            )))
        }
    }
}

fn role_name(role: Role) -> &'static str {
    role.as_str()
}

/// Authenticates a service credential presented as `authorization: Bearer …`
/// and checks the caller's role is one this service accepts.
///
/// Security: credentials are configured as SHA-256 hashes; the presented
/// value is hashed and compared against every configured hash in constant
/// time, so neither timing nor a database of hashes reveals a credential.
#[derive(Clone)]
pub struct Authenticator {
    callers: Arc<Vec<(Vec<u8>, Caller)>>,
    accepted: &'static [Role],
}

impl Authenticator {
    fn new(core: &Core, accepted: &'static [Role]) -> Self {
        let callers = core
            .config
            .callers
            .iter()
            .map(|c| {
                (
                    c.token_sha256.trim().to_ascii_lowercase().into_bytes(),
                    Caller {
                        name: c.name.clone(),
                        role: c.role,
                    },
                )
            })
            .collect();
        Self {
            callers: Arc::new(callers),
            accepted,
        }
    }
}

impl Interceptor for Authenticator {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| Status::unauthenticated("missing service credential (authorization: Bearer …)"))?;
        let presented_hash = secret::hash(presented).into_bytes();
        let mut found = None;
        for (hash, caller) in self.callers.iter() {
            // No early exit: every configured credential is compared.
            if secret::constant_time_eq(hash, &presented_hash) {
                found = Some(caller.clone());
            }
        }
        let caller = found.ok_or_else(|| {
            tracing::warn!(target: "gatehouse::security", reason = "unknown service credential", "gRPC call refused");
            Status::unauthenticated("unknown service credential")
        })?;
        if !self.accepted.contains(&caller.role) {
            return Err(Status::permission_denied(format!(
                "caller {:?} has the {} role, which may not use this service",
                caller.name,
                caller.role.as_str()
            )));
        }
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

/// The gRPC server with every service, health and reflection.
pub fn router(core: Arc<Core>) -> Result<Router<Stack<GrpcLayer, Identity>>, StartError> {
    // Outermost: every call gets its span (request id, trace) and is counted.
    let mut builder = Server::builder().layer(GrpcLayer);
    if let Some(tls) = &core.config.tls {
        let read = |path: &std::path::Path| std::fs::read(path).map_err(|e| StartError::Tls(format!("{}: {e}", path.display())));
        let identity = tonic::transport::Identity::from_pem(read(&tls.cert_file)?, read(&tls.key_file)?);
        builder = builder
            .tls_config(ServerTlsConfig::new().identity(identity))
            .map_err(|e| StartError::Tls(e.to_string()))?;
    }

    // Health and reflection need no credential: load balancers and `grpcurl list`
    // use them, and they reveal nothing but the public contract.
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| StartError::Tls(format!("reflection: {e}")))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| StartError::Tls(format!("reflection: {e}")))?;

    let admin = AdminServiceServer::with_interceptor(admin::Admin::new(core.clone()), Authenticator::new(&core, &[Role::Admin]));
    let flow = FlowServiceServer::with_interceptor(flow::Flow::new(core.clone()), Authenticator::new(&core, &[Role::DataPlane]));
    let token = TokenServiceServer::with_interceptor(
        token::Token::new(core.clone()),
        Authenticator::new(&core, &[Role::DataPlane, Role::TokenReader]),
    );

    tokio::spawn(async move {
        health_reporter.set_serving::<AdminServiceServer<admin::Admin>>().await;
        health_reporter.set_serving::<FlowServiceServer<flow::Flow>>().await;
        health_reporter.set_serving::<TokenServiceServer<token::Token>>().await;
    });

    Ok(builder
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(admin)
        .add_service(flow)
        .add_service(token))
}

/// The caller's network address, for the audit log.
pub(crate) fn remote_addr<T>(request: &Request<T>) -> String {
    request.remote_addr().map(|a| a.to_string()).unwrap_or_default()
}

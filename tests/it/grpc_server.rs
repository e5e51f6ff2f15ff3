//! The gRPC server itself: credentials and roles, unimplemented RPCs, health,
//! reflection (what `grpcurl list` uses) and TLS.

use gatehouse::pb::{ListMcpServersRequest, StartFlowRequest};
use tokio_stream::StreamExt as _;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::store_test;
use crate::support::plane::{ADMIN, DATA_PLANE, TOKEN_READER};
use crate::support::{Backend, TestControlPlane, TestDb};

#[tokio::test]
async fn callers_need_a_known_credential_and_the_right_role() {
    let db = TestDb::new(Backend::Sqlite).await;
    let cp = TestControlPlane::start(&db).await;

    let wrong = cp.client("gh_svc_not-a-credential").await;
    let err = wrong.admin().list_mcp_servers(ListMcpServersRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "unknown credential");

    let channel = cp.admin().await.channel();
    let mut anonymous = gatehouse::pb::admin_service_client::AdminServiceClient::new(channel);
    let err = anonymous.list_mcp_servers(ListMcpServersRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "no credential");

    for (who, credential) in [("data plane", DATA_PLANE), ("token reader", TOKEN_READER)] {
        let err = cp
            .client(credential)
            .await
            .admin()
            .list_mcp_servers(ListMcpServersRequest {})
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{who} on the admin service");
    }
    let err = cp
        .client(ADMIN)
        .await
        .flows()
        .start_flow(StartFlowRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "admin on the flow service");
    let err = cp
        .client(TOKEN_READER)
        .await
        .flows()
        .start_flow(StartFlowRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "token reader on the flow service");

    assert!(
        cp.admin()
            .await
            .admin()
            .list_mcp_servers(ListMcpServersRequest {})
            .await
            .is_ok()
    );
    cp.stop().await;
}

#[tokio::test]
async fn rpcs_of_later_issues_answer_unimplemented() {
    let db = TestDb::new(Backend::Sqlite).await;
    let cp = TestControlPlane::start(&db).await;
    let err = cp
        .client(DATA_PLANE)
        .await
        .tokens()
        .get_shared_keys(gatehouse::pb::GetSharedKeysRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    cp.stop().await;
}

store_test!(health_reports_serving_without_a_credential, |db| async move {
    let cp = TestControlPlane::start(&db).await;
    let mut health = HealthClient::new(cp.admin().await.channel());
    for service in [
        "",
        "gatehouse.v1.AdminService",
        "gatehouse.v1.FlowService",
        "gatehouse.v1.TokenService",
    ] {
        let mut status = 0;
        // The per-service statuses are set just after start.
        for _ in 0..50 {
            status = health
                .check(HealthCheckRequest { service: service.into() })
                .await
                .map(|r| r.into_inner().status)
                .unwrap_or(0);
            if status == 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(status, 1, "{service:?} is SERVING");
    }
    cp.stop().await;
});

/// Service names the reflection service lists (v1 or v1alpha).
async fn reflected_services(channel: tonic::transport::Channel, v1: bool) -> Vec<String> {
    if v1 {
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = ServerReflectionClient::new(channel)
            .server_reflection_info(tokio_stream::once(request))
            .await
            .unwrap()
            .into_inner();
        match stream.next().await.unwrap().unwrap().message_response {
            Some(MessageResponse::ListServicesResponse(list)) => list.service.into_iter().map(|s| s.name).collect(),
            other => panic!("unexpected reflection answer {other:?}"),
        }
    } else {
        use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = ServerReflectionClient::new(channel)
            .server_reflection_info(tokio_stream::once(request))
            .await
            .unwrap()
            .into_inner();
        match stream.next().await.unwrap().unwrap().message_response {
            Some(MessageResponse::ListServicesResponse(list)) => list.service.into_iter().map(|s| s.name).collect(),
            other => panic!("unexpected reflection answer {other:?}"),
        }
    }
}

#[tokio::test]
async fn reflection_lists_every_service_on_v1_and_v1alpha() {
    let db = TestDb::new(Backend::Sqlite).await;
    let cp = TestControlPlane::start(&db).await;
    for v1 in [true, false] {
        let services = reflected_services(cp.admin().await.channel(), v1).await;
        for expected in [
            "gatehouse.v1.AdminService",
            "gatehouse.v1.FlowService",
            "gatehouse.v1.TokenService",
            "grpc.health.v1.Health",
        ] {
            assert!(
                services.iter().any(|s| s == expected),
                "v1={v1}: {expected} missing from {services:?}"
            );
        }
    }
    cp.stop().await;
}

/// A self-signed certificate for `localhost` and 127.0.0.1, made with the openssl
/// CLI; `None` (loudly) where openssl is missing, except under `CI=true`.
fn self_signed(dir: &std::path::Path) -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    if std::process::Command::new("openssl").arg("version").output().is_err() {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI=true and the openssl CLI is missing"
        );
        eprintln!("\n!!!!!!!!!! SKIPPING the TLS test: no openssl CLI to make a certificate !!!!!!!!!!\n");
        return None;
    }
    let cert = dir.join("grpc.crt");
    let key = dir.join("grpc.key");
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success(), "openssl made a certificate");
    Some((cert, key))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_control_plane_serves_a_data_plane_that_trusts_its_ca() {
    use gatehouse_control_plane::config::TlsConfig;
    use gatehouse_data_plane::config::{ControlPlaneClientConfig, Credential, DataPlaneConfig};

    crate::support::init_logging();
    let db = TestDb::new(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let Some((cert, key)) = self_signed(dir.path()) else { return };
    let key_file = dir.path().join("vault.keys");
    gatehouse_control_plane::vault::Vault::create_key_file_if_missing(&key_file).unwrap();
    let mut config = crate::support::plane::config(&db, key_file);
    config.tls = Some(TlsConfig {
        cert_file: cert.clone(),
        key_file: key,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cp = gatehouse_control_plane::ControlPlane::start(
        config,
        listener,
        std::sync::Arc::new(gatehouse_control_plane::clock::SystemClock),
    )
    .await
    .unwrap();
    let port = cp.local_addr().port();

    let data_plane = |ca_file: Option<std::path::PathBuf>| DataPlaneConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        control_plane: ControlPlaneClientConfig {
            urls: vec![format!("https://localhost:{port}")],
            token: Credential::new(DATA_PLANE),
            ca_file,
            ..Default::default()
        },
        ..Default::default()
    };
    let trusting = gatehouse_data_plane::DataPlane::start(
        data_plane(Some(cert)),
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    )
    .await
    .unwrap();
    let distrusting =
        gatehouse_data_plane::DataPlane::start(data_plane(None), tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap())
            .await
            .unwrap();
    let http = reqwest::Client::new();
    let ready = http
        .get(format!("http://{}/readyz", trusting.local_addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "a data plane with the CA reaches the TLS control plane");
    let ready = http
        .get(format!("http://{}/readyz", distrusting.local_addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503, "without the CA the certificate is not trusted");

    // A plaintext client gets nowhere either.
    let plain = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect_timeout(std::time::Duration::from_secs(2))
        .connect_lazy();
    let mut health = HealthClient::new(plain);
    assert!(health.check(HealthCheckRequest::default()).await.is_err());

    trusting.shutdown().await;
    distrusting.shutdown().await;
    cp.shutdown().await;
}

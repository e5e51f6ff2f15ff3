//! `/metrics` on the data plane: what operators count.

use std::time::Duration;

use gatehouse_control_plane::mcp_servers::{AuthMode, McpServer};
use serde_json::json;

use crate::support::fleet::{Pkce, TestFleet, approve, skip, start_flow};
use crate::support::mcp_client::McpClient;
use crate::support::mcp_upstream::{McpUpstream, Script};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_upstream_is_counted_by_server_and_the_others_still_listed() {
    let slow = McpUpstream::start(Script {
        tools: vec!["crawl".into()],
        delay: Duration::from_secs(2),
        ..Default::default()
    })
    .await;
    let fine = McpUpstream::start(Script::default()).await;
    let server = |name: &str, url: &str, timeout_ms| McpServer {
        name: name.into(),
        url: url.into(),
        auth_mode: AuthMode::None,
        timeout_ms,
        ..Default::default()
    };
    let servers = vec![server("slow", &slow.url, 200), server("fine", &fine.url, 0)];
    let fleet = TestFleet::builder()
        .data_planes(1)
        .control_plane(move |config| {
            config.outbound.allow_loopback = true;
            config.mcp_servers = servers;
        })
        .spawn()
        .await;
    let client = fleet.register_public().await;
    let browser = fleet.browser();
    let pkce = Pkce::new();
    let (flow_id, identity) = start_flow(&fleet, &browser, 0, &client, &pkce).await;
    let services = skip(&fleet, &browser, 0, &flow_id, &identity.csrf()).await;
    let code = approve(&fleet, &browser, 0, &client, &flow_id, &services.csrf(), &pkce).await;
    let tokens = fleet.exchange_code(0, &client, &code).await;
    let mcp = McpClient::new(&fleet, &tokens.access_token);
    mcp.initialize(json!({})).await;
    assert_eq!(mcp.tool_names().await, ["fine__echo"]);

    let metrics = fleet.http().get(format!("{}/metrics", fleet.url(0))).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains("gatehouse_data_plane_upstream_errors_total{server=\"slow\"} 1"),
        "{text}"
    );
    assert!(!text.contains("server=\"fine\""), "{text}");
    fleet.stop().await;
}

/// The value of the series `name{labels}` in a scrape, 0 when absent.
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn scrape(http: &reqwest::Client, url: &str) -> String {
    let response = http.get(url).send().await.expect("scrape");
    assert_eq!(response.status(), 200, "{url}");
    assert!(
        response.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain"),
        "Prometheus text format"
    );
    response.text().await.unwrap()
}

/// A consent flow (Skip, approve), a token, then `tools/list` and two
/// `tools/call`s: the data plane counts requests by route template (no flow id
/// in any label), their latencies and its cache hits and misses; the control
/// plane (counters of this process: other tests add to them, so they are
/// compared before and after) counts gRPC calls by method and code, their
/// latencies and the flow's steps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_planes_count_a_consent_flow_and_tool_calls() {
    let upstream = McpUpstream::start(Script::default()).await;
    let servers = vec![McpServer {
        name: "plain".into(),
        url: upstream.url.clone(),
        auth_mode: AuthMode::None,
        ..Default::default()
    }];
    let fleet = TestFleet::builder()
        .data_planes(1)
        .control_plane(move |config| {
            config.outbound.allow_loopback = true;
            config.mcp_servers = servers;
        })
        .spawn()
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cp_metrics = gatehouse_control_plane::metrics::serve(listener).unwrap();
    let cp_url = format!("http://{}/metrics", cp_metrics.local_addr());
    let dp_url = format!("{}/metrics", fleet.url(0));
    let http = fleet.http();
    let cp_before = scrape(&http, &cp_url).await;

    let client = fleet.register_public().await;
    let browser = fleet.browser();
    let pkce = Pkce::new();
    let (flow_id, identity) = start_flow(&fleet, &browser, 0, &client, &pkce).await;
    let services = skip(&fleet, &browser, 0, &flow_id, &identity.csrf()).await;
    let code = approve(&fleet, &browser, 0, &client, &flow_id, &services.csrf(), &pkce).await;
    let tokens = fleet.exchange_code(0, &client, &code).await;
    let mcp = McpClient::new(&fleet, &tokens.access_token);
    mcp.initialize(json!({})).await;
    assert_eq!(mcp.tool_names().await, ["plain__echo"]);
    for _ in 0..2 {
        mcp.call_tool("plain__echo", json!({"text": "hi"})).await;
    }

    let cp_after = scrape(&http, &cp_url).await;
    let moved = |series: &str| value(&cp_after, series) - value(&cp_before, series);
    for step in ["started", "identity_chosen", "approved"] {
        let series = format!("gatehouse_control_plane_flow_steps_total{{step=\"{step}\"}}");
        assert!(moved(&series) >= 1.0, "{series} moved\n{cp_after}");
    }
    for method in ["FlowService/StartFlow", "FlowService/ChooseIdentity", "FlowService/Approve"] {
        let series = format!("gatehouse_grpc_requests_total{{method=\"/gatehouse.v1.{method}\",code=\"OK\"}}");
        assert!(moved(&series) >= 1.0, "{series} moved\n{cp_after}");
    }
    let resolve = "gatehouse_grpc_request_duration_seconds_count{method=\"/gatehouse.v1.TokenService/ResolveAccessToken\"}";
    assert!(moved(resolve) >= 1.0, "{resolve} moved\n{cp_after}");
    assert!(cp_after.contains("gatehouse_control_plane_upstream_refreshes_total{outcome=\"needs_reauth\"}"));

    let dp = scrape(&http, &dp_url).await;
    assert!(!dp.contains(&flow_id), "no flow id in a label:\n{dp}");
    let requests = |route: &str, method: &str, status: u16| {
        value(
            &dp,
            &format!("gatehouse_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}}"),
        )
    };
    assert_eq!(requests("/consent/{flow_id}/identity", "GET", 200), 1.0, "{dp}");
    assert_eq!(requests("/consent/{flow_id}/identity", "POST", 303), 1.0, "{dp}");
    assert_eq!(requests("/token", "POST", 200), 1.0, "{dp}");
    // initialize, tools/list and two tools/call (the initialized notification answers 202).
    assert!(requests("/mcp", "POST", 200) >= 4.0, "{dp}");
    let mcp_count = value(
        &dp,
        "gatehouse_http_request_duration_seconds_count{route=\"/mcp\",method=\"POST\"}",
    );
    assert!(mcp_count >= 4.0, "{dp}");
    assert_eq!(
        value(
            &dp,
            "gatehouse_http_request_duration_seconds_bucket{route=\"/mcp\",method=\"POST\",le=\"+Inf\"}"
        ),
        mcp_count
    );
    let cache = |what: &str, cache: &str| value(&dp, &format!("gatehouse_data_plane_cache_{what}_total{{cache=\"{cache}\"}}"));
    assert_eq!(
        cache("misses", "caller"),
        1.0,
        "the first /mcp request resolves the token\n{dp}"
    );
    assert!(cache("hits", "caller") >= 3.0, "later ones find it cached\n{dp}");
    assert!(cache("hits", "services") >= 1.0, "{dp}");
    assert!(cache("misses", "services") >= 1.0, "{dp}");

    cp_metrics.shutdown().await;
    fleet.stop().await;
}

//! The official TypeScript MCP SDK client (`@modelcontextprotocol/sdk` 1.x on
//! Node, its `OAuthClientProvider` driven headlessly through the consent
//! pages) against `gatehouse up`: OAuth, tools/list, the connect link of the
//! demo service it did not connect (a tool error, then -32042), the link
//! opened, and the per-user tool called.

use crate::support::tools;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typescript_sdk_completes_oauth_lists_tools_gets_the_connect_link_and_calls_a_per_user_tool() {
    let Some(node) = tools::node_with_mcp_sdk() else { return };
    let (_dir, running) = crate::support::up::start().await;
    let output = tokio::process::Command::new(node)
        .arg(tools::repo().join("tests/sdk/typescript/oauth_list_tools.mjs"))
        .args([running.mcp_url().as_str(), "demo__whoami", "tess"])
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "the TypeScript SDK run failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(result["iss"], running.public_url.as_str(), "{result}");
    assert!(result["tools"].is_array(), "{result}");
    let unconnected = &result["unconnected"];
    assert_eq!(unconnected["isError"], true, "{result}");
    let text = unconnected["content"][0]["text"].as_str().unwrap();
    assert!(text.contains(&format!("{}/connect/gh_cl_", running.public_url)), "{text}");
    assert_eq!(result["elicitation"]["code"], -32042, "{result}");
    assert_eq!(result["call"]["isError"], false, "{result}");
    assert_eq!(result["call"]["content"][0]["text"], "you are tess", "{result}");
    running.shutdown().await;
}

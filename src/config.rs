//! The config file: one TOML file (`--config FILE`) with environment overrides
//! (`GATEHOUSE_<TABLE>__<KEY>`, e.g. `GATEHOUSE_DATA_PLANE__LISTEN`), read once
//! at start. A bad value is reported with its key and the file (or variable)
//! it came from. `gatehouse.example.toml` at the repository root documents
//! every key.

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format as _, Toml};
use gatehouse_control_plane::config::ControlPlaneConfig;
use gatehouse_control_plane::mcp_servers::McpServer;
use gatehouse_data_plane::config::DataPlaneConfig;
use serde::Deserialize;

/// Top-level keys, so environment variables of other purposes that share the
/// prefix (such as `GATEHOUSE_VAULT_KEYS`) are not mistaken for settings.
const TOP_LEVEL_KEYS: &[&str] = &[
    "public_url",
    "control_plane",
    "data_plane",
    "mcp_servers",
    "log",
    "telemetry",
    "admin",
];

/// Logging.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `gatehouse=debug,info`; `RUST_LOG` wins when set.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            filter: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Trace export (`[telemetry]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Base URL of an OpenTelemetry collector's OTLP/HTTP receiver, e.g.
    /// `http://127.0.0.1:4318`; spans go to `<url>/v1/traces` (protobuf).
    /// Unset: the standard `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` variables, else no export.
    pub otlp_endpoint: Option<String>,
}

/// How the admin commands (`gatehouse vault rotate`) reach the control plane.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminClientConfig {
    /// Control-plane URL; defaults to `http://<control_plane.listen>`.
    pub url: Option<String>,
    /// File holding an admin credential; else `GATEHOUSE_ADMIN_TOKEN`.
    pub token_file: Option<std::path::PathBuf>,
}

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Public base URL of the gateway, e.g. `https://gw.example.com`: the OAuth
    /// issuer, byte-identical everywhere, no trailing slash. Defaults to
    /// `http://<data_plane.listen>`.
    #[serde(default)]
    pub public_url: Option<String>,
    #[serde(default)]
    pub control_plane: ControlPlaneConfig,
    #[serde(default)]
    pub data_plane: DataPlaneConfig,
    /// Upstream MCP servers to seed the registry with.
    #[serde(default)]
    pub mcp_servers: Vec<McpServer>,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    #[serde(default)]
    pub admin: AdminClientConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    Missing(String),
    #[error("configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads `file` (if given) and the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Missing(path.display().to_string()));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment.merge(Env::prefixed("GATEHOUSE_").split("__").filter(|key| {
            // Keys keep the variable's case here (`CONTROL_PLANE.LISTEN`).
            let first = key.as_str().split('.').next().unwrap_or_default();
            TOP_LEVEL_KEYS.iter().any(|k| k.eq_ignore_ascii_case(first))
        }));
        let mut config: Config = figment.extract().map_err(|e| ConfigError::Invalid(describe(e)))?;
        config.finish()?;
        Ok(config)
    }

    /// Fills what the planes share and checks what depends on several keys.
    pub fn finish(&mut self) -> Result<(), ConfigError> {
        let public_url = match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => format!("http://{}", self.data_plane.listen),
        };
        let parsed = url::Url::parse(&public_url).map_err(|e| ConfigError::Invalid(format!("public_url {public_url:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(ConfigError::Invalid(format!(
                "public_url {public_url:?}: must be an http(s) URL without query or fragment"
            )));
        }
        self.control_plane.public_url = public_url.clone();
        self.control_plane.mcp_servers = self.mcp_servers.clone();
        self.data_plane.public_url = public_url;
        Ok(())
    }

    /// The public base URL in force (set by `finish`): the configured one without
    /// a trailing slash, else `http://<data_plane.listen>`.
    pub fn public_url(&self) -> &str {
        &self.data_plane.public_url
    }
}

/// Every error figment found, each with its key and source.
fn describe(err: figment::Error) -> String {
    err.into_iter()
        .map(|e| {
            let key = if e.path.is_empty() {
                "(top level)".to_string()
            } else {
                e.path.join(".")
            };
            let source = e
                .metadata
                .as_ref()
                .map(|m| match &m.source {
                    // The file as the operator named it (figment's own display
                    // may shorten it relative to the working directory).
                    Some(figment::Source::File(path)) => format!("{} {}", m.name, path.display()),
                    Some(source) => format!("{} {source}", m.name),
                    None => m.name.to_string(),
                })
                .unwrap_or_else(|| "defaults".into());
            format!("key `{key}` (from {source}): {}", e.kind)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_value_names_key_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.toml");
        std::fs::write(&path, "[control_plane]\nlisten = \"not an address\"\n").unwrap();
        let err = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("control_plane.listen"), "{err}");
        assert!(err.contains(&path.display().to_string()), "{err}");
    }

    #[test]
    fn unknown_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.toml");
        std::fs::write(&path, "[data_plane]\nlisten_on = \"127.0.0.1:1\"\n").unwrap();
        let err = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("listen_on"), "{err}");
    }

    /// The example claims to document every key: each key of an upstream's
    /// `[mcp_servers.oauth]` table and of a static header is named in it, and
    /// with the commented OAuth keys switched on, it still loads and validates.
    #[test]
    fn the_example_names_every_upstream_key_with_a_valid_value() {
        use gatehouse_control_plane::mcp_servers::{StaticHeader, UpstreamOAuth};
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("gatehouse.example.toml");
        let example = std::fs::read_to_string(&path).unwrap();
        let keys = |value: serde_json::Value| -> Vec<String> { value.as_object().unwrap().keys().cloned().collect() };
        let mut all = keys(serde_json::to_value(UpstreamOAuth::default()).unwrap());
        all.extend(keys(serde_json::to_value(StaticHeader::default()).unwrap()));
        for key in all {
            assert!(
                example.contains(&format!("{key} = ")),
                "gatehouse.example.toml does not name {key}"
            );
        }

        // Uncomment the `# key = value` lines of the [mcp_servers.oauth] block.
        let mut in_oauth = false;
        let switched_on: Vec<String> = example
            .lines()
            .map(|line| {
                if line.starts_with('[') {
                    in_oauth = line.starts_with("[mcp_servers.oauth]");
                } else if line.is_empty() {
                    in_oauth = false;
                }
                match line.strip_prefix("# ") {
                    Some(rest) if in_oauth && rest.split_once(" = ").is_some_and(|(k, _)| !k.contains(' ')) => rest.to_owned(),
                    _ => line.to_owned(),
                }
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let on = dir.path().join("on.toml");
        std::fs::write(&on, switched_on.join("\n")).unwrap();
        let config = Config::load(Some(&on)).unwrap();
        let notes = config.mcp_servers.iter().find(|s| s.name == "notes").expect("notes");
        assert_eq!(notes.oauth.client_name, "Gatehouse", "the commented value is the default");
        // Every key is there, commented, in the notes server's own table.
        for (key, value) in serde_json::to_value(&notes.oauth).unwrap().as_object().unwrap() {
            assert!(
                value.as_str().is_none_or(|v| !v.is_empty()),
                "[mcp_servers.oauth] lacks {key}"
            );
        }
        for server in config.mcp_servers {
            server.validate().unwrap();
        }
    }

    #[test]
    fn example_config_loads_and_fills_shared_values() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("gatehouse.example.toml");
        let config = Config::load(Some(&path)).unwrap();
        assert_eq!(config.control_plane.public_url, config.public_url());
        assert_eq!(config.data_plane.public_url, config.public_url());
        assert!(!config.public_url().ends_with('/'));
        assert_eq!(config.control_plane.mcp_servers.len(), config.mcp_servers.len());
    }
}

//! The control plane's outbound HTTP: the one place that builds a
//! `reqwest::Client`. Client ID Metadata Documents, upstream discovery,
//! registration, token exchange and sign-in all go through it.
//!
//! Security (SSRF, RFC 9700 and the MCP security best practices): redirects are
//! never followed; a URL must be https (http only where the config allows
//! loopback); every address a host name resolves to is checked by the resolver
//! itself, so the check and the connection use the same addresses (no DNS
//! rebinding between them); private, loopback, link-local and other special
//! ranges are refused unless the config allows them; bodies are capped and every
//! request has a deadline.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

/// The `[control_plane.outbound]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundConfig {
    /// Allow loopback addresses and plain http to them (development, tests).
    pub allow_loopback: bool,
    /// Allow private (RFC 1918, ULA) addresses, for upstreams on an internal network.
    pub allow_private_addresses: bool,
    /// Deadline of one request, in milliseconds.
    pub timeout_ms: u64,
    /// Largest response body read, in bytes.
    pub max_body_bytes: usize,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        Self {
            allow_loopback: false,
            allow_private_addresses: false,
            timeout_ms: 5_000,
            max_body_bytes: 256 * 1024,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("URL {0:?} is not allowed: {1}")]
    Refused(String, &'static str),
    #[error("request to {0} failed: {1}")]
    Transport(String, String),
    #[error("response from {0} is larger than {1} bytes")]
    TooLarge(String, usize),
    #[error("response from {0} is a redirect, which is never followed")]
    Redirect(String),
}

impl OutboundError {
    /// Whether retrying later may help (timeouts, connection failures).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transport(..))
    }
}

/// An HTTP response whose body was read under the size cap.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

/// The guarded client.
#[derive(Clone)]
pub struct Outbound {
    client: reqwest::Client,
    config: OutboundConfig,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound").field("config", &self.config).finish()
    }
}

impl Outbound {
    pub fn new(config: OutboundConfig) -> Result<Self, OutboundError> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_millis(config.timeout_ms.max(1)))
            .connect_timeout(Duration::from_millis(config.timeout_ms.clamp(1, 3_000)))
            .dns_resolver(Arc::new(GuardedResolver { config: config.clone() }))
            .user_agent(concat!("gatehouse/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| OutboundError::Transport("(client)".into(), e.to_string()))?;
        Ok(Self { client, config })
    }

    /// Checks a URL before any request: scheme, userinfo, and an IP-literal host.
    /// Host names are checked again at resolution.
    pub fn check_url(&self, raw: &str) -> Result<Url, OutboundError> {
        let refused = |why| OutboundError::Refused(raw.to_string(), why);
        let url = Url::parse(raw).map_err(|_| refused("not an absolute URL"))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(refused("userinfo is not allowed"));
        }
        let host = url.host().ok_or_else(|| refused("no host"))?;
        let literal: Option<IpAddr> = match host {
            url::Host::Ipv4(ip) => Some(ip.into()),
            url::Host::Ipv6(ip) => Some(ip.into()),
            url::Host::Domain(name) => (name.eq_ignore_ascii_case("localhost")).then_some(IpAddr::from([127, 0, 0, 1])),
        };
        if let Some(ip) = literal {
            check_ip(ip, &self.config).map_err(refused)?;
        }
        let loopback = literal.is_some_and(|ip| ip.is_loopback());
        match url.scheme() {
            "https" => Ok(url),
            "http" if loopback && self.config.allow_loopback => Ok(url),
            "http" => Err(refused("plain http is allowed only to loopback in development")),
            _ => Err(refused("only https is allowed")),
        }
    }

    /// GET `url`, reading at most `max_bytes` (or the configured cap).
    pub async fn get(&self, url: &str, accept: &str, max_bytes: Option<usize>) -> Result<Fetched, OutboundError> {
        let checked = self.check_url(url)?;
        let request = self.client.get(checked).header(reqwest::header::ACCEPT, accept);
        self.send(url, request, max_bytes).await
    }

    /// GET JSON from `url` with `Authorization: Bearer` (userinfo).
    pub async fn get_with_bearer(&self, url: &str, token: &crate::secret::Secret) -> Result<Fetched, OutboundError> {
        let checked = self.check_url(url)?;
        let request = self
            .client
            .get(checked)
            .header(reqwest::header::ACCEPT, "application/json")
            .bearer_auth(token.expose());
        self.send(url, request, None).await
    }

    /// POST a form to `url`, optionally with HTTP Basic client authentication.
    pub async fn post_form(
        &self,
        url: &str,
        form: &[(&str, &str)],
        basic: Option<(&str, &str)>,
    ) -> Result<Fetched, OutboundError> {
        let checked = self.check_url(url)?;
        let mut request = self
            .client
            .post(checked)
            .header(reqwest::header::ACCEPT, "application/json")
            .form(form);
        if let Some((user, password)) = basic {
            // RFC 6749 §2.3.1: client id and secret are form-urlencoded before Basic encoding.
            request = request.basic_auth(form_urlencode(user), Some(form_urlencode(password)));
        }
        self.send(url, request, None).await
    }

    /// POST a JSON body to `url` (dynamic client registration).
    pub async fn post_json(&self, url: &str, body: &serde_json::Value) -> Result<Fetched, OutboundError> {
        let checked = self.check_url(url)?;
        let request = self
            .client
            .post(checked)
            .header(reqwest::header::ACCEPT, "application/json")
            .json(body);
        self.send(url, request, None).await
    }

    async fn send(
        &self,
        url: &str,
        request: reqwest::RequestBuilder,
        max_bytes: Option<usize>,
    ) -> Result<Fetched, OutboundError> {
        let cap = max_bytes.unwrap_or(self.config.max_body_bytes);
        let mut response = request.send().await.map_err(|e| transport(url, &e))?;
        let status = response.status();
        if status.is_redirection() {
            return Err(OutboundError::Redirect(url.to_string()));
        }
        if response.content_length().is_some_and(|len| len > cap as u64) {
            return Err(OutboundError::TooLarge(url.to_string(), cap));
        }
        let headers = response.headers().clone();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| transport(url, &e))? {
            if body.len() + chunk.len() > cap {
                return Err(OutboundError::TooLarge(url.to_string(), cap));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Fetched {
            status: status.as_u16(),
            headers,
            body,
        })
    }
}

fn transport(url: &str, err: &reqwest::Error) -> OutboundError {
    // The source chain says why (refused address, timeout); no secret is in it.
    let mut message = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(inner) = source {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        source = inner.source();
    }
    OutboundError::Transport(url.to_string(), message)
}

fn form_urlencode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// Refuses special-purpose addresses (RFC 6890) unless the config allows them.
fn check_ip(ip: IpAddr, config: &OutboundConfig) -> Result<(), &'static str> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    if ip.is_loopback() {
        return if config.allow_loopback {
            Ok(())
        } else {
            Err("loopback addresses are refused")
        };
    }
    let private = match ip {
        IpAddr::V4(v4) => v4.is_private() || (v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xfe00) == 0xfc00,
    };
    if private {
        return if config.allow_private_addresses {
            Ok(())
        } else {
            Err("private addresses are refused")
        };
    }
    let special = match ip {
        IpAddr::V4(v4) => {
            v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || v4.octets()[0] == 0
                || v4.octets()[0] >= 240
        }
        IpAddr::V6(v6) => v6.is_unspecified() || v6.is_multicast() || (v6.segments()[0] & 0xffc0) == 0xfe80,
    };
    if special {
        return Err("link-local and special-purpose addresses are refused");
    }
    Ok(())
}

/// Resolves names and drops every address `check_ip` refuses; a name with no
/// allowed address fails to resolve.
struct GuardedResolver {
    config: OutboundConfig,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let config = self.config.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = resolved
                .iter()
                .copied()
                .filter(|a| check_ip(a.ip(), &config).is_ok())
                .collect();
            if allowed.is_empty() {
                tracing::warn!(target: "gatehouse::security", reason = "outbound host resolves to refused addresses", host, "outbound request refused");
                return Err(format!("{host} resolves only to refused addresses").into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_addresses_are_refused_unless_allowed() {
        let strict = OutboundConfig::default();
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "192.168.1.1",
            "172.16.0.1",
            "169.254.169.254",
            "::1",
            "fe80::1",
            "fc00::1",
            "0.0.0.0",
            "::ffff:127.0.0.1",
            "100.64.0.1",
        ] {
            assert!(check_ip(ip.parse().unwrap(), &strict).is_err(), "{ip}");
        }
        assert!(check_ip("93.184.216.34".parse().unwrap(), &strict).is_ok());
        let dev = OutboundConfig {
            allow_loopback: true,
            ..Default::default()
        };
        assert!(check_ip("127.0.0.1".parse().unwrap(), &dev).is_ok());
        assert!(check_ip("10.0.0.1".parse().unwrap(), &dev).is_err());
        assert!(check_ip("169.254.169.254".parse().unwrap(), &dev).is_err());
    }

    #[test]
    fn urls_are_checked_before_any_request() {
        let strict = Outbound::new(OutboundConfig::default()).unwrap();
        assert!(strict.check_url("https://example.com/client.json").is_ok());
        assert!(strict.check_url("http://example.com/client.json").is_err());
        assert!(strict.check_url("https://user:pw@example.com/").is_err());
        assert!(strict.check_url("https://169.254.169.254/latest").is_err());
        assert!(strict.check_url("https://localhost/x").is_err());
        assert!(strict.check_url("file:///etc/passwd").is_err());
        let dev = Outbound::new(OutboundConfig {
            allow_loopback: true,
            ..Default::default()
        })
        .unwrap();
        assert!(dev.check_url("http://127.0.0.1:8080/x").is_ok());
        assert!(dev.check_url("http://10.0.0.1/x").is_err());
    }
}

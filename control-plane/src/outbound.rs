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
            // Security: a proxy from the environment (HTTP_PROXY, HTTPS_PROXY,
            // ALL_PROXY) would resolve and connect in our place, past the
            // resolver's guard: never use one.
            .no_proxy()
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

/// Refuses special-purpose addresses (RFC 6890 and the IANA special-purpose
/// address registries) unless the config allows them. An IPv4-mapped address
/// is judged by the IPv4 address it carries; the transition prefixes that
/// reach an IPv4 address through a translator or a tunnel (NAT64, 6to4,
/// Teredo, IPv4-compatible) are refused whole, since the address they lead to
/// is not the one checked.
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
            let [a, b, c, _] = v4.octets();
            v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || a >= 240
                // 192.0.0.0/24: IETF protocol assignments (DS-Lite, NAT64 discovery, …).
                || (a, b, c) == (192, 0, 0)
                // 192.88.99.0/24: the 6to4 relay anycast.
                || (a, b, c) == (192, 88, 99)
                // 198.18.0.0/15: benchmarking.
                || (a == 198 && (b & 0xfe) == 18)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            v6.is_unspecified()
                || v6.is_multicast()
                // fe80::/10 link-local, fec0::/10 the deprecated site-local.
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] & 0xffc0) == 0xfec0
                // ::/96, the deprecated IPv4-compatible addresses (::a.b.c.d).
                || s[..6] == [0; 6]
                // 64:ff9b::/96 and 64:ff9b:1::/48, NAT64 to an IPv4 address.
                || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
                || s[..3] == [0x64, 0xff9b, 1]
                // 100::/64, discard-only.
                || s[..4] == [0x100, 0, 0, 0]
                // 2001::/23, IETF protocol assignments, Teredo (2001::/32) among them.
                || (s[0] == 0x2001 && s[1] < 0x200)
                // 2001:db8::/32 and 3fff::/20, documentation.
                || (s[0] == 0x2001 && s[1] == 0xdb8)
                || (s[0] == 0x3fff && s[1] < 0x1000)
                // 2002::/16, 6to4.
                || s[0] == 0x2002
                // 5f00::/16, SRv6 segment identifiers.
                || s[0] == 0x5f00
        }
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
    fn every_special_purpose_range_is_refused_even_with_loopback_and_private_allowed() {
        let open = OutboundConfig {
            allow_loopback: true,
            allow_private_addresses: true,
            ..Default::default()
        };
        for (ip, range) in [
            ("0.1.2.3", "0.0.0.0/8, this network"),
            ("169.254.169.254", "169.254.0.0/16, link-local"),
            ("192.0.0.170", "192.0.0.0/24, IETF protocol assignments (NAT64 discovery)"),
            ("192.0.0.1", "192.0.0.0/24, IETF protocol assignments (DS-Lite)"),
            ("192.0.2.1", "192.0.2.0/24, documentation"),
            ("192.88.99.1", "192.88.99.0/24, 6to4 relay anycast"),
            ("198.18.0.1", "198.18.0.0/15, benchmarking"),
            ("198.19.255.254", "198.18.0.0/15, benchmarking"),
            ("198.51.100.1", "198.51.100.0/24, documentation"),
            ("203.0.113.1", "203.0.113.0/24, documentation"),
            ("224.0.0.1", "224.0.0.0/4, multicast"),
            ("240.0.0.1", "240.0.0.0/4, reserved"),
            ("255.255.255.255", "broadcast"),
            ("::", "::/128, unspecified"),
            ("::10.0.0.1", "::/96, IPv4-compatible"),
            ("::93.184.216.34", "::/96, IPv4-compatible, even of a public address"),
            ("::ffff:169.254.169.254", "::ffff:0:0/96, IPv4-mapped link-local"),
            ("::ffff:0.0.0.0", "::ffff:0:0/96, IPv4-mapped this network"),
            ("64:ff9b::a9fe:a9fe", "64:ff9b::/96, NAT64 of 169.254.169.254"),
            ("64:ff9b::5db8:d822", "64:ff9b::/96, NAT64 even of a public address"),
            ("64:ff9b:1::a00:1", "64:ff9b:1::/48, local-use NAT64"),
            ("64:ff9b:1:ffff::1", "64:ff9b:1::/48, local-use NAT64"),
            ("100::1", "100::/64, discard-only"),
            ("2001::a9fe:a9fe", "2001::/32, Teredo"),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "2001::/32, Teredo"),
            ("2001:2::1", "2001:2::/48, benchmarking (2001::/23)"),
            ("2001:1ff::1", "2001::/23, IETF protocol assignments"),
            ("2001:db8::1", "2001:db8::/32, documentation"),
            ("3fff::1", "3fff::/20, documentation"),
            ("3fff:fff::1", "3fff::/20, documentation"),
            ("2002:a9fe:a9fe::1", "2002::/16, 6to4 of 169.254.169.254"),
            ("2002:5db8:d822::1", "2002::/16, 6to4 even of a public address"),
            ("5f00::1", "5f00::/16, SRv6 segment identifiers"),
            ("fe80::1", "fe80::/10, link-local"),
            ("febf::1", "fe80::/10, link-local"),
            ("fec0::1", "fec0::/10, site-local"),
            ("ff02::1", "ff00::/8, multicast"),
        ] {
            assert!(check_ip(ip.parse().unwrap(), &open).is_err(), "{ip} ({range}) was allowed");
        }
        // IPv4-mapped addresses follow the IPv4 address they carry.
        let strict = OutboundConfig::default();
        for ip in [
            "::ffff:10.0.0.1",
            "::ffff:100.64.0.1",
            "::ffff:127.0.0.1",
            "::ffff:192.168.0.1",
        ] {
            assert!(check_ip(ip.parse().unwrap(), &strict).is_err(), "{ip}");
            assert!(check_ip(ip.parse().unwrap(), &open).is_ok(), "{ip} when allowed");
        }
        // Neighbours of the refused ranges stay reachable.
        for ip in [
            "93.184.216.34",
            "::ffff:93.184.216.34",
            "192.0.1.1",
            "192.88.98.1",
            "198.17.255.1",
            "198.20.0.1",
            "2606:4700:4700::1111",
            "2001:200::1",
            "2001:4860:4860::8888",
            "2001:db9::1",
            "2003::1",
            "3fff:1000::1",
            "64:ff9b:2::1",
            "101::1",
        ] {
            assert!(check_ip(ip.parse().unwrap(), &strict).is_ok(), "{ip} was refused");
        }
        // The same at the URL check, before any connection.
        let outbound = Outbound::new(OutboundConfig::default()).unwrap();
        for url in [
            "https://[64:ff9b::a9fe:a9fe]/x",
            "https://[2002:a9fe:a9fe::1]/x",
            "https://[2001::a9fe:a9fe]/x",
            "https://[::a9fe:a9fe]/x",
            "https://[::ffff:a9fe:a9fe]/x",
            "https://198.18.0.1/x",
        ] {
            assert!(outbound.check_url(url).is_err(), "{url}");
        }
    }

    /// Set in the child process of
    /// `a_proxy_from_the_environment_is_never_used`: the URL it fetches and
    /// the proxy it was given.
    const PROXY_CHILD: &str = "GATEHOUSE_TEST_PROXY_CHILD";

    #[test]
    fn a_proxy_from_the_environment_is_never_used() {
        // A proxy that records who connects to it.
        let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        proxy.set_nonblocking(true).unwrap();
        let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
        // The child asks for a name that never resolves: through a proxy, the
        // proxy would resolve it and connect, past the resolver's guard.
        let mut child = std::process::Command::new(std::env::current_exe().unwrap());
        child
            .args(["--exact", "outbound::tests::proxy_child", "--nocapture", "--test-threads=1"])
            .env(PROXY_CHILD, "https://internal.invalid/secret")
            .env_remove("NO_PROXY")
            .env_remove("no_proxy");
        for name in [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "http_proxy",
            "https_proxy",
            "all_proxy",
        ] {
            child.env(name, &proxy_url);
        }
        let output = child.output().unwrap();
        let printed = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{printed}");
        assert!(printed.contains("proxy child: refused"), "the child did not run: {printed}");
        match proxy.accept() {
            Ok((_, peer)) => panic!("the outbound client connected to the environment's proxy (from {peer}): {printed}"),
            Err(err) => assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock),
        }
    }

    /// Runs only as the child of `a_proxy_from_the_environment_is_never_used`.
    #[test]
    fn proxy_child() {
        let Ok(url) = std::env::var(PROXY_CHILD) else { return };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let outbound = Outbound::new(OutboundConfig {
            timeout_ms: 2_000,
            ..Default::default()
        })
        .unwrap();
        let result = runtime.block_on(outbound.get(&url, "application/json", None));
        assert!(result.is_err(), "{result:?}");
        println!("proxy child: refused: {}", result.unwrap_err());
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

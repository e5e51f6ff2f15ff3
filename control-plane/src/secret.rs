//! Secrets Gatehouse issues (tokens, codes, virtual keys, client secrets,
//! browser secrets, service credentials): generation, hashing and comparison.
//!
//! Security: every issued secret carries 256 random bits behind a readable prefix
//! and is stored only as its SHA-256 (hex), so a database dump hands out no live
//! credential. Comparisons of secrets are constant-time.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A secret value that never prints itself: `Debug` and `Display` show `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value that must not be logged.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the one place that sends or hashes it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The SHA-256 hex digest stored in place of the value.
    pub fn hash(&self) -> String {
        hash(&self.0)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Readable prefixes, so a leaked value says what it is (and secret scanners can match it).
pub mod prefix {
    pub const ACCESS_TOKEN: &str = "gh_at_";
    pub const REFRESH_TOKEN: &str = "gh_rt_";
    pub const CODE: &str = "gh_code_";
    pub const VIRTUAL_KEY: &str = "gh_vk_";
    pub const CLIENT_SECRET: &str = "gh_cs_";
    pub const BROWSER_SECRET: &str = "gh_bs_";
    pub const SERVICE_CREDENTIAL: &str = "gh_svc_";
    pub const STATE: &str = "gh_st_";
    pub const CONNECT_LINK: &str = "gh_cl_";
}

/// A new secret: `prefix` followed by 256 random bits, base64url without padding.
pub fn generate(prefix: &str) -> Secret {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    Secret(format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes)))
}

/// A non-secret identifier: `prefix` followed by 128 random bits in hex.
pub fn random_id(prefix: &str) -> String {
    let mut bytes = [0u8; 16];
    rand::fill(&mut bytes);
    format!("{prefix}{}", hex(&bytes))
}

/// SHA-256 of `value`, lowercase hex.
pub fn hash(value: &str) -> String {
    hex(&Sha256::digest(value.as_bytes()))
}

/// Constant-time equality of two byte strings (the length is not hidden).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)] as char);
        out.push(DIGITS[usize::from(byte & 0x0f)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_are_prefixed_random_and_redacted_in_debug() {
        let a = generate(prefix::ACCESS_TOKEN);
        let b = generate(prefix::ACCESS_TOKEN);
        assert!(a.expose().starts_with("gh_at_"));
        assert_eq!(a.expose().len(), "gh_at_".len() + 43);
        assert_ne!(a, b);
        assert_eq!(format!("{a:?}"), "Secret([redacted])");
        assert!(!format!("{a}").contains(a.expose()));
    }

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(constant_time_eq(b"same", b"same"));
        assert!(!constant_time_eq(b"same", b"diff"));
        assert!(!constant_time_eq(b"short", b"longer"));
    }
}

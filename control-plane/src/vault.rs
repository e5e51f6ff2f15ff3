//! The token vault's cryptography: AES-256-GCM under a key ring.
//!
//! Owns: key ring loading (a key file, or the `GATEHOUSE_VAULT_KEYS` variable),
//! sealing and opening values, and adding a key on rotation. Never touches the
//! database: `store` keeps the ciphertexts and re-seals rows through this module.
//!
//! Security: every ciphertext carries the id of the key that sealed it, so keys
//! rotate without a flag day, and is bound by associated data to its row (table,
//! field, row id, identity, service): a ciphertext copied into another row does
//! not open.
//!
//! Key ring format: one key a line, `<key-id> <base64 of 32 bytes>`; `#` starts a
//! comment; the last key seals, every key opens.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::secret::{self, Secret};

/// Format version byte at the start of every sealed value.
const FORMAT_V1: u8 = 1;
const NONCE_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error(
        "no vault key: set control_plane.vault.key_file or GATEHOUSE_VAULT_KEYS (`gatehouse up` creates a key file for development)"
    )]
    NoKeys,
    #[error("vault key file {path}: {source}")]
    KeyFile { path: PathBuf, source: std::io::Error },
    #[error("vault key ring, line {line}: {reason}")]
    BadKey { line: usize, reason: &'static str },
    #[error("sealed value names vault key {0:?}, which is not in the key ring")]
    UnknownKey(String),
    #[error("sealed value does not open: wrong row, wrong key or tampered")]
    Decrypt,
    #[error("sealed value is malformed")]
    Malformed,
    #[error(
        "keys from the environment cannot be rotated by Gatehouse: add a key to GATEHOUSE_VAULT_KEYS and restart, or use a key file"
    )]
    RotateNeedsKeyFile,
    #[error("encryption failed")]
    Encrypt,
}

/// Where the key ring comes from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// A key file (rotation appends to it).
    File(PathBuf),
    /// Keys given inline (from the environment); lines may also be separated by `;`.
    Inline(Secret),
}

/// What a sealed value is bound to. Every part must match to open it.
#[derive(Debug, Clone, Copy)]
pub struct Aad<'a> {
    /// Table holding the value.
    pub table: &'static str,
    /// Column holding the value.
    pub field: &'static str,
    /// Primary key of the row.
    pub row_id: &'a str,
    /// Identity owning the row ("" when none).
    pub identity: &'a str,
    /// Service of the row ("" when none).
    pub service: &'a str,
}

impl Aad<'_> {
    fn encode(&self) -> Vec<u8> {
        let mut out = b"gatehouse-vault-v1".to_vec();
        for part in [self.table, self.field, self.row_id, self.identity, self.service] {
            // Length-prefixed, so ("ab","c") and ("a","bc") differ.
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part.as_bytes());
        }
        out
    }
}

/// A sealed value and the id of the key that sealed it (also inside `blob`;
/// kept apart so the store can find rows to re-seal).
#[derive(Debug, Clone)]
pub struct Sealed {
    pub key_id: String,
    pub blob: Vec<u8>,
}

struct RingKey {
    id: String,
    cipher: Aes256Gcm,
}

/// The vault: a key ring behind a lock, so rotation swaps it while the service runs.
pub struct Vault {
    source: KeySource,
    ring: RwLock<Vec<RingKey>>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault").field("keys", &self.key_ids()).finish()
    }
}

impl Vault {
    /// Loads the key ring; refuses an empty one.
    pub fn load(source: KeySource) -> Result<Self, VaultError> {
        let ring = read_ring(&source)?;
        Ok(Self {
            source,
            ring: RwLock::new(ring),
        })
    }

    /// Creates a key file holding one new key (mode 0600) unless `path` exists.
    /// Returns whether a file was created. Used by the development mode only.
    pub fn create_key_file_if_missing(path: &Path) -> Result<bool, VaultError> {
        if path.exists() {
            return Ok(false);
        }
        let line = new_key_line();
        write_private(
            path,
            format!(
                "# Gatehouse vault keys: <id> <base64 key>; the last one seals.\n{}\n",
                line.expose()
            )
            .as_bytes(),
        )?;
        Ok(true)
    }

    /// Ids of the keys in ring order; the last one seals.
    pub fn key_ids(&self) -> Vec<String> {
        self.read_ring().iter().map(|k| k.id.clone()).collect()
    }

    /// Id of the key that seals new values.
    pub fn active_key_id(&self) -> String {
        self.read_ring().last().map(|k| k.id.clone()).unwrap_or_default()
    }

    /// Seals `plaintext` under the active key, bound to `aad`.
    pub fn seal(&self, aad: Aad<'_>, plaintext: &[u8]) -> Result<Sealed, VaultError> {
        let ring = self.read_ring();
        let key = ring.last().ok_or(VaultError::NoKeys)?;
        let mut nonce_bytes = [0u8; NONCE_LEN];
        rand::fill(&mut nonce_bytes);
        let nonce = Nonce::try_from(&nonce_bytes[..]).map_err(|_| VaultError::Encrypt)?;
        let aad_bytes = aad.encode();
        let ciphertext = key
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: &aad_bytes,
                },
            )
            .map_err(|_| VaultError::Encrypt)?;
        let mut blob = Vec::with_capacity(2 + key.id.len() + NONCE_LEN + ciphertext.len());
        blob.push(FORMAT_V1);
        blob.push(key.id.len() as u8);
        blob.extend_from_slice(key.id.as_bytes());
        blob.extend_from_slice(&nonce_bytes);
        blob.extend_from_slice(&ciphertext);
        Ok(Sealed {
            key_id: key.id.clone(),
            blob,
        })
    }

    /// Seals a string secret.
    pub fn seal_secret(&self, aad: Aad<'_>, value: &Secret) -> Result<Sealed, VaultError> {
        self.seal(aad, value.expose().as_bytes())
    }

    /// Opens a value sealed under any key of the ring, if `aad` matches.
    pub fn open(&self, aad: Aad<'_>, blob: &[u8]) -> Result<Vec<u8>, VaultError> {
        let (key_id, nonce, ciphertext) = split_blob(blob)?;
        match self.open_with(key_id, nonce, ciphertext, aad) {
            Err(VaultError::UnknownKey(_)) if matches!(self.source, KeySource::File(_)) => {
                // Another replica may have rotated: the key file is shared, so read it again once.
                self.reload()?;
                self.open_with(key_id, nonce, ciphertext, aad)
            }
            other => other,
        }
    }

    /// Opens a string secret.
    pub fn open_secret(&self, aad: Aad<'_>, blob: &[u8]) -> Result<Secret, VaultError> {
        let bytes = self.open(aad, blob)?;
        String::from_utf8(bytes).map(Secret::new).map_err(|_| VaultError::Malformed)
    }

    /// Adds a new key to the key file and makes it the sealing key. Rows are
    /// re-sealed by the caller (`store::reseal`). Returns the new key's id.
    pub fn add_key(&self) -> Result<String, VaultError> {
        let KeySource::File(path) = &self.source else {
            return Err(VaultError::RotateNeedsKeyFile);
        };
        let current = std::fs::read_to_string(path).map_err(|source| VaultError::KeyFile {
            path: path.clone(),
            source,
        })?;
        let line = new_key_line();
        let id = line.expose().split(' ').next().unwrap_or_default().to_string();
        let mut contents = current;
        if !contents.ends_with('\n') && !contents.is_empty() {
            contents.push('\n');
        }
        contents.push_str(line.expose());
        contents.push('\n');
        // Order: write a temporary file and rename it over the key file, so a
        // crash never leaves a half-written key ring.
        let tmp = path.with_extension("tmp");
        write_private(&tmp, contents.as_bytes())?;
        std::fs::rename(&tmp, path).map_err(|source| VaultError::KeyFile {
            path: path.clone(),
            source,
        })?;
        self.reload()?;
        Ok(id)
    }

    /// Reads the key ring again from its source.
    pub fn reload(&self) -> Result<(), VaultError> {
        let ring = read_ring(&self.source)?;
        *self.ring.write().unwrap_or_else(|e| e.into_inner()) = ring;
        Ok(())
    }

    fn open_with(&self, key_id: &str, nonce: &[u8], ciphertext: &[u8], aad: Aad<'_>) -> Result<Vec<u8>, VaultError> {
        let ring = self.read_ring();
        let key = ring
            .iter()
            .find(|k| k.id == key_id)
            .ok_or_else(|| VaultError::UnknownKey(key_id.to_string()))?;
        let nonce = Nonce::try_from(nonce).map_err(|_| VaultError::Malformed)?;
        let aad_bytes = aad.encode();
        key.cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: ciphertext,
                    aad: &aad_bytes,
                },
            )
            .map_err(|_| VaultError::Decrypt)
    }

    fn read_ring(&self) -> std::sync::RwLockReadGuard<'_, Vec<RingKey>> {
        // A panic while holding the lock cannot leave the ring half-written
        // (it is replaced whole), so a poisoned lock is still usable.
        self.ring.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// Reads the key id out of a sealed value without opening it.
pub fn key_id_of(blob: &[u8]) -> Result<&str, VaultError> {
    split_blob(blob).map(|(id, _, _)| id)
}

fn split_blob(blob: &[u8]) -> Result<(&str, &[u8], &[u8]), VaultError> {
    let (&version, rest) = blob.split_first().ok_or(VaultError::Malformed)?;
    if version != FORMAT_V1 {
        return Err(VaultError::Malformed);
    }
    let (&id_len, rest) = rest.split_first().ok_or(VaultError::Malformed)?;
    let id_len = usize::from(id_len);
    if rest.len() < id_len + NONCE_LEN + 16 {
        return Err(VaultError::Malformed);
    }
    let (id, rest) = rest.split_at(id_len);
    let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
    let id = std::str::from_utf8(id).map_err(|_| VaultError::Malformed)?;
    Ok((id, nonce, ciphertext))
}

fn new_key_line() -> Secret {
    let mut key = [0u8; 32];
    rand::fill(&mut key);
    let id = secret::random_id("k").chars().take(13).collect::<String>();
    Secret::new(format!("{id} {}", STANDARD.encode(key)))
}

fn read_ring(source: &KeySource) -> Result<Vec<RingKey>, VaultError> {
    let text = match source {
        KeySource::File(path) => Secret::new(std::fs::read_to_string(path).map_err(|source| VaultError::KeyFile {
            path: path.clone(),
            source,
        })?),
        KeySource::Inline(text) => text.clone(),
    };
    let mut ring = Vec::new();
    // Comments end at a newline; `;` separates keys given on one line (environment).
    let entries = text.expose().lines().enumerate().flat_map(|(index, raw)| {
        let uncommented = raw.split('#').next().unwrap_or_default();
        uncommented.split(';').map(move |entry| (index, entry.trim()))
    });
    for (index, line) in entries {
        if line.is_empty() {
            continue;
        }
        let bad = |reason| VaultError::BadKey { line: index + 1, reason };
        let (id, key) = line
            .split_once(char::is_whitespace)
            .ok_or(bad("expected `<key-id> <base64 key>`"))?;
        if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(bad("key id must be 1-64 characters of [A-Za-z0-9_-]"));
        }
        let bytes = STANDARD.decode(key.trim()).map_err(|_| bad("key is not base64"))?;
        let cipher = Aes256Gcm::new_from_slice(&bytes).map_err(|_| bad("key must be 32 bytes"))?;
        if ring.iter().any(|k: &RingKey| k.id == id) {
            return Err(bad("duplicate key id"));
        }
        ring.push(RingKey {
            id: id.to_string(),
            cipher,
        });
    }
    if ring.is_empty() {
        return Err(VaultError::NoKeys);
    }
    Ok(ring)
}

fn write_private(path: &Path, contents: &[u8]) -> Result<(), VaultError> {
    let err = |source| VaultError::KeyFile {
        path: path.to_path_buf(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(err)?;
    file.write_all(contents).map_err(err)?;
    file.sync_all().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aad<'a>(row: &'a str, identity: &'a str) -> Aad<'a> {
        Aad {
            table: "connections",
            field: "access_ct",
            row_id: row,
            identity,
            service: "notes",
        }
    }

    fn file_vault(dir: &tempfile::TempDir) -> (Vault, PathBuf) {
        let path = dir.path().join("vault.keys");
        assert!(Vault::create_key_file_if_missing(&path).unwrap());
        (Vault::load(KeySource::File(path.clone())).unwrap(), path)
    }

    #[test]
    fn sealed_value_opens_only_in_its_own_row() {
        let dir = tempfile::tempdir().unwrap();
        let (vault, _) = file_vault(&dir);
        let sealed = vault.seal(aad("c1", "i1"), b"upstream-token").unwrap();
        assert_eq!(vault.open(aad("c1", "i1"), &sealed.blob).unwrap(), b"upstream-token");
        assert!(matches!(vault.open(aad("c2", "i1"), &sealed.blob), Err(VaultError::Decrypt)));
        assert!(matches!(vault.open(aad("c1", "i2"), &sealed.blob), Err(VaultError::Decrypt)));
        let mut tampered = sealed.blob.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(matches!(vault.open(aad("c1", "i1"), &tampered), Err(VaultError::Decrypt)));
        assert!(!sealed.blob.windows(14).any(|w| w == b"upstream-token"));
    }

    #[test]
    fn added_key_seals_and_old_keys_still_open() {
        let dir = tempfile::tempdir().unwrap();
        let (vault, path) = file_vault(&dir);
        let old = vault.seal(aad("c1", "i1"), b"v").unwrap();
        let new_id = vault.add_key().unwrap();
        assert_ne!(new_id, old.key_id);
        assert_eq!(vault.active_key_id(), new_id);
        let new = vault.seal(aad("c1", "i1"), b"v").unwrap();
        assert_eq!(new.key_id, new_id);
        assert_eq!(key_id_of(&new.blob).unwrap(), new_id);
        assert_eq!(vault.open(aad("c1", "i1"), &old.blob).unwrap(), b"v");
        // A second vault on the same file (another replica) learns the new key on demand.
        let other = Vault::load(KeySource::Inline(Secret::new(std::fs::read_to_string(&path).unwrap()))).unwrap();
        assert_eq!(other.open(aad("c1", "i1"), &new.blob).unwrap(), b"v");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }

    #[test]
    fn bad_key_rings_are_refused_with_the_line() {
        let err = Vault::load(KeySource::Inline(Secret::new(""))).unwrap_err();
        assert!(matches!(err, VaultError::NoKeys));
        let err = Vault::load(KeySource::Inline(Secret::new("k1 notbase64!"))).unwrap_err();
        assert!(matches!(err, VaultError::BadKey { line: 1, .. }), "{err}");
        let short = STANDARD.encode([0u8; 16]);
        let err = Vault::load(KeySource::Inline(Secret::new(format!("# c\nk1 {short}")))).unwrap_err();
        assert!(matches!(err, VaultError::BadKey { line: 2, .. }), "{err}");
        let key = STANDARD.encode([7u8; 32]);
        let vault = Vault::load(KeySource::Inline(Secret::new(format!("a {key};b {key}")))).unwrap();
        assert_eq!(vault.key_ids(), ["a", "b"]);
        assert!(matches!(vault.add_key(), Err(VaultError::RotateNeedsKeyFile)));
    }
}

//! Development mode (`gatehouse up`): what it creates in its data directory so
//! that one command on a fresh machine gives a working gateway.
//!
//! Security: the data directory holds a vault key file and an admin credential,
//! both created with mode 0600; this mode is for one machine, never a fleet.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use gatehouse_control_plane::config::{CallerConfig, Role};
use gatehouse_control_plane::secret::{self, Secret, prefix};

/// Paths inside the data directory.
pub struct DataDir {
    pub root: PathBuf,
}

impl DataDir {
    /// Creates the directory if needed.
    pub fn open(root: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(root).map_err(|e| anyhow::anyhow!("data directory {}: {e}", root.display()))?;
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    pub fn database_url(&self) -> String {
        format!("sqlite://{}?mode=rwc", self.root.join("gatehouse.db").display())
    }

    pub fn vault_key_file(&self) -> PathBuf {
        self.root.join("vault.keys")
    }

    pub fn admin_token_file(&self) -> PathBuf {
        self.root.join("admin.token")
    }

    /// The admin credential, created (0600) on first use.
    pub fn admin_credential(&self) -> anyhow::Result<(Secret, bool)> {
        let path = self.admin_token_file();
        if path.exists() {
            let value = std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            return Ok((Secret::new(value.trim()), false));
        }
        let credential = secret::generate(prefix::SERVICE_CREDENTIAL);
        write_private(&path, credential.expose())?;
        Ok((credential, true))
    }
}

/// A caller entry for a credential.
pub fn caller(name: &str, role: Role, credential: &Secret) -> CallerConfig {
    CallerConfig {
        name: name.to_string(),
        role,
        token_sha256: credential.hash(),
    }
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    file.write_all(b"\n")?;
    Ok(())
}

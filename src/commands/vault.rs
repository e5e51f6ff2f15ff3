//! `gatehouse vault rotate`: asks the running control plane to add a vault key
//! and re-seal every stored value under it, while it keeps serving.

use crate::admin_client::GrpcClient;
use crate::config::Config;
use crate::pb::RotateVaultKeyRequest;

/// The admin credential: `[admin] token_file`, else `GATEHOUSE_ADMIN_TOKEN`,
/// else the development data directory's `admin.token`.
pub fn admin_credential(config: &Config, data_dir: Option<&std::path::Path>) -> anyhow::Result<String> {
    if let Some(path) = &config.admin.token_file {
        return std::fs::read_to_string(path)
            .map(|s| s.trim().to_string())
            .map_err(|e| anyhow::anyhow!("admin token file {}: {e}", path.display()));
    }
    if let Ok(token) = std::env::var("GATEHOUSE_ADMIN_TOKEN")
        && !token.trim().is_empty()
    {
        return Ok(token.trim().to_string());
    }
    if let Some(dir) = data_dir
        && let Ok(token) = std::fs::read_to_string(crate::dev::DataDir { root: dir.to_path_buf() }.admin_token_file())
    {
        return Ok(token.trim().to_string());
    }
    anyhow::bail!("no admin credential: set [admin] token_file or GATEHOUSE_ADMIN_TOKEN, or pass --data-dir of a `gatehouse up`")
}

/// Rotates the vault key; prints the new key id and how many values were re-sealed.
pub async fn rotate(config: &Config, data_dir: Option<&std::path::Path>) -> anyhow::Result<()> {
    let url = config
        .admin
        .url
        .clone()
        .unwrap_or_else(|| format!("http://{}", config.control_plane.listen));
    let credential = admin_credential(config, data_dir)?;
    let client = GrpcClient::connect(&url, &credential).await?;
    let reply = client
        .admin()
        .rotate_vault_key(RotateVaultKeyRequest {})
        .await
        .map_err(|status| anyhow::anyhow!("vault rotation failed: {}", status.message()))?
        .into_inner();
    println!(
        "vault key {} is now active; {} stored values re-sealed",
        reply.key_id, reply.resealed
    );
    Ok(())
}

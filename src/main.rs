//! `gatehouse`: the MCP gateway with per-user OAuth.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use gatehouse::commands::{planes, up, vault};
use gatehouse::config::Config;
use gatehouse::telemetry;

#[derive(Parser)]
#[command(name = "gatehouse", version, about = "MCP gateway with per-user OAuth")]
struct Cli {
    /// Config file (TOML); environment variables GATEHOUSE_<TABLE>__<KEY> override it.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Both planes in one process on SQLite, plus a demo upstream: try Gatehouse on one machine.
    Up {
        /// Where the database, the vault key file and the admin credential live.
        #[arg(long, value_name = "DIR", default_value = "gatehouse-data")]
        data_dir: PathBuf,
        /// HTTP address of the data plane (MCP, OAuth, consent pages).
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
        http_addr: SocketAddr,
        /// gRPC address of the control plane.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:50051")]
        grpc_addr: SocketAddr,
        /// Do not start the demo upstream.
        #[arg(long)]
        no_demo: bool,
    },
    /// The control plane alone (gRPC; state in SQLite or PostgreSQL).
    ControlPlane,
    /// A data plane alone (HTTP edge; talks to control planes).
    DataPlane,
    /// Vault administration.
    Vault {
        #[command(subcommand)]
        command: VaultCommand,
    },
}

#[derive(Subcommand)]
enum VaultCommand {
    /// Add a vault key and re-seal every stored value under it, while the control plane runs.
    Rotate {
        /// Data directory of a `gatehouse up`, to find its admin credential and gRPC address.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// gRPC URL of the control plane (default: http://<control_plane.listen>).
        #[arg(long, value_name = "URL")]
        grpc_url: Option<String>,
    },
}

/// mimalloc: see its line in Cargo.toml.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("gatehouse: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut config = Config::load(cli.config.as_deref())?;
    let planes = telemetry::Planes {
        data: matches!(cli.command, Command::Up { .. } | Command::DataPlane),
        control: matches!(cli.command, Command::Up { .. } | Command::ControlPlane),
    };
    // Order: dropped when `run` returns, which flushes exported spans.
    let _telemetry = telemetry::init(&config.log, &config.telemetry, planes);
    match cli.command {
        Command::Up {
            data_dir,
            http_addr,
            grpc_addr,
            no_demo,
        } => {
            let options = up::UpOptions {
                data_dir,
                http_addr,
                grpc_addr,
                demo: !no_demo,
            };
            up::run(config, options).await
        }
        Command::ControlPlane => planes::run_control_plane(config).await,
        Command::DataPlane => planes::run_data_plane(config).await,
        Command::Vault {
            command: VaultCommand::Rotate { data_dir, grpc_url },
        } => {
            if grpc_url.is_some() {
                config.admin.url = grpc_url;
            }
            vault::rotate(&config, data_dir.as_deref()).await
        }
    }
}

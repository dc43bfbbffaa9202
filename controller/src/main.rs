//! The `agentmesh-controller` command: serve a folder of resources over delta xDS, or
//! print what it would serve.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use agentmesh_controller::ads::AdsServer;
use agentmesh_controller::auth::Auth;
use agentmesh_controller::folder;
use clap::{Parser, Subcommand};

/// agentmesh-controller: the agentmesh control plane.
///
/// In folder mode it reads manifests (the YAML you would `kubectl apply`: Gateway API
/// objects, Services, Secrets, Pods; and agentmesh's own config documents for standalone
/// proxies) from a directory, follows changes, translates them, and serves each proxy
/// (`agentmesh-proxy --xds ADDRESS`) its resources over delta ADS.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the resources of a folder over delta xDS.
    Serve {
        /// The folder of config files (`.yaml`, `.yml`, `.json`).
        #[arg(long, env = "AGENTMESH_FOLDER", value_name = "DIR")]
        folder: PathBuf,
        /// Address of the xDS (gRPC) server.
        #[arg(long, default_value = "127.0.0.1:16010", env = "AGENTMESH_XDS_ADDR")]
        xds_addr: SocketAddr,
        /// A file holding the token proxies must present (`authorization: Bearer …`).
        /// Without it only loopback clients are served.
        #[arg(long, env = "AGENTMESH_TOKEN_FILE", value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// Log filter, for example `info` or `debug`.
        #[arg(long, default_value = "info", env = "AGENTMESH_LOG")]
        log_level: String,
    },
    /// Print what a folder translates to: the resources each gateway (and standalone
    /// proxy) is served, by resource name, and the status of every object (JSON).
    Translate {
        /// The folder of manifests.
        #[arg(short = 'f', long = "folder", value_name = "DIR")]
        folder: PathBuf,
    },
    /// Print the status conditions of every object of a folder (the conditions the
    /// controller writes to the Kubernetes API in Kubernetes mode). Exits 1 when any
    /// condition is False.
    Status {
        /// The folder of manifests.
        #[arg(short = 'f', long = "folder", value_name = "DIR")]
        folder: PathBuf,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Translate { folder: dir } => match folder::load(&dir) {
            Ok(catalog) => {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&catalog.to_json()).unwrap_or_default()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Status { folder: dir } => match folder::load(&dir) {
            Ok(catalog) => {
                let status = &catalog.translation.status;
                println!(
                    "{}",
                    serde_json::to_string_pretty(&status.to_json()).unwrap_or_default()
                );
                if status.has_problems() {
                    ExitCode::FAILURE
                } else {
                    ExitCode::SUCCESS
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Serve {
            folder: dir,
            xds_addr,
            token_file,
            log_level,
        } => {
            let filter = match tracing_subscriber::EnvFilter::try_new(&log_level) {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("error: --log-level: {e}");
                    return ExitCode::from(2);
                }
            };
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .init();
            let auth = token_file.map_or(Auth::LoopbackOnly, Auth::TokenFile);
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(serve(dir, xds_addr, auth)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn serve(
    dir: PathBuf,
    addr: SocketAddr,
    auth: Auth,
) -> Result<(), agentmesh_controller::BoxError> {
    let snapshots = folder::follow(dir)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("--xds-addr {addr}: cannot listen: {e}"))?;
    tracing::info!(addr = %listener.local_addr()?, "xDS server listening");
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tonic::transport::Server::builder()
        .add_service(AdsServer::new(snapshots, auth).into_service())
        .serve_with_incoming_shutdown(incoming, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

//! The `agentmesh-injector` command: inject YAML files, serve the webhook on its own, or
//! print the webhook's selectors.

#![forbid(unsafe_code)]

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use agentmesh_injector::Injector;
use agentmesh_injector::cli::InjectorArgs;
use agentmesh_injector::manifests::inject_yaml;
use agentmesh_injector::selectors::webhook_selectors;
use agentmesh_injector::tls::TlsSource;
use agentmesh_injector::{metrics, webhook};
use clap::{Parser, Subcommand};
use prometheus_client::registry::Registry;

/// agentmesh-injector: adds the agentmesh init container and sidecar proxy to agent pods.
///
/// The same code runs in the controller's admission webhook; this binary can run the
/// webhook alone (`serve`) or inject manifests for review or for clusters without the
/// webhook (`inject`). Exit codes: 0 success, 1 input or injection error, 2 usage error.
#[derive(Debug, Parser)]
#[command(name = "agentmesh-injector", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inject the Pods and pod templates (Deployment, StatefulSet, DaemonSet, ReplicaSet,
    /// Job, CronJob, List) of a multi-document YAML file and print the result on stdout;
    /// other kinds are printed unchanged. What was done per document goes to stderr.
    Inject {
        /// The YAML file, or `-` for stdin.
        #[arg(short = 'f', long = "filename", value_name = "FILE")]
        file: PathBuf,
        /// Namespace of documents that do not name one (decides system/excluded skips).
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        #[command(flatten)]
        settings: InjectorArgs,
    },
    /// Serve the webhook over HTTPS: `POST /inject` (AdmissionReview v1), `GET /healthz`;
    /// metrics on `--metrics-addr`.
    Serve {
        /// Address of the HTTPS webhook.
        #[arg(long, env = "AGENTMESH_INJECT_ADDR", default_value = "0.0.0.0:16443")]
        addr: SocketAddr,
        /// Directory holding `tls.crt` and `tls.key` (a mounted `kubernetes.io/tls`
        /// Secret); the files are read again when they change.
        #[arg(long, env = "AGENTMESH_INJECT_CERT_DIR", value_name = "DIR", required_unless_present_all = ["tls_cert", "tls_key"], conflicts_with_all = ["tls_cert", "tls_key"])]
        cert_dir: Option<PathBuf>,
        /// Certificate chain file (PEM), instead of `--cert-dir`.
        #[arg(
            long,
            env = "AGENTMESH_INJECT_TLS_CERT",
            value_name = "FILE",
            requires = "tls_key"
        )]
        tls_cert: Option<PathBuf>,
        /// Private key file (PEM), instead of `--cert-dir`.
        #[arg(
            long,
            env = "AGENTMESH_INJECT_TLS_KEY",
            value_name = "FILE",
            requires = "tls_cert"
        )]
        tls_key: Option<PathBuf>,
        /// Address of the Prometheus endpoint `GET /metrics` (plain HTTP).
        #[arg(
            long,
            env = "AGENTMESH_INJECT_METRICS_ADDR",
            default_value = "0.0.0.0:16020"
        )]
        metrics_addr: SocketAddr,
        /// Log filter, like `info` or `agentmesh_injector=debug`.
        #[arg(long, env = "AGENTMESH_LOG", default_value = "info")]
        log_level: String,
        #[command(flatten)]
        settings: InjectorArgs,
    },
    /// Print the webhook's namespaceSelector, objectSelector and excluded namespaces as
    /// JSON, for comparison with the chart's MutatingWebhookConfiguration.
    Selectors {
        #[command(flatten)]
        settings: InjectorArgs,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Inject {
            file,
            namespace,
            settings,
        } => inject(&file, &namespace, &settings),
        Command::Serve {
            addr,
            cert_dir,
            tls_cert,
            tls_key,
            metrics_addr,
            log_level,
            settings,
        } => {
            let tls = match (cert_dir, tls_cert, tls_key) {
                (Some(dir), _, _) => TlsSource::dir(&dir),
                (None, Some(cert), Some(key)) => TlsSource::Files { cert, key },
                _ => return fail(2, "--cert-dir, or --tls-cert with --tls-key, is required"),
            };
            serve(addr, tls, metrics_addr, &log_level, &settings)
        }
        Command::Selectors { settings } => {
            let selectors = webhook_selectors(&settings.to_settings());
            match serde_json::to_string_pretty(&selectors) {
                Ok(json) => {
                    println!("{json}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(1, &e.to_string()),
            }
        }
    }
}

fn inject(file: &std::path::Path, namespace: &str, settings: &InjectorArgs) -> ExitCode {
    let input = if file.as_os_str() == "-" {
        let mut text = String::new();
        match std::io::stdin().read_to_string(&mut text) {
            Ok(_) => text,
            Err(e) => return fail(1, &format!("cannot read stdin: {e}")),
        }
    } else {
        match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(e) => return fail(1, &format!("cannot read {}: {e}", file.display())),
        }
    };
    let injector = Injector::new(settings.to_settings());
    match inject_yaml(&input, &injector, namespace) {
        Ok(out) => {
            for note in &out.notes {
                eprintln!("agentmesh-injector: {note}");
            }
            print!("{}", out.yaml);
            ExitCode::SUCCESS
        }
        Err(e) if file.as_os_str() == "-" => fail(1, &format!("stdin: {e}")),
        Err(e) => fail(1, &format!("{}: {e}", file.display())),
    }
}

fn serve(
    addr: SocketAddr,
    tls: TlsSource,
    metrics_addr: SocketAddr,
    log_level: &str,
    settings: &InjectorArgs,
) -> ExitCode {
    let filter = match tracing_subscriber::EnvFilter::try_new(log_level) {
        Ok(f) => f,
        Err(e) => return fail(2, &format!("--log-level: {e}")),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(1, &format!("cannot start the runtime: {e}")),
    };
    let injector = Arc::new(Injector::new(settings.to_settings()));
    let mut registry = Registry::default();
    injector.metrics().register(&mut registry);
    let registry = Arc::new(registry);
    let result = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let metrics_listener = tokio::net::TcpListener::bind(metrics_addr)
            .await
            .map_err(|e| format!("cannot listen on {metrics_addr}: {e}"))?;
        tracing::info!(%addr, %metrics_addr, "agentmesh-injector serving");
        tokio::select! {
            r = webhook::serve(listener, tls, injector) => r.map_err(|e| e.to_string()),
            r = metrics::serve(metrics_listener, registry) => r.map_err(|e| format!("metrics: {e}")),
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(1, &e),
    }
}

fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("agentmesh-injector: error: {message}");
    ExitCode::from(code)
}

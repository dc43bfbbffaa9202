//! The `agentmesh-controller` command: serve a folder of resources over delta xDS, or
//! print what it would serve.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use agentmesh_controller::ads::AdsServer;
use agentmesh_controller::auth::Auth;
use agentmesh_controller::ca_service::MeshCaServer;
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

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the resources of a folder, or of the Kubernetes API, over delta xDS.
    Serve {
        /// The folder of config files (`.yaml`, `.yml`, `.json`). Exactly one of
        /// `--folder` and `--kubernetes` is needed.
        #[arg(
            long,
            env = "AGENTMESH_FOLDER",
            value_name = "DIR",
            required_unless_present = "kubernetes",
            conflicts_with = "kubernetes"
        )]
        folder: Option<PathBuf>,
        /// Read the objects from the Kubernetes API (in-cluster service account,
        /// `--kubeconfig`, `KUBECONFIG` or `~/.kube/config`), write their status back,
        /// and admit proxies by their service-account token (TokenReview).
        #[arg(long)]
        kubernetes: bool,
        /// The kubeconfig file to use with `--kubernetes`.
        #[arg(long, value_name = "FILE", conflicts_with = "folder")]
        kubeconfig: Option<PathBuf>,
        /// Address of the xDS (gRPC) server.
        #[arg(long, default_value = "127.0.0.1:16010", env = "AGENTMESH_XDS_ADDR")]
        xds_addr: SocketAddr,
        /// A file holding the token proxies must present (`authorization: Bearer …`).
        /// Without it only loopback clients are served. Folder mode only.
        #[arg(
            long,
            env = "AGENTMESH_TOKEN_FILE",
            value_name = "FILE",
            conflicts_with = "kubernetes"
        )]
        token_file: Option<PathBuf>,
        /// Log filter, for example `info` or `debug`.
        #[arg(long, default_value = "info", env = "AGENTMESH_LOG")]
        log_level: String,
        /// How the gateways' Deployments and Services are rendered (`--kubernetes`
        /// applies them; see `render`).
        #[command(flatten)]
        gateways: agentmesh_controller::render::RenderOptions,
        /// How replicas elect the one that writes to the API server (`--kubernetes`).
        #[command(flatten)]
        election: agentmesh_controller::kubernetes::leader::ElectionOptions,
        /// Where the injection webhook's serving certificate comes from (`--kubernetes`).
        #[command(flatten)]
        webhook_cert: Box<agentmesh_controller::kubernetes::webhook_cert::WebhookCertOptions>,
        /// The mesh CA's root for intercepted egress TLS, and its publication to
        /// injected namespaces (`--kubernetes`).
        #[command(flatten)]
        mesh_ca: Box<agentmesh_controller::kubernetes::mesh_ca::MeshCaOptions>,
        /// Address of the sidecar injection webhook (HTTPS: `POST /inject` with an
        /// AdmissionReview, `GET /healthz`), served with the certificate of
        /// `--webhook-cert-dir` or `--webhook-cert-secret`. Without it, no webhook.
        #[arg(long, env = "AGENTMESH_WEBHOOK_ADDR", requires = "kubernetes")]
        webhook_addr: Option<SocketAddr>,
        /// Address of the Prometheus endpoint `GET /metrics` (plain HTTP): the webhook's
        /// injected, skipped (by reason) and denied counters, and its certificate's
        /// expiry, rotations and failures. Needs `--webhook-addr`.
        #[arg(long, env = "AGENTMESH_METRICS_ADDR", requires = "webhook_addr")]
        metrics_addr: Option<SocketAddr>,
        /// What the webhook injects (images, the sidecars' xDS address, resources, the
        /// mesh CA); the projected token's audience is `--token-audience`.
        #[command(flatten)]
        injection: Box<agentmesh_injector::cli::SettingsArgs>,
        /// The mesh root CA that intercepted TLS chains up to: its certificate (PEM).
        /// With `--mesh-ca-key-file`, sidecars whose AgentPolicies intercept TLS get an
        /// intermediate CA signed with it (`agentmesh.ca.v1.MeshCertificates` on the xDS
        /// address). The files are re-read when they change.
        #[arg(
            long,
            env = "AGENTMESH_MESH_CA_CERT_FILE",
            value_name = "FILE",
            requires = "mesh_ca_key_file"
        )]
        mesh_ca_cert_file: Option<PathBuf>,
        /// The mesh root CA's private key (PEM, PKCS#8). Never sent anywhere.
        #[arg(
            long,
            env = "AGENTMESH_MESH_CA_KEY_FILE",
            value_name = "FILE",
            requires = "mesh_ca_cert_file"
        )]
        mesh_ca_key_file: Option<PathBuf>,
        /// How long the intermediate CAs signed for sidecars are valid (`24h`, `90m`; 10s to
        /// 720h); sidecars renew them at two thirds of that.
        #[arg(long, default_value = "24h", value_name = "DURATION", value_parser = validity)]
        mesh_ca_intermediate_validity: std::time::Duration,
    },
    /// Print what a folder translates to: the resources each gateway (and standalone
    /// proxy) is served, by resource name, and the status of every object (JSON).
    /// Private keys are printed as a SHA-256 fingerprint, never as themselves.
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
    /// Print the CustomResourceDefinitions of agentmesh's kinds (AgentBackend,
    /// AgentPolicy) as YAML, generated from the controller's types (the Helm chart's
    /// `charts/agentmesh/crds/` holds the same text).
    Crds,
    /// Print the Deployment and Service that run each Gateway of the agentmesh
    /// GatewayClass (YAML, for `kubectl apply -f -`; Kubernetes mode applies them
    /// itself). Exits 1 when a Gateway cannot be deployed, saying why on stderr.
    Render {
        /// The folder of manifests.
        #[arg(short = 'f', long = "folder", value_name = "DIR")]
        folder: PathBuf,
        #[command(flatten)]
        options: agentmesh_controller::render::RenderOptions,
    },
}

/// Prints `text` on stdout. A reader that went away (`status -f DIR | head`) is not an
/// error worth a panic: the rest is simply not printed.
fn print_out(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Translate { folder: dir } => match folder::load(&dir) {
            Ok(catalog) => {
                let mut printed = catalog.to_json();
                agentmesh_controller::redact::private_keys(&mut printed);
                print_out(&(serde_json::to_string_pretty(&printed).unwrap_or_default() + "\n"));
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
                print_out(
                    &(serde_json::to_string_pretty(&status.to_json()).unwrap_or_default() + "\n"),
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
        Command::Crds => match agentmesh_controller::crd::crds_yaml() {
            Ok(yaml) => {
                print_out(&yaml);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: cannot write YAML: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Render {
            folder: dir,
            options,
        } => render(&dir, &options),
        Command::Serve {
            folder: dir,
            kubernetes: _,
            kubeconfig,
            xds_addr,
            token_file,
            log_level,
            gateways,
            election,
            webhook_cert,
            mesh_ca,
            webhook_addr,
            metrics_addr,
            injection,
            mesh_ca_cert_file,
            mesh_ca_key_file,
            mesh_ca_intermediate_validity,
        } => {
            if webhook_addr.is_some() && webhook_cert.source().is_none() {
                eprintln!(
                    "error: --webhook-addr needs a certificate: --webhook-cert-dir (cert-manager) \
                     or --webhook-cert-secret (generated by the controller)"
                );
                return ExitCode::from(2);
            }
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
            // clap makes `--folder` and `--kubernetes` exclusive, and one required.
            let source = match dir {
                Some(dir) => Source::Folder {
                    dir,
                    auth: token_file.map_or(Auth::LoopbackOnly, Auth::TokenFile),
                },
                None => Source::Kubernetes {
                    kubeconfig,
                    audience: gateways.token_audience.clone(),
                    mesh_ca: Box::new(MeshCaServing {
                        // The injector mounts the bundle from this ConfigMap and key; a
                        // Secret (`--mesh-ca-secret`) is the operator's to publish.
                        publish: match injection.to_settings(&gateways.token_audience).mesh_ca {
                            agentmesh_injector::settings::MeshCaSource::ConfigMap { name, key } => {
                                Some(mesh_ca.publish(&name, &key))
                            }
                            agentmesh_injector::settings::MeshCaSource::Secret { .. } => None,
                        },
                        options: *mesh_ca,
                    }),
                    webhook: webhook_addr.map(|addr| {
                        Box::new(WebhookServing {
                            addr,
                            metrics_addr,
                            settings: injection.to_settings(&gateways.token_audience),
                        })
                    }),
                    gateways,
                    election,
                    webhook_cert,
                },
            };
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let mesh_ca = MeshCaOptions {
                files: mesh_ca_cert_file.zip(mesh_ca_key_file),
                validity: mesh_ca_intermediate_validity,
            };
            match runtime.block_on(serve(source, xds_addr, mesh_ca)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `render -f DIR`: the YAML of every deployable Gateway on stdout, the others on stderr.
fn render(
    dir: &std::path::Path,
    options: &agentmesh_controller::render::RenderOptions,
) -> ExitCode {
    let catalog = match folder::load(dir) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rendered = agentmesh_controller::render::render(&catalog.objects, options);
    match agentmesh_controller::render::to_yaml(&rendered) {
        Ok(yaml) => print_out(&yaml),
        Err(e) => {
            eprintln!("error: cannot write YAML: {e}");
            return ExitCode::FAILURE;
        }
    }
    let mut ok = true;
    for r in &rendered {
        if let Err(e) = &r.result {
            eprintln!("error: {e}");
            ok = false;
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Where `serve` reads objects from.
enum Source {
    /// A folder of manifests, with the given stream authorization.
    Folder { dir: PathBuf, auth: Auth },
    /// The Kubernetes API; streams are admitted by TokenReview for `audience`.
    Kubernetes {
        kubeconfig: Option<PathBuf>,
        audience: String,
        gateways: agentmesh_controller::render::RenderOptions,
        election: agentmesh_controller::kubernetes::leader::ElectionOptions,
        webhook_cert: Box<agentmesh_controller::kubernetes::webhook_cert::WebhookCertOptions>,
        /// The mesh CA root and its publication.
        mesh_ca: Box<MeshCaServing>,
        /// The injection webhook to serve, when asked for.
        webhook: Option<Box<WebhookServing>>,
    },
}

/// The mesh CA `serve --kubernetes` keeps (`--mesh-ca-root-secret`).
struct MeshCaServing {
    options: agentmesh_controller::kubernetes::mesh_ca::MeshCaOptions,
    /// Where its certificate is published, when the injector mounts it from a ConfigMap.
    publish: Option<agentmesh_controller::kubernetes::mesh_ca::PublishSettings>,
}

/// The injection webhook `serve --kubernetes` runs (`--webhook-addr`).
struct WebhookServing {
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    settings: agentmesh_injector::Settings,
}

/// Where the mesh root comes from and what is signed with it.
struct MeshCaOptions {
    /// `--mesh-ca-cert-file` and `--mesh-ca-key-file`.
    files: Option<(PathBuf, PathBuf)>,
    /// `--mesh-ca-intermediate-validity`.
    validity: std::time::Duration,
}

/// Parses `--mesh-ca-intermediate-validity`: a Gateway API duration of 10 seconds (tests
/// watch renewals with that) to 30 days.
fn validity(text: &str) -> Result<std::time::Duration, String> {
    let d = agentmesh_controller::crd::parse_duration(text)?;
    if d < std::time::Duration::from_secs(10) || d > std::time::Duration::from_secs(30 * 86400) {
        return Err(format!("{text:?} must be between 10s and 720h"));
    }
    Ok(d)
}

async fn serve(
    source: Source,
    addr: SocketAddr,
    mesh_ca: MeshCaOptions,
) -> Result<(), agentmesh_controller::BoxError> {
    // The mesh root, when one is configured; without it intermediates are refused
    // (FAILED_PRECONDITION), and the sender's drop leaves the watch at `None`.
    let files_given = mesh_ca.files.is_some();
    let mut root = match mesh_ca.files {
        Some((cert, key)) => {
            let root = agentmesh_controller::mesh_ca_files::watch(
                cert,
                key,
                agentmesh_controller::mesh_ca_files::POLL_EVERY,
            )?;
            tracing::info!("mesh root CA loaded; signing intermediates for intercepting sidecars");
            root
        }
        None => tokio::sync::watch::channel(None).1,
    };
    // Held until the xDS server stops; dropping it stops the webhook.
    let mut _webhook = None;
    let (snapshots, auth) = match source {
        Source::Folder { dir, auth } => (folder::follow(dir)?, auth),
        Source::Kubernetes {
            kubeconfig,
            audience,
            gateways,
            election,
            webhook_cert,
            mesh_ca: mesh_root,
            webhook,
        } => {
            use agentmesh_controller::kubernetes;
            if files_given && mesh_root.options.root().is_some() {
                return Err(
                    "--mesh-ca-cert-file/--mesh-ca-key-file and --mesh-ca-root-secret \
                            both name the mesh root: give one"
                        .into(),
                );
            }
            let client = kubernetes::client(kubeconfig.as_deref()).await?;
            // Every replica: the webhook's certificate files exist before anything is
            // served, and are kept current from here on.
            if let Some(source) = webhook_cert.source() {
                let cert_metrics = kubernetes::webhook_cert::metrics::CertMetrics::default();
                let dir =
                    kubernetes::webhook_cert::start(client.clone(), source, cert_metrics.clone())
                        .await?;
                tracing::info!(dir = %dir.display(), "webhook certificate ready");
                if let Some(w) = webhook {
                    _webhook = Some(
                        agentmesh_controller::webhook::start(
                            w.addr,
                            w.metrics_addr,
                            &dir,
                            w.settings,
                            &cert_metrics,
                        )
                        .await?,
                    );
                }
            }
            // Every replica loads the mesh root (every replica signs); the leader
            // publishes its certificate (below).
            let roots = match mesh_root.options.root() {
                Some(settings) => Some(kubernetes::mesh_ca::start(client.clone(), settings).await?),
                None => None,
            };
            if let Some(roots) = &roots {
                root = roots.clone();
                tracing::info!(
                    "mesh root CA from its Secret; signing intermediates for intercepting sidecars"
                );
            }
            if roots.is_some() && mesh_root.publish.is_none() {
                tracing::info!(
                    "the injector mounts the mesh CA from a Secret (--mesh-ca-secret): \
                     the controller does not publish it"
                );
            }
            let publication = roots.zip(mesh_root.publish);
            tracing::info!("reading objects from the Kubernetes API");
            let source = kubernetes::source::follow(client.clone(), kubernetes::kinds()).await;
            // Only the leader writes: status, and each Gateway's Deployment and Service
            // (server-side apply). Every replica serves xDS.
            let leading = kubernetes::leader::spawn(client.clone(), &election);
            let (writer, writes) = (client.clone(), source.clone());
            tokio::spawn(kubernetes::leader::while_leading(leading, move || {
                let status = tokio::spawn(kubernetes::status::run(writer.clone(), writes.clone()));
                let applier = writer.clone();
                let provision = tokio::spawn(agentmesh_controller::render::provision(
                    writes.catalogs.clone(),
                    gateways.clone(),
                    move |object| {
                        let client = applier.clone();
                        async move {
                            kubernetes::apply::apply(&client, &object)
                                .await
                                .map(|_| ())
                                .map_err(|e| e.to_string())
                        }
                    },
                ));
                let mut tasks = vec![status, provision];
                if let Some((roots, settings)) = &publication {
                    tasks.push(tokio::spawn(kubernetes::mesh_ca::publish(
                        writer.clone(),
                        settings.clone(),
                        roots.clone(),
                    )));
                }
                tasks
            }));
            let reviewer = kubernetes::token_review::TokenReviewer::new(
                client,
                audience,
                source.catalogs.clone(),
            );
            (
                source.catalogs,
                Auth::TokenReview(std::sync::Arc::new(reviewer)),
            )
        }
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("--xds-addr {addr}: cannot listen: {e}"))?;
    tracing::info!(addr = %listener.local_addr()?, "xDS server listening");
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let ca = MeshCaServer::new(snapshots.clone(), auth.clone(), root, mesh_ca.validity);
    tonic::transport::Server::builder()
        .add_service(AdsServer::new(snapshots, auth).into_service())
        .add_service(ca.into_service())
        .serve_with_incoming_shutdown(incoming, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

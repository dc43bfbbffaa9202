//! The `agentmesh-proxy` command: run the proxy, or validate a config file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use agentmesh_proxy::app::{self, Options};
use agentmesh_proxy::config::{self, file};
use agentmesh_proxy::telemetry::{LogFormat, logging};
use clap::{Parser, Subcommand, ValueEnum};

/// agentmesh-proxy: the agentmesh data plane for AI-agent traffic (MCP, A2A, LLM, REST).
///
/// Without a subcommand it runs the proxy. In standalone mode the configuration comes
/// from a local YAML or JSON file (see schema/agentmesh-config.schema.json), which is
/// reloaded whenever it changes.
#[derive(Debug, Parser)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a config file and exit: 0 when valid, 1 with every problem listed (each
    /// naming the resource and field) when not.
    Validate {
        /// The config file (YAML, or JSON when it ends in .json).
        file: PathBuf,
    },
    /// Print the JSON Schema of the config file format.
    Schema,
    /// Wait until the proxy reports ready (`GET /healthz/ready` answers 200), then exit
    /// 0; exit 1 naming the last answer after `--timeout`. For a classic sidecar's
    /// postStart hook: the kubelet starts the app containers only once it returns.
    Wait {
        /// The proxy's readiness address.
        #[arg(long, default_value = "127.0.0.1:16021", env = "AGENTMESH_READY_ADDR")]
        ready_addr: std::net::SocketAddr,
        /// How long to wait at most.
        #[arg(long, default_value = "300s", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Ask the running proxy to drain (`POST /drain` on its admin API: readiness reports
    /// not ready from then on), then keep it serving for `--grace` before exiting 0. For
    /// a classic sidecar's preStop hook: the app's last calls during its own shutdown
    /// still go through, and the kubelet's SIGTERM then finishes in-flight requests.
    Drain {
        /// The proxy's admin address.
        #[arg(long, default_value = "127.0.0.1:16000", env = "AGENTMESH_ADMIN_ADDR")]
        admin_addr: std::net::SocketAddr,
        /// How long to keep serving after the drain started.
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        grace: Duration,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Configuration from a local file (`--config`).
    Standalone,
    /// Standalone, plus transparent capture of the pod's outbound traffic redirected by
    /// iptables to `--outbound-addr` (run the proxy as UID 1501, which the rules let
    /// through). Configuration from `--config`, or from the controller with `--xds`
    /// (capture settings, outbound default, egress TLS and routes alike); until the first
    /// config arrives, captured traffic is refused.
    Sidecar,
    /// The proxy of one Kubernetes `Gateway` (`--gateway NAME.NAMESPACE`): serves that
    /// Gateway's listeners and routes, as the controller translates them, over `--xds`
    /// (required). The controller renders a Deployment running this mode for each Gateway
    /// of the agentmesh GatewayClass.
    Gateway,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Config file (YAML, or JSON when it ends in .json). Required to run the proxy,
    /// unless the config comes from a controller (`--xds`).
    #[arg(long, short = 'c', env = "AGENTMESH_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Take the config from an agentmesh controller over delta xDS, like
    /// `http://127.0.0.1:16010`, instead of from a file. The proxy is ready only after the
    /// first config arrives, and keeps serving its last good config when the controller
    /// is away.
    #[arg(
        long,
        env = "AGENTMESH_XDS",
        value_name = "ADDRESS",
        conflicts_with = "config"
    )]
    xds: Option<String>,
    /// With `--xds`: a file holding the token sent to the controller as
    /// `authorization: Bearer <token>`.
    #[arg(
        long,
        env = "AGENTMESH_XDS_TOKEN_FILE",
        value_name = "FILE",
        requires = "xds"
    )]
    xds_token_file: Option<PathBuf>,
    /// With `--xds`: the node id, `standalone~<ip>~<name>` (or `gateway~…`, `sidecar~…`).
    /// Defaults to `standalone~127.0.0.1~<hostname>`; in sidecar mode to
    /// `sidecar~$POD_IP~$POD_NAME.$POD_NAMESPACE` (the downward API), each part falling
    /// back to 127.0.0.1, the hostname and `default`; in gateway mode to
    /// `gateway~$POD_IP~<--gateway>`.
    #[arg(
        long,
        env = "AGENTMESH_XDS_NODE_ID",
        value_name = "ID",
        requires = "xds"
    )]
    xds_node_id: Option<String>,
    /// Where the configuration comes from.
    #[arg(long, value_enum, default_value = "standalone", env = "AGENTMESH_MODE")]
    mode: Mode,
    /// Gateway mode: the Gateway this proxy serves, `NAME.NAMESPACE`. The node id is then
    /// `gateway~$POD_IP~NAME.NAMESPACE` (127.0.0.1 without `POD_IP`).
    #[arg(long, env = "AGENTMESH_GATEWAY", value_name = "NAME.NAMESPACE", value_parser = parse_gateway)]
    gateway: Option<String>,
    /// Admin API address (config_dump, logging). Keep it on loopback. `off` disables it.
    #[arg(long, default_value = "127.0.0.1:16000", env = "AGENTMESH_ADMIN_ADDR", value_parser = parse_addr)]
    admin_addr: MaybeAddr,
    /// Prometheus metrics address (`/metrics`). `off` disables it.
    #[arg(long, default_value = "0.0.0.0:16020", env = "AGENTMESH_METRICS_ADDR", value_parser = parse_addr)]
    metrics_addr: MaybeAddr,
    /// Readiness address (`/healthz/ready`). `off` disables it.
    #[arg(long, default_value = "0.0.0.0:16021", env = "AGENTMESH_READY_ADDR", value_parser = parse_addr)]
    ready_addr: MaybeAddr,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value = "text", env = "AGENTMESH_LOG_FORMAT")]
    log_format: LogFormat,
    /// Log filter, for example `info` or `info,agentmesh_proxy::http=debug`. Can be
    /// changed at runtime through the admin API (`POST /logging?level=debug`).
    #[arg(long, default_value = "info", env = "AGENTMESH_LOG")]
    log_level: String,
    /// On SIGTERM, how long to wait for in-flight requests before exiting, for example
    /// `30s` or `500ms`.
    #[arg(long, default_value = "30s", env = "AGENTMESH_DRAIN_TIMEOUT", value_parser = parse_duration)]
    drain_timeout: Duration,
    /// Do not reload the config file when it changes.
    #[arg(long)]
    no_watch: bool,
    /// Threads serving traffic. 0 (the default): one per CPU the process may use. Each
    /// thread runs a scheduler of its own and serves the connections it is given for
    /// their whole life, with its own upstream connections, so no request moves between
    /// threads.
    #[arg(long, default_value_t = 0, env = "AGENTMESH_WORKER_THREADS")]
    worker_threads: usize,
    /// Sidecar mode: addresses of the outbound capture listener, where iptables
    /// redirects the pod's outbound TCP (comma-separated or repeated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "127.0.0.1:16001,[::1]:16001",
        env = "AGENTMESH_OUTBOUND_ADDR"
    )]
    outbound_addr: Vec<SocketAddr>,
    /// Sidecar mode: addresses of the inbound capture listener, where iptables redirects
    /// connections to the pod's ports. Open while the config sets
    /// `sidecar.inbound.enabled` (followed on reload), or always with `--inbound-capture`.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0.0.0.0:16006,[::]:16006",
        env = "AGENTMESH_INBOUND_ADDR"
    )]
    inbound_addr: Vec<SocketAddr>,
    /// Sidecar mode: the pod's iptables rules redirect inbound TCP to `--inbound-addr`
    /// (the injector sets this for `agentmesh.dev/inbound-capture: "true"`). The inbound
    /// listener then opens at startup, before the readiness port and before any config
    /// arrives, and stays open whatever `sidecar.inbound.enabled` says (the config can
    /// open it, never close it). The config still decides what inbound connections meet:
    /// `inboundBinds` and `inboundDefault`; until the first config over xDS, they are
    /// refused (403, TCP reset). Without the flag, the config alone opens and closes it.
    #[arg(
        long,
        env = "AGENTMESH_INBOUND_CAPTURE",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    inbound_capture: bool,
}

#[derive(Debug, Clone, Copy)]
struct MaybeAddr(Option<SocketAddr>);

fn parse_addr(s: &str) -> Result<MaybeAddr, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(MaybeAddr(None));
    }
    s.parse()
        .map(|a| MaybeAddr(Some(a)))
        .map_err(|_| format!("{s:?} is not an address like 127.0.0.1:16000 (or `off`)"))
}

fn parse_gateway(s: &str) -> Result<String, String> {
    // A Gateway's name may hold dots; a namespace may not: the last dot splits them.
    match s.rsplit_once('.') {
        Some((name, namespace)) if !name.is_empty() && !namespace.is_empty() => Ok(s.into()),
        _ => Err(format!(
            "{s:?} is not NAME.NAMESPACE (the Gateway's name and namespace, like web.default)"
        )),
    }
}

/// A lifecycle hook's exit: 0, or 1 with the reason on stderr (the kubelet shows it).
fn hook_result(result: Result<(), agentmesh_proxy::admin::hooks::HookError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agentmesh-proxy: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let err = || format!("{s:?} is not a duration like 30s or 500ms");
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map(|i| s.split_at(i))
        .ok_or_else(err)?;
    let n: f64 = num.parse().map_err(|_| err())?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(err()),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| err())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Validate { file: path }) => validate(&path),
        Some(Command::Schema) => {
            let schema = agentmesh_proto::schema::local_config_schema();
            println!(
                "{}",
                serde_json::to_string_pretty(&schema).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Some(Command::Wait {
            ready_addr,
            timeout,
        }) => hook_result(agentmesh_proxy::admin::hooks::wait_ready(
            ready_addr, timeout,
        )),
        Some(Command::Drain { admin_addr, grace }) => {
            hook_result(agentmesh_proxy::admin::hooks::drain(admin_addr, grace))
        }
        None => run(cli.run),
    }
}

fn validate(path: &std::path::Path) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Upstream clients need a runtime context to be built.
    let _guard = runtime.enter();
    let metrics = agentmesh_proxy::telemetry::Metrics::new();
    let ctx = app::compile_context(&metrics);
    match file::load(path).and_then(|c| config::compile(file::flatten(c), &ctx)) {
        Ok(_) => {
            println!("{}: valid", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: RunArgs) -> ExitCode {
    let mode = args.mode;
    if let Err(e) = check_gateway_mode(&args) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let gateway = args.gateway.clone();
    let xds = args.xds.map(|address| config::xds::XdsOptions {
        address,
        node_id: args
            .xds_node_id
            .unwrap_or_else(|| default_node_id(mode, gateway.as_deref())),
        token_file: args.xds_token_file,
    });
    let Some(config) = args.config.or_else(|| xds.as_ref().map(|_| PathBuf::new())) else {
        eprintln!(
            "error: --config FILE (or --xds ADDRESS) is required to run the proxy (see --help)"
        );
        return ExitCode::from(2);
    };
    let logs = match logging::init(args.log_format, &args.log_level) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: --log-level: {e}");
            return ExitCode::from(2);
        }
    };
    let sidecar = match args.mode {
        Mode::Standalone | Mode::Gateway => None,
        Mode::Sidecar => Some(app::SidecarOptions {
            outbound_addrs: args.outbound_addr,
            inbound_addrs: args.inbound_addr,
            inbound_capture: args.inbound_capture,
        }),
    };
    let opts = Options {
        config,
        xds,
        admin_addr: args.admin_addr.0,
        metrics_addr: args.metrics_addr.0,
        ready_addr: args.ready_addr.0,
        drain_timeout: args.drain_timeout,
        watch: !args.no_watch,
        sidecar,
    };
    // Every serving thread runs a single-thread scheduler and keeps the connections it
    // is given (see `workers`): the calling thread runs the main runtime and is the
    // first worker.
    let threads = match args.worker_threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = agentmesh_proxy::workers::start(threads, runtime.handle().clone()) {
        eprintln!("error: cannot start {threads} worker threads: {e}");
        return ExitCode::FAILURE;
    }
    match runtime.block_on(app::run(opts, logs)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "agentmesh-proxy cannot start");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Gateway mode serves what the controller sends for one Gateway: it needs `--xds` and
/// the Gateway's name (or an explicit node id), and reads no config file. Also refuses
/// `--inbound-capture` outside sidecar mode.
fn check_gateway_mode(args: &RunArgs) -> Result<(), String> {
    if args.inbound_capture && args.mode != Mode::Sidecar {
        return Err(
            "--inbound-capture is for --mode sidecar (no iptables rules \
             redirect a standalone or gateway proxy's inbound traffic)"
                .into(),
        );
    }
    if args.mode != Mode::Gateway {
        return match &args.gateway {
            Some(_) => Err("--gateway is for --mode gateway".into()),
            None => Ok(()),
        };
    }
    if args.xds.is_none() {
        return Err("--mode gateway takes its config from the controller: \
             --xds ADDRESS is required (and --config is not read)"
            .into());
    }
    if args.gateway.is_none() && args.xds_node_id.is_none() {
        return Err("--mode gateway needs the Gateway it serves: \
             --gateway NAME.NAMESPACE (or AGENTMESH_GATEWAY)"
            .into());
    }
    Ok(())
}

/// Standalone: `standalone~127.0.0.1~<hostname>`, enough to tell proxies apart in the
/// controller's logs in folder mode. Sidecar: `sidecar~<pod IP>~<pod>.<namespace>` from
/// the downward API variables the injector sets. Gateway: `gateway~<pod IP>~<gateway>`
/// (`--gateway NAME.NAMESPACE`; the rendered Deployment sets both).
fn default_node_id(mode: Mode, gateway: Option<&str>) -> String {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let hostname = || {
        env("HOSTNAME")
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "proxy".into())
    };
    match mode {
        Mode::Standalone => format!("standalone~127.0.0.1~{}", hostname()),
        Mode::Sidecar => format!(
            "sidecar~{}~{}.{}",
            env("POD_IP").unwrap_or_else(|| "127.0.0.1".into()),
            env("POD_NAME").unwrap_or_else(hostname),
            env("POD_NAMESPACE").unwrap_or_else(|| "default".into()),
        ),
        Mode::Gateway => format!(
            "gateway~{}~{}",
            env("POD_IP").unwrap_or_else(|| "127.0.0.1".into()),
            gateway.unwrap_or_default(),
        ),
    }
}

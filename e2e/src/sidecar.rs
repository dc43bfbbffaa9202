//! An injected agent pod, run the way Kubernetes runs it: `agentmesh-init` as root first
//! (the init container with NET_ADMIN), then the sidecar as UID/GID 1501, then the app's
//! unmodified processes as another UID; and the upstream pods of the scenario, whose
//! programs and sidecar config live in `e2e/sidecar/` (shared with
//! `scripts/sidecar-demo.sh` and `e2e/bench/sidecar.sh`).
//!
//! This module starts processes, waits (always bounded) until they serve, and reads
//! what a user could read (`iptables-save`, `/metrics`). It asserts nothing: what the
//! sidecar must do is for the tests to say.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::{Daemon, HarnessError, Pod, Result, binary, run, wait_for};

/// UID and GID of the sidecar (the contract with `agentmesh-init` and the injector).
pub const PROXY_UID: u32 = 1501;
/// UID and GID of the agent's own processes: any UID but the proxy's is captured.
pub const APP_UID: u32 = 1000;
/// UID and GID of the upstream servers (`nobody`).
pub const SERVER_UID: u32 = 65534;

/// The sidecar's admin, metrics and readiness addresses on the pod's loopback (the
/// contract's ports).
pub const ADMIN_ADDR: &str = "127.0.0.1:16000";
/// See [`ADMIN_ADDR`].
pub const METRICS_ADDR: &str = "127.0.0.1:16020";
/// See [`ADMIN_ADDR`].
pub const READY_ADDR: &str = "127.0.0.1:16021";

/// How long a process may take to start serving.
const START_LIMIT: Duration = Duration::from_secs(30);
/// Every command the harness runs in a pod is killed after this (`timeout`).
const COMMAND_LIMIT: &str = "30";

const INSTALL_HINT: &str = "run scripts/install-test-deps.sh (as root)";

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A file of `e2e/sidecar/` (upstream programs, the sidecar config).
pub fn fixture(name: &str) -> PathBuf {
    workspace_root().join("e2e").join("sidecar").join(name)
}

/// Fails, naming what is missing, unless every tool is on PATH (or is an existing path).
pub fn require_tools(tools: &[&str]) -> Result<()> {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|tool| {
            let on_path = std::env::var_os("PATH").is_some_and(|path| {
                std::env::split_paths(&path).any(|dir| dir.join(tool).is_file())
            });
            !on_path && !Path::new(tool).is_file()
        })
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(HarnessError::Missing {
            what: missing.join(", "),
            hint: INSTALL_HINT,
        })
    }
}

/// The Python of `target/venvs/mcp1-sys`: the MCP SDK 1.x on Debian's `/usr/bin/python3`,
/// which every UID can read (a pyenv under /root is not). Fails when it is missing or
/// has no `mcp` package.
pub fn mcp_python() -> Result<PathBuf> {
    let venv = std::env::var_os("AGENTMESH_MCP1_SYS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/venvs/mcp1-sys"));
    let python = venv.join("bin").join("python");
    let ok = Command::new(&python)
        .args(["-c", "import mcp.client.streamable_http"])
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        Ok(python)
    } else {
        Err(HarnessError::Missing {
            what: format!(
                "the Python venv {} with the MCP SDK 1.x (`mcp<2`)",
                venv.display()
            ),
            hint: INSTALL_HINT,
        })
    }
}

/// The Python of `target/venvs/llm-sys` (`scripts/install-llm-deps.sh`): the `openai`
/// SDK and `llm-mock-api` on Debian's `/usr/bin/python3`, which every UID can read. Fails
/// when it is missing or lacks either package.
pub fn llm_python() -> Result<PathBuf> {
    let venv = std::env::var_os("AGENTMESH_LLM_SYS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/venvs/llm-sys"));
    let python = venv.join("bin").join("python");
    let ok = venv.join("bin").join("llm-mock-api").is_file()
        && Command::new(&python)
            .args(["-c", "import openai, llm_mock_api"])
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success());
    if ok {
        Ok(python)
    } else {
        Err(HarnessError::Missing {
            what: format!(
                "the Python venv {} with the `openai` SDK and `llm-mock-api`",
                venv.display()
            ),
            hint: INSTALL_HINT,
        })
    }
}

/// The LLM provider pod's processes: `llm-mock-api` on the pod's loopback and the HTTPS
/// front in front of it (see [`start_llm`]).
#[derive(Debug)]
pub struct LlmProvider {
    /// `llm-mock-api` on `127.0.0.1:8000`.
    pub mock: Daemon,
    /// `e2e/sidecar/llm_front.py` on port 443, which logs the requests it decrypted.
    pub front: Daemon,
}

/// Starts an OpenAI-compatible provider in `pod`: `llm-mock-api` (answering every chat
/// with `reply`) as `nobody` on `127.0.0.1:8000`, behind `e2e/sidecar/llm_front.py`, which
/// serves HTTPS on port 443 of every address with the certificate for `llm`
/// (`e2e/sidecar/certs/llm.crt`). The front runs as root only because 443 is a
/// privileged port. `python` is the venv's ([`llm_python`]).
pub fn start_llm(pod: &Pod, reply: &str, python: &Path, scratch: &Scratch) -> Result<LlmProvider> {
    let mock_bin = python.with_file_name("llm-mock-api").display().to_string();
    let mut cmd = pod.ns.command_as(
        SERVER_UID,
        SERVER_UID,
        &[
            &mock_bin,
            "start",
            "-H",
            "127.0.0.1",
            "-p",
            "8000",
            "-f",
            reply,
        ],
    );
    // It looks for ./config.json; an empty, readable working directory has none.
    cmd.env("HOME", "/tmp").current_dir("/tmp");
    let log = scratch.path(&format!("{}-llm-mock.log", pod.name));
    let mock = Daemon::spawn(&format!("{} llm-mock-api", pod.name), cmd, &log)?;
    let mock = wait_until(mock, |_| {
        let out = exec_as(
            pod,
            SERVER_UID,
            &[
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "--max-time",
                "1",
                "http://127.0.0.1:8000/",
            ],
        );
        out.status.success()
    })?;
    let front = fixture("llm_front.py").display().to_string();
    let cert = fixture("certs/llm.crt").display().to_string();
    let key = fixture("certs/llm.key").display().to_string();
    let cmd = pod
        .ns
        .command(&["/usr/bin/python3", "-u", &front, "443", "8000", &cert, &key]);
    let log = scratch.path(&format!("{}-llm-front.log", pod.name));
    let front = Daemon::spawn(&format!("{} HTTPS front", pod.name), cmd, &log)?;
    let front = wait_until(front, |d| d.logs().contains("ready"))?;
    Ok(LlmProvider { mock, front })
}

/// A temporary directory whose files every UID can read (configs, scripts, logs), removed
/// on drop.
#[derive(Debug)]
pub struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    /// Creates the directory, readable and traversable by everyone.
    pub fn new() -> Result<Scratch> {
        let io = |source| HarnessError::Spawn {
            cmd: "create a temp dir".into(),
            source,
            hint: "temp dir not writable",
        };
        let dir = tempfile::Builder::new()
            .prefix("agentmesh-e2e-")
            .tempdir()
            .map_err(io)?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).map_err(io)?;
        Ok(Scratch { dir })
    }

    /// Path of `name` inside the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Creates the subdirectory `name`, readable and traversable by everyone.
    pub fn readable_dir(&self, name: &str) -> Result<PathBuf> {
        let path = self.path(name);
        std::fs::create_dir(&path)
            .and_then(|()| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)))
            .map_err(|source| HarnessError::Spawn {
                cmd: format!("create {}", path.display()),
                source,
                hint: "temp dir not writable",
            })?;
        Ok(path)
    }
}

/// Writes `text` to `path`, readable by every UID (the pods' processes run as others).
pub fn write_readable(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text)
        .and_then(|()| std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)))
        .map_err(|source| HarnessError::Spawn {
            cmd: format!("write {}", path.display()),
            source,
            hint: "temp dir not writable",
        })
}

/// Output of a command as text: stdout, and stderr when it said anything.
pub fn text(out: &Output) -> String {
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr);
    if !err.trim().is_empty() {
        s.push_str("\n[stderr] ");
        s.push_str(err.trim());
    }
    s
}

/// Runs `argv` in `pod` as `uid`/`gid`, bounded by `timeout`, and returns its output
/// whatever its exit status.
pub fn exec_as(pod: &Pod, uid: u32, argv: &[&str]) -> Output {
    let mut full = vec!["timeout", COMMAND_LIMIT];
    full.extend_from_slice(argv);
    let mut cmd = pod.ns.command_as(uid, uid, &full);
    // An unprivileged process cannot read root's home (curlrc, Python caches).
    cmd.env("HOME", "/tmp").stdin(Stdio::null());
    cmd.output().unwrap_or_else(|e| Output {
        status: std::os::unix::process::ExitStatusExt::from_raw(127 << 8),
        stdout: Vec::new(),
        stderr: format!("cannot run {argv:?}: {e}").into_bytes(),
    })
}

/// Starts `e2e/sidecar/upstreams.py` in `pod` as `nobody` with `services`
/// (`"http:8080"`, `"echo:9000"`, `"banner:2525"`) and waits until it listens.
pub fn start_upstreams(pod: &Pod, services: &[&str], scratch: &Scratch) -> Result<Daemon> {
    let script = fixture("upstreams.py").display().to_string();
    let mut argv = vec!["/usr/bin/python3", "-u", &script, &pod.name];
    argv.extend_from_slice(services);
    let log = scratch.path(&format!("{}-upstreams.log", pod.name));
    let daemon = Daemon::spawn(
        &format!("{} upstreams", pod.name),
        pod.ns.command_as(SERVER_UID, SERVER_UID, &argv),
        &log,
    )?;
    wait_until(daemon, |d| d.logs().contains("ready"))
}

/// Starts the FastMCP fixture named `name` in `pod` on `port` (every IPv4 address) as
/// `nobody`, and waits until it answers HTTP.
pub fn start_mcp_server(
    pod: &Pod,
    name: &str,
    port: u16,
    python: &Path,
    scratch: &Scratch,
) -> Result<Daemon> {
    let script = fixture("mcp_server.py").display().to_string();
    let python = python.display().to_string();
    let port_s = port.to_string();
    let mut cmd = pod.ns.command_as(
        SERVER_UID,
        SERVER_UID,
        &[&python, "-u", &script, name, &port_s],
    );
    cmd.env("HOME", "/tmp");
    let log = scratch.path(&format!("{}-mcp.log", pod.name));
    let daemon = Daemon::spawn(&format!("{} MCP server", pod.name), cmd, &log)?;
    let url = format!("http://127.0.0.1:{port}/mcp");
    wait_until(daemon, |_| {
        // Any HTTP status (a GET without a session is refused) means it serves.
        let out = exec_as(
            pod,
            SERVER_UID,
            &["curl", "-s", "-o", "/dev/null", "--max-time", "1", &url],
        );
        out.status.success()
    })
}

/// Waits (bounded) until `ready` holds for the running daemon.
fn wait_until(mut daemon: Daemon, mut ready: impl FnMut(&Daemon) -> bool) -> Result<Daemon> {
    let ok = wait_for(START_LIMIT, || {
        if !daemon.alive() {
            return Some(false);
        }
        ready(&daemon).then_some(true)
    });
    if ok == Some(true) {
        Ok(daemon)
    } else {
        Err(HarnessError::NotReady {
            what: daemon.name().to_string(),
            secs: START_LIMIT.as_secs(),
            log: daemon.logs(),
        })
    }
}

/// Runs `agentmesh-init ARGS` as root in `pod`, as the init container does; returns
/// what it printed.
pub fn init(pod: &Pod, args: &[&str]) -> Result<String> {
    let bin = binary("agentmesh-init")?.display().to_string();
    let mut argv = vec!["timeout", COMMAND_LIMIT, bin.as_str()];
    argv.extend_from_slice(args);
    let out = run(&mut pod.ns.command(&argv))?;
    Ok(text(&out))
}

/// The pod's rules of both families as `iptables-save` / `ip6tables-save` print them,
/// without the comment lines that carry a timestamp and with the packet counters zeroed,
/// so that two snapshots of the same rules compare equal.
pub fn iptables_rules(pod: &Pod) -> Result<String> {
    let mut all = String::new();
    for tool in ["iptables-save", "ip6tables-save"] {
        let out = run(&mut pod.ns.command(&["timeout", COMMAND_LIMIT, tool]))?;
        all.push_str(&format!("## {tool}\n"));
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if line.starts_with('#') {
                continue;
            }
            // `:OUTPUT ACCEPT [12:720]` -> `:OUTPUT ACCEPT [0:0]`
            match (line.starts_with(':'), line.rfind(" [")) {
                (true, Some(i)) => all.push_str(&format!("{} [0:0]\n", &line[..i])),
                _ => all.push_str(&format!("{line}\n")),
            }
        }
    }
    Ok(all)
}

/// The sidecar: `agentmesh-proxy --mode sidecar` as UID/GID 1501 in the agent pod.
#[derive(Debug)]
pub struct Sidecar {
    daemon: Daemon,
}

impl Sidecar {
    /// Starts the proxy with `config` and the contract's loopback ports, and waits until
    /// `/healthz/ready` answers 200.
    pub fn start(pod: &Pod, config: &Path, scratch: &Scratch) -> Result<Sidecar> {
        let config = config.display().to_string();
        Self::spawn(pod, &["--config", &config, "--no-watch"], scratch)?.wait_ready(pod)
    }

    /// Starts the proxy as UID 1501 with `source` (the flags saying where its config
    /// comes from: `--config FILE`, or `--xds ADDRESS` and its companions) and the
    /// contract's loopback ports, and waits until it serves its readiness port, ready or
    /// not (it captures from then on).
    pub fn spawn(pod: &Pod, source: &[&str], scratch: &Scratch) -> Result<Sidecar> {
        let bin = binary("agentmesh-proxy")?.display().to_string();
        let mut argv = vec![bin.as_str(), "--mode", "sidecar"];
        argv.extend_from_slice(source);
        argv.extend_from_slice(&[
            "--admin-addr",
            ADMIN_ADDR,
            "--metrics-addr",
            METRICS_ADDR,
            "--ready-addr",
            READY_ADDR,
            "--log-level",
            "info,agentmesh_proxy=debug",
        ]);
        let cmd = pod.ns.command_as(PROXY_UID, PROXY_UID, &argv);
        let log = scratch.path(&format!("{}-sidecar.log", pod.name));
        let daemon = Daemon::spawn(&format!("{} sidecar", pod.name), cmd, &log)?;
        let url = format!("http://{READY_ADDR}/healthz/ready");
        let daemon = wait_until(daemon, |_| {
            // Any HTTP status: 503 until the first config, 200 after.
            let out = exec_as(
                pod,
                APP_UID,
                &["curl", "-s", "-o", "/dev/null", "--max-time", "1", &url],
            );
            out.status.success()
        })?;
        Ok(Sidecar { daemon })
    }

    /// Waits until `/healthz/ready` answers 200 (the first config is applied).
    pub fn wait_ready(self, pod: &Pod) -> Result<Sidecar> {
        let url = format!("http://{READY_ADDR}/healthz/ready");
        let daemon = wait_until(self.daemon, |_| {
            let out = exec_as(
                pod,
                APP_UID,
                &["curl", "-sf", "-o", "/dev/null", "--max-time", "1", &url],
            );
            out.status.success()
        })?;
        Ok(Sidecar { daemon })
    }

    /// The sidecar's `/metrics`, read from inside the pod.
    pub fn metrics(&self, pod: &Pod) -> String {
        let url = format!("http://{METRICS_ADDR}/metrics");
        text(&exec_as(
            pod,
            APP_UID,
            &["curl", "-sS", "--max-time", "5", &url],
        ))
    }

    /// What the sidecar logged so far.
    pub fn logs(&self) -> String {
        self.daemon.logs()
    }

    /// Whether the sidecar process still runs.
    pub fn alive(&mut self) -> bool {
        self.daemon.alive()
    }
}

/// The control plane's xDS port (DESIGN.md "Contracts").
pub const XDS_PORT: u16 = 16010;

/// Starts `agentmesh-controller serve` in `pod` as `nobody`, serving the config files of
/// `folder` over delta xDS on every address of the pod (port [`XDS_PORT`]) to proxies
/// presenting the token in `token_file`, and waits until it listens.
pub fn start_controller(
    pod: &Pod,
    folder: &Path,
    token_file: &Path,
    scratch: &Scratch,
) -> Result<Daemon> {
    start_controller_with(pod, folder, token_file, scratch, &[])
}

/// [`start_controller`] with `extra` arguments after the usual ones (the mesh root's
/// files, say).
pub fn start_controller_with(
    pod: &Pod,
    folder: &Path,
    token_file: &Path,
    scratch: &Scratch,
    extra: &[&str],
) -> Result<Daemon> {
    let bin = binary("agentmesh-controller")?.display().to_string();
    let folder = folder.display().to_string();
    let token_file = token_file.display().to_string();
    let addr = format!("[::]:{XDS_PORT}");
    let mut argv = vec![
        bin.as_str(),
        "serve",
        "--folder",
        &folder,
        "--xds-addr",
        &addr,
        "--token-file",
        &token_file,
    ];
    argv.extend_from_slice(extra);
    let cmd = pod.ns.command_as(SERVER_UID, SERVER_UID, &argv);
    let log = scratch.path(&format!("{}-controller.log", pod.name));
    let daemon = Daemon::spawn(&format!("{} controller", pod.name), cmd, &log)?;
    wait_until(daemon, |d| d.logs().contains("xDS server listening"))
}

/// The value of one Prometheus sample (`name{labels}` exactly as exposed), or 0.
pub fn metric(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| {
            let rest = l.strip_prefix(series)?;
            rest.starts_with(' ').then(|| rest.trim().parse().ok())?
        })
        .unwrap_or(0.0)
}

//! Shared test harness: runs the real `agentmesh-proxy` binary on free ports with a
//! config written to a temp dir, and real upstream servers (hyper) to send traffic to.
//!
//! Tests talk only to 127.0.0.1.
#![allow(dead_code, missing_docs, clippy::unwrap_used)]

pub mod client;
pub mod process;
pub mod upstream;

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port that was free a moment ago. It is drawn at random below the kernel's ephemeral
/// range (32768+), so the upstreams and clients of other tests running in parallel, which
/// get ephemeral ports, cannot take it between this check and the proxy binding it.
/// A port is never handed out twice by one test process, so the binds and admin ports of
/// one proxy (all chosen before it starts) cannot collide with each other.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = 20000 + (rand_u32() % 12000) as u16;
        let mut given = GIVEN.lock().unwrap();
        if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    h.write_u128(now.as_nanos());
    h.finish() as u32
}

/// A running proxy process.
pub struct Proxy {
    child: std::sync::Mutex<Option<Child>>,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub admin: SocketAddr,
    pub metrics: SocketAddr,
    pub ready: SocketAddr,
    log_path: PathBuf,
}

impl Proxy {
    /// Writes `yaml` as the config file and starts the proxy; waits until it is ready.
    pub fn start(yaml: &str) -> Proxy {
        Self::start_with(yaml, &[])
    }

    /// As `start`, with extra command-line arguments.
    pub fn start_with(yaml: &str, args: &[&str]) -> Proxy {
        let proxy = Self::spawn(yaml, args);
        proxy.wait_ready();
        proxy
    }

    /// Starts the proxy without waiting for readiness.
    pub fn spawn(yaml: &str, args: &[&str]) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("config.yaml");
        std::fs::write(&config_path, yaml).unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let ready: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log_path = dir.path().join("proxy.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_agentmesh-proxy"))
            .arg("--config")
            .arg(&config_path)
            .args(["--admin-addr", &admin.to_string()])
            .args(["--metrics-addr", &metrics.to_string()])
            .args(["--ready-addr", &ready.to_string()])
            .args(["--log-level", "info,agentmesh_proxy=debug"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Proxy {
            child: std::sync::Mutex::new(Some(child)),
            dir,
            config_path,
            admin,
            metrics,
            ready,
            log_path,
        }
    }

    /// Waits (at most 20 s) until `/healthz/ready` answers 200; panics with the log if not.
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.try_exited() {
                panic!(
                    "proxy exited with {status} before ready; log:\n{}",
                    self.logs()
                );
            }
            if client::blocking_get(self.ready, "/healthz/ready").is_some_and(|(s, _)| s == 200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("proxy not ready after 20s; log:\n{}", self.logs());
    }

    /// The process's exit status if it has exited.
    pub fn try_exited(&self) -> Option<std::process::ExitStatus> {
        self.child
            .lock()
            .unwrap()
            .as_mut()?
            .try_wait()
            .ok()
            .flatten()
    }

    /// Everything the proxy logged so far.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log_path) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// The Prometheus text of `/metrics`.
    pub fn metrics_text(&self) -> String {
        client::blocking_get(self.metrics, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default()
    }

    /// The value of one metric series whose line starts with `prefix` (name and labels),
    /// summed when several series match.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_value(&self.metrics_text(), name, labels)
    }

    /// Replaces the config file atomically (write + rename), as editors and
    /// Kubernetes ConfigMap updates do.
    pub fn write_config(&self, yaml: &str) {
        let tmp = self.dir.path().join(".config.yaml.tmp");
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(&tmp, &self.config_path).unwrap();
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        if let Some(c) = self.child.lock().unwrap().as_ref() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
        }
    }

    /// Waits for the process to exit (at most `limit`), returning its status.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.try_exited() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.lock().unwrap().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Sums the values of the series of `name` whose labels include all of `labels`.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            if n != name {
                return None;
            }
            labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// Polls `cond` every 20 ms for up to `limit`.
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// A config with one bind on `port`, one listener, and the given routes and backends
/// YAML fragments (already indented for their place).
pub fn simple_config(port: u16, routes: &str, backends: &str) -> String {
    format!(
        "binds:\n- name: main\n  address: 127.0.0.1\n  port: {port}\n  listeners:\n  - name: http\n    routes:\n{routes}\nbackends:\n{backends}\n"
    )
}

//! Real parts for the controller tests: the controller and proxy binaries as processes,
//! hyper upstreams, a minimal HTTP client, and waiting with a bound.
#![allow(clippy::unwrap_used, dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The workspace root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `target/debug` (or wherever this test binary was built).
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

/// The proxy binary, built (or found up to date) once per test process.
pub fn proxy_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .args([
                    "build",
                    "-q",
                    "-p",
                    "agentmesh-proxy",
                    "--bin",
                    "agentmesh-proxy",
                ])
                .current_dir(workspace())
                .status()
                .unwrap();
            assert!(status.success(), "cargo build -p agentmesh-proxy failed");
            bin_dir().join("agentmesh-proxy")
        })
        .clone()
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed when dropped, with its stderr in a file.
pub struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Starts `program args…`, stderr and stdout to `log`.
    pub fn start(program: &Path, args: &[String], log: PathBuf) -> Process {
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Process { child, log }
    }

    /// Everything the process wrote so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the process and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts `agentmesh-controller serve` on `port` for `folder`; waits until it listens.
pub async fn start_controller(folder: &Path, port: u16, log: PathBuf) -> Process {
    let args = vec![
        "serve".to_string(),
        "--folder".into(),
        folder.display().to_string(),
        "--xds-addr".into(),
        format!("127.0.0.1:{port}"),
    ];
    start_serving(&args, port, log, Duration::from_secs(10)).await
}

/// Starts `agentmesh-controller` with `args` (a `serve` whose xDS server is on `port`);
/// waits up to `bound` until it listens there.
pub async fn start_serving(args: &[String], port: u16, log: PathBuf, bound: Duration) -> Process {
    let p = Process::start(
        Path::new(env!("CARGO_BIN_EXE_agentmesh-controller")),
        args,
        log,
    );
    eventually("the controller listens", bound, || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
            .then_some(())
    })
    .await;
    p
}

/// Polls `check` every 50 ms until it returns `Some`, failing after `bound`.
pub async fn eventually<T, F, Fut>(what: &str, bound: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < bound,
            "timed out after {bound:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A hyper HTTP/1 upstream answering every request with `name`.
pub async fn upstream(name: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = service_fn(move |_req| async move {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(name))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// `GET path` on `127.0.0.1:port`: the status and body, or `None` when the connection
/// fails.
pub async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut raw))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// Writes `text` to `dir/name` atomically (a temporary file renamed over it), as
/// editors and `kubectl cp` do, so the watcher never reads half a file.
pub fn write_atomically(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

/// Drives the controller's delta ADS stream at `127.0.0.1:port` with `grpcurl` (a client
/// we did not write, installed by `scripts/install-xds-deps.sh`): sends `requests` (one
/// JSON `DeltaDiscoveryRequest` after another) with the extra `headers`
/// (`name: value`), and returns grpcurl's output once the stream ends (at most 10 s).
pub async fn grpcurl_ads(port: u16, headers: &[String], requests: String) -> std::process::Output {
    let grpcurl = workspace().join("target/venvs/grpc/bin/grpcurl");
    assert!(
        grpcurl.exists(),
        "{} is missing: run scripts/install-xds-deps.sh",
        grpcurl.display()
    );
    let proto_dir = workspace().join("proto/proto");
    let mut args: Vec<String> = vec!["-plaintext".into(), "-max-time".into(), "10".into()];
    for h in headers {
        args.extend(["-H".to_string(), h.clone()]);
    }
    args.push("-import-path".into());
    args.push(proto_dir.display().to_string());
    for a in [
        "-proto",
        "envoy/service/discovery/v3/ads.proto",
        "-proto",
        "agentmesh/xds/v1/resource.proto",
        "-d",
        "@",
    ] {
        args.push(a.into());
    }
    args.push(format!("127.0.0.1:{port}"));
    args.push(
        "envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources".into(),
    );
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = Command::new(grpcurl)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(requests.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

//! Sidecar mode for real: the `agentmesh-proxy --mode sidecar` binary runs as UID 1501 in
//! a network namespace whose nat OUTPUT chain REDIRECTs every other UID's TCP to 16001,
//! and unmodified clients (`curl`, Python sockets) in that namespace reach "remote" hosts
//! on 198.18.0.2 / fd00:18::2 (a veth interface, no route out).
//!
//! The rules are written here by hand (`agentmesh-init` will write them later). Needs
//! root, iproute2, iptables, setpriv, curl and /usr/bin/python3 (`scripts/install-test-deps.sh`);
//! when something is missing the test fails and says what.
#![allow(clippy::unwrap_used, missing_docs)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The upstream "hosts": an HTTP server echoing request headers on :8080 (IPv4 and IPv6),
/// a TCP echo on :9000 and a server-speaks-first service on :2525.
const UPSTREAMS_PY: &str = r#"
import socket, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Echo(BaseHTTPRequestHandler):
    def do_GET(self):
        body = "".join(f"{k.lower()}: {v}\n" for k, v in self.headers.items()).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.send_header("x-upstream", "ns-http")
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass

class Dual(ThreadingHTTPServer):
    address_family = socket.AF_INET6
    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

def serve(port, handle):
    s = socket.socket(socket.AF_INET6)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", port)); s.listen(16)
    def loop():
        while True:
            c, _ = s.accept()
            threading.Thread(target=handle, args=(c,), daemon=True).start()
    threading.Thread(target=loop, daemon=True).start()

def echo(c):
    while True:
        d = c.recv(65536)
        if not d:
            break
        c.sendall(d)
    c.shutdown(socket.SHUT_WR); c.close()

def smtp(c):
    c.sendall(b"220 smtp.test ready\r\n")
    if c.recv(64) == b"QUIT\r\n":
        c.sendall(b"221 bye\r\n")
    c.close()

serve(9000, echo)
serve(2525, smtp)
srv = Dual(("::", 8080), Echo)
print("ready", flush=True)
srv.serve_forever()
"#;

/// Client programs run as root (so they are captured).
const OPAQUE_CLIENT_PY: &str = r#"
import socket, sys
s = socket.create_connection(("198.18.0.2", 9000), timeout=5)
data = bytes(range(256)) * 400
s.sendall(data); s.shutdown(socket.SHUT_WR)
got = b""
while True:
    d = s.recv(65536)
    if not d: break
    got += d
print("echo-ok" if got == data else f"echo-mismatch {len(got)}")
"#;

const SERVER_FIRST_CLIENT_PY: &str = r#"
import socket
s = socket.create_connection(("198.18.0.2", 2525), timeout=5)
greeting = s.recv(64)
s.sendall(b"QUIT\r\n")
print(greeting.decode().strip(), "|", s.recv(64).decode().strip())
"#;

const LOOP_CLIENT_PY: &str = r#"
import socket
try:
    s = socket.create_connection(("198.18.0.2", 16001), timeout=5)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    print("got", repr(s.recv(64)))
except OSError as e:
    print("refused", e)
"#;

const CONFIG: &str = r#"
binds:
- name: egress
  address: 0.0.0.0
  port: 8080
  listeners:
  - name: api
    hostnames: [api.test, 198.18.0.2]
    routes:
    - name: direct
      matches: [{ path: { exact: /direct } }]
      policies:
        directResponse: { status: 200, body: answered by the sidecar }
    - name: all
      backends: [{ backend: api }]
      policies:
        requestHeaders: { set: [{ name: x-sidecar, value: applied }] }
backends:
- { name: api, host: { address: "198.18.0.2:8080" } }
sidecar:
  outboundBinds: [egress]
  outboundDefault: DENY
  egress:
  - { name: tcp-services, addresses: [198.18.0.2/32], ports: [9000, 2525], action: ALLOW }
"#;

/// A long-lived client of the TCP echo service (run as root: captured). It opens one
/// connection, echoes `before`, prints `open before`, then follows one command from
/// stdin: `continue` echoes `after` on the same connection, prints `after after` and
/// closes; `wait` waits for the other side to close the connection and prints `closed`.
const TUNNEL_CLIENT_PY: &str = r#"
import socket, sys
s = socket.create_connection(("198.18.0.2", 9000), timeout=60)
def echo(msg):
    s.sendall(msg)
    got = b""
    while len(got) < len(msg):
        d = s.recv(65536)
        if not d:
            break
        got += d
    return got.decode()
print("open", echo(b"before"), flush=True)
cmd = sys.stdin.readline().strip()
if cmd == "continue":
    print("after", echo(b"after"), flush=True)
    s.close()
elif cmd == "wait":
    try:
        d = s.recv(64)
        print("closed" if d == b"" else f"got {d!r}", flush=True)
    except ConnectionResetError:
        print("closed", flush=True)
    except socket.timeout:
        print("still open", flush=True)
"#;

/// A network namespace with capture rules, the upstreams and the sidecar; removed on drop.
struct Pod {
    ns: String,
    dir: tempfile::TempDir,
    children: Vec<Child>,
    sidecar: Option<Child>,
}

impl Pod {
    fn start() -> Pod {
        Self::start_with("main", &[])
    }

    /// A pod whose namespace name ends in `tag` (tests run in parallel), with `args`
    /// added to the sidecar's command line.
    fn start_with(tag: &str, args: &[&str]) -> Pod {
        require_tools();
        let ns = format!("am-sidecar-{}-{tag}", std::process::id());
        // A namespace left over from a killed run of this process id.
        let _ = Command::new("ip")
            .args(["netns", "del", &ns])
            .stderr(Stdio::null())
            .status();
        run("ip", &["netns", "add", &ns]);
        let dir = tempfile::tempdir().unwrap();
        let mut pod = Pod {
            ns,
            dir,
            children: Vec::new(),
            sidecar: None,
        };
        for cmd in [
            "ip link set lo up",
            // No dummy driver here: a veth pair whose other end stays unused.
            "ip link add up0 type veth peer name up1",
            "ip link set up0 up",
            "ip link set up1 up",
            "ip addr add 198.18.0.2/24 dev up0",
            "ip addr add fd00:18::2/64 dev up0 nodad",
            // Loopback to 127.0.0.1 / ::1 stays direct (admin, metrics, readiness).
            "iptables -t nat -A OUTPUT -p tcp -d 127.0.0.1/32 -j RETURN",
            "iptables -t nat -A OUTPUT -p tcp -m owner ! --uid-owner 1501 -j REDIRECT --to-ports 16001",
            "ip6tables -t nat -A OUTPUT -p tcp -d ::1/128 -j RETURN",
            "ip6tables -t nat -A OUTPUT -p tcp -m owner ! --uid-owner 1501 -j REDIRECT --to-ports 16001",
        ] {
            pod.exec_ok(&cmd.split(' ').collect::<Vec<_>>());
        }
        pod.start_upstreams();
        pod.start_sidecar(args);
        pod
    }

    fn start_upstreams(&mut self) {
        let script = self.write("upstreams.py", UPSTREAMS_PY);
        let mut child = self
            .command(&["/usr/bin/python3", &script])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        self.children.push(child);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
        assert_eq!(line.trim(), "ready", "upstream servers did not start");
    }

    fn start_sidecar(&mut self, args: &[&str]) {
        let config = self.write("config.yaml", CONFIG);
        let log = std::fs::File::create(self.dir.path().join("proxy.log")).unwrap();
        let bin = env!("CARGO_BIN_EXE_agentmesh-proxy");
        let child = self
            .command(&[
                "setpriv",
                "--reuid=1501",
                "--regid=1501",
                "--clear-groups",
                bin,
                "--mode",
                "sidecar",
                "--config",
                &config,
                "--log-level",
                "info,agentmesh_proxy=debug",
            ])
            .args(args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        // `ip netns exec` and `setpriv` exec the proxy: this is its process.
        self.sidecar = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let out = self.exec(&[
                "curl",
                "-s",
                "--max-time",
                "1",
                "http://127.0.0.1:16021/healthz/ready",
            ]);
            if out.status.success() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("sidecar not ready after 20s; log:\n{}", self.logs());
    }

    /// Writes a file the proxy user can read; returns its path.
    fn write(&self, name: &str, text: &str) -> String {
        std::fs::set_permissions(self.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        path.display().to_string()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns])
            .args(args)
            .stdin(Stdio::null());
        c
    }

    /// Runs a command in the namespace (as root: captured), bounded by its own timeouts.
    fn exec(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn exec_ok(&self, args: &[&str]) -> String {
        let out = self.exec(args);
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn curl(&self, args: &[&str]) -> String {
        let mut all = vec!["curl", "-s", "-i", "--max-time", "5"];
        all.extend_from_slice(args);
        String::from_utf8_lossy(&self.exec(&all).stdout).into_owned()
    }

    fn python(&self, name: &str, script: &str) -> String {
        let path = self.write(name, script);
        self.exec_ok(&["timeout", "10", "/usr/bin/python3", &path])
            .trim()
            .to_owned()
    }

    fn metrics(&self) -> String {
        self.exec_ok(&[
            "curl",
            "-s",
            "--max-time",
            "5",
            "http://127.0.0.1:16020/metrics",
        ])
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("proxy.log")).unwrap_or_default()
    }

    fn sigterm_sidecar(&self) {
        let pid = self.sidecar.as_ref().unwrap().id().to_string();
        run("kill", &["-TERM", &pid]);
    }

    /// The sidecar's exit status once it has exited, waiting at most `limit`.
    fn sidecar_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        let child = self.sidecar.as_mut().unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the long-lived echo client ([`TUNNEL_CLIENT_PY`]) and waits for its
    /// `open before` line; returns it with its stdin and a reader of its stdout.
    fn tunnel_client(&mut self) -> (std::process::ChildStdin, std::sync::mpsc::Receiver<String>) {
        let path = self.write("tunnel.py", TUNNEL_CLIENT_PY);
        let mut child = self
            .command(&["timeout", "120", "/usr/bin/python3", &path])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        self.children.push(child);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let first = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
        assert_eq!(first, "open before", "log:\n{}", self.logs());
        (stdin, rx)
    }

    /// Waits (at most 20 s) until a captured connection is refused: the sidecar has
    /// stopped accepting. curl's exit code 7 is "failed to connect".
    fn wait_until_refusing(&self) {
        let refused = || {
            self.exec(&["curl", "-s", "--max-time", "2", "http://198.18.0.2:8080/"])
                .status
                .code()
                == Some(7)
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !refused() {
            assert!(
                Instant::now() < deadline,
                "the sidecar still accepts after SIGTERM; log:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        if let Some(c) = &mut self.sidecar {
            let _ = c.kill();
            let _ = c.wait();
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Fails (never skips) when the machine cannot run this test, saying what is missing.
fn require_tools() {
    let uid = Command::new("id").arg("-u").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "the sidecar namespace test needs root (network namespaces, iptables)"
    );
    for tool in [
        "ip",
        "iptables",
        "ip6tables",
        "setpriv",
        "curl",
        "timeout",
        "/usr/bin/python3",
    ] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "`{tool}` is missing: run scripts/install-test-deps.sh (iptables, iproute2, curl, python3)"
        );
    }
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn unmodified_clients_in_the_pod_are_governed_by_the_sidecar() {
    let pod = Pod::start();

    // HTTP to an outbound bind: the route's header policy reaches the upstream.
    let resp = pod.curl(&["http://198.18.0.2:8080/hello"]);
    assert!(
        resp.lines().next().is_some_and(|l| l.contains(" 200 ")),
        "{resp}\nlog:\n{}",
        pod.logs()
    );
    assert!(resp.contains("x-sidecar: applied"), "{resp}");
    assert!(resp.contains("x-upstream: ns-http"), "{resp}");

    // A route answered by the sidecar itself.
    let resp = pod.curl(&["-H", "Host: api.test", "http://198.18.0.2:8080/direct"]);
    assert!(resp.ends_with("answered by the sidecar"), "{resp}");

    // An unlisted host under the `deny` default: 403 naming the destination.
    let resp = pod.curl(&["-H", "Host: unlisted.test", "http://198.18.0.2:8080/"]);
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    assert!(
        resp.contains("unlisted.test (198.18.0.2:8080) is denied"),
        "{resp}"
    );

    // IPv6: the original destination comes from ip6tables, the route applies.
    let resp = pod.curl(&["-g", "-H", "Host: api.test", "http://[fd00:18::2]:8080/v6"]);
    assert!(
        resp.contains("x-sidecar: applied"),
        "{resp}\nlog:\n{}",
        pod.logs()
    );

    // Opaque TCP and a server-speaks-first service, allowed by an egress rule.
    assert_eq!(pod.python("opaque.py", OPAQUE_CLIENT_PY), "echo-ok");
    assert_eq!(
        pod.python("smtp.py", SERVER_FIRST_CLIENT_PY),
        "220 smtp.test ready | 221 bye"
    );

    // A connection to the capture port itself is refused, not looped.
    let out = pod.python("loop.py", LOOP_CLIENT_PY);
    assert!(!out.contains("HTTP/1.1"), "{out}");

    // The proxy's own traffic (UID 1501) was not captured: the upstream calls above
    // would otherwise have looped and been refused.
    let m = pod.metrics();
    assert_eq!(
        metric(&m, "agentmesh_outbound_loop_refused_total"),
        1.0,
        "{m}"
    );
    assert!(
        metric(
            &m,
            "agentmesh_outbound_connections_total{protocol=\"http1\"}"
        ) >= 4.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "agentmesh_outbound_connections_total{protocol=\"opaque\"}"
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "agentmesh_outbound_connections_total{protocol=\"server_first\"}"
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "agentmesh_outbound_denied_total{protocol=\"http1\"}"),
        1.0,
        "{m}"
    );
    assert!(pod.logs().contains("outbound HTTP request denied"));
}

#[test]
fn on_sigterm_an_open_tcp_tunnel_runs_until_it_closes_then_the_sidecar_exits() {
    // A deadline far beyond the test's waits: an exit within them is the drain noticing
    // that the last tunnel closed, not the deadline.
    let mut pod = Pod::start_with("drain", &["--drain-timeout", "10m"]);
    let (mut stdin, lines) = pod.tunnel_client();
    pod.sigterm_sidecar();
    pod.wait_until_refusing();
    assert!(
        pod.sidecar_exit(Duration::ZERO).is_none(),
        "the sidecar exited with a tunnel open; log:\n{}",
        pod.logs()
    );
    // The tunnel still carries bytes both ways after SIGTERM.
    use std::io::Write;
    stdin.write_all(b"continue\n").unwrap();
    let line = lines
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or_default();
    assert_eq!(line, "after after", "log:\n{}", pod.logs());
    // The client closed its tunnel: nothing is left, the sidecar exits cleanly.
    let status = pod.sidecar_exit(Duration::from_secs(60));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}; log:\n{}",
        pod.logs()
    );
    assert!(pod.logs().contains("drained"), "{}", pod.logs());
}

#[test]
fn at_the_drain_deadline_open_tcp_tunnels_are_closed() {
    let mut pod = Pod::start_with("deadline", &["--drain-timeout", "1s"]);
    let (mut stdin, lines) = pod.tunnel_client();
    use std::io::Write;
    stdin.write_all(b"wait\n").unwrap();
    pod.sigterm_sidecar();
    // The echo server never closes on its own: only the sidecar can end the tunnel.
    let line = lines
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_default();
    assert_eq!(line, "closed", "log:\n{}", pod.logs());
    let status = pod.sidecar_exit(Duration::from_secs(60));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}; log:\n{}",
        pod.logs()
    );
    assert!(
        pod.logs().contains("drain deadline passed"),
        "{}",
        pod.logs()
    );
}

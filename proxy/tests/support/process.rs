//! A peer server run as a child process for a test: output to a log file, killed when
//! dropped, and not handed to the test until it accepts connections.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A server process listening on 127.0.0.1:`port`.
pub struct ServerProcess {
    pub name: String,
    pub addr: SocketAddr,
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl ServerProcess {
    /// Runs `cmd` (which should bound its own life, e.g. under `timeout`) with its output
    /// in a log file, and waits up to 30 s until something accepts connections on `port`.
    /// Panics with the log when it exits first or never listens.
    pub fn start(name: &str, port: u16, mut cmd: Command) -> ServerProcess {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("server.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let mut server = ServerProcess {
            name: name.into(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect_timeout(&server.addr, Duration::from_millis(200)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("{name} exited with {status}:\n{}", server.logs());
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not listen within 30s:\n{}",
                server.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// The server's MCP endpoint.
    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    /// What the server printed.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the server and waits until it is gone.
    pub fn stop(mut self) {
        self.kill();
    }

    /// SIGTERM to the child (`timeout` passes it on to the server it runs; a SIGKILL
    /// would orphan that server); SIGKILL only if that does not end it within 5 s.
    fn kill(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

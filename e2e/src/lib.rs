//! End-to-end harness: "pods" as Linux network namespaces on one virtual switch.
//!
//! A [`Cluster`] is a switch namespace with a bridge; each [`Pod`] is a namespace with a
//! veth into that bridge, an IPv4 address in 198.18.0.0/15 and an IPv6 address in the
//! benchmarking range 2001:2::/48, and no route out. Pod names resolve in every pod
//! through `/etc/netns/<ns>/hosts`, which `ip netns exec` mounts over `/etc/hosts`.
//! Processes run inside a pod as any UID (`setpriv`), so iptables owner matches see
//! exactly what they would in Kubernetes. [`kubelet`] runs a Pod manifest in a pod the
//! way Kubernetes does (init containers, native and classic sidecars, probes, lifecycle
//! hooks, volumes); [`injected`] sets up the injected-pod scenarios it runs.
//!
//! Everything is removed on drop. The harness needs root and iproute2; it fails with a
//! message saying what is missing rather than skipping.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub mod injected;
pub mod kubelet;
pub mod promtool;
pub mod sidecar;

/// A harness failure, with the command and what it printed.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A command could not be run at all.
    #[error("cannot run {cmd}: {source} ({hint})")]
    Spawn {
        /// The command line.
        cmd: String,
        /// The OS error.
        source: std::io::Error,
        /// What to do about it.
        hint: &'static str,
    },
    /// A command ran and failed.
    #[error("{cmd} failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        cmd: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// The harness needs root.
    #[error(
        "the end-to-end harness needs root (network namespaces, iptables); run the tests as root"
    )]
    NotRoot,
    /// Something a scenario needs is not installed.
    #[error("{what} is missing: {hint}")]
    Missing {
        /// What was looked for.
        what: String,
        /// What to do about it.
        hint: &'static str,
    },
    /// A process did not become ready in time.
    #[error("{what} was not ready after {secs} s; its log:\n{log}")]
    NotReady {
        /// The process.
        what: String,
        /// How long the harness waited.
        secs: u64,
        /// What it logged.
        log: String,
    },
}

/// Result of harness operations.
pub type Result<T> = std::result::Result<T, HarnessError>;

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().to_string();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs a command to completion; an error names the command and its stderr.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let line = describe(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| HarnessError::Spawn {
            cmd: line.clone(),
            source,
            hint: "is it installed? run scripts/install-test-deps.sh",
        })?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(HarnessError::Failed {
            cmd: line,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

fn ip(args: &[&str]) -> Result<Output> {
    run(Command::new("ip").args(args))
}

/// Fails unless running as root.
pub fn require_root() -> Result<()> {
    let out = run(Command::new("id").arg("-u"))?;
    if String::from_utf8_lossy(&out.stdout).trim() == "0" {
        Ok(())
    } else {
        Err(HarnessError::NotRoot)
    }
}

/// A network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace with loopback up.
    pub fn create(name: &str) -> Result<Netns> {
        ip(&["netns", "add", name])?;
        let ns = Netns {
            name: name.to_string(),
        };
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs `argv` inside the namespace as root.
    pub fn command(&self, argv: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(argv);
        c
    }

    /// A command that runs `argv` inside the namespace as `uid`/`gid` (no supplementary
    /// groups), the way a container runs as a non-root user.
    pub fn command_as(&self, uid: u32, gid: u32, argv: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, "setpriv"])
            .arg(format!("--reuid={uid}"))
            .arg(format!("--regid={gid}"))
            .arg("--clear-groups")
            .args(argv);
        c
    }

    /// Runs `argv` in the namespace to completion.
    pub fn exec(&self, argv: &[&str]) -> Result<Output> {
        run(&mut self.command(argv))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(&self.name));
    }
}

/// A pod: a namespace on the cluster switch with one IPv4 and one IPv6 address.
#[derive(Debug)]
pub struct Pod {
    /// Short name, resolvable from every pod of the cluster.
    pub name: String,
    /// The namespace.
    pub ns: Netns,
    /// IPv4 address.
    pub ipv4: Ipv4Addr,
    /// IPv6 address.
    pub ipv6: Ipv6Addr,
}

impl Pod {
    /// Both addresses.
    pub fn addrs(&self) -> [IpAddr; 2] {
        [IpAddr::V4(self.ipv4), IpAddr::V6(self.ipv6)]
    }
}

/// A set of pods on one bridge, with a shared hosts file.
pub struct Cluster {
    id: String,
    switch: Netns,
    pods: Vec<Pod>,
    hosts: Mutex<Vec<(String, IpAddr)>>,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("id", &self.id)
            .field("pods", &self.pods)
            .finish()
    }
}

impl Cluster {
    /// Creates the switch namespace with its bridge. `tag` keeps names short and
    /// recognisable (`am<tag><random>`), so parallel tests never collide.
    pub fn new(tag: &str) -> Result<Cluster> {
        require_root()?;
        let id = format!(
            "am{}{:04x}",
            &tag[..tag.len().min(4)],
            rand::random::<u16>()
        );
        let switch = Netns::create(&format!("{id}-sw"))?;
        switch.exec(&["ip", "link", "add", "br0", "type", "bridge"])?;
        switch.exec(&["ip", "link", "set", "br0", "up"])?;
        // The node's own address on the bridge (pods count from .2): what a kubelet's
        // probes come from.
        let node_ip = Ipv4Addr::new(198, 18, subnet_of(&id), 1);
        switch.exec(&["ip", "addr", "add", &format!("{node_ip}/24"), "dev", "br0"])?;
        Ok(Cluster {
            id,
            switch,
            pods: Vec::new(),
            hosts: Mutex::new(Vec::new()),
        })
    }

    /// Adds a pod named `name`; its addresses are 198.18.<n>.<k> and 2001:2::<n>:<k>,
    /// where n is derived from the cluster id and k counts pods.
    pub fn add_pod(&mut self, name: &str) -> Result<&Pod> {
        let index = self.pods.len() as u8 + 2;
        let subnet = subnet_of(&self.id);
        let ns = Netns::create(&format!("{}-{}", self.id, index))?;
        let host_end = format!("{}h{index}", self.id);
        let pod_end = format!("{}p{index}", self.id);
        ip(&[
            "link", "add", &host_end, "type", "veth", "peer", "name", &pod_end,
        ])?;
        ip(&["link", "set", &host_end, "netns", self.switch.name()])?;
        ip(&["link", "set", &pod_end, "netns", ns.name()])?;
        self.switch
            .exec(&["ip", "link", "set", &host_end, "master", "br0"])?;
        self.switch.exec(&["ip", "link", "set", &host_end, "up"])?;
        let ipv4 = Ipv4Addr::new(198, 18, subnet, index);
        let ipv6: Ipv6Addr = format!("2001:2::{subnet:x}:{index:x}")
            .parse()
            .unwrap_or(Ipv6Addr::LOCALHOST);
        ns.exec(&["ip", "link", "set", &pod_end, "name", "eth0"])?;
        ns.exec(&["ip", "addr", "add", &format!("{ipv4}/24"), "dev", "eth0"])?;
        ns.exec(&[
            "ip",
            "-6",
            "addr",
            "add",
            &format!("{ipv6}/64"),
            "dev",
            "eth0",
            "nodad",
        ])?;
        ns.exec(&["ip", "link", "set", "eth0", "up"])?;
        self.hosts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((name.to_string(), IpAddr::V4(ipv4)));
        self.pods.push(Pod {
            name: name.to_string(),
            ns,
            ipv4,
            ipv6,
        });
        self.write_hosts()?;
        Ok(self
            .pods
            .last()
            .unwrap_or_else(|| unreachable!("just pushed")))
    }

    /// The node's address on the bridge: where a kubelet's probes come from, and what
    /// `status.hostIP` says.
    pub fn node_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, subnet_of(&self.id), 1)
    }

    /// A command that runs `argv` as root on the node: in the switch namespace, which
    /// reaches every pod's address, as a kubelet's probes do.
    pub fn node_command(&self, argv: &[&str]) -> Command {
        self.switch.command(argv)
    }

    /// Finds a pod by name.
    pub fn pod(&self, name: &str) -> &Pod {
        self.pods
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no pod {name}"))
    }

    /// Writes `/etc/netns/<ns>/hosts` for every pod: every pod name, plus extra names
    /// added with [`Cluster::add_host`].
    fn write_hosts(&self) -> Result<()> {
        let hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        let mut text = String::from("127.0.0.1 localhost\n::1 localhost ip6-localhost\n");
        for (name, addr) in hosts.iter() {
            text.push_str(&format!("{addr} {name}\n"));
        }
        for pod in &self.pods {
            let dir = PathBuf::from("/etc/netns").join(pod.ns.name());
            std::fs::create_dir_all(&dir).map_err(|source| HarnessError::Spawn {
                cmd: format!("mkdir {}", dir.display()),
                source,
                hint: "needs root",
            })?;
            std::fs::write(dir.join("hosts"), &text).map_err(|source| HarnessError::Spawn {
                cmd: format!("write {}/hosts", dir.display()),
                source,
                hint: "needs root",
            })?;
        }
        Ok(())
    }

    /// Makes `name` resolve to `addr` in every pod (an external host name, say).
    pub fn add_host(&self, name: &str, addr: IpAddr) -> Result<()> {
        self.hosts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((name.to_string(), addr));
        self.write_hosts()
    }
}

/// The third octet of a cluster's IPv4 addresses, from its id.
fn subnet_of(id: &str) -> u8 {
    u8::from_str_radix(&id[id.len() - 2..], 16).unwrap_or(1)
}

/// A background process, killed (with its process group) on drop.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    name: String,
    log: PathBuf,
}

impl Daemon {
    /// Starts `cmd` with its output going to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Daemon> {
        let file = std::fs::File::create(log).map_err(|source| HarnessError::Spawn {
            cmd: format!("create {}", log.display()),
            source,
            hint: "temp dir not writable",
        })?;
        let err = file.try_clone().map_err(|source| HarnessError::Spawn {
            cmd: "dup log".into(),
            source,
            hint: "",
        })?;
        let line = describe(&cmd);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .map_err(|source| HarnessError::Spawn {
                cmd: line,
                source,
                hint: "is it installed?",
            })?;
        Ok(Daemon {
            child,
            name: name.to_string(),
            log: log.to_path_buf(),
        })
    }

    /// What the process logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether it is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits (at most `limit`) for the process to exit; `None` while it still runs.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        wait_for(limit, || self.child.try_wait().ok().flatten())
    }

    /// Stops the process as a container runtime does: SIGTERM, then SIGKILL when it has
    /// not exited after `grace`. Returns its exit status.
    pub fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if let Some(status) = self.wait_exit(grace) {
            return Some(status);
        }
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` every 20 ms until it returns `Some`, for at most `limit`.
pub fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Path of a workspace binary built by cargo (`target/debug/<name>`), built (or found
/// up to date) once per test process, so a test never runs a stale binary.
pub fn binary(name: &str) -> Result<PathBuf> {
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let path = target.join("debug").join(name);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !built.iter().any(|b| b == name) {
        run(Command::new(env!("CARGO"))
            .current_dir(&root)
            .args(["build", "-q", "--bin", name]))?;
        built.push(name.to_string());
    }
    Ok(path)
}

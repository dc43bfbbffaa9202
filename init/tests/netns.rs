//! Real iptables tests: each test builds its own network namespace ("a pod" with a veth
//! address in 198.18.0.0/15 and 2001:db8::/64, no route out), runs the `agentmesh-init`
//! binary inside it with `ip netns exec`, and checks what `iptables-save` shows and what
//! real connections do. Needs root and the iptables package; without them every test
//! fails and says what is missing. Every command runs under `timeout`.

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

const BIN: &str = env!("CARGO_BIN_EXE_agentmesh-init");
/// The longest any one command may run (`timeout` kills it after this).
const COMMAND_TIMEOUT_SECS: &str = "30";
/// Validation timeout: short, since a failing validation waits for all of it.
const VALIDATE_TIMEOUT: &str = "2";

const POD_V4: &str = "198.18.0.2";
const POD_V6: &str = "2001:db8::2";

/// Fails the test with what is missing when it cannot run for real.
fn require_privileges_and_tools() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().nth(1))
        .unwrap_or("?");
    let mut missing = Vec::new();
    if uid != "0" {
        missing.push(format!("root (running as uid {uid}; ip netns needs root)"));
    }
    for tool in [
        "ip",
        "timeout",
        "setpriv",
        "iptables-nft",
        "iptables-nft-save",
        "iptables-nft-restore",
        "ip6tables-nft",
        "ip6tables-nft-save",
        "ip6tables-nft-restore",
        "iptables-legacy",
        "iptables-legacy-save",
        "iptables-legacy-restore",
        "ip6tables-legacy",
        "ip6tables-legacy-save",
        "ip6tables-legacy-restore",
    ] {
        let found = std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()));
        if !found {
            missing.push(format!("`{tool}` on PATH"));
        }
    }
    assert!(
        missing.is_empty(),
        "cannot run the iptables tests, missing: {} (run scripts/install-test-deps.sh as root)",
        missing.join(", ")
    );
}

/// The iptables backends, as the tests name them.
#[derive(Clone, Copy, Debug)]
enum Mode {
    Nft,
    Legacy,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Nft => "nft",
            Mode::Legacy => "legacy",
        }
    }
}

/// A network namespace for one test, deleted when dropped.
struct Pod {
    name: String,
}

impl Pod {
    /// A namespace with `lo` up and a veth pair whose peer is also inside, so addresses
    /// in 198.18.0.0/15 and 2001:db8::/64 are routable but nothing answers there.
    fn new() -> Pod {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "am-init-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        host(&["ip", "netns", "add", &name]);
        let pod = Pod { name };
        for args in [
            vec!["link", "set", "lo", "up"],
            vec!["link", "add", "v0", "type", "veth", "peer", "name", "v1"],
            vec!["link", "set", "v0", "up"],
            vec!["link", "set", "v1", "up"],
            vec!["addr", "add", "198.18.0.2/15", "dev", "v0"],
            vec!["addr", "add", "2001:db8::2/64", "dev", "v0", "nodad"],
        ] {
            let mut full = vec!["ip", "-n", pod.name.as_str()];
            full.extend(args);
            host(&full);
        }
        pod
    }

    /// Rules another component owns, which must survive everything we do.
    fn add_foreign_rules(&self, mode: Mode) {
        for (tool, dst) in [("iptables", "198.18.9.9"), ("ip6tables", "2001:db8::99")] {
            let bin = format!("{tool}-{}", mode.name());
            for rule in [
                vec!["-t", "nat", "-N", "FOREIGN"],
                vec!["-t", "nat", "-A", "FOREIGN", "-j", "RETURN"],
                vec!["-t", "nat", "-A", "OUTPUT", "-d", dst, "-j", "FOREIGN"],
                vec!["-t", "nat", "-A", "PREROUTING", "-p", "udp", "-j", "RETURN"],
                vec!["-t", "filter", "-A", "INPUT", "-p", "udp", "-j", "ACCEPT"],
            ] {
                let mut args = vec![bin.as_str(), "-w", "10"];
                args.extend(rule);
                self.run_ok(&args);
            }
        }
    }

    fn exec(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new("timeout");
        cmd.args([COMMAND_TIMEOUT_SECS, "ip", "netns", "exec", &self.name])
            .args(args);
        // Settings must come from this test only, not from the runner's environment.
        for (key, _) in std::env::vars() {
            if key.starts_with("AGENTMESH_") {
                cmd.env_remove(key);
            }
        }
        cmd.envs(env.iter().copied());
        cmd.output().expect("run timeout/ip netns exec")
    }

    fn run_ok(&self, args: &[&str]) -> String {
        let out = self.exec(args, &[]);
        assert!(out.status.success(), "{args:?} failed: {}", describe(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `agentmesh-init ARGS` in the namespace.
    fn init(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut full = vec![BIN];
        full.extend(args);
        self.exec(&full, env)
    }

    /// Runs `agentmesh-init ARGS`, expecting success; returns stdout.
    fn init_ok(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        let out = self.init(args, env);
        assert!(
            out.status.success(),
            "agentmesh-init {args:?}: {}",
            describe(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `agentmesh-init ARGS` as a non-root UID holding only `caps` (ambient).
    fn init_without_root(&self, caps: &str, args: &[&str]) -> Output {
        let caps_arg = format!("--inh-caps={caps}");
        let ambient = format!("--ambient-caps={caps}");
        let mut full = vec![
            "setpriv",
            "--reuid=1600",
            "--regid=1600",
            "--clear-groups",
            caps_arg.as_str(),
            ambient.as_str(),
            BIN,
        ];
        full.extend(args);
        self.exec(&full, &[])
    }

    /// Runs `agentmesh-init validate ARGS` as `uid`/`gid` (through setpriv).
    fn validate_as(&self, uid: u32, gid: u32, args: &[&str]) -> Output {
        let (reuid, regid) = (format!("--reuid={uid}"), format!("--regid={gid}"));
        let mut full = vec![
            "setpriv",
            reuid.as_str(),
            regid.as_str(),
            "--clear-groups",
            BIN,
            "validate",
            "--validation-timeout",
            VALIDATE_TIMEOUT,
        ];
        full.extend(args);
        self.exec(&full, &[])
    }

    /// Both families' tables of one backend, as `iptables-save` prints them without
    /// comments and with counters zeroed.
    fn snapshot(&self, mode: Mode) -> BTreeMap<&'static str, String> {
        let mut tables = BTreeMap::new();
        for tool in ["iptables", "ip6tables"] {
            let save = self.run_ok(&[&format!("{tool}-{}-save", mode.name())]);
            let text: String = save
                .lines()
                .filter(|l| !l.starts_with('#'))
                .map(|l| format!("{}\n", zero_counters(l)))
                .collect();
            tables.insert(tool, text);
        }
        tables
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        // Best effort: a failed delete must not hide the test's own failure.
        let _ = Command::new("timeout")
            .args([COMMAND_TIMEOUT_SECS, "ip", "netns", "del", &self.name])
            .output();
    }
}

fn host(args: &[&str]) {
    let out = Command::new("timeout")
        .arg(COMMAND_TIMEOUT_SECS)
        .args(args)
        .output()
        .expect("run timeout");
    assert!(out.status.success(), "{args:?} failed: {}", describe(&out));
}

fn describe(out: &Output) -> String {
    format!(
        "{}\nstdout:\n{}stderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `:OUTPUT ACCEPT [12:720]` -> `:OUTPUT ACCEPT [0:0]`.
fn zero_counters(line: &str) -> String {
    match (line.starts_with(':'), line.rfind(" [")) {
        (true, Some(i)) => format!("{} [0:0]", &line[..i]),
        _ => line.to_string(),
    }
}

fn count(text: &str, needle: &str) -> usize {
    text.lines().filter(|l| l.contains(needle)).count()
}

const OUTPUT_JUMP: &str = "-A OUTPUT -p tcp -m comment --comment \"agentmesh: outbound TCP goes through agentmesh capture\" -j AGENTMESH_OUTPUT";
const PREROUTING_JUMP: &str = "-A PREROUTING -p tcp -m comment --comment \"agentmesh: inbound TCP goes through agentmesh capture\" -j AGENTMESH_INBOUND";

/// The whole life of the rules on one backend, with real connections at each step.
fn lifecycle(mode: Mode) {
    require_privileges_and_tools();
    let pod = Pod::new();
    pod.add_foreign_rules(mode);
    let before = pod.snapshot(mode);
    let mode_flag = ["--iptables-mode", mode.name()];

    // Without rules, nothing is redirected and validate says so.
    let out = pod.validate_as(0, 0, &[]);
    assert_eq!(out.status.code(), Some(5), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("was not redirected"), "{stderr}");

    // First apply installs our chains, every rule commented, foreign rules untouched.
    let stdout = pod.init_ok(&mode_flag, &[]);
    for family in ["IPv4", "IPv6"] {
        assert!(
            stdout.contains(&format!("{family} ({}): applied", mode.name())),
            "{stdout}"
        );
    }
    let installed = pod.snapshot(mode);
    for (tool, text) in &installed {
        assert!(
            text.contains(":AGENTMESH_OUTPUT - [0:0]"),
            "{tool}:\n{text}"
        );
        assert!(
            text.contains(":AGENTMESH_REDIRECT - [0:0]"),
            "{tool}:\n{text}"
        );
        assert!(
            text.contains("-j REDIRECT --to-ports 16001"),
            "{tool}:\n{text}"
        );
        for line in text.lines().filter(|l| l.contains("AGENTMESH_")) {
            if line.starts_with("-A ") {
                assert!(line.contains("--comment \"agentmesh: "), "{tool}: {line}");
            }
        }
        assert_eq!(count(text, OUTPUT_JUMP), 1, "{tool}:\n{text}");
        for line in before[tool].lines().filter(|l| l.starts_with("-A ")) {
            assert!(text.contains(line), "{tool}: foreign rule lost: {line}");
        }
    }

    // Real connections: the app (root here) is redirected on both families; the proxy's
    // UID, and any process with the proxy's GID, are not.
    let out = pod.validate_as(0, 0, &[]);
    assert!(
        out.status.success(),
        "root must be captured: {}",
        describe(&out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("IPv4: redirect works"), "{stdout}");
    assert!(stdout.contains("IPv6: redirect works"), "{stdout}");
    for (uid, gid) in [(1501, 1501), (1502, 1501)] {
        let out = pod.validate_as(uid, gid, &[]);
        assert_eq!(
            out.status.code(),
            Some(5),
            "uid {uid} gid {gid} must not be captured: {}",
            describe(&out)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(count(&stderr, "was not redirected"), 2, "{stderr}");
    }

    // Second apply: reported unchanged, and nothing changed.
    let stdout = pod.init_ok(&mode_flag, &[]);
    assert_eq!(count(&stdout, "unchanged"), 2, "{stdout}");
    assert_eq!(
        pod.snapshot(mode),
        installed,
        "second apply changed the tables"
    );

    // New settings (from the environment this time) replace ours: port 80 excluded, so
    // validation now fails; inbound capture on, so a call to the pod's own address goes
    // to the inbound port.
    let env = [
        ("AGENTMESH_EXCLUDE_OUTBOUND_PORTS", "80"),
        ("AGENTMESH_INBOUND_CAPTURE", "true"),
        ("AGENTMESH_IPTABLES_MODE", mode.name()),
    ];
    let stdout = pod.init_ok(&[], &env);
    assert_eq!(count(&stdout, "applied"), 2, "{stdout}");
    let replaced = pod.snapshot(mode);
    for (tool, text) in &replaced {
        assert!(text.contains("--dport 80 -m comment"), "{tool}:\n{text}");
        assert_eq!(count(text, OUTPUT_JUMP), 1, "{tool}:\n{text}");
        assert_eq!(count(text, PREROUTING_JUMP), 1, "{tool}:\n{text}");
        assert!(
            text.contains(":AGENTMESH_INBOUND - [0:0]"),
            "{tool}:\n{text}"
        );
    }
    let stdout = pod.init_ok(&[], &env);
    assert_eq!(count(&stdout, "unchanged"), 2, "{stdout}");
    let out = pod.validate_as(0, 0, &[]);
    assert_eq!(
        out.status.code(),
        Some(5),
        "port 80 is excluded: {}",
        describe(&out)
    );
    let self_call = format!("{POD_V4}:8080,[{POD_V6}]:8080");
    let out = pod.validate_as(
        0,
        0,
        &[
            "--validation-port",
            "16006",
            "--validation-targets",
            &self_call,
        ],
    );
    assert!(
        out.status.success(),
        "a self-call must reach the inbound port: {}",
        describe(&out)
    );

    // Back to the defaults: the inbound jump and chains go, the outbound jump stays single.
    pod.init_ok(&mode_flag, &[]);
    let back = pod.snapshot(mode);
    assert_eq!(
        back, installed,
        "returning to the defaults must give the first rules"
    );
    for text in back.values() {
        assert_eq!(count(text, PREROUTING_JUMP), 0, "{text}");
        assert!(!text.contains("AGENTMESH_INBOUND"), "{text}");
    }
    let out = pod.validate_as(
        0,
        0,
        &[
            "--validation-port",
            "16006",
            "--validation-targets",
            &self_call,
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(5),
        "inbound is off again: {}",
        describe(&out)
    );

    // Cleanup restores the tables exactly; a second cleanup finds nothing.
    let stdout = pod.init_ok(&["cleanup", "--iptables-mode", mode.name()], &[]);
    assert_eq!(count(&stdout, ": removed"), 2, "{stdout}");
    assert_eq!(
        pod.snapshot(mode),
        before,
        "cleanup must restore the tables"
    );
    let stdout = pod.init_ok(&["cleanup"], &[]);
    assert_eq!(count(&stdout, "nothing to remove"), 2, "{stdout}");
}

#[test]
fn nft_rules_apply_noop_replace_validate_and_clean_up() {
    lifecycle(Mode::Nft);
}

#[test]
fn legacy_rules_apply_noop_replace_validate_and_clean_up() {
    lifecycle(Mode::Legacy);
}

#[test]
fn auto_mode_uses_legacy_only_where_legacy_rules_exist() {
    require_privileges_and_tools();
    let legacy_pod = Pod::new();
    legacy_pod.add_foreign_rules(Mode::Legacy);
    let stdout = legacy_pod.init_ok(&[], &[]);
    assert_eq!(count(&stdout, "(legacy): applied"), 2, "{stdout}");
    let nft = legacy_pod.snapshot(Mode::Nft);
    assert!(!nft.values().any(|t| t.contains("AGENTMESH")), "{nft:?}");
    assert!(legacy_pod.validate_as(0, 0, &[]).status.success());
    legacy_pod.init_ok(&["cleanup"], &[]);

    let fresh_pod = Pod::new();
    let stdout = fresh_pod.init_ok(&[], &[]);
    assert_eq!(count(&stdout, "(nft): applied"), 2, "{stdout}");
    let legacy = fresh_pod.snapshot(Mode::Legacy);
    assert!(
        !legacy.values().any(|t| t.contains("AGENTMESH")),
        "{legacy:?}"
    );
    // The probe chain never outlives the probe.
    let nft = fresh_pod.snapshot(Mode::Nft);
    assert!(
        !nft.values().any(|t| t.contains("AGENTMESH_PROBE")),
        "{nft:?}"
    );
}

#[test]
fn bad_settings_and_dry_run_touch_nothing() {
    require_privileges_and_tools();
    let pod = Pod::new();
    pod.add_foreign_rules(Mode::Nft);
    let before = (pod.snapshot(Mode::Nft), pod.snapshot(Mode::Legacy));

    for (env, named) in [
        (
            ("AGENTMESH_EXCLUDE_OUTBOUND_CIDRS", "10.0.0.0/33"),
            "10.0.0.0/33",
        ),
        (("AGENTMESH_OUTBOUND_PORT", "70000"), "70000"),
        (("AGENTMESH_PROXY_UID", "0"), "'0'"),
    ] {
        let out = pod.init(&[], &[env]);
        assert_eq!(out.status.code(), Some(2), "{env:?}: {}", describe(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(env.0) && stderr.contains(named),
            "{env:?}: {stderr}"
        );
    }

    let stdout = pod.init_ok(&["--dry-run", "--inbound-capture"], &[]);
    assert!(
        stdout.contains("# IPv4: iptables-restore --noflush"),
        "{stdout}"
    );
    assert!(
        stdout.contains("# IPv6: ip6tables-restore --noflush"),
        "{stdout}"
    );
    assert_eq!(count(&stdout, "*nat"), 2, "{stdout}");
    let stdout = pod.init_ok(&[], &[("AGENTMESH_DRY_RUN", "true")]);
    assert_eq!(count(&stdout, "*nat"), 2, "{stdout}");

    let after = (pod.snapshot(Mode::Nft), pod.snapshot(Mode::Legacy));
    assert_eq!(
        after, before,
        "rejected settings or --dry-run changed the tables"
    );
}

#[test]
fn non_root_with_only_net_admin_and_net_raw_for_legacy_applies_and_cleans_up() {
    require_privileges_and_tools();
    for (mode, caps) in [
        (Mode::Nft, "+net_admin"),
        (Mode::Legacy, "+net_admin,+net_raw"),
    ] {
        let pod = Pod::new();
        pod.add_foreign_rules(mode);
        let before = pod.snapshot(mode);
        let run = |args: &[&str]| {
            let out = pod.init_without_root(caps, args);
            assert!(
                out.status.success(),
                "{mode:?} {args:?}: {}",
                describe(&out)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let stdout = run(&["--iptables-mode", mode.name()]);
        assert_eq!(count(&stdout, "applied"), 2, "{stdout}");
        let stdout = run(&["--iptables-mode", mode.name()]);
        assert_eq!(count(&stdout, "unchanged"), 2, "{stdout}");
        assert!(pod.validate_as(0, 0, &[]).status.success());
        let stdout = run(&["cleanup", "--iptables-mode", mode.name()]);
        assert_eq!(count(&stdout, "removed"), 2, "{stdout}");
        assert_eq!(
            pod.snapshot(mode),
            before,
            "{mode:?}: cleanup must restore the tables"
        );
    }
    // Without the capability there is a clear error and the backend exit code.
    let pod = Pod::new();
    let out = pod.init_without_root("-all", &["--iptables-mode", "nft"]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("iptables backend unavailable"), "{stderr}");
}

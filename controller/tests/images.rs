//! The container images (the workspace's `Dockerfile`), checked offline: images cannot be
//! built here (no registry of base images is reachable), so this proves what can be
//! proved without building: every binary the Dockerfile builds and copies is one the
//! workspace has, every target the chart pulls exists and runs its binary, the proxy
//! runs as its contract user, and the init image has both iptables backends.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// The proxy's UID and GID (DESIGN.md "Contracts"), which agentmesh-init's rules exempt.
const PROXY_USER: &str = "1501:1501";

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The binaries of the workspace's members: each member's `[[bin]]` names, or its
/// package name when it has a `src/main.rs` and no `[[bin]]`.
fn workspace_binaries() -> BTreeSet<String> {
    let root = std::fs::read_to_string(workspace().join("Cargo.toml")).unwrap();
    let members = root
        .split_once("members = [")
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(list, _)| list)
        .expect("the root Cargo.toml lists its members");
    let mut binaries = BTreeSet::new();
    for member in members.split(',').map(|m| m.trim().trim_matches('"')) {
        if member.is_empty() {
            continue;
        }
        let manifest = std::fs::read_to_string(workspace().join(member).join("Cargo.toml"))
            .unwrap_or_else(|e| panic!("{member}/Cargo.toml: {e}"));
        let mut in_bin = false;
        let mut package = None;
        let mut section = "";
        for line in manifest.lines().map(str::trim) {
            if line.starts_with('[') {
                section = line;
                in_bin = line == "[[bin]]";
                continue;
            }
            let Some(name) = line
                .strip_prefix("name")
                .and_then(|r| r.trim_start().strip_prefix('='))
                .map(|v| v.trim().trim_matches('"').to_string())
            else {
                continue;
            };
            if in_bin {
                binaries.insert(name);
            } else if section == "[package]" {
                package = Some(name);
            }
        }
        if !manifest.contains("[[bin]]") && workspace().join(member).join("src/main.rs").is_file() {
            binaries.insert(package.unwrap());
        }
    }
    binaries
}

/// One `FROM … AS name` stage of the Dockerfile and its instructions (continuation
/// lines joined).
#[derive(Debug, Default)]
struct Stage {
    base: String,
    instructions: Vec<String>,
}

fn dockerfile() -> BTreeMap<String, Stage> {
    let text = std::fs::read_to_string(workspace().join("Dockerfile")).unwrap();
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                joined.push(std::mem::take(&mut current));
            }
        }
    }
    let mut stages = BTreeMap::new();
    let mut name = String::new();
    for instruction in joined {
        if let Some(from) = instruction.strip_prefix("FROM ") {
            let (base, stage) = from.split_once(" AS ").expect("every stage is named");
            name = stage.trim().to_string();
            let stage = Stage {
                base: base.trim().to_string(),
                instructions: Vec::new(),
            };
            assert!(
                stages.insert(name.clone(), stage).is_none(),
                "stage {name} twice"
            );
        } else if let Some(stage) = stages.get_mut(&name) {
            stage.instructions.push(instruction);
        }
    }
    stages
}

#[test]
fn dockerfile_builds_only_binaries_of_the_workspace() {
    let binaries = workspace_binaries();
    let stages = dockerfile();
    let build = stages["build"].instructions.join("\n");
    let built: BTreeSet<&str> = build
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "--bin")
        .map(|w| w[1])
        .collect();
    assert!(!built.is_empty(), "the build stage builds no --bin");
    for binary in &built {
        assert!(
            binaries.contains(*binary),
            "the Dockerfile builds {binary}, which no workspace member has (members' binaries: {binaries:?})"
        );
    }
    // Every shipped binary of the workspace has an image (the e2e crate's helpers are
    // test tools, not shipped).
    for binary in binaries.iter().filter(|b| b.starts_with("agentmesh-")) {
        assert!(built.contains(binary.as_str()), "no image builds {binary}");
    }
    assert!(
        build.contains("--locked"),
        "images must build from Cargo.lock"
    );
}

/// Each image the chart deploys or injects is a target running its binary, copied from
/// the build stage.
#[test]
fn each_image_target_runs_its_own_binary() {
    let stages = dockerfile();
    for (target, binary) in [
        ("controller", "agentmesh-controller"),
        ("proxy", "agentmesh-proxy"),
        ("init", "agentmesh-init"),
        ("injector", "agentmesh-injector"),
    ] {
        let stage = stages
            .get(target)
            .unwrap_or_else(|| panic!("no Dockerfile target {target}"));
        let path = format!("/usr/local/bin/{binary}");
        assert!(
            stage
                .instructions
                .contains(&format!("COPY --from=build /out/{binary} {path}")),
            "{target}: does not copy {binary} from the build stage"
        );
        assert!(
            stage
                .instructions
                .contains(&format!("ENTRYPOINT [\"{path}\"]")),
            "{target}: the entrypoint is not {path}"
        );
        // Debian 12 (glibc 2.36): what the proxy's packed relocations need, and what the
        // build stage links against.
        assert!(
            stage.base.contains("debian12") || stage.base.contains("bookworm"),
            "{target}: base {} is not Debian 12",
            stage.base
        );
    }
    assert!(stages["build"].base.contains("bookworm"));
}

#[test]
fn proxy_image_runs_as_the_contract_user() {
    let stages = dockerfile();
    let users: Vec<&String> = stages["proxy"]
        .instructions
        .iter()
        .filter(|i| i.starts_with("USER "))
        .collect();
    assert_eq!(users, [&format!("USER {PROXY_USER}")]);
}

#[test]
fn init_image_has_iptables_and_ip6tables_of_both_backends() {
    let stages = dockerfile();
    let init = &stages["init"];
    // Debian's `iptables` package ships iptables-{legacy,nft}-{save,restore} and the
    // ip6tables ones, the programs agentmesh-init runs (init/src/backend.rs).
    assert!(
        init.instructions.iter().any(|i| i.starts_with("RUN ")
            && i.contains("apt-get install")
            && i.contains(" iptables")),
        "the init image does not install Debian's iptables package"
    );
    let backend = std::fs::read_to_string(workspace().join("init/src/backend.rs")).unwrap();
    for program in [
        "iptables-legacy-restore",
        "ip6tables-legacy-restore",
        "iptables-nft-restore",
        "ip6tables-nft-restore",
    ] {
        assert!(
            backend.contains(program),
            "agentmesh-init no longer runs {program}"
        );
    }
}

//! `agentmesh-controller translate -f DIR` against checked-in goldens: each folder under
//! `tests/golden/` (its `input/` folder) is translated and compared with its `expected.json`. Regenerate with
//! `UPDATE_GOLDEN=1 cargo test -p agentmesh-controller --test translate`.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The scenario folders under `tests/golden/`, in name order.
fn scenarios() -> Vec<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut scenarios: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    scenarios.sort();
    scenarios
}

/// The folder of manifests of a scenario (`input/`, or the scenario folder itself).
fn input_of(scenario: &Path) -> PathBuf {
    let input = scenario.join("input");
    if input.is_dir() {
        input
    } else {
        scenario.to_path_buf()
    }
}

#[test]
fn translate_prints_the_served_resources_of_each_golden_folder() {
    let scenarios = scenarios();
    assert!(!scenarios.is_empty());
    for scenario in scenarios {
        let dir = input_of(&scenario);
        let out = Command::new(env!("CARGO_BIN_EXE_agentmesh-controller"))
            .args(["translate", "-f"])
            .arg(&dir)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}: {stderr}", scenario.display());
        let printed = String::from_utf8(out.stdout).unwrap();
        // Listener keys (from Secrets) are served inline but printed as a fingerprint.
        assert!(
            !printed.contains("PRIVATE KEY"),
            "{}: a private key is printed",
            scenario.display()
        );
        let golden = scenario.join("expected.json");
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&golden, &printed).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&golden).unwrap_or_default();
        assert!(
            printed == expected,
            "{} is stale: run `UPDATE_GOLDEN=1 cargo test -p agentmesh-controller --test translate`\n{printed}",
            golden.display()
        );
    }
}

#[test]
fn translate_names_the_file_and_field_of_a_parse_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        "binds:\n- name: main\n  prot: 1\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_agentmesh-controller"))
        .args(["translate", "-f"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.yaml") && stderr.contains("binds[0]"),
        "{stderr}"
    );
}

/// Whatever translation produces for a Gateway, the proxy accepts: each golden Gateway's
/// resources, written as the proxy's own config file (the nested view of the same
/// resources), pass `agentmesh-proxy validate` — the compiler the proxy runs on every
/// xDS update, so a translation the proxy would NACK fails here. The resources come from
/// translating in process, not from the printed goldens, whose private keys are redacted:
/// the proxy checks the real keys (and that each matches its certificate).
#[test]
fn the_proxy_accepts_what_every_golden_gateway_is_served() {
    let proxy = support::proxy_binary();
    let out_dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for scenario in scenarios() {
        let catalog = agentmesh_controller::folder::load(&input_of(&scenario)).unwrap();
        for (gateway, resources) in &catalog.translation.gateways {
            let nested = agentmesh_proxy::config::file::nest(resources);
            let file = out_dir.path().join(format!(
                "{}-{}-{}.json",
                scenario.file_name().unwrap().to_string_lossy(),
                gateway.namespace,
                gateway.name
            ));
            std::fs::write(&file, serde_json::to_string_pretty(&nested).unwrap()).unwrap();
            let out = Command::new(&proxy)
                .arg("validate")
                .arg(&file)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: the proxy rejects what {gateway} is served:\n{}\n{}",
                scenario.display(),
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(&file).unwrap()
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "no golden scenario has a Gateway of our class");
}

//! `agentmesh-controller translate -f DIR` against checked-in goldens: each folder under
//! `tests/golden/` (its `input/` folder) is translated and compared with its `expected.json`. Regenerate with
//! `UPDATE_GOLDEN=1 cargo test -p agentmesh-controller --test translate`.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

#[test]
fn translate_prints_the_served_resources_of_each_golden_folder() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut scenarios: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    scenarios.sort();
    assert!(!scenarios.is_empty());
    for scenario in scenarios {
        let input = scenario.join("input");
        let dir = if input.is_dir() {
            input
        } else {
            scenario.clone()
        };
        let out = Command::new(env!("CARGO_BIN_EXE_agentmesh-controller"))
            .args(["translate", "-f"])
            .arg(&dir)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}: {stderr}", scenario.display());
        let printed = String::from_utf8(out.stdout).unwrap();
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

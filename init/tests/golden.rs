//! Golden tests of the `iptables-restore` text per scenario.
//!
//! Each scenario's text is compared with `tests/golden/<scenario>.rules`; run with
//! `UPDATE_GOLDEN=1` to rewrite the files after an intended change, and review the diff.
//! A golden that no scenario produces is stale and fails the run too.

use std::path::PathBuf;

use agentmesh_init::apply::{NatState, Plan, plan_apply, plan_cleanup};
use agentmesh_init::cli::Cli;
use agentmesh_init::net::Family;
use agentmesh_init::rules::{RuleSet, render_dry_run};
use agentmesh_init::settings::Settings;
use clap::Parser;

/// Settings from command-line flags, exactly as the binary would parse them.
fn settings(flags: &[&str]) -> Settings {
    let argv = std::iter::once("agentmesh-init").chain(flags.iter().copied());
    let cli = Cli::try_parse_from(argv).expect("flags parse");
    Settings::from_raw(&cli.raw).expect("settings are valid")
}

fn dry_run(flags: &[&str]) -> String {
    let s = settings(flags);
    render_dry_run(&s, &Family::ALL)
}

/// The restore text of each family for going from `from` to `to`.
fn transition(from: &[&str], to: &[&str], family: Family) -> String {
    let installed = NatState::parse(&RuleSet::build(&settings(from), family).render());
    match plan_apply(&RuleSet::build(&settings(to), family), &installed) {
        Plan::Restore(text) => text,
        Plan::Unchanged => "# unchanged\n".into(),
    }
}

const INBOUND: &[&str] = &["--inbound-capture", "--exclude-inbound-ports", "8443,9090"];

fn scenarios() -> Vec<(&'static str, String)> {
    let mut cleanup = String::new();
    let mut replace = String::new();
    for family in Family::ALL {
        let installed = NatState::parse(&RuleSet::build(&settings(INBOUND), family).render());
        cleanup.push_str(&format!(
            "# {family}: cleanup after the inbound_capture scenario\n"
        ));
        match plan_cleanup(&installed) {
            Plan::Restore(text) => cleanup.push_str(&text),
            Plan::Unchanged => cleanup.push_str("# nothing to remove\n"),
        }
        replace.push_str(&format!("# {family}: inbound_capture -> default\n"));
        replace.push_str(&transition(INBOUND, &[], family));
    }
    vec![
        ("default", dry_run(&[])),
        (
            "custom_uid_gid",
            dry_run(&["--proxy-uid", "2000", "--proxy-gid", "3000"]),
        ),
        (
            "excluded_ports_and_cidrs",
            dry_run(&[
                "--exclude-outbound-ports",
                "22,3306",
                "--exclude-outbound-cidrs",
                "10.0.0.0/8,169.254.169.254,fd00::/8",
            ]),
        ),
        (
            "include_cidrs",
            dry_run(&["--include-outbound-cidrs", "198.18.0.0/15,2001:db8::/32"]),
        ),
        ("inbound_capture", dry_run(INBOUND)),
        (
            "ipv6_only_include",
            dry_run(&[
                "--ipv6",
                "on",
                "--include-outbound-cidrs",
                "2001:db8:1::/48",
                "--exclude-outbound-cidrs",
                "2001:db8:1:ff::/64",
            ]),
        ),
        (
            "ipv6_off",
            render_dry_run(&settings(&["--ipv6", "off"]), &[Family::V4]),
        ),
        ("cleanup", cleanup),
        ("replace_inbound_off", replace),
        (
            "same_settings_again",
            transition(INBOUND, INBOUND, Family::V4),
        ),
    ]
}

#[test]
fn restore_text_matches_golden_files() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let scenarios = scenarios();
    let mut failures = Vec::new();

    for (name, text) in &scenarios {
        let path = dir.join(format!("{name}.rules"));
        if update {
            std::fs::create_dir_all(&dir).expect("create golden dir");
            std::fs::write(&path, text).expect("write golden");
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(golden) if &golden == text => {}
            Ok(golden) => failures.push(format!(
                "{name}: output differs from {}\n--- golden\n{golden}--- actual\n{text}",
                path.display()
            )),
            Err(e) => failures.push(format!("{name}: cannot read {}: {e}", path.display())),
        }
    }

    // A golden file no scenario produces is stale.
    let entries = std::fs::read_dir(&dir).expect("golden dir exists");
    for entry in entries {
        let path = entry.expect("dir entry").path();
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        if !scenarios.iter().any(|(name, _)| *name == stem) {
            if update {
                std::fs::remove_file(&path).expect("remove stale golden");
            } else {
                failures.push(format!(
                    "{}: no scenario produces it (stale)",
                    path.display()
                ));
            }
        }
    }

    assert!(
        failures.is_empty(),
        "golden mismatch (run with UPDATE_GOLDEN=1 to accept):\n{}",
        failures.join("\n")
    );
}

#[test]
fn every_installed_rule_of_every_scenario_is_commented() {
    for (name, text) in scenarios() {
        for line in text.lines().filter(|l| l.starts_with("-A ")) {
            assert!(
                line.contains("-m comment --comment \"agentmesh: "),
                "{name}: {line}"
            );
        }
    }
}

//! The `agentmesh-init` binary: parses the command line, runs one subcommand and maps
//! its result to the exit codes documented in `--help`.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use agentmesh_init::apply::{self, ApplyError};
use agentmesh_init::cli::{Cli, Command};
use agentmesh_init::rules::render_dry_run;
use agentmesh_init::settings::{Settings, ValidateSettings};
use agentmesh_init::validate;
use clap::Parser;

/// Exit code: invalid settings, nothing touched.
const EXIT_SETTINGS: u8 = 2;
/// Exit code: no usable iptables backend.
const EXIT_BACKEND: u8 = 3;
/// Exit code: the restore was rejected.
const EXIT_REJECTED: u8 = 4;
/// Exit code: validation failed.
const EXIT_VALIDATION: u8 = 5;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::from_raw(&cli.raw) {
        Ok(s) => s,
        Err(e) => return fail(EXIT_SETTINGS, &e.to_string()),
    };
    let mut log = |line: String| eprintln!("agentmesh-init: {line}");
    match cli.command.unwrap_or(Command::Apply) {
        Command::Apply if settings.dry_run => {
            print!(
                "{}",
                render_dry_run(&settings, &dry_run_families(&settings))
            );
            ExitCode::SUCCESS
        }
        Command::Apply => report(apply::apply(&settings, &mut log)),
        Command::Cleanup if settings.dry_run => match apply::plan_cleanups(&settings, &mut log) {
            Ok(plans) => {
                for (iptables, plan) in plans {
                    println!("# {} ({}): cleanup", iptables.family, iptables.backend);
                    match plan {
                        apply::Plan::Unchanged => println!("# nothing to remove"),
                        apply::Plan::Restore(text) => print!("{text}"),
                    }
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(EXIT_BACKEND, &e.to_string()),
        },
        Command::Cleanup => report(apply::cleanup(&settings, &mut log)),
        Command::Validate(raw) => {
            let validate_settings = match ValidateSettings::from_raw(&raw, &settings) {
                Ok(v) => v,
                Err(e) => return fail(EXIT_SETTINGS, &e.to_string()),
            };
            let mut failed = false;
            for family in validate::families(settings.ipv6) {
                match validate::validate_family(family, &settings, &validate_settings) {
                    Ok(()) => println!(
                        "agentmesh-init: {family}: redirect works ({} -> port {})",
                        validate_settings.target(family),
                        validate_settings.port
                    ),
                    Err(e) => {
                        eprintln!("agentmesh-init: validation failed: {e}");
                        failed = true;
                    }
                }
            }
            if failed {
                ExitCode::from(EXIT_VALIDATION)
            } else {
                ExitCode::SUCCESS
            }
        }
    }
}

/// `--dry-run` shows both families unless IPv6 is off, whatever this machine has, so
/// its output depends on the settings alone.
fn dry_run_families(settings: &Settings) -> Vec<agentmesh_init::net::Family> {
    match settings.ipv6 {
        agentmesh_init::settings::Ipv6Mode::Off => vec![agentmesh_init::net::Family::V4],
        _ => agentmesh_init::net::Family::ALL.to_vec(),
    }
}

fn report(result: Result<Vec<apply::Outcome>, ApplyError>) -> ExitCode {
    match result {
        Ok(outcomes) => {
            for outcome in outcomes {
                println!("agentmesh-init: {outcome}");
            }
            ExitCode::SUCCESS
        }
        Err(e @ ApplyError::Backend(_)) => fail(EXIT_BACKEND, &e.to_string()),
        Err(e @ ApplyError::Rejected { .. }) => fail(EXIT_REJECTED, &e.to_string()),
    }
}

fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("agentmesh-init: error: {message}");
    ExitCode::from(code)
}

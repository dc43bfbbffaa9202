//! Prometheus' own linter on a metrics exposition, for every crate's tests: `promtool
//! check metrics` must exit 0 and print nothing (it prints each lint finding).

use std::io::Write;
use std::process::{Command, Stdio};

/// Runs `promtool check metrics` on `text`. Missing promtool is an error saying how to
/// install it (tests fail, never skip).
pub fn check_metrics(text: &str) -> Result<(), String> {
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err("promtool missing: run scripts/install-test-deps.sh".into());
        }
        Err(e) => return Err(format!("cannot run promtool: {e}")),
    };
    child
        .stdin
        .take()
        .ok_or("promtool's stdin is not piped")?
        .write_all(text.as_bytes())
        .map_err(|e| format!("cannot write to promtool: {e}"))?;
    let out = child
        .wait_with_output()
        .map_err(|e| format!("promtool did not finish: {e}"))?;
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && findings.trim().is_empty() {
        Ok(())
    } else {
        Err(format!(
            "promtool rejected the metrics ({}):\n{findings}\n--- input ---\n{text}",
            out.status
        ))
    }
}

/// [`check_metrics`], panicking with its message: for a test's assertion.
pub fn assert_accepts(text: &str) {
    if let Err(e) = check_metrics(text) {
        panic!("{e}");
    }
}

#!/usr/bin/env bash
# The one command that runs every test of agentmesh.
#
#   scripts/test.sh
#
# Steps: install test dependencies (Debian packages; Python, npm and chart tools under
# target/), rustfmt check, clippy with warnings as errors, the workspace's tests
# (nextest when installed, else cargo test; they include the Helm chart's tests in
# controller/tests/chart/, which run helm and kubernetes-validate from target/tools/),
# doc tests, and shellcheck over the project's shell scripts. Every step runs even when
# an earlier one fails, so one CI run shows every problem; the script exits non-zero if
# any step failed and prints a summary naming the failed steps.
#
# Needs no stdin (CI runs it as `bash .ci/run` with stdin closed).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# Colour codes make CI logs unreadable; keep them for people at a terminal. rustfmt
# colours its diff on its own, so it gets the flag too.
RUSTFMT_COLOR=()
if [[ ! -t 1 ]]; then
  export CARGO_TERM_COLOR=never
  RUSTFMT_COLOR=(--color=never)
fi
# Tests must not wait for input that never comes.
exec </dev/null

failed=()
passed=()

# step NAME CMD...: run one step, record the outcome, never abort the script.
step() {
  local name=$1
  shift
  printf '\n==> %s: %s\n' "$name" "$*"
  local start=$SECONDS
  if "$@"; then
    passed+=("$name")
    printf '<== %s: ok (%ds)\n' "$name" $((SECONDS - start))
  else
    local rc=$?
    failed+=("$name")
    printf '<== %s: FAILED with exit code %d (%ds)\n' "$name" "$rc" $((SECONDS - start))
  fi
}

# Without the dependencies later steps would fail in confusing ways, so this one is fatal.
step deps "$ROOT/scripts/install-test-deps.sh"
if [[ ${#failed[@]} -ne 0 ]]; then
  echo "installing test dependencies failed; not running tests" >&2
  exit 1
fi

step fmt cargo fmt --all -- --check "${RUSTFMT_COLOR[@]}"
step clippy cargo clippy --workspace --all-targets --all-features -- -D warnings

if cargo nextest --version >/dev/null 2>&1; then
  # nextest does not run doc tests. They go first so that nextest's summary, with the
  # real test count, is the last test-runner output in the log.
  step doctests cargo test --workspace --doc
  # --no-tests=warn: a crate without tests yet is not a failure of the suite.
  step tests cargo nextest run --workspace --no-fail-fast --no-tests=warn
else
  # cargo test runs doc tests itself.
  step tests cargo test --workspace --no-fail-fast
fi

# Lint every shell script the project ships (install, demo, bench, CI entry point).
shell_scripts() {
  # Not node_modules: third-party scripts npm installed there are not ours to lint.
  find scripts e2e -name node_modules -prune -o -name '*.sh' -type f -print 2>/dev/null
  echo .ci/run
}
mapfile -t scripts < <(shell_scripts | sort)
step shellcheck shellcheck -x "${scripts[@]}"

printf '\n==> summary: passed: %s\n' "${passed[*]}"
if [[ ${#failed[@]} -ne 0 ]]; then
  printf '==> summary: FAILED: %s\n' "${failed[*]}"
  exit 1
fi
echo "==> summary: all steps passed"

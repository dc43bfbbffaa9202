#!/usr/bin/env bash
# Installs the real LLM peers the sidecar end-to-end test runs: the provider double
# `llm-mock-api` (OpenAI chat completions, with usage figures) and the unmodified `openai`
# SDK that calls it, in one virtual environment, target/venvs/llm-sys.
#
# The venv is made from Debian's /usr/bin/python3, not a pyenv python under /root: the
# test (e2e/tests/sidecar_pods.rs) runs the SDK and the server as unprivileged users
# inside pods, and they must be able to read the interpreter. Everything in it is
# world-readable.
#
# Idempotent: a venv where both packages import is left alone, so a second run costs one
# `python -c`. Needs /usr/bin/python3 with the venv module and PyPI. Never reads stdin.
#
# Usage: scripts/install-llm-deps.sh
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${AGENTMESH_LLM_SYS_VENV:-$ROOT/target/venvs/llm-sys}
PYTHON=/usr/bin/python3

log() { printf '[install-llm-deps] %s\n' "$*"; }
die() { printf '[install-llm-deps] ERROR: %s\n' "$*" >&2; exit 1; }

# versions: prints "openai X llm-mock-api Y" when both are installed in the venv.
versions() {
  [[ -x $VENV/bin/python ]] || return 0
  "$VENV/bin/python" -c '
import importlib.metadata as m, openai
print("openai", m.version("openai"), "llm-mock-api", m.version("llm-mock-api"))' 2>/dev/null || true
}

found=$(versions)
if [[ -n $found && -x $VENV/bin/llm-mock-api ]]; then
  log "ok       $found in $VENV"
else
  command -v "$PYTHON" >/dev/null || die "$PYTHON not found (apt-get install python3 python3-venv)"
  if [[ ! -x $VENV/bin/python ]]; then
    log "creating venv $VENV from $PYTHON"
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON" -m venv "$VENV" </dev/null || die "$PYTHON -m venv failed (apt-get install python3-venv)"
  fi
  log "install  openai llm-mock-api into $VENV (the LLM client and provider double for the sidecar e2e test)"
  "$VENV/bin/pip" install -q --disable-pip-version-check openai llm-mock-api </dev/null ||
    die "pip install openai llm-mock-api failed"
  found=$(versions)
  [[ -n $found && -x $VENV/bin/llm-mock-api ]] || die "openai or llm-mock-api is not usable in $VENV after install"
  log "installed $found in $VENV"
fi
# Pod processes run as other UIDs: every directory on the way and every file must be
# readable by them (a umask of 077 would otherwise lock them out).
chmod -R a+rX "$VENV"

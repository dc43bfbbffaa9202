#!/usr/bin/env bash
# Installs the real MCP peers the MCP gateway tests run against: the official Python SDK
# 1.x (`mcp<2`: FastMCP servers and the session-style client) in its own virtual
# environment, target/venvs/mcp1. The 2.x SDK speaks another protocol generation and
# overwrites the same package, so it gets a venv of its own when tests need it.
#
# Idempotent: a venv whose `mcp` is already a 1.x release is left alone, so a second run
# costs one `python -c`. Needs python3 with the venv module and PyPI. Never reads stdin.
#
# Usage: scripts/install-mcp-deps.sh
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${AGENTMESH_MCP1_VENV:-$ROOT/target/venvs/mcp1}

log() { printf '[install-mcp-deps] %s\n' "$*"; }
die() { printf '[install-mcp-deps] ERROR: %s\n' "$*" >&2; exit 1; }

# Prints the installed mcp version, or nothing.
mcp_version() {
  [[ -x $VENV/bin/python ]] || return 0
  "$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("mcp"))' 2>/dev/null || true
}

version=$(mcp_version)
if [[ $version == 1.* ]]; then
  log "ok       mcp $version in $VENV"
  exit 0
fi

command -v python3 >/dev/null || die "python3 not found (apt-get install python3 python3-venv)"
if [[ ! -x $VENV/bin/python ]]; then
  log "creating venv $VENV"
  mkdir -p "$(dirname "$VENV")"
  python3 -m venv "$VENV" </dev/null || die "python3 -m venv failed (apt-get install python3-venv)"
fi
log "install  mcp<2 into $VENV (FastMCP servers and client for the MCP gateway tests)"
"$VENV/bin/pip" install -q --disable-pip-version-check "mcp<2" </dev/null || die "pip install 'mcp<2' failed"
version=$(mcp_version)
[[ $version == 1.* ]] || die "mcp 1.x is not importable in $VENV after install (got '$version')"
log "installed mcp $version in $VENV"

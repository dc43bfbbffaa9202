#!/usr/bin/env bash
# Installs the real MCP peers the MCP gateway tests run against: the official Python SDK
# 1.x (`mcp<2`: FastMCP servers and the session-style client) in its own virtual
# environment, target/venvs/mcp1. The 2.x SDK speaks another protocol generation and
# overwrites the same package, so it gets a venv of its own: target/venvs/mcp2 (`mcp>=2`,
# the 2026-07-28 protocol client the gateway tests connect with, and the MCPServer of
# e2e/mcp/modern_server.py, a target that speaks only that protocol).
#
# A second venv, target/venvs/mcp1-sys, holds the same SDK on Debian's /usr/bin/python3:
# the sidecar end-to-end test (e2e/tests/sidecar_pods.rs) runs MCP clients and servers
# as unprivileged users inside pods, and they cannot read a pyenv python under /root.
# Everything in it is world-readable.
#
# Idempotent: a venv whose `mcp` is already a 1.x release is left alone, so a second run
# costs one `python -c` per venv. Needs python3 with the venv module and PyPI. Never
# reads stdin.
#
# Usage: scripts/install-mcp-deps.sh
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${AGENTMESH_MCP1_VENV:-$ROOT/target/venvs/mcp1}
SYS_VENV=${AGENTMESH_MCP1_SYS_VENV:-$ROOT/target/venvs/mcp1-sys}
MCP2_VENV=${AGENTMESH_MCP2_VENV:-$ROOT/target/venvs/mcp2}

log() { printf '[install-mcp-deps] %s\n' "$*"; }
die() { printf '[install-mcp-deps] ERROR: %s\n' "$*" >&2; exit 1; }

# mcp_version VENV: prints the mcp version installed in VENV, or nothing.
mcp_version() {
  [[ -x $1/bin/python ]] || return 0
  "$1/bin/python" -c 'import importlib.metadata as m; print(m.version("mcp"))' 2>/dev/null || true
}

# ensure_mcp1 PYTHON VENV: a venv made from PYTHON with mcp 1.x in it.
ensure_mcp1() {
  local python=$1 venv=$2 version
  version=$(mcp_version "$venv")
  if [[ $version == 1.* ]]; then
    log "ok       mcp $version in $venv"
    return 0
  fi
  command -v "$python" >/dev/null || die "$python not found (apt-get install python3 python3-venv)"
  if [[ ! -x $venv/bin/python ]]; then
    log "creating venv $venv from $python"
    mkdir -p "$(dirname "$venv")"
    "$python" -m venv "$venv" </dev/null || die "$python -m venv failed (apt-get install python3-venv)"
  fi
  log "install  mcp<2 into $venv (FastMCP servers and client for the MCP tests)"
  "$venv/bin/pip" install -q --disable-pip-version-check "mcp<2" </dev/null || die "pip install 'mcp<2' failed"
  version=$(mcp_version "$venv")
  [[ $version == 1.* ]] || die "mcp 1.x is not importable in $venv after install (got '$version')"
  log "installed mcp $version in $venv"
}

# ensure_mcp2 VENV: a venv with mcp 2.x (the 2026-07-28 protocol client, e2e/mcp/client_v2.py).
ensure_mcp2() {
  local venv=$1 version
  version=$(mcp_version "$venv")
  if [[ $version == 2.* ]]; then
    log "ok       mcp $version in $venv"
    return 0
  fi
  command -v python3 >/dev/null || die "python3 not found (apt-get install python3 python3-venv)"
  if [[ ! -x $venv/bin/python ]]; then
    log "creating venv $venv"
    mkdir -p "$(dirname "$venv")"
    python3 -m venv "$venv" </dev/null || die "python3 -m venv failed (apt-get install python3-venv)"
  fi
  log "install  mcp>=2 into $venv (the 2026-07-28 client for the MCP gateway tests)"
  "$venv/bin/pip" install -q --disable-pip-version-check "mcp>=2,<3" </dev/null || die "pip install 'mcp>=2' failed"
  version=$(mcp_version "$venv")
  [[ $version == 2.* ]] || die "mcp 2.x is not importable in $venv after install (got '$version')"
  log "installed mcp $version in $venv"
}

ensure_mcp1 python3 "$VENV"
ensure_mcp2 "$MCP2_VENV"
ensure_mcp1 /usr/bin/python3 "$SYS_VENV"
# Pod processes run as other UIDs: every directory on the way and every file must be
# readable by them (a umask of 077 would otherwise lock them out).
chmod -R a+rX "$SYS_VENV"

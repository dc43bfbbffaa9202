#!/usr/bin/env bash
# The one command that shows agentmesh doing its main job: proxying a request to a
# real upstream, applying header policies on the way, and counting it in /metrics.
#
#   scripts/demo.sh
#
# It builds the release proxy, starts nginx on 127.0.0.1 (its own config in a temp
# dir, never the system's), writes a proxy config pointing at it, starts
# agentmesh-proxy, waits for /healthz/ready, sends one request through it with curl,
# prints the response and the request's metrics, and stops everything on exit.
# Everything listens on 127.0.0.1 only.
#
# Environment: DEMO_PORT (proxy listen port, default 8080 or the next free one),
# AGENTMESH_BIN (use this binary instead of building one).
set -euo pipefail

AM_LOG_PREFIX=demo
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
exec </dev/null

am_need curl nginx ss

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
am_log "demo finished; stopping nginx and the proxy"

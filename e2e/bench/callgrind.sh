#!/usr/bin/env bash
# Instructions per request: the same request as run.sh (HTTP/1.1 keep-alive GET of a
# 1 KiB file from nginx, through one route with one request-header policy), with
# agentmesh-proxy under `valgrind --tool=callgrind`. User-space instructions per
# request do not depend on what else the machine is doing, so two builds compare
# within a fraction of a percent where timings on a shared 2-core machine do not.
#
#   e2e/bench/callgrind.sh                          # builds the release binary
#   AGENTMESH_BIN=/tmp/old e2e/bench/callgrind.sh   # another build, to compare
#
# Prints the instructions (Ir) per request and the functions with the most
# instructions of their own; the profile stays in target/bench/callgrind.out.* for
# callgrind_annotate or kcachegrind.
set -euo pipefail

AM_LOG_PREFIX=bench-callgrind
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib.sh
source "$BENCH_DIR/../../scripts/lib.sh"
# shellcheck source=e2e/bench/lib.sh
source "$BENCH_DIR/lib.sh"
exec </dev/null

CALLGRIND_REQUESTS=${CALLGRIND_REQUESTS:-5000}   # measured requests
CALLGRIND_CONNS=${CALLGRIND_CONNS:-1}            # client connections
CALLGRIND_TOP=${CALLGRIND_TOP:-25}               # functions listed
for var in CALLGRIND_REQUESTS CALLGRIND_CONNS CALLGRIND_TOP; do
  if ! [[ ${!var} =~ ^[0-9]+$ ]] || ((${!var} == 0)); then
    am_die "$var must be a positive whole number, got '${!var}'"
  fi
done
am_need nginx h2load curl valgrind callgrind_control python3

WORK=$(mktemp -d -t agentmesh-callgrind.XXXXXX)
trap 'am_cleanup; rm -rf "$WORK"' EXIT
OUT_DIR=$AM_TARGET_DIR/bench
mkdir -p "$OUT_DIR"
rm -f "$OUT_DIR"/callgrind.out*

am_pick_port NGINX_PORT 18190
am_write_nginx_conf "$WORK/nginx" "$NGINX_PORT"
head -c 1024 /dev/zero | tr '\0' 'a' >"$WORK/nginx/www/1k.txt"
am_start_nginx "$WORK/nginx" "$NGINX_PORT"

BIN=$(am_build_proxy)
am_pick_port AM_PORT 18192
am_pick_port AM_ADMIN_PORT 26100
am_pick_port AM_METRICS_PORT 26120
am_pick_port AM_READY_PORT 26121
# The route and policy of run.sh.
bench_write_http_config "$WORK/agentmesh.yaml" e2e/bench/callgrind.sh "$AM_PORT" "$NGINX_PORT" \
  x-agentmesh-demo bench
# One worker thread, as in run.sh's pinned runs; uncompressed names so the profile
# can be read by the summary below.
AGENTMESH_WORKER_THREADS=1 valgrind --tool=callgrind --compress-strings=no --compress-pos=no \
  --callgrind-out-file="$OUT_DIR/callgrind.out" \
  "$BIN" --config "$WORK/agentmesh.yaml" --admin-addr "127.0.0.1:$AM_ADMIN_PORT" \
  --metrics-addr "127.0.0.1:$AM_METRICS_PORT" --ready-addr "127.0.0.1:$AM_READY_PORT" \
  >"$WORK/agentmesh.log" 2>&1 &
AM_PID=$!
am_track "$AM_PID"
am_wait_http "http://127.0.0.1:$AM_READY_PORT/healthz/ready" 60 "$AM_PID" ||
  am_die "agentmesh-proxy did not become ready under valgrind; see $WORK/agentmesh.log"

URL="http://127.0.0.1:$AM_PORT/1k.txt"
# Warm up (connections opened, series created), then count only the measured requests.
h2load --h1 -n 500 -c "$CALLGRIND_CONNS" "$URL" >/dev/null
callgrind_control --zero "$AM_PID" >/dev/null 2>&1
h2load --h1 -n "$CALLGRIND_REQUESTS" -c "$CALLGRIND_CONNS" "$URL" >"$WORK/h2load.txt"
grep -q "succeeded, 0 failed, 0 errored" "$WORK/h2load.txt" ||
  am_die "some requests failed: $(grep '^requests:' "$WORK/h2load.txt")"
callgrind_control --dump "$AM_PID" >/dev/null 2>&1
PROFILE=$(find "$OUT_DIR" -name 'callgrind.out.*' -newer "$WORK/h2load.txt" | sort | tail -n 1)
[[ -n $PROFILE ]] || am_die "callgrind wrote no profile"

echo "agentmesh-proxy under callgrind: $CALLGRIND_REQUESTS requests over $CALLGRIND_CONNS connection(s)"
python3 "$BENCH_DIR/callgrind_top.py" "$PROFILE" "$CALLGRIND_REQUESTS" "$CALLGRIND_TOP"
am_log "profile: $PROFILE"

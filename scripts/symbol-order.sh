#!/usr/bin/env bash
# Regenerates proxy/symbol-order.txt, the order in which the linker lays out the
# functions of agentmesh-proxy (see proxy/build.rs for why): the functions the proxy
# runs, as recorded by valgrind's callgrind, hottest first.
#
#   scripts/symbol-order.sh                          # profiles the release build
#   AGENTMESH_BIN=/path/to/proxy scripts/symbol-order.sh
#
# Two runs are profiled, each from exec to exit, on 127.0.0.1 only:
#   - standalone with e2e/bench's config (one route to nginx, one header policy): start,
#     readiness probes, keep-alive requests over 1 and 10 connections, a /metrics scrape;
#   - sidecar mode with e2e/sidecar/sidecar.yaml: start, readiness probe, /metrics.
# A stale list is harmless (names the linker does not find are skipped, new functions
# go after the listed ones), so rerun it after large changes to the request path.
set -euo pipefail

AM_LOG_PREFIX=symbol-order
SCRIPTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib.sh
source "$SCRIPTS_DIR/lib.sh"
# shellcheck source=e2e/bench/lib.sh
source "$AM_ROOT/e2e/bench/lib.sh"
exec </dev/null

am_need nginx h2load curl valgrind callgrind_control python3
OUT=$AM_ROOT/proxy/symbol-order.txt
WORK=$(mktemp -d -t agentmesh-symbol-order.XXXXXX)
trap 'am_cleanup; rm -rf "$WORK"' EXIT

am_pick_port NGINX_PORT 18290
am_write_nginx_conf "$WORK/nginx" "$NGINX_PORT"
head -c 1024 /dev/zero | tr '\0' 'a' >"$WORK/nginx/www/1k.txt"
am_start_nginx "$WORK/nginx" "$NGINX_PORT"

BIN=$(am_build_proxy)
am_pick_port AM_PORT 18292
am_pick_port AM_ADMIN_PORT 26200
am_pick_port AM_METRICS_PORT 26220
am_pick_port AM_READY_PORT 26221
am_pick_port AM_OUTBOUND_PORT 26201
am_pick_port AM_INBOUND_PORT 26206
bench_write_http_config "$WORK/agentmesh.yaml" scripts/symbol-order.sh "$AM_PORT" "$NGINX_PORT" \
  x-agentmesh-demo bench
ADDRS=(--admin-addr "127.0.0.1:$AM_ADMIN_PORT" --metrics-addr "127.0.0.1:$AM_METRICS_PORT"
  --ready-addr "127.0.0.1:$AM_READY_PORT")

# profile NAME EXERCISE ARGS...: BIN ARGS under callgrind (one worker thread, as a pinned
# proxy runs), EXERCISE once it is ready, then a clean SIGTERM so the profile is written.
profile() {
  local name=$1 exercise=$2
  shift 2
  AGENTMESH_WORKER_THREADS=1 valgrind --tool=callgrind --demangle=no --compress-strings=no \
    --compress-pos=no --callgrind-out-file="$WORK/$name.out" "$BIN" "${ADDRS[@]}" "$@" \
    >"$WORK/$name.log" 2>&1 &
  local pid=$!
  am_track "$pid"
  am_wait_http "http://127.0.0.1:$AM_READY_PORT/healthz/ready" 60 "$pid" ||
    am_die "agentmesh-proxy ($name) did not become ready under valgrind; see $WORK/$name.log"
  "$exercise"
  curl -sS -o /dev/null --max-time 10 "http://127.0.0.1:$AM_METRICS_PORT/metrics"
  kill -TERM "$pid"
  wait "$pid" || true
  [[ -s $WORK/$name.out ]] || am_die "callgrind wrote no profile for $name; see $WORK/$name.log"
}

standalone_load() {
  local url="http://127.0.0.1:$AM_PORT/1k.txt"
  h2load --h1 -n 2000 -c 1 "$url" >"$WORK/h2load-1.txt"
  h2load --h1 -n 2000 -c 10 "$url" >"$WORK/h2load-10.txt"
  grep -q "succeeded, 0 failed" "$WORK/h2load-1.txt" "$WORK/h2load-10.txt" ||
    am_die "requests failed while profiling; see $WORK/h2load-*.txt"
}
nothing() { :; }

am_log "profiling standalone mode"
profile standalone standalone_load --config "$WORK/agentmesh.yaml" --drain-timeout 1s
am_log "profiling sidecar mode"
profile sidecar nothing --mode sidecar --config "$AM_ROOT/e2e/sidecar/sidecar.yaml" --no-watch \
  --drain-timeout 1s --outbound-addr "127.0.0.1:$AM_OUTBOUND_PORT" \
  --inbound-addr "127.0.0.1:$AM_INBOUND_PORT"

python3 - "$BIN" "$OUT" "$WORK/standalone.out" "$WORK/sidecar.out" <<'EOF'
"""Functions of the binary by self instructions over the profiles, hottest first."""
import collections
import os
import sys

binary, out, profiles = sys.argv[1], sys.argv[2], sys.argv[3:]
costs = collections.Counter()
for path in profiles:
    obj = function = None
    after_call = False
    with open(path, errors="replace") as profile:
        for line in profile:
            if line.startswith("ob="):
                obj = line[3:].rstrip("\n")
            elif line.startswith("fn="):
                function = line[3:].rstrip("\n")
                # Ir 0 still counts: the function ran.
                if os.path.basename(obj or "") == os.path.basename(binary):
                    costs[function] += 0
                else:
                    function = None
            elif line.startswith("calls="):
                after_call = True
            elif line[:1].isdigit() or line[:1] in "+-*":
                fields = line.split()
                if after_call:
                    after_call = False
                elif function is not None and len(fields) >= 2:
                    costs[function] += int(fields[1])
names = [name for name, _ in sorted(costs.items(), key=lambda kv: (-kv[1], kv[0]))]
with open(out, "w") as f:
    f.write("".join(name + "\n" for name in names))
print(f"{len(names)} functions written to {out}")
EOF

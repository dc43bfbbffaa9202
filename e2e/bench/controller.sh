#!/usr/bin/env bash
# agentmesh control-plane benchmark: how fast a manifest change on disk is served by a
# gateway, with many routes loaded and traffic flowing, and what the controller costs in
# memory with many proxies connected. See e2e/bench/README.md.
#
#   e2e/bench/controller.sh                    # ~1 minute after the release build
#   BENCH_CHANGES=20 e2e/bench/controller.sh   # quick check
#   BENCH_NO_BUILD=1 e2e/bench/controller.sh   # use the release binaries as they are
#
# One run, all on 127.0.0.1:
#  1. nginx (the upstream), a folder with a GatewayClass, a Gateway `bench` (one HTTP
#     listener), a Service `nginx` (clusterIP 127.0.0.1) and BENCH_ROUTES HTTPRoutes
#     (one file each, `/r/<i>/` to nginx);
#  2. agentmesh-controller serving the folder, agentmesh-proxy --mode gateway;
#  3. a fixed-rate background load (h2load) on the loaded routes while
#     controller_changes.py makes BENCH_CHANGES successive changes (a new path rule each)
#     and times change-to-served; every failed background request is counted;
#  4. the controller's RSS at BENCH_ROUTES routes, then with BENCH_STREAMS delta ADS
#     streams connected (the ads_streams example, distinct sidecar node ids, one
#     connection each), and change-to-served again with those streams connected.
# The time of each stage of a change (watcher, read, assemble, translate, the gateway's
# snapshot, the gateway proxy's apply) is summarized from the per-change log lines of the
# controller (`folder changed`, `update sent`) and of the gateway (`xDS update applied`).
# Results are printed and written to target/bench/controller-results.txt; raw tool output
# goes to target/bench/controller-raw/. Exits non-zero if any request failed or a change
# was not served.
set -euo pipefail

AM_LOG_PREFIX=bench-controller
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib.sh
source "$BENCH_DIR/../../scripts/lib.sh"
exec </dev/null

# --- settings (environment) -----------------------------------------------------------
BENCH_ROUTES=${BENCH_ROUTES:-1000}          # HTTPRoutes loaded
BENCH_CHANGES=${BENCH_CHANGES:-100}         # successive changes timed
BENCH_STREAM_CHANGES=${BENCH_STREAM_CHANGES:-20} # changes timed with the streams connected
BENCH_RATE=${BENCH_RATE:-500}               # background load, requests/s in total
BENCH_RATE_CONNS=${BENCH_RATE_CONNS:-4}     # connections sharing the background load
BENCH_STREAMS=${BENCH_STREAMS:-500}         # delta ADS streams for the memory figure
BENCH_PAUSE_MS=${BENCH_PAUSE_MS:-50}        # pause between changes

for var in BENCH_ROUTES BENCH_CHANGES BENCH_STREAM_CHANGES BENCH_RATE BENCH_RATE_CONNS BENCH_STREAMS BENCH_PAUSE_MS; do
  [[ ${!var} =~ ^[0-9]+$ ]] || am_die "$var must be a whole number, got '${!var}'"
done
((BENCH_ROUTES > 0 && BENCH_CHANGES > 0)) || am_die "BENCH_ROUTES and BENCH_CHANGES must be > 0"
((BENCH_RATE_CONNS > 0 && BENCH_RATE >= BENCH_RATE_CONNS)) || am_die "need BENCH_RATE >= BENCH_RATE_CONNS > 0"
am_need nginx h2load curl ss python3 awk sort cargo

WORK=$(mktemp -d -t agentmesh-bench-controller.XXXXXX)
trap 'am_cleanup; rm -rf "$WORK"' EXIT
OUT_DIR=$AM_TARGET_DIR/bench
RAW=$OUT_DIR/controller-raw
mkdir -p "$RAW"
rm -f "$RAW"/*

# --- binaries ---------------------------------------------------------------------------
# BENCH_NO_BUILD=1 uses the release binaries already in target/release.
if [[ ${BENCH_NO_BUILD:-0} != 1 ]]; then
  am_log "building agentmesh-controller, agentmesh-proxy and the ads_streams client (release)"
  # One cargo invocation: building the example separately would unify features
  # differently and build every crate twice.
  (cd "$AM_ROOT" && cargo build --release -p agentmesh-controller -p agentmesh-proxy \
    --bins --example ads_streams >&2) || am_die "release build failed"
fi
CONTROLLER=$AM_TARGET_DIR/release/agentmesh-controller
PROXY=$AM_TARGET_DIR/release/agentmesh-proxy
STREAMS_CLIENT=$AM_TARGET_DIR/release/examples/ads_streams
for bin in "$CONTROLLER" "$PROXY" "$STREAMS_CLIENT"; do
  [[ -x $bin ]] || am_die "$bin is missing (build it, or unset BENCH_NO_BUILD)"
done

# --- upstream ----------------------------------------------------------------------------
am_pick_port NGINX_PORT 18190
am_write_nginx_conf "$WORK/nginx" "$NGINX_PORT"
head -c 1024 /dev/zero | tr '\0' 'a' >"$WORK/nginx/www/1k.txt"
# Routes forward the path as it is: /r/<i>/1k.txt and /change/<k>/1k.txt must exist.
for ((i = 0; i < BENCH_ROUTES; i++)); do
  mkdir -p "$WORK/nginx/www/r/$i" && ln "$WORK/nginx/www/1k.txt" "$WORK/nginx/www/r/$i/1k.txt"
done
for ((i = 0; i <= BENCH_CHANGES + BENCH_STREAM_CHANGES + 1; i++)); do
  mkdir -p "$WORK/nginx/www/change/$i" && ln "$WORK/nginx/www/1k.txt" "$WORK/nginx/www/change/$i/1k.txt"
done
am_start_nginx "$WORK/nginx" "$NGINX_PORT"

# --- the folder ----------------------------------------------------------------------------
am_pick_port GW_PORT 18191
am_pick_port XDS_PORT 26010
am_pick_port READY_PORT 26021
am_pick_port METRICS_PORT 26022
FOLDER=$WORK/manifests
mkdir -p "$FOLDER"
cat >"$FOLDER/00-gateway.yaml" <<EOF
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata:
  name: agentmesh
spec:
  controllerName: agentmesh.dev/gateway-controller
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: bench
  namespace: default
spec:
  gatewayClassName: agentmesh
  listeners:
  - name: http
    protocol: HTTP
    port: $GW_PORT
---
apiVersion: v1
kind: Service
metadata:
  name: nginx
  namespace: default
spec:
  clusterIP: 127.0.0.1
  ports:
  - name: http
    port: $NGINX_PORT
EOF
# One HTTPRoute per file, as users keep them.
awk -v n="$BENCH_ROUTES" -v port="$NGINX_PORT" -v dir="$FOLDER" 'BEGIN {
  for (i = 0; i < n; i++) {
    f = sprintf("%s/route-%05d.yaml", dir, i)
    printf "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: r-%d\n  namespace: default\nspec:\n  parentRefs:\n  - name: bench\n  rules:\n  - matches:\n    - path:\n        type: PathPrefix\n        value: /r/%d/\n    backendRefs:\n    - name: nginx\n      port: %d\n", i, i, port > f
    close(f)
  }
}'
"$CONTROLLER" status -f "$FOLDER" >"$RAW/status.json" ||
  am_die "the generated folder has problems; see $RAW/status.json"

# --- controller and gateway ---------------------------------------------------------------
CONTROLLER_LOG=$RAW/controller.log
"$CONTROLLER" serve --folder "$FOLDER" --xds-addr "127.0.0.1:$XDS_PORT" --log-level info \
  >"$CONTROLLER_LOG" 2>&1 &
CONTROLLER_PID=$!
am_track "$CONTROLLER_PID"
am_wait_tcp "$XDS_PORT" 60 "$CONTROLLER_PID" || am_die "the controller did not listen; see $CONTROLLER_LOG"
RSS_LOADED=$(am_rss_kib "$CONTROLLER_PID")

"$PROXY" --mode gateway --gateway bench.default --xds "http://127.0.0.1:$XDS_PORT" \
  --admin-addr off --metrics-addr "127.0.0.1:$METRICS_PORT" --ready-addr "127.0.0.1:$READY_PORT" \
  --log-level warn,agentmesh_proxy::config::xds=info >"$RAW/gateway.log" 2>&1 &
GATEWAY_PID=$!
am_track "$GATEWAY_PID"
am_wait_http "http://127.0.0.1:$READY_PORT/healthz/ready" 60 "$GATEWAY_PID" ||
  am_die "the gateway did not become ready; see $RAW/gateway.log"
LAST=$((BENCH_ROUTES - 1))
am_wait_http "http://127.0.0.1:$GW_PORT/r/$LAST/1k.txt" 30 "$GATEWAY_PID" ||
  am_die "route /r/$LAST/ is not served; see $RAW/gateway.log"
RSS_ONE_GATEWAY=$(am_rss_kib "$CONTROLLER_PID")
GATEWAY_RSS=$(am_rss_kib "$GATEWAY_PID")
am_log "controller (pid $CONTROLLER_PID) and gateway (pid $GATEWAY_PID) serve $BENCH_ROUTES routes on 127.0.0.1:$GW_PORT"

# --- change-to-served under load -------------------------------------------------------------
# run_changes NAME FIRST COUNT: timed changes with the background load running for their
# whole length; records R[NAME.*] and the background load's failures.
declare -A R=()
TOTAL_ERRORS=0
run_changes() {
  local name=$1 first=$2 count=$3
  # Long enough for every change at its bound; the driver's own deadline is shorter, so
  # the load always outlasts the changes.
  local load_secs=$((count * (BENCH_PAUSE_MS + 100) / 1000 + 10))
  local uris=() i
  for i in 0 1 2 3 4 5 6 7; do
    uris+=("http://127.0.0.1:$GW_PORT/r/$((i * BENCH_ROUTES / 8))/1k.txt")
  done
  timeout -k 5 $((load_secs + 20)) h2load --h1 -t 1 -c "$BENCH_RATE_CONNS" \
    --rps=$((BENCH_RATE / BENCH_RATE_CONNS)) -D "$load_secs" "${uris[@]}" \
    >"$RAW/load-$name.txt" 2>&1 &
  local load_pid=$!
  am_track "$load_pid"
  sleep 1
  local line rc=0
  python3 "$BENCH_DIR/controller_changes.py" --folder "$FOLDER" --gateway-port "$GW_PORT" \
    --service nginx --service-port "$NGINX_PORT" --changes "$count" --first "$first" \
    --pause-ms "$BENCH_PAUSE_MS" --deadline $((load_secs - 3)) \
    --raw "$RAW/changes-$name.txt" >"$RAW/changes-$name.out" 2>&1 || rc=$?
  wait "$load_pid" || am_die "the background load failed; see $RAW/load-$name.txt"
  line=$(grep '^CHANGE_RESULT ' "$RAW/changes-$name.out") ||
    am_die "no result from controller_changes.py; see $RAW/changes-$name.out"
  # shellcheck disable=SC2034 # min_us and polls are in the line, reported in the raw file
  local changes p50_us p99_us max_us min_us polls timeouts
  eval "$(sed 's/^CHANGE_RESULT //; s/\([a-z0-9_]*\)=\([0-9]*\)/local \1=\2;/g' <<<"$line")"
  R[$name.changes]=$changes
  R[$name.p50]=$p50_us
  R[$name.p99]=$p99_us
  R[$name.max]=$max_us
  R[$name.timeouts]=$timeouts
  ((rc == 0)) || am_log "some changes were not served in time; see $RAW/changes-$name.txt"
  # Background requests that did not get a 2xx: h2load's `failed` (errors, timeouts),
  # or done without a 2xx status, whichever is larger (a failed request may or may not
  # count as done).
  local ok2xx finished failed
  read -r finished failed < <(awk '/^requests:/ { print $6, $10 }' "$RAW/load-$name.txt")
  ok2xx=$(awk '/^status codes:/ { print $3 }' "$RAW/load-$name.txt")
  [[ -n $finished && -n $ok2xx ]] || am_die "cannot read h2load's summary in $RAW/load-$name.txt"
  R[$name.load_requests]=$finished
  R[$name.load_errors]=$((finished - ok2xx > failed ? finished - ok2xx : failed))
  TOTAL_ERRORS=$((TOTAL_ERRORS + R[$name.load_errors] + timeouts))
}

am_log "timing $BENCH_CHANGES changes with $BENCH_ROUTES routes, background load $BENCH_RATE req/s"
run_changes loaded 1 "$BENCH_CHANGES"
RSS_AFTER_CHANGES=$(am_rss_kib "$CONTROLLER_PID")

# --- many proxies connected ----------------------------------------------------------------
STREAMS_LINE="not measured (BENCH_STREAMS=0)"
if ((BENCH_STREAMS > 0)); then
  am_log "opening $BENCH_STREAMS delta ADS streams"
  "$STREAMS_CLIENT" --xds "http://127.0.0.1:$XDS_PORT" --streams "$BENCH_STREAMS" \
    --hold-seconds 600 --node-id 'sidecar~127.0.0.1~bench-{i}.default' \
    >"$RAW/streams.out" 2>&1 &
  STREAMS_PID=$!
  am_track "$STREAMS_PID"
  for ((i = 0; i < 600; i++)); do
    grep -q '^connected ' "$RAW/streams.out" && break
    kill -0 "$STREAMS_PID" 2>/dev/null || am_die "the ADS streams client failed; see $RAW/streams.out"
    sleep 0.1
  done
  grep -q '^connected ' "$RAW/streams.out" || am_die "the ADS streams did not connect within 60 s"
  sleep 1
  RSS_STREAMS=$(am_rss_kib "$CONTROLLER_PID")
  if ((BENCH_STREAM_CHANGES > 0)); then
    am_log "timing $BENCH_STREAM_CHANGES changes with $BENCH_STREAMS streams connected"
    run_changes streams $((BENCH_CHANGES + 1)) "$BENCH_STREAM_CHANGES"
  fi
  RSS_STREAMS_AFTER=$(am_rss_kib "$CONTROLLER_PID")
  kill -TERM "$STREAMS_PID" 2>/dev/null || true
  STREAMS_LINE="$(grep '^connected ' "$RAW/streams.out")"
fi
HWM=$(am_hwm_kib "$CONTROLLER_PID")
# The controller's own share: reading the folder and translating, per change (its log's
# `took_us`), median and max.
READ_LINE=$(grep -o 'took_us=[0-9]*' "$CONTROLLER_LOG" | cut -d= -f2 | sort -n |
  awk '{ v[NR] = $1 } END { if (NR) printf "median %.1f ms, max %.1f ms over %d reads", v[int((NR + 1) / 2)] / 1000, v[NR] / 1000, NR; else print "n/a" }')
# stage FILE MATCH FIELD: median, p99 and max of FIELD=<µs> over the log lines of FILE
# that contain MATCH (the per-change stage timings the controller and the proxy log).
stage() {
  grep -F -- "$2" "$1" | grep -o "$3=[0-9]*" | cut -d= -f2 | sort -n |
    awk '{ v[NR] = $1 } END { if (NR) { r = int(0.99 * NR); if (r < 0.99 * NR) r++; printf "median %.2f ms, p99 %.2f ms, max %.2f ms (%d)", v[int((NR + 1) / 2)] / 1000, v[r] / 1000, v[NR] / 1000, NR } else print "n/a" }'
}

# --- report ----------------------------------------------------------------------------------
mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }
ms() { awk -v u="$1" 'BEGIN { printf "%.1f ms", u / 1000 }'; }
{
  echo "agentmesh control-plane benchmark  ($(date -u '+%F %T UTC'))"
  echo "  git:        $(git -C "$AM_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "  machine:    $(nproc) CPUs; load average $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "  folder:     $BENCH_ROUTES HTTPRoutes (one file each), 1 Gateway, 1 Service; release builds"
  echo "  load:       h2load $BENCH_RATE req/s over $BENCH_RATE_CONNS connections on 8 of the loaded routes, during the changes"
  echo "  changes:    rewrite one HTTPRoute file (temp file + rename) with a new path; poll it through the gateway until 200; ${BENCH_PAUSE_MS} ms apart"
  echo
  printf '%-22s | %7s | %9s %9s %9s | %8s | %s\n' phase changes p50 p99 max timeouts "background requests (failed)"
  printf -- '-----------------------+---------+-------------------------------+----------+-----------------------------\n'
  for name in loaded streams; do
    [[ -n ${R[$name.changes]:-} ]] || continue
    label="$BENCH_ROUTES routes"
    [[ $name == streams ]] && label="+ $BENCH_STREAMS ADS streams"
    printf '%-22s | %7s | %9s %9s %9s | %8s | %s (%s)\n' "$label" "${R[$name.changes]}" \
      "$(ms "${R[$name.p50]}")" "$(ms "${R[$name.p99]}")" "$(ms "${R[$name.max]}")" \
      "${R[$name.timeouts]}" "${R[$name.load_requests]}" "${R[$name.load_errors]}"
  done
  echo
  echo "controller process"
  echo "  folder read + translate per change:         $READ_LINE"
  echo "  stages per change (from the logs):"
  echo "    watcher wait (first event to reload):     $(stage "$CONTROLLER_LOG" 'folder changed' wait_us)"
  echo "    read + parse changed files:               $(stage "$CONTROLLER_LOG" 'folder changed' read_us)"
  echo "    assemble objects:                         $(stage "$CONTROLLER_LOG" 'folder changed' assemble_us)"
  echo "    translate:                                $(stage "$CONTROLLER_LOG" 'folder changed' translate_us)"
  echo "    gateway snapshot (ADS):                   $(stage "$CONTROLLER_LOG" 'bench.default' snapshot_us)"
  echo "    gateway proxy apply (decode + compile):   $(stage "$RAW/gateway.log" 'xDS update applied' took_us)"
  echo "  RSS, $BENCH_ROUTES routes loaded, no proxy:        $(mib "$RSS_LOADED")"
  echo "  RSS, 1 gateway connected:                   $(mib "$RSS_ONE_GATEWAY")"
  echo "  RSS, after $BENCH_CHANGES changes:                    $(mib "$RSS_AFTER_CHANGES")"
  if ((BENCH_STREAMS > 0)); then
    echo "  RSS, + $BENCH_STREAMS ADS streams ($STREAMS_LINE): $(mib "$RSS_STREAMS")"
    echo "  RSS, after changes with the streams:        $(mib "$RSS_STREAMS_AFTER")"
  fi
  echo "  peak RSS (VmHWM):                           $(mib "$HWM")"
  echo "gateway process RSS with $BENCH_ROUTES routes:        $(mib "$GATEWAY_RSS")"
} | tee "$OUT_DIR/controller-results.txt"

((TOTAL_ERRORS == 0)) || am_die "$TOTAL_ERRORS failed background requests or unserved changes"

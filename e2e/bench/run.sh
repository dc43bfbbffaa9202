#!/usr/bin/env bash
# agentmesh benchmark: the same HTTP/1.1 keep-alive GET of a 1 KiB file from nginx,
# measured in one run three ways: direct to nginx, through haproxy, through agentmesh.
# Reports latency at 1 connection, latency at a fixed request rate, max throughput,
# and agentmesh's exec-to-ready time and memory. See e2e/bench/README.md.
#
#   e2e/bench/run.sh                  # ~2 minutes with the defaults
#   BENCH_SECONDS=3 e2e/bench/run.sh  # quick check
#
# Everything runs on 127.0.0.1 and every load is bounded in time. Results are printed
# and written to target/bench/results.txt; raw tool output goes to target/bench/raw/.
set -euo pipefail

AM_LOG_PREFIX=bench
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib.sh
source "$BENCH_DIR/../../scripts/lib.sh"
# shellcheck source=e2e/bench/lib.sh
source "$BENCH_DIR/lib.sh"
exec </dev/null

# --- settings (environment) -----------------------------------------------------------
BENCH_SECONDS=${BENCH_SECONDS:-10}            # length of each measured load
BENCH_WARMUP=${BENCH_WARMUP:-2}               # warm-up load per target before measuring
BENCH_RATE=${BENCH_RATE:-2000}                # fixed-rate load, requests/s in total
BENCH_RATE_CONNS=${BENCH_RATE_CONNS:-10}      # connections sharing the fixed rate
BENCH_CONNS=${BENCH_CONNS:-32}                # max-throughput connections
BENCH_THREADS=${BENCH_THREADS:-2}             # max-throughput wrk threads
BENCH_STARTUP_TRIALS=${BENCH_STARTUP_TRIALS:-5}
BENCH_TARGETS=${BENCH_TARGETS:-direct haproxy haproxy-tcp agentmesh}
BENCH_PIN=${BENCH_PIN:-1}                     # 1: load generator on CPU 0, servers on the last CPU
BENCH_NGINX_WORKERS=${BENCH_NGINX_WORKERS:-1}  # nginx worker processes: a number or `auto`

for var in BENCH_SECONDS BENCH_WARMUP BENCH_RATE BENCH_RATE_CONNS BENCH_CONNS BENCH_THREADS BENCH_STARTUP_TRIALS BENCH_PIN; do
  [[ ${!var} =~ ^[0-9]+$ ]] || am_die "$var must be a whole number, got '${!var}'"
done
[[ $BENCH_NGINX_WORKERS =~ ^([1-9][0-9]*|auto)$ ]] ||
  am_die "BENCH_NGINX_WORKERS must be a positive number or 'auto', got '$BENCH_NGINX_WORKERS'"
((BENCH_SECONDS > 0)) || am_die "BENCH_SECONDS must be > 0"
((BENCH_RATE_CONNS > 0 && BENCH_RATE >= BENCH_RATE_CONNS)) || am_die "need BENCH_RATE >= BENCH_RATE_CONNS > 0"
((BENCH_THREADS > 0 && BENCH_CONNS >= BENCH_THREADS)) || am_die "need BENCH_CONNS >= BENCH_THREADS > 0"
read -r -a TARGETS <<<"$BENCH_TARGETS"
[[ ${TARGETS[0]:-} == direct ]] || am_die "BENCH_TARGETS must start with 'direct' (the baseline)"
for t in "${TARGETS[@]}"; do
  [[ $t == direct || $t == haproxy || $t == haproxy-tcp || $t == agentmesh ]] ||
    am_die "unknown target '$t' in BENCH_TARGETS"
done
has_target() { [[ " ${TARGETS[*]} " == *" $1 "* ]]; }

am_need nginx wrk h2load curl ss python3 awk sort
{ has_target haproxy || has_target haproxy-tcp; } && am_need haproxy
bench_paced_load

WORK=$(mktemp -d -t agentmesh-bench.XXXXXX)
trap 'am_cleanup; rm -rf "$WORK"' EXIT
OUT_DIR=$AM_TARGET_DIR/bench
RAW=$OUT_DIR/raw
mkdir -p "$RAW"
rm -rf "${RAW:?}"/*

# --- CPU placement --------------------------------------------------------------------
# On a small machine the load generator and the servers fight for cores, and the
# scheduler's choices make runs noisy. Pinning the load generator to CPU 0 and every
# server (nginx, haproxy, agentmesh) to the last CPU gives each proxy the same single
# core, shared with nginx, as haproxy's `nbthread 1` implies; tokio sizes its worker
# pool from the affinity mask, so agentmesh runs one worker thread too.
NCPU=$(nproc)
LOAD_WRAP=()
if ((BENCH_PIN)) && ((NCPU >= 2)) && command -v taskset >/dev/null; then
  LOAD_WRAP=(taskset -c 0)
  AM_SERVER_WRAP=(taskset -c "$((NCPU - 1))")
  PLACEMENT="load generator on CPU 0; nginx and the proxy under test on CPU $((NCPU - 1))"
else
  PLACEMENT="not pinned (BENCH_PIN=0 or fewer than 2 CPUs)"
fi

# --- upstream: nginx with one 1 KiB file ----------------------------------------------
am_pick_port NGINX_PORT 18090
am_write_nginx_conf "$WORK/nginx" "$NGINX_PORT" "$BENCH_NGINX_WORKERS"
head -c 1024 /dev/zero | tr '\0' 'a' >"$WORK/nginx/www/1k.txt"
am_start_nginx "$WORK/nginx" "$NGINX_PORT"
declare -A URL=([direct]="http://127.0.0.1:$NGINX_PORT/1k.txt")
# The proxies' PIDs, to read their CPU time (nginx's worker is a child, left out).
declare -A SERVER_PID=()
am_log "nginx on 127.0.0.1:$NGINX_PORT"

# Both proxies do the same work per request: route to nginx over a reused
# connection and set one request header (nginx, configured by scripts/lib.sh, echoes
# x-agentmesh-demo back as x-upstream-saw-agentmesh-demo, which proves it arrived).
BENCH_HEADER=x-agentmesh-demo
BENCH_HEADER_VALUE=bench

# start_haproxy TARGET PORT: haproxy with $WORK/TARGET.cfg, serving on PORT, as TARGET.
start_haproxy() {
  local target=$1 port=$2
  # -db: stay in the foreground so the PID we track is haproxy itself.
  "${AM_SERVER_WRAP[@]}" haproxy -db -f "$WORK/$target.cfg" >"$WORK/$target.log" 2>&1 &
  SERVER_PID[$target]=$!
  am_track "${SERVER_PID[$target]}"
  if ! am_wait_http "http://127.0.0.1:$port/healthz" 10 "${SERVER_PID[$target]}"; then
    cat "$WORK/$target.log" >&2
    am_die "$target did not start on 127.0.0.1:$port"
  fi
  URL[$target]="http://127.0.0.1:$port/1k.txt"
  am_log "$target on 127.0.0.1:$port"
}

# --- haproxy ----------------------------------------------------------------------------
if has_target haproxy; then
  am_pick_port HAPROXY_PORT 18091
  cat >"$WORK/haproxy.cfg" <<EOF
# Generated by e2e/bench/run.sh: the reference proxy, one thread, HTTP mode.
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
frontend bench
    bind 127.0.0.1:$HAPROXY_PORT
    http-request set-header $BENCH_HEADER $BENCH_HEADER_VALUE
    default_backend nginx
backend nginx
    server nginx 127.0.0.1:$NGINX_PORT
EOF
  start_haproxy haproxy "$HAPROXY_PORT"
fi

# --- haproxy-tcp: the floor -------------------------------------------------------------
# The same haproxy in `mode tcp`: one client connection, one nginx connection, bytes
# copied both ways, no HTTP parsed and no header set. No HTTP proxy can do less per
# request, so its throughput ratio is the most any proxy can reach in this placement.
if has_target haproxy-tcp; then
  am_pick_port HAPROXY_TCP_PORT 18093
  cat >"$WORK/haproxy-tcp.cfg" <<EOF
# Generated by e2e/bench/run.sh: the floor, one thread, TCP mode (bytes copied).
global
    nbthread 1
    maxconn 4096
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
listen bench
    bind 127.0.0.1:$HAPROXY_TCP_PORT
    server nginx 127.0.0.1:$NGINX_PORT
EOF
  start_haproxy haproxy-tcp "$HAPROXY_TCP_PORT"
fi

# --- agentmesh: exec-to-ready trials, then one instance for the load --------------------
if has_target agentmesh; then
  BIN=$(am_build_proxy)
  am_pick_port AM_PORT 18092
  am_pick_port AM_ADMIN_PORT 26000
  am_pick_port AM_METRICS_PORT 26020
  am_pick_port AM_READY_PORT 26021
  bench_write_http_config "$WORK/agentmesh.yaml" e2e/bench/run.sh "$AM_PORT" "$NGINX_PORT" \
    "$BENCH_HEADER" "$BENCH_HEADER_VALUE"
  AM_CMD=("$BIN" --config "$WORK/agentmesh.yaml"
    --admin-addr "127.0.0.1:$AM_ADMIN_PORT"
    --metrics-addr "127.0.0.1:$AM_METRICS_PORT"
    --ready-addr "127.0.0.1:$AM_READY_PORT")
  READY_URL="http://127.0.0.1:$AM_READY_PORT/healthz/ready"

  am_log "measuring agentmesh exec-to-ready ($BENCH_STARTUP_TRIALS trials)"
  STARTUP_LINE=$(python3 "$BENCH_DIR/startup.py" --trials "$BENCH_STARTUP_TRIALS" \
    --ready-url "$READY_URL" --log "$RAW/agentmesh-startup.log" -- \
    "${AM_SERVER_WRAP[@]}" "${AM_CMD[@]}") ||
    am_die "exec-to-ready measurement failed; see $RAW/agentmesh-startup.log"

  "${AM_SERVER_WRAP[@]}" "${AM_CMD[@]}" >"$WORK/agentmesh.log" 2>&1 &
  AM_PID=$!
  am_track "$AM_PID"
  SERVER_PID[agentmesh]=$AM_PID
  if ! am_wait_http "$READY_URL" 30 "$AM_PID"; then
    tail -n 50 "$WORK/agentmesh.log" >&2 || true
    am_die "agentmesh-proxy did not become ready within 30 s"
  fi
  RSS_IDLE_KIB=$(am_rss_kib "$AM_PID")
  AM_THREADS=$(awk '/^Threads:/ { print $2 }' "/proc/$AM_PID/status")
  URL[agentmesh]="http://127.0.0.1:$AM_PORT/1k.txt"
  am_log "agentmesh on 127.0.0.1:$AM_PORT (pid $AM_PID, idle RSS $RSS_IDLE_KIB KiB)"
fi

# --- every path must serve the right bytes before it is measured ----------------------
for t in "${TARGETS[@]}"; do
  got=$(curl -sS -D "$WORK/$t.headers" -o "$WORK/$t.body" -w '%{http_code} %{size_download}' \
    --max-time 5 "${URL[$t]}") || am_die "$t: request to ${URL[$t]} failed"
  [[ $got == "200 1024" ]] || am_die "$t: expected '200 1024' (status, bytes), got '$got'"
  # haproxy-tcp copies bytes and sets no header.
  if [[ $t != direct && $t != haproxy-tcp ]] &&
    ! tr -d '\r' <"$WORK/$t.headers" | grep -qi "^x-upstream-saw-${BENCH_HEADER#x-}: $BENCH_HEADER_VALUE\$"; then
    am_die "$t: nginx did not receive the '$BENCH_HEADER' header the proxy should set"
  fi
done

# --- load runners -----------------------------------------------------------------------
# Results, keyed "target.metric".
declare -A R=()
TOTAL_ERRORS=0

# run_wrk TEST TARGET CONNS THREADS SECONDS: one bounded wrk run; records p50, p99, req/s
# and, for a proxy, its CPU per request.
run_wrk() {
  bench_run_wrk "$1" "$2" "$3" "$4" "$5" "$BENCH_DIR/summary.lua" "${URL[$2]}" "${SERVER_PID[$2]:-}"
}

# run_rate TARGET SECONDS MODE: fixed request rate with h2load, paced or in bursts.
run_rate() { bench_run_rate "$1" "$2" "$3" "${URL[$1]}"; }

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
START_TIME=$(date -u '+%Y-%m-%d %H:%M:%S UTC')

if ((BENCH_WARMUP > 0)); then
  for t in "${TARGETS[@]}"; do
    am_log "warm-up $t (${BENCH_WARMUP} s)"
    run_wrk warmup "$t" 8 1 "$BENCH_WARMUP"
  done
fi
# Each kind of load runs on every target before the next kind starts, so slow drift in
# background noise spreads over all targets instead of hitting one.
for t in "${TARGETS[@]}"; do
  am_log "latency at 1 connection: $t (${BENCH_SECONDS} s)"
  run_wrk lat1 "$t" 1 1 "$BENCH_SECONDS"
done
for t in "${TARGETS[@]}"; do
  am_log "latency at $BENCH_RATE req/s over $BENCH_RATE_CONNS connections: $t (${BENCH_SECONDS} s)"
  run_rate "$t" "$BENCH_SECONDS" paced
done
for t in "${TARGETS[@]}"; do
  am_log "latency at $BENCH_RATE req/s in bursts of $BENCH_RATE_CONNS: $t (${BENCH_SECONDS} s)"
  run_rate "$t" "$BENCH_SECONDS" burst
done
for t in "${TARGETS[@]}"; do
  am_log "max throughput at $BENCH_CONNS connections, $BENCH_THREADS threads: $t (${BENCH_SECONDS} s)"
  run_wrk max "$t" "$BENCH_CONNS" "$BENCH_THREADS" "$BENCH_SECONDS"
done

if has_target agentmesh; then
  kill -0 "$AM_PID" 2>/dev/null || am_die "agentmesh-proxy died during the load; see its log"
  RSS_LOAD_KIB=$(am_rss_kib "$AM_PID")
  RSS_PEAK_KIB=$(am_hwm_kib "$AM_PID")
fi
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# --- report -------------------------------------------------------------------------------
mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }
# delta TARGET METRIC: TARGET's METRIC minus direct's, with a sign.
delta() {
  local d=$((${R[$1.$2]} - ${R[direct.$2]}))
  if ((d >= 0)); then printf '+%d' "$d"; else printf '%d' "$d"; fi
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "n/a" }'; }

report() {
  echo "agentmesh benchmark  ($START_TIME)"
  echo "  git:        $(git -C "$AM_ROOT" rev-parse --short HEAD 2>/dev/null || echo 'no commit')$(git -C "$AM_ROOT" status --porcelain 2>/dev/null | grep -q . && echo ' (dirty)')"
  echo "  machine:    $NCPU CPUs; load average before $LOAD_BEFORE, after $LOAD_AFTER"
  echo "  placement:  $PLACEMENT"
  echo "  request:    HTTP/1.1 keep-alive GET of a 1 KiB file from nginx (worker_processes $BENCH_NGINX_WORKERS, access_log off)"
  echo "  loads:      ${BENCH_SECONDS} s each after a ${BENCH_WARMUP} s warm-up; wrk $(wrk --version 2>&1 | awk 'NR==1 {print $2}'), h2load $(h2load --version 2>&1 | awk '{print $NF}')"
  has_target haproxy && echo "  haproxy:    $(haproxy -v 2>/dev/null | awk 'NR==1 {print $3}'), nbthread 1, http-reuse always, sets one request header"
  has_target haproxy-tcp && echo "  haproxy-tcp: the same haproxy in mode tcp (bytes copied, no HTTP): the floor for any proxy"
  has_target agentmesh && echo "  agentmesh:  release build, one route, one request-header policy"
  echo
  printf '%-11s | %9s %9s | %9s %9s | %10s | %6s\n' "" "1 conn" "" "${BENCH_RATE}/s" "" "${BENCH_CONNS} conns" ""
  printf '%-11s | %9s %9s | %9s %9s | %10s | %6s\n' target "p50 us" "p99 us" "p50 us" "p99 us" "req/s" errors
  printf -- '------------+---------------------+---------------------+------------+-------\n'
  local t
  for t in "${TARGETS[@]}"; do
    local errs=$((R[$t.lat1.errors] + R[$t.rate.errors] + R[$t.burst.errors] + R[$t.max.errors]))
    printf '%-11s | %9s %9s | %9s %9s | %10s | %6s\n' "$t" \
      "${R[$t.lat1.p50]}" "${R[$t.lat1.p99]}" "${R[$t.rate.p50]}" "${R[$t.rate.p99]}" \
      "${R[$t.max.rps]}" "$errs"
  done
  if ((${#TARGETS[@]} > 1)); then
    echo
    printf '%-11s | %9s %9s | %9s %9s | %10s | %s\n' "vs direct" "+p50 us" "+p99 us" "+p50 us" "+p99 us" throughput "proxy CPU/req (user)"
    printf -- '------------+---------------------+---------------------+------------+---------------------\n'
    for t in "${TARGETS[@]:1}"; do
      printf '%-11s | %9s %9s | %9s %9s | %10s | %7s us (%s)\n' "$t" \
        "$(delta "$t" lat1.p50)" \
        "$(delta "$t" lat1.p99)" \
        "$(delta "$t" rate.p50)" \
        "$(delta "$t" rate.p99)" \
        "$(ratio "${R[$t.max.rps]}" "${R[direct.max.rps]}")" "${R[$t.max.cpu_us]}" \
        "${R[$t.max.user_us]}"
    done
  fi
  echo
  bench_report_fixed_rate req/s "${TARGETS[@]}"
  if has_target agentmesh; then
    local min median max trials
    eval "$(sed 's/^STARTUP_MS //; s/\([a-z]*\)=\([0-9.]*\)/\1=\2;/g' <<<"$STARTUP_LINE")"
    echo
    echo "agentmesh process"
    echo "  exec-to-ready:   median $median ms (min $min, max $max; $trials runs)"
    echo "  RSS when ready:  $(mib "$RSS_IDLE_KIB") ($AM_THREADS threads)"
    echo "  RSS after load:  $(mib "$RSS_LOAD_KIB") (peak $(mib "$RSS_PEAK_KIB"))"
  fi
}

report | tee "$OUT_DIR/results.txt"
am_log "results written to $OUT_DIR/results.txt (raw output in $RAW/)"

if ((TOTAL_ERRORS > 0)); then
  am_die "$TOTAL_ERRORS requests failed during the loads; the figures above are not trustworthy (see $RAW/)"
fi

#!/usr/bin/env bash
# agentmesh MCP benchmark: JSON-RPC over streamable HTTP, measured in one run direct to
# MCP targets and through the agentmesh MCP gateway. See e2e/bench/README.md.
#
#   e2e/bench/mcp.sh                  # ~3 minutes with the defaults
#   BENCH_SECONDS=3 e2e/bench/mcp.sh  # quick check
#
# Measures: `tools/call` latency at one connection and at a fixed rate, max `tools/call`
# throughput with agentmesh on one core (--worker-threads 1), `tools/list` merged over
# ten targets against the slowest of them, and memory per idle session at 10k sessions.
# The targets are e2e/src/bin/mcp-bench-target.rs, a fast MCP server double (the SDK
# servers cost far more per call than the gateway does; see the README).
#
# Everything runs on 127.0.0.1 and every load is bounded in count or time. Results go to
# target/bench/mcp-results.txt; raw tool output to target/bench/mcp-raw/.
set -euo pipefail

AM_LOG_PREFIX=mcp-bench
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib.sh
source "$BENCH_DIR/../../scripts/lib.sh"
# shellcheck source=e2e/bench/lib.sh
source "$BENCH_DIR/lib.sh"
exec </dev/null

# --- settings (environment) -----------------------------------------------------------
BENCH_SECONDS=${BENCH_SECONDS:-10}            # length of each measured tools/call load
BENCH_WARMUP=${BENCH_WARMUP:-2}               # warm-up load per path before measuring
BENCH_RATE=${BENCH_RATE:-2000}                # fixed-rate load, calls/s in total
BENCH_RATE_CONNS=${BENCH_RATE_CONNS:-10}      # connections sharing the fixed rate
BENCH_CONNS=${BENCH_CONNS:-32}                # max-throughput connections (one wrk thread)
BENCH_LIST_TARGETS=${BENCH_LIST_TARGETS:-10}  # targets merged by tools/list
BENCH_LIST_DELAY_MS=${BENCH_LIST_DELAY_MS:-1} # target k answers tools/list after k * this many ms
BENCH_LIST_SECONDS=${BENCH_LIST_SECONDS:-5}   # tools/list load per path (1 connection)
BENCH_TOOLS=${BENCH_TOOLS:-20}                # tools per target
BENCH_SESSIONS=${BENCH_SESSIONS:-10000}       # idle sessions opened for the memory figure
BENCH_PIN=${BENCH_PIN:-2}                     # 2: load generator on CPU 0, targets + agentmesh on the last; 1: agentmesh alone
                                              # 2: load generator on CPU 0, targets + agentmesh on the last CPU

for var in BENCH_SECONDS BENCH_WARMUP BENCH_RATE BENCH_RATE_CONNS BENCH_CONNS BENCH_LIST_TARGETS \
  BENCH_LIST_DELAY_MS BENCH_LIST_SECONDS BENCH_TOOLS BENCH_SESSIONS BENCH_PIN; do
  [[ ${!var} =~ ^[0-9]+$ ]] || am_die "$var must be a whole number, got '${!var}'"
done
((BENCH_SECONDS > 0 && BENCH_LIST_SECONDS > 0)) || am_die "BENCH_SECONDS and BENCH_LIST_SECONDS must be > 0"
((BENCH_RATE_CONNS > 0 && BENCH_RATE >= BENCH_RATE_CONNS)) || am_die "need BENCH_RATE >= BENCH_RATE_CONNS > 0"
((BENCH_CONNS > 0)) || am_die "BENCH_CONNS must be > 0"
((BENCH_LIST_TARGETS >= 2 && BENCH_LIST_TARGETS <= 50)) || am_die "BENCH_LIST_TARGETS must be 2..50"
((BENCH_TOOLS > 0)) || am_die "BENCH_TOOLS must be > 0"
((BENCH_SESSIONS >= 100)) || am_die "BENCH_SESSIONS must be >= 100"

am_need wrk h2load curl ss python3 awk sort taskset
bench_paced_load
VERSION=2025-06-18

WORK=$(mktemp -d -t agentmesh-mcp-bench.XXXXXX)
trap 'am_cleanup; rm -rf "$WORK"' EXIT
OUT_DIR=$AM_TARGET_DIR/bench
RAW=$OUT_DIR/mcp-raw
mkdir -p "$RAW"
rm -rf "${RAW:?}"/*

# --- CPU placement --------------------------------------------------------------------
# BENCH_PIN=2 (the default) is the latency layout of run.sh and sidecar.sh: the load
# generator alone on CPU 0, the targets and agentmesh together on the last CPU, so every
# path, direct included, crosses from one CPU to the other once each way.
# BENCH_PIN=1 gives agentmesh a core of its own (the last) while the load generator and
# the targets share CPU 0: its max is then a per-core figure with nothing beside it, but
# direct stays on CPU 0 while a path through agentmesh crosses twice each way, and on
# this VM waking the other (idle) vCPU costs ~100 us (see the http-hop row), which then
# counts as added latency. Both layouts run agentmesh with one worker thread, and the
# per-core throughput is computed from the CPU time it used, so it holds in either.
NCPU=$(nproc)
LOAD_WRAP=()
TARGET_WRAP=()
PROXY_WRAP=()
if ((BENCH_PIN == 2)) && ((NCPU >= 2)); then
  LOAD_WRAP=(taskset -c 0)
  TARGET_WRAP=(taskset -c "$((NCPU - 1))")
  PROXY_WRAP=(taskset -c "$((NCPU - 1))")
  PLACEMENT="load generator on CPU 0; MCP targets and agentmesh on CPU $((NCPU - 1))"
elif ((BENCH_PIN)) && ((NCPU >= 2)); then
  LOAD_WRAP=(taskset -c 0)
  TARGET_WRAP=(taskset -c 0)
  PROXY_WRAP=(taskset -c "$((NCPU - 1))")
  PLACEMENT="load generator and MCP targets on CPU 0; agentmesh alone on CPU $((NCPU - 1))"
else
  PLACEMENT="not pinned (BENCH_PIN=0 or fewer than 2 CPUs)"
fi

# --- binaries ---------------------------------------------------------------------------
BIN=$(am_build_proxy)
if [[ -n ${MCP_TARGET_BIN:-} ]]; then
  [[ -x $MCP_TARGET_BIN ]] || am_die "MCP_TARGET_BIN=$MCP_TARGET_BIN is not executable"
  TARGET_BIN=$MCP_TARGET_BIN
else
  am_log "building mcp-bench-target (release)"
  (cd "$AM_ROOT" && cargo build --release -p agentmesh-e2e --bin mcp-bench-target >&2) ||
    am_die "cargo build --release -p agentmesh-e2e --bin mcp-bench-target failed"
  TARGET_BIN=$AM_TARGET_DIR/release/mcp-bench-target
fi

# --- MCP targets: t0 for tools/call, t0..t(N-1) merged by tools/list --------------------
declare -a TARGET_PORT=()
for ((k = 0; k < BENCH_LIST_TARGETS; k++)); do
  am_pick_port "TARGET_PORT[$k]" $((18300 + k))
  "${TARGET_WRAP[@]}" "$TARGET_BIN" "${TARGET_PORT[$k]}" "$BENCH_TOOLS" "t$k" \
    $((k * BENCH_LIST_DELAY_MS)) >"$WORK/t$k.log" 2>&1 &
  am_track $!
  am_wait_tcp "${TARGET_PORT[$k]}" 10 $! || am_die "mcp-bench-target t$k did not start; see $WORK/t$k.log"
done
am_log "$BENCH_LIST_TARGETS MCP targets on 127.0.0.1:${TARGET_PORT[0]}.."

# --- agentmesh ----------------------------------------------------------------------------
# write_config FILE PORT: /mcp federates t0 alone (names unprefixed: one target), /fed
# federates every target (names prefixed t<k>_), /http forwards to t0 as plain HTTP
# (a `host` backend: the proxy hop without any MCP work, to tell the two costs apart).
write_config() {
  local file=$1 port=$2 k
  {
    echo "# Generated by e2e/bench/mcp.sh."
    echo "binds:"
    echo "- name: bench"
    echo "  address: 127.0.0.1"
    echo "  port: $port"
    echo "  listeners:"
    echo "  - name: http"
    echo "    routes:"
    echo "    - name: one"
    echo "      matches: [ { path: { prefix: /mcp } } ]"
    echo "      backends: [ { backend: one } ]"
    echo "    - name: fed"
    echo "      matches: [ { path: { prefix: /fed } } ]"
    echo "      backends: [ { backend: fed } ]"
    echo "    - name: http"
    echo "      matches: [ { path: { prefix: /http } } ]"
    echo "      backends: [ { backend: t0-http } ]"
    echo "backends:"
    echo "- name: t0-http"
    echo "  host: { address: \"127.0.0.1:${TARGET_PORT[0]}\" }"
    echo "- name: one"
    echo "  mcp:"
    echo "    targets:"
    echo "    - { name: t0, url: \"http://127.0.0.1:${TARGET_PORT[0]}/mcp\" }"
    echo "- name: fed"
    echo "  mcp:"
    echo "    targets:"
    for ((k = 0; k < BENCH_LIST_TARGETS; k++)); do
      echo "    - { name: t$k, url: \"http://127.0.0.1:${TARGET_PORT[$k]}/mcp\" }"
    done
  } >"$file"
}

# start_proxy NAME: starts agentmesh (one worker thread) with a fresh config; sets
# AM_PID and AM_PORT.
start_proxy() {
  local name=$1 admin metrics ready
  am_pick_port AM_PORT 18392
  am_pick_port admin 26100
  am_pick_port metrics 26120
  am_pick_port ready 26121
  AM_METRICS_PORT=$metrics
  # The config gets a directory of its own: agentmesh watches the config's directory
  # for changes, and its log (one line per tool call) must not wake that watcher.
  mkdir -p "$WORK/config-$name"
  write_config "$WORK/config-$name/agentmesh.yaml" "$AM_PORT"
  "${PROXY_WRAP[@]}" "$BIN" --config "$WORK/config-$name/agentmesh.yaml" --worker-threads 1 \
    --admin-addr "127.0.0.1:$admin" --metrics-addr "127.0.0.1:$metrics" \
    --ready-addr "127.0.0.1:$ready" >"$WORK/$name.log" 2>&1 &
  AM_PID=$!
  am_track "$AM_PID"
  if ! am_wait_http "http://127.0.0.1:$ready/healthz/ready" 30 "$AM_PID"; then
    tail -n 50 "$WORK/$name.log" >&2 || true
    am_die "agentmesh-proxy ($name) did not become ready within 30 s"
  fi
}

start_proxy agentmesh
GW_PID=$AM_PID
GW_PORT=$AM_PORT
RSS_IDLE_KIB=$(am_rss_kib "$GW_PID")
am_log "agentmesh on 127.0.0.1:$GW_PORT (pid $GW_PID, idle RSS $RSS_IDLE_KIB KiB)"

# --- sessions and requests ----------------------------------------------------------------
# open_session URL: initialize + notifications/initialized; prints the session id.
open_session() {
  local line
  line=$(timeout 60 python3 "$BENCH_DIR/mcp_sessions.py" "$1" 1) || am_die "cannot open a session at $1"
  printf '%s\n' "${line##* last=}"
}

# Paths: URL, session and request body of each measured path.
declare -A URL=(
  [direct]="http://127.0.0.1:${TARGET_PORT[0]}/mcp"
  [http-hop]="http://127.0.0.1:$GW_PORT/http"
  [agentmesh]="http://127.0.0.1:$GW_PORT/mcp"
  [fed]="http://127.0.0.1:$GW_PORT/fed"
)
for ((k = 0; k < BENCH_LIST_TARGETS; k++)); do
  URL[list-t$k]="http://127.0.0.1:${TARGET_PORT[$k]}/mcp"
done
declare -A SID=()
for p in "${!URL[@]}"; do
  SID[$p]=$(open_session "${URL[$p]}")
done
CALL_BODY='{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"tool03","arguments":{"text":"hello from the benchmark"}}}'
LIST_BODY='{"jsonrpc":"2.0","id":8,"method":"tools/list"}'
printf '%s' "$CALL_BODY" >"$WORK/call.json"

# post PATH BODY: one request with curl; prints the body of the answer.
post() {
  curl -sS --max-time 10 -H 'Content-Type: application/json' \
    -H 'Accept: application/json, text/event-stream' -H "Mcp-Session-Id: ${SID[$1]}" \
    -H "MCP-Protocol-Version: $VERSION" -d "$2" "${URL[$1]}"
}

# --- every path must answer right before it is measured ---------------------------------
for p in direct http-hop agentmesh; do
  got=$(post "$p" "$CALL_BODY") || am_die "$p: tools/call failed"
  [[ $got == *'"text":"t0/tool03: hello from the benchmark"'* ]] ||
    am_die "$p: unexpected tools/call answer: $got"
done
got=$(post fed "$LIST_BODY") || am_die "fed: tools/list failed"
want=$((BENCH_LIST_TARGETS * BENCH_TOOLS))
n=$(python3 -c 'import json,sys; print(len(json.load(sys.stdin)["result"]["tools"]))' <<<"$got") ||
  am_die "fed: tools/list answer is not a tools list: ${got:0:300}"
((n == want)) || am_die "fed: tools/list merged $n tools, expected $want"
[[ $got != *nextCursor* ]] || am_die "fed: unexpected nextCursor in the merged list"

# --- load runners -----------------------------------------------------------------------
declare -A R=()
TOTAL_ERRORS=0

# run_wrk TEST PATH BODY CONNS SECONDS [PID]: one bounded wrk run (1 thread) with
# mcp_post.lua; records p50, p99, calls/s and, with PID, that process's CPU per call.
run_wrk() {
  local test=$1 path=$2 body=$3 conns=$4 secs=$5 pid=${6:-}
  MCP_BODY=$body MCP_SESSION_ID=${SID[$path]} MCP_PROTOCOL_VERSION=$VERSION \
    bench_run_wrk "$test" "$path" "$conns" 1 "$secs" "$BENCH_DIR/mcp_post.lua" "${URL[$path]}" "$pid"
}

# run_rate PATH SECONDS MODE: fixed rate of tools/call, paced or in bursts.
run_rate() {
  local path=$1
  bench_run_rate "$path" "$2" "$3" "${URL[$path]}" "$WORK/call.json" \
    'Content-Type: application/json' 'Accept: application/json, text/event-stream' \
    "Mcp-Session-Id: ${SID[$path]}" "MCP-Protocol-Version: $VERSION"
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
START_TIME=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
CALL_PATHS=(direct http-hop agentmesh)

if ((BENCH_WARMUP > 0)); then
  for p in "${CALL_PATHS[@]}"; do
    am_log "warm-up $p (${BENCH_WARMUP} s)"
    run_wrk warmup "$p" "$CALL_BODY" 8 "$BENCH_WARMUP"
  done
fi
# Each kind of load runs on both paths before the next starts, so drift in background
# noise spreads over both.
for p in "${CALL_PATHS[@]}"; do
  am_log "tools/call at 1 connection: $p (${BENCH_SECONDS} s)"
  run_wrk lat1 "$p" "$CALL_BODY" 1 "$BENCH_SECONDS"
done
for p in "${CALL_PATHS[@]}"; do
  am_log "tools/call at $BENCH_RATE/s over $BENCH_RATE_CONNS connections: $p (${BENCH_SECONDS} s)"
  run_rate "$p" "$BENCH_SECONDS" paced
done
for p in "${CALL_PATHS[@]}"; do
  am_log "tools/call at $BENCH_RATE/s in bursts of $BENCH_RATE_CONNS: $p (${BENCH_SECONDS} s)"
  run_rate "$p" "$BENCH_SECONDS" burst
done
for p in "${CALL_PATHS[@]}"; do
  am_log "tools/call max throughput at $BENCH_CONNS connections: $p (${BENCH_SECONDS} s)"
  pid=""
  [[ $p != direct ]] && pid=$GW_PID
  run_wrk max "$p" "$CALL_BODY" "$BENCH_CONNS" "$BENCH_SECONDS" $pid
done
SLOWEST=""
for ((k = 0; k < BENCH_LIST_TARGETS; k++)); do
  am_log "tools/list at 1 connection, direct to t$k (${BENCH_LIST_SECONDS} s)"
  run_wrk list "list-t$k" "$LIST_BODY" 1 "$BENCH_LIST_SECONDS"
  if [[ -z $SLOWEST ]] || ((${R[list-t$k.list.p50]} > ${R[$SLOWEST.list.p50]})); then
    SLOWEST=list-t$k
  fi
done
am_log "tools/list at 1 connection, through agentmesh over $BENCH_LIST_TARGETS targets (${BENCH_LIST_SECONDS} s)"
run_wrk list fed "$LIST_BODY" 1 "$BENCH_LIST_SECONDS"

kill -0 "$GW_PID" 2>/dev/null || am_die "agentmesh-proxy died during the loads; see its log"
RSS_LOAD_KIB=$(am_rss_kib "$GW_PID")
RSS_PEAK_KIB=$(am_hwm_kib "$GW_PID")

# --- memory per idle session: a fresh gateway, then BENCH_SESSIONS sessions -------------
# 100 sessions first (first-use allocations: connection pools, metric series, buffers),
# then RSS before and after the rest, each session an initialize + initialized through
# the gateway, which opens an upstream session on t0 for it and keeps it idle.
am_log "memory: $BENCH_SESSIONS idle sessions through a fresh agentmesh"
start_proxy memory
MEM_PID=$AM_PID
MEM_URL="http://127.0.0.1:$AM_PORT/mcp"
timeout 120 python3 "$BENCH_DIR/mcp_sessions.py" "$MEM_URL" 100 >/dev/null ||
  am_die "memory: could not open the first 100 sessions"
sleep 0.5
MEM_BEFORE_KIB=$(am_rss_kib "$MEM_PID")
SESSIONS_LINE=$(timeout 600 python3 "$BENCH_DIR/mcp_sessions.py" "$MEM_URL" $((BENCH_SESSIONS - 100)) \
  --time-limit 500) || am_die "memory: opening $BENCH_SESSIONS sessions failed"
sleep 1
MEM_AFTER_KIB=$(am_rss_kib "$MEM_PID")
MEM_ACTIVE=$(curl -sS --max-time 5 "http://127.0.0.1:$AM_METRICS_PORT/metrics" |
  awk '/^agentmesh_mcp_sessions_active\{backend="one"\}/ { print $2 }')
# The oldest session must still work: it was idle, not dropped.
SID[memory-first]=$(sed 's/.* first=//; s/ last=.*//' <<<"$SESSIONS_LINE")
URL[memory-first]=$MEM_URL
got=$(post memory-first "$CALL_BODY") || am_die "memory: tools/call on the first session failed"
[[ $got == *'"text":"t0/tool03: hello from the benchmark"'* ]] ||
  am_die "memory: the first idle session no longer works: $got"
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# --- report -------------------------------------------------------------------------------
mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }
signed() { bench_signed "$1"; }

report() {
  echo "agentmesh MCP benchmark  ($START_TIME)"
  echo "  git:        $(git -C "$AM_ROOT" rev-parse --short HEAD 2>/dev/null || echo 'no commit')$(git -C "$AM_ROOT" status --porcelain 2>/dev/null | grep -q . && echo ' (dirty)')"
  echo "  machine:    $NCPU CPUs; load average before $LOAD_BEFORE, after $LOAD_AFTER"
  echo "  placement:  $PLACEMENT"
  echo "  target:     mcp-bench-target (Rust/hyper double, 1 thread, JSON answers), $BENCH_TOOLS tools each"
  echo "  agentmesh:  release build, --worker-threads 1, streamable HTTP, session style ($VERSION)"
  echo "  loads:      ${BENCH_SECONDS} s each after a ${BENCH_WARMUP} s warm-up; wrk $(wrk --version 2>&1 | awk 'NR==1 {print $2}'), h2load $(h2load --version 2>&1 | awk '{print $NF}')"
  echo
  echo "tools/call"
  printf '%-10s | %9s %9s | %9s %9s | %9s | %8s | %6s\n' "" "1 conn" "" "${BENCH_RATE}/s" "" "${BENCH_CONNS} conns" "" ""
  printf '%-10s | %9s %9s | %9s %9s | %9s | %8s | %6s\n' path "p50 us" "p99 us" "p50 us" "p99 us" "calls/s" "CPU/call" errors
  printf -- '-----------+---------------------+---------------------+-----------+----------+-------\n'
  local p
  for p in "${CALL_PATHS[@]}"; do
    local errs=$((${R[$p.lat1.errors]} + ${R[$p.rate.errors]} + ${R[$p.burst.errors]} + ${R[$p.max.errors]}))
    local cpu="-"
    [[ -n ${R[$p.max.cpu_us]:-} ]] && cpu="${R[$p.max.cpu_us]} us"
    printf '%-10s | %9s %9s | %9s %9s | %9s | %8s | %6s\n' "$p" \
      "${R[$p.lat1.p50]}" "${R[$p.lat1.p99]}" "${R[$p.rate.p50]}" "${R[$p.rate.p99]}" \
      "${R[$p.max.rps]}" "$cpu" "$errs"
  done
  echo
  for p in "${CALL_PATHS[@]:1}"; do
    printf 'added by %-9s 1 conn p50 %s us, p99 %s us; at %s/s p50 %s us, p99 %s us\n' "$p:" \
      "$(signed $((${R[$p.lat1.p50]} - ${R[direct.lat1.p50]})))" "$(signed $((${R[$p.lat1.p99]} - ${R[direct.lat1.p99]})))" \
      "$BENCH_RATE" "$(signed $((${R[$p.rate.p50]} - ${R[direct.rate.p50]})))" "$(signed $((${R[$p.rate.p99]} - ${R[direct.rate.p99]})))"
  done
  echo "agentmesh max: ${R[agentmesh.max.rps]} calls/s on one worker thread at ${R[agentmesh.max.cpu_pct]}% of its core" \
    "(${R[agentmesh.max.cpu_us]} us CPU per call: $(awk -v c="${R[agentmesh.max.cpu_us]}" 'BEGIN { printf "%.0f", (c > 0 ? 1e6 / c : 0) }') calls/s per fully used core)"
  bench_report_fixed_rate calls/s "${CALL_PATHS[@]}"
  echo
  echo "tools/list, 1 connection ($BENCH_LIST_TARGETS targets of $BENCH_TOOLS tools; target t<k> answers after k*${BENCH_LIST_DELAY_MS} ms)"
  printf '%-22s | %9s %9s | %6s\n' path "p50 us" "p99 us" errors
  printf -- '-----------------------+---------------------+-------\n'
  local k errs=0
  for ((k = 0; k < BENCH_LIST_TARGETS; k++)); do
    errs=$((errs + ${R[list-t$k.list.errors]}))
  done
  printf '%-22s | %9s %9s | %6s\n' "slowest direct (${SLOWEST#list-})" "${R[$SLOWEST.list.p50]}" "${R[$SLOWEST.list.p99]}" "$errs"
  printf '%-22s | %9s %9s | %6s\n' "agentmesh, merged" "${R[fed.list.p50]}" "${R[fed.list.p99]}" "${R[fed.list.errors]}"
  echo "over the slowest target: p50 $(signed $((${R[fed.list.p50]} - ${R[$SLOWEST.list.p50]}))) us, p99 $(signed $((${R[fed.list.p99]} - ${R[$SLOWEST.list.p99]}))) us"
  echo
  echo "agentmesh process"
  echo "  RSS when ready:  $(mib "$RSS_IDLE_KIB")"
  echo "  RSS after loads: $(mib "$RSS_LOAD_KIB") (peak $(mib "$RSS_PEAK_KIB"))"
  echo "  idle sessions:   $SESSIONS_LINE" | sed 's/ first=.*//'
  echo "                   RSS $(mib "$MEM_BEFORE_KIB") at 100 sessions, $(mib "$MEM_AFTER_KIB") at $BENCH_SESSIONS" \
    "(gauge: ${MEM_ACTIVE:-?} active): $(awk -v a="$MEM_AFTER_KIB" -v b="$MEM_BEFORE_KIB" -v n=$((BENCH_SESSIONS - 100)) \
      'BEGIN { printf "%.0f", (a - b) * 1024 / n }') bytes per session"
}

report | tee "$OUT_DIR/mcp-results.txt"
am_log "results written to $OUT_DIR/mcp-results.txt (raw output in $RAW/)"

if ((TOTAL_ERRORS > 0)); then
  am_die "$TOTAL_ERRORS requests failed during the loads; the figures above are not trustworthy (see $RAW/)"
fi

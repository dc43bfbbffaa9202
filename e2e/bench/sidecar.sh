#!/usr/bin/env bash
# Sidecar benchmark: what iptables capture through agentmesh-proxy --mode sidecar costs,
# measured in the pods-as-namespaces harness (scripts/pods.sh) in one run. Pod `agent`
# has agentmesh-init's rules and the sidecar (release build, as UID 1501, with
# e2e/sidecar/sidecar.yaml: one route to `api` that sets one request header); pod `api`
# runs nginx (one worker) serving a 1 KiB file on port 8080. The load generator runs in
# `agent` and calls http://api:8080/1k.txt, unmodified, twice:
#
#   direct   as UID 1501, which the rules let through (the app excluded from capture)
#   sidecar  as UID 1000, captured: redirected to 127.0.0.1:16001 and proxied
#
# Loads (each bounded by BENCH_SECONDS):
#   - keep-alive latency at a fixed rate: h2load --h1 --rps, percentiles from its
#     per-request log; the sidecar's added p50/p99 is reported;
#   - new connections per second: h2load creating BENCH_CONN_RATE connections per second,
#     one request each with `Connection: close` (the server closes first, so the client
#     keeps no TIME_WAIT and ephemeral ports last), with the longest connect time: a
#     connect stall over 100 ms (conntrack reusing a tuple still in TIME_WAIT, say) is
#     flagged;
#   - the sidecar's RSS when idle (right after ready) and after the loads.
#
#   e2e/bench/sidecar.sh                  # ~1 minute with the defaults, as root
#   BENCH_SECONDS=3 e2e/bench/sidecar.sh  # quick check
#
# Results are printed and written to target/bench/sidecar-results.txt; raw tool output
# goes to target/bench/sidecar-raw/. Exits non-zero if any request failed.
set -euo pipefail

AM_LOG_PREFIX=bench-sidecar
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib.sh
source "$BENCH_DIR/../../scripts/lib.sh"
# shellcheck source=e2e/bench/lib.sh
source "$BENCH_DIR/lib.sh"
# shellcheck source=scripts/pods.sh
source "$AM_ROOT/scripts/pods.sh"
exec </dev/null

# --- settings (environment) -----------------------------------------------------------
BENCH_SECONDS=${BENCH_SECONDS:-10}         # length of each measured load
BENCH_WARMUP=${BENCH_WARMUP:-2}            # warm-up load per target before measuring
BENCH_RATE=${BENCH_RATE:-2000}             # keep-alive fixed rate, requests/s in total
BENCH_RATE_CONNS=${BENCH_RATE_CONNS:-10}   # connections sharing the fixed rate
BENCH_CONN_RATE=${BENCH_CONN_RATE:-5000}   # new connections per second
BENCH_CONN_MAX=${BENCH_CONN_MAX:-20000}    # at most this many new connections per target
BENCH_PIN=${BENCH_PIN:-1}                  # 1: load generator on CPU 0, servers on the last CPU

for var in BENCH_SECONDS BENCH_WARMUP BENCH_RATE BENCH_RATE_CONNS BENCH_CONN_RATE BENCH_CONN_MAX BENCH_PIN; do
  [[ ${!var} =~ ^[0-9]+$ ]] || am_die "$var must be a whole number, got '${!var}'"
done
((BENCH_SECONDS > 0)) || am_die "BENCH_SECONDS must be > 0"
((BENCH_RATE_CONNS > 0 && BENCH_RATE >= BENCH_RATE_CONNS)) || am_die "need BENCH_RATE >= BENCH_RATE_CONNS > 0"
((BENCH_CONN_RATE >= 100)) || am_die "BENCH_CONN_RATE must be >= 100"

[[ $(id -u) -eq 0 ]] || am_die "run as root: pods are network namespaces with iptables rules"
am_need ip iptables ip6tables setpriv timeout nginx h2load curl awk sort
bench_paced_load

WORK=$(mktemp -d -t agentmesh-bench-sidecar.XXXXXX)
chmod 755 "$WORK"
trap 'am_cleanup; am_pods_cleanup; rm -rf "$WORK"' EXIT
OUT_DIR=$AM_TARGET_DIR/bench
RAW=$OUT_DIR/sidecar-raw
mkdir -p "$RAW"
rm -rf "${RAW:?}"/*

# --- CPU placement (as e2e/bench/run.sh) -----------------------------------------------
NCPU=$(nproc)
LOAD_WRAP=()
if ((BENCH_PIN)) && ((NCPU >= 2)) && command -v taskset >/dev/null; then
  LOAD_WRAP=(taskset -c 0)
  AM_SERVER_WRAP=(taskset -c "$((NCPU - 1))")
  PLACEMENT="load generator on CPU 0; nginx and the sidecar on CPU $((NCPU - 1))"
else
  PLACEMENT="not pinned (BENCH_PIN=0 or fewer than 2 CPUs)"
fi

# --- binaries ----------------------------------------------------------------------------
if [[ -n ${AGENTMESH_BIN:-} && -n ${AGENTMESH_INIT_BIN:-} ]]; then
  PROXY_BIN=$AGENTMESH_BIN
  INIT_BIN=$AGENTMESH_INIT_BIN
else
  am_log "building agentmesh-proxy and agentmesh-init (release; the first build takes a few minutes)"
  (cd "$AM_ROOT" && cargo build --release -p agentmesh-proxy -p agentmesh-init >&2) ||
    am_die "cargo build --release failed"
  PROXY_BIN=$AM_TARGET_DIR/release/agentmesh-proxy
  INIT_BIN=$AM_TARGET_DIR/release/agentmesh-init
fi
[[ -x $PROXY_BIN && -x $INIT_BIN ]] || am_die "missing $PROXY_BIN or $INIT_BIN"

# --- pods: nginx in `api`, rules and the sidecar in `agent` ------------------------------
am_pods_init bsc
am_pod_add agent
am_pod_add api

am_write_nginx_conf "$WORK/nginx" 8080
# Listen on the pod's addresses instead of loopback, and echo the sidecar's header.
# shellcheck disable=SC2016 # $http_x_agentmesh_sidecar is nginx's variable
sed -i 's|listen 127.0.0.1:8080;|listen 8080; listen [::]:8080;\n        add_header x-upstream-saw-sidecar "$http_x_agentmesh_sidecar" always;|' "$WORK/nginx/nginx.conf"
head -c 1024 /dev/zero | tr '\0' 'a' >"$WORK/nginx/www/1k.txt"
am_pod_spawn_as api 0 "$WORK/nginx.out" "${AM_SERVER_WRAP[@]}" nginx -p "$WORK/nginx" \
  -e "$WORK/nginx/nginx-error.log" -c "$WORK/nginx/nginx.conf"
am_wait_pod_http api 0 http://127.0.0.1:8080/healthz 10 "$AM_SPAWNED_PID" ||
  am_die "nginx did not start in pod api: $(cat "$WORK/nginx.out" "$WORK/nginx/nginx-error.log" 2>/dev/null)"

am_pod_exec agent "$INIT_BIN" apply >&2 || am_die "agentmesh-init apply failed"
am_start_sidecar agent "$PROXY_BIN" "$AM_ROOT/e2e/sidecar/sidecar.yaml" "$WORK/sidecar.log"
SIDECAR_PID=$AM_SIDECAR_PID
sleep 1
RSS_IDLE_KIB=$(am_rss_kib "$SIDECAR_PID")
SIDECAR_THREADS=$(awk '/^Threads:/ { print $2 }' "/proc/$SIDECAR_PID/status")
am_log "sidecar ready (pid $SIDECAR_PID, idle RSS $RSS_IDLE_KIB KiB)"

URL=http://api:8080/1k.txt
declare -A UID_OF=([direct]=1501 [sidecar]=1000)
TARGETS=(direct sidecar)

# --- both paths must serve the file, and only the captured one gets the header --------
for t in "${TARGETS[@]}"; do
  headers=$(am_pod_exec_as agent "${UID_OF[$t]}" curl -sS -D - -o /dev/null --max-time 5 "$URL" | tr -d '\r') ||
    am_die "$t: request to $URL failed"
  grep -q '^HTTP/1.1 200' <<<"$headers" || am_die "$t: expected 200, got: $headers"
  saw=$(grep -i '^x-upstream-saw-sidecar:' <<<"$headers" | cut -d' ' -f2- || true)
  if [[ $t == sidecar && $saw != injected ]]; then
    am_die "sidecar: nginx did not receive the sidecar's header: the load would not be captured"
  fi
  if [[ $t == direct && -n $saw ]]; then
    am_die "direct: nginx received the sidecar's header: UID ${UID_OF[direct]} is captured"
  fi
done

declare -A R=()
TOTAL_ERRORS=0

# h2load_as TARGET LOG ARGS...: h2load in the agent pod as TARGET's UID, pinned, bounded.
h2load_as() {
  local target=$1 log=$2
  shift 2
  # The log file is written by h2load, which does not run as root.
  install -m 666 /dev/null "$log"
  am_pod_exec_as agent "${UID_OF[$target]}" timeout -k 5 $((BENCH_SECONDS + 30)) \
    "${LOAD_WRAP[@]}" h2load --h1 -t 1 --log-file="$log" "$@"
}

# run_rate TARGET SECONDS MODE: keep-alive at BENCH_RATE req/s (lib.sh's
# bench_run_rate) in the agent pod as TARGET's UID.
run_rate() {
  local target=$1
  BENCH_RATE_EXEC=(am_pod_exec_as agent "${UID_OF[$target]}")
  bench_run_rate "$target" "$2" "$3" "$URL"
  BENCH_RATE_EXEC=()
}

# to_us VALUE: h2load's "123us" / "4.56ms" / "1.2s" in microseconds.
to_us() {
  awk -v v="$1" 'BEGIN {
    n = v + 0
    if (v ~ /us$/) m = 1; else if (v ~ /ms$/) m = 1000; else if (v ~ /s$/) m = 1000000; else m = 1
    printf "%d", n * m
  }'
}

# run_conns TARGET: new connections at BENCH_CONN_RATE per second, one request each.
run_conns() {
  local target=$1
  local raw=$RAW/conns-$target.txt log=$RAW/conns-$target.log
  local n=$((BENCH_CONN_RATE * BENCH_SECONDS))
  ((n <= BENCH_CONN_MAX)) || n=$BENCH_CONN_MAX
  # -r connections every 10 ms rather than all of a second's at once.
  h2load_as "$target" "$log" -n "$n" -c "$n" -r "$((BENCH_CONN_RATE / 100))" --rate-period=10ms \
    -H 'Connection: close' "$URL" >"$raw" 2>&1 || am_die "h2load (new connections, $target) failed; see $raw"
  local secs succeeded failed connect_max p99
  secs=$(awk '/^finished in/ { sub(/s,$/, "", $3); print $3 }' "$raw")
  read -r succeeded failed < <(awk '/^requests:/ { print $8, $10 }' "$raw")
  connect_max=$(to_us "$(awk '/^time for connect:/ { print $5 }' "$raw")")
  p99=$(sort -t$'\t' -k3,3n "$log" | awk -F'\t' '{ v[NR] = $3 } END { print (NR ? v[int((NR * 99 + 99) / 100)] : 0) }')
  [[ -n $secs && -n $succeeded ]] || am_die "cannot read h2load's summary in $raw"
  R[$target.conns.rate]=$(awk -v n="$succeeded" -v s="$secs" 'BEGIN { printf "%d", (s > 0 ? n / s : 0) }')
  R[$target.conns.n]=$succeeded
  R[$target.conns.connect_max]=$connect_max
  R[$target.conns.p99]=$p99
  R[$target.conns.errors]=$failed
  TOTAL_ERRORS=$((TOTAL_ERRORS + failed))
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
START_TIME=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
if ((BENCH_WARMUP > 0)); then
  for t in "${TARGETS[@]}"; do
    am_log "warm-up $t (${BENCH_WARMUP} s)"
    run_rate "$t" "$BENCH_WARMUP" burst
  done
fi
for t in "${TARGETS[@]}"; do
  am_log "keep-alive at $BENCH_RATE req/s over $BENCH_RATE_CONNS connections: $t (${BENCH_SECONDS} s)"
  run_rate "$t" "$BENCH_SECONDS" paced
done
for t in "${TARGETS[@]}"; do
  am_log "keep-alive at $BENCH_RATE req/s in bursts of $BENCH_RATE_CONNS: $t (${BENCH_SECONDS} s)"
  run_rate "$t" "$BENCH_SECONDS" burst
done
for t in "${TARGETS[@]}"; do
  am_log "new connections at $BENCH_CONN_RATE/s (at most $BENCH_CONN_MAX): $t"
  run_conns "$t"
done
kill -0 "$SIDECAR_PID" 2>/dev/null || am_die "the sidecar died during the load; see its log"
RSS_LOAD_KIB=$(am_rss_kib "$SIDECAR_PID")
RSS_PEAK_KIB=$(am_hwm_kib "$SIDECAR_PID")
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# --- report ----------------------------------------------------------------------------
mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }
signed() { bench_signed "$1"; }
ms() { awk -v u="$1" 'BEGIN { printf "%.1f", u / 1000 }'; }

report() {
  echo "agentmesh sidecar benchmark  ($START_TIME)"
  echo "  git:        $(git -C "$AM_ROOT" rev-parse --short HEAD 2>/dev/null || echo 'no commit')$(git -C "$AM_ROOT" status --porcelain 2>/dev/null | grep -q . && echo ' (dirty)')"
  echo "  binaries:   $PROXY_BIN, $INIT_BIN"
  echo "  machine:    $NCPU CPUs; load average before $LOAD_BEFORE, after $LOAD_AFTER"
  echo "  placement:  $PLACEMENT"
  echo "  request:    GET http://api:8080/1k.txt from pod agent to nginx in pod api (1 worker)"
  echo "  direct:     load generator as UID 1501, let through by agentmesh-init's rules"
  echo "  sidecar:    load generator as UID 1000, captured to 127.0.0.1:16001; route sets one header"
  echo "  loads:      ${BENCH_SECONDS} s each after a ${BENCH_WARMUP} s warm-up; h2load $(h2load --version 2>&1 | awk '{print $NF}')"
  echo
  printf '%-8s | %-27s | %s\n' "" "keep-alive, ${BENCH_RATE} req/s paced" "new connections (Connection: close), target ${BENCH_CONN_RATE}/s"
  printf '%-8s | %8s %8s %8s | %8s %8s %11s %8s %6s\n' target "p50 us" "p99 us" "req/s" conns "conns/s" "connect max" "p99 us" errors
  printf -- '---------+-----------------------------+--------------------------------------------------\n'
  local t
  for t in "${TARGETS[@]}"; do
    printf '%-8s | %8s %8s %8s | %8s %8s %8s ms %8s %6s\n' "$t" \
      "${R[$t.rate.p50]}" "${R[$t.rate.p99]}" "${R[$t.rate.rps]}" \
      "${R[$t.conns.n]}" "${R[$t.conns.rate]}" "$(ms "${R[$t.conns.connect_max]}")" "${R[$t.conns.p99]}" \
      $((R[$t.rate.errors] + R[$t.conns.errors]))
  done
  echo
  local added_p50 added_p99
  added_p50=$((${R[sidecar.rate.p50]} - ${R[direct.rate.p50]}))
  added_p99=$((${R[sidecar.rate.p99]} - ${R[direct.rate.p99]}))
  echo "added by the sidecar (keep-alive, fixed rate, paced):  p50 $(signed "$added_p50") us, p99 $(signed "$added_p99") us"
  bench_report_fixed_rate req/s "${TARGETS[@]}"
  for t in "${TARGETS[@]}"; do
    if ((R[$t.conns.connect_max] > 100000)); then
      echo "STALL: $t: a connect took $(ms "${R[$t.conns.connect_max]}") ms (over 100 ms)"
    fi
  done
  echo
  echo "sidecar process"
  echo "  RSS idle:        $(mib "$RSS_IDLE_KIB") ($SIDECAR_THREADS threads)"
  echo "  RSS after load:  $(mib "$RSS_LOAD_KIB") (peak $(mib "$RSS_PEAK_KIB"))"
}

report | tee "$OUT_DIR/sidecar-results.txt"
am_log "results written to $OUT_DIR/sidecar-results.txt (raw output in $RAW/)"
if ((TOTAL_ERRORS > 0)); then
  am_die "$TOTAL_ERRORS requests failed during the loads; the figures above are not trustworthy (see $RAW/)"
fi

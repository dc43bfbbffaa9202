# shellcheck shell=bash
# Pods as network namespaces, for scripts/sidecar-demo.sh and e2e/bench/sidecar.sh: the
# shell twin of the Rust harness in e2e/src/lib.rs, on the same plan. A switch namespace
# holds a bridge; each pod is a namespace with a veth into it, an IPv4 address in
# 198.18.0.0/15 and an IPv6 address in 2001:2::/48, no route out, and every pod name in
# /etc/netns/<ns>/hosts (which `ip netns exec` mounts over /etc/hosts).
#
# Source it after scripts/lib.sh, call am_pods_init once, and am_pods_cleanup on exit
# (it deletes exactly the namespaces and hosts files this script made). Needs root and
# iproute2.

AM_PODS_ID=""
# Pod name -> namespace, IPv4 address, IPv6 address (read by the sourcing scripts).
# shellcheck disable=SC2034
declare -A AM_POD_NS=() AM_POD_V4=() AM_POD_V6=()
# Extra "name address" lines for every pod's hosts file.
AM_PODS_HOSTS=""
AM_PODS_SUBNET=0

# am_pods_init TAG: create the switch namespace (named am<TAG><4 hex>-sw) with its bridge.
am_pods_init() {
  [[ $(id -u) -eq 0 ]] || am_die "pods need root (network namespaces, iptables)"
  am_need ip setpriv timeout
  AM_PODS_ID="am${1:0:4}$(printf '%04x' "$RANDOM")"
  AM_PODS_SUBNET=$((16#${AM_PODS_ID: -2}))
  ip netns add "$AM_PODS_ID-sw"
  ip -n "$AM_PODS_ID-sw" link set lo up
  ip -n "$AM_PODS_ID-sw" link add br0 type bridge
  ip -n "$AM_PODS_ID-sw" link set br0 up
}

# am_pod_add NAME: a pod on the switch; its addresses land in AM_POD_V4/AM_POD_V6[NAME].
am_pod_add() {
  local name=$1 k=$((${#AM_POD_NS[@]} + 2))
  local ns="$AM_PODS_ID-$name" host_end="${AM_PODS_ID}h$k" pod_end="${AM_PODS_ID}p$k"
  local v4="198.18.$AM_PODS_SUBNET.$k" v6
  v6=$(printf '2001:2::%x:%x' "$AM_PODS_SUBNET" "$k")
  ip netns add "$ns"
  AM_POD_NS[$name]=$ns
  ip -n "$ns" link set lo up
  ip link add "$host_end" type veth peer name "$pod_end"
  ip link set "$host_end" netns "$AM_PODS_ID-sw"
  ip link set "$pod_end" netns "$ns"
  ip -n "$AM_PODS_ID-sw" link set "$host_end" master br0
  ip -n "$AM_PODS_ID-sw" link set "$host_end" up
  ip -n "$ns" link set "$pod_end" name eth0
  ip -n "$ns" addr add "$v4/24" dev eth0
  ip -n "$ns" -6 addr add "$v6/64" dev eth0 nodad
  ip -n "$ns" link set eth0 up
  AM_POD_V4[$name]=$v4
  # shellcheck disable=SC2034 # read by the sourcing scripts
  AM_POD_V6[$name]=$v6
  am_pods_write_hosts
}

# am_pod_add_host NAME ADDRESS: make NAME resolve to ADDRESS in every pod.
am_pod_add_host() {
  AM_PODS_HOSTS+="$2 $1"$'\n'
  am_pods_write_hosts
}

am_pods_write_hosts() {
  local name text
  text=$'127.0.0.1 localhost\n::1 localhost ip6-localhost\n'
  for name in "${!AM_POD_NS[@]}"; do
    text+="${AM_POD_V4[$name]} $name"$'\n'
  done
  text+=$AM_PODS_HOSTS
  for name in "${!AM_POD_NS[@]}"; do
    mkdir -p "/etc/netns/${AM_POD_NS[$name]}"
    printf '%s' "$text" >"/etc/netns/${AM_POD_NS[$name]}/hosts"
  done
}

# am_pod_exec NAME CMD...: run CMD in pod NAME as root.
am_pod_exec() {
  local ns=${AM_POD_NS[$1]}
  shift
  ip netns exec "$ns" "$@"
}

# am_pod_exec_as NAME UID CMD...: run CMD in pod NAME as UID/GID UID with no
# supplementary groups (the way a container runs as a non-root user), HOME=/tmp.
am_pod_exec_as() {
  local ns=${AM_POD_NS[$1]} uid=$2
  shift 2
  HOME=/tmp ip netns exec "$ns" setpriv --reuid="$uid" --regid="$uid" --clear-groups "$@"
}

# am_pod_spawn_as NAME UID LOG CMD...: start CMD in pod NAME as UID in the background,
# output to LOG, tracked for am_cleanup; its PID lands in AM_SPAWNED_PID. (`ip netns
# exec` and `setpriv` exec, so the PID is CMD's own and a signal reaches it.)
am_pod_spawn_as() {
  local ns=${AM_POD_NS[$1]} uid=$2 log=$3
  shift 3
  HOME=/tmp ip netns exec "$ns" setpriv --reuid="$uid" --regid="$uid" --clear-groups "$@" >"$log" 2>&1 &
  AM_SPAWNED_PID=$!
  am_track "$AM_SPAWNED_PID"
}

# am_pods_cleanup: delete every namespace and hosts file made here. Stop the processes
# running in them first (am_cleanup).
am_pods_cleanup() {
  local name
  [[ -n $AM_PODS_ID ]] || return 0
  for name in "${!AM_POD_NS[@]}"; do
    ip netns del "${AM_POD_NS[$name]}" 2>/dev/null || true
    rm -rf "/etc/netns/${AM_POD_NS[$name]:?}"
  done
  ip netns del "$AM_PODS_ID-sw" 2>/dev/null || true
  AM_POD_NS=()
  AM_PODS_ID=""
}

# am_wait_pod_http POD UID URL SECONDS [PID]: poll URL from inside POD as UID until it
# answers 200 (any HTTP status when AM_WAIT_ANY_STATUS=1), for at most SECONDS; give up
# early when PID has exited.
am_wait_pod_http() {
  local pod=$1 uid=$2 url=$3 seconds=$4 pid=${5:-}
  local deadline=$((SECONDS + seconds)) code
  while ((SECONDS < deadline)); do
    code=$(am_pod_exec_as "$pod" "$uid" curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" 2>/dev/null || true)
    [[ $code == 200 ]] && return 0
    [[ ${AM_WAIT_ANY_STATUS:-0} == 1 && $code =~ ^[1-5][0-9][0-9]$ ]] && return 0
    if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
      return 1
    fi
    sleep 0.1
  done
  return 1
}

# am_wait_file_line FILE TEXT SECONDS PID: wait until FILE contains TEXT.
am_wait_file_line() {
  local file=$1 text=$2 seconds=$3 pid=$4
  local deadline=$((SECONDS + seconds))
  while ((SECONDS < deadline)); do
    grep -q "$text" "$file" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# am_start_sidecar POD BIN CONFIG LOG: `BIN --mode sidecar --config CONFIG` as UID/GID
# 1501 in POD (after AM_SERVER_WRAP), with admin, metrics and readiness on the pod's
# loopback at the contract's ports; waits (30 s) until /healthz/ready answers 200. Its
# PID lands in AM_SIDECAR_PID. Run agentmesh-init in POD first.
am_start_sidecar() {
  local pod=$1 bin=$2 config=$3 log=$4
  am_pod_spawn_as "$pod" 1501 "$log" "${AM_SERVER_WRAP[@]}" "$bin" --mode sidecar \
    --config "$config" --no-watch --drain-timeout 1s \
    --admin-addr 127.0.0.1:16000 --metrics-addr 127.0.0.1:16020 --ready-addr 127.0.0.1:16021
  AM_SIDECAR_PID=$AM_SPAWNED_PID
  if ! am_wait_pod_http "$pod" 1000 http://127.0.0.1:16021/healthz/ready 30 "$AM_SIDECAR_PID"; then
    tail -n 40 "$log" >&2 || true
    am_die "the sidecar in pod $pod did not become ready within 30 s"
  fi
}

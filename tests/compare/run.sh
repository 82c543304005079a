#!/usr/bin/env bash
# Measure etcd's lock (3 members) and Serf's membership (3 agents) on loopback, on
# this machine, for the comparison table in README.md. Prints one JSON object.
#
# Needs Debian's packages:   apt-get install etcd-server etcd-client serf
# Run:                       tests/compare/run.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d /dev/shm/ra-compare.XXXXXX)   # etcd's data in memory, as for ra
pids=()
stop() { kill -9 "${pids[@]}" 2>/dev/null || true; wait "${pids[@]}" 2>/dev/null || true; pids=(); }
cleanup() { stop; rm -rf "$work"; }
trap cleanup EXIT

now() { date +%s.%N; }
ms_since() { python3 -c "import sys; print(round((float(sys.argv[2]) - float(sys.argv[1])) * 1000))" "$1" "$2"; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

# ---- etcd: three members, lock service through the JSON gateway
cluster="e1=http://127.0.0.1:23801,e2=http://127.0.0.1:23802,e3=http://127.0.0.1:23803"
for i in 1 2 3; do
  etcd --name "e$i" --data-dir "$work/e$i" \
    --listen-peer-urls "http://127.0.0.1:2380$i" --initial-advertise-peer-urls "http://127.0.0.1:2380$i" \
    --listen-client-urls "http://127.0.0.1:2379$i" --advertise-client-urls "http://127.0.0.1:2379$i" \
    --initial-cluster "$cluster" --initial-cluster-state new --log-level error >"$work/e$i.log" 2>&1 &
  pids+=($!)
done
etcd_pid=${pids[0]}
endpoints=127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793
for _ in $(seq 100); do
  ETCDCTL_API=3 etcdctl --endpoints "$endpoints" endpoint health >/dev/null 2>&1 && break
  sleep 0.1
done
etcd_json=$(python3 "$here/etcd_lock.py" "$endpoints" --seconds 5)
etcd_rss=$(rss_kb "$etcd_pid")
stop

# ---- Serf: three agents; membership read from each agent with `serf members`
# (event handlers are coalesced by Serf, which would add seconds).
serf_agent() { # name bind-port rpc-port [join-port]
  local join=()
  [ -n "${4:-}" ] && join=(-join "127.0.0.1:$4")
  serf agent -node "$1" -bind "127.0.0.1:$2" -rpc-addr "127.0.0.1:$3" "${join[@]}" >"$work/$1.log" 2>&1 &
  pids+=($!)
}
status_of() { # rpc-port node
  serf members -rpc-addr "127.0.0.1:$1" 2>/dev/null | awk -v n="$2" '$1 == n {print $3}'
}
wait_status() { # timeout-seconds node status rpc-ports...
  local deadline=$(( $(date +%s) + $1 )) node=$2 want=$3; shift 3
  while [ "$(date +%s)" -le "$deadline" ]; do
    local all=1 port
    for port in "$@"; do
      [ "$(status_of "$port" "$node")" = "$want" ] || { all=0; break; }
    done
    if [ "$all" = 1 ]; then now; return; fi
    sleep 0.01
  done
  echo "timeout"; return 1
}
serf_agent a 17946 17373
sleep 0.5
serf_agent b 17947 17374 17946
serf_agent c 17948 17375 17946
wait_status 10 c alive 17373 17374 17375 >/dev/null
sleep 1
serf_a=${pids[0]}
t0=$(now); serf_agent d 17949 17376 17946
t1=$(wait_status 10 d alive 17373 17374 17375)
join_ms=$(ms_since "$t0" "$t1")
sleep 2
t0=$(now); serf leave -rpc-addr 127.0.0.1:17376 >/dev/null
t1=$(wait_status 10 d left 17373 17374 17375)
leave_ms=$(ms_since "$t0" "$t1")
sleep 2
t0=$(now); { kill -9 "${pids[2]}"; wait "${pids[2]}"; } 2>/dev/null || true
t1=$(wait_status 30 c failed 17373 17374)
crash_ms=$(ms_since "$t0" "$t1")
serf_rss=$(rss_kb "$serf_a")

echo "{\"etcd\": $etcd_json, \"etcd_rss_kb\": $etcd_rss, \"serf\": {\"join_ms\": $join_ms, \"leave_ms\": $leave_ms, \"crash_detect_ms\": $crash_ms, \"rss_kb\": $serf_rss}}"

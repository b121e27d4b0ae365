#!/usr/bin/env bash
# The full drop (examples/drop) against one plain node and against a three-node cluster, in
# one run, alternating, each on a fresh PostgreSQL database: issue 17's overhead target
# (3 nodes on this machine >= 80 % of one node's iterations/s). Each cluster node runs on
# its own port; the drop spreads its users round robin over the three (--base-url list), and
# each node forwards what another owns. Prints the drop's tables per run, and each node's
# forward and poll counters, and a forward's latency measured while the drop runs.
#
#   cargo build --release --bin boxoffice --example drop
#   scripts/cluster_drop.sh [ROUNDS] [DURATION_SECS]
#   QUOTA=0.25 scripts/cluster_drop.sh 2 30   # each node held to a quarter of a core (as root)
#
# QUOTA (cores per node) puts every node, the one and each of the three, in a cgroup of its
# own under the cgroup v1 `cpu` controller (/sys/fs/cgroup/cpu) with that CFS quota, so the
# nodes, not PostgreSQL or the generator (both unlimited), are the bottleneck, as they would
# be on machines of their own (issue 26). The groups are removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-2}
DURATION=${2:-30}
BIN=target/release/boxoffice
DROP=target/release/examples/drop
KEY=cluster-bench-admin-key-at-least-32-bytes-long
PG=postgres://postgres@127.0.0.1:5432
# The documented drop (docs/BENCHMARKS.md), bounded by DURATION; 503s retried with the same key.
ARGS=(--users 20000 --seats 40000 --schedules 40 --concurrency 128 --duration-secs "$DURATION" --retry-503 3)
# Extra flags for every cluster node, e.g. CLUSTER_FLAGS="--workers 1".
read -r -a CLUSTER_FLAGS <<< "${CLUSTER_FLAGS:-}"
QUOTA=${QUOTA:-}
CPU_CGROUPS=/sys/fs/cgroup/cpu
PIDS=()
GROUPS_MADE=()

# Holds the process in a cgroup of its own with QUOTA cores (nothing without QUOTA).
limit() { # pid name
  [ -n "$QUOTA" ] || return 0
  local dir="$CPU_CGROUPS/boxoffice-bench-$2"
  mkdir -p "$dir"
  echo 100000 > "$dir/cpu.cfs_period_us"
  awk "BEGIN{printf \"%d\", $QUOTA * 100000}" > "$dir/cpu.cfs_quota_us"
  echo "$1" > "$dir/cgroup.procs"
  GROUPS_MADE+=("$dir")
}

cleanup() {
  for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  PIDS=()
  for g in "${GROUPS_MADE[@]:-}"; do [ -n "$g" ] && rmdir "$g" 2>/dev/null || true; done
  GROUPS_MADE=()
}
trap cleanup EXIT

fresh_db() {
  psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $1 WITH (FORCE)" >/dev/null
  psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $1" >/dev/null
}

wait_ready() {
  for _ in $(seq 1 600); do
    curl -fs "$1/readyz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "never ready: $1" >&2; exit 1
}

node() { # port database extra-args...
  local port=$1 db=$2; shift 2
  RUST_LOG=error "$BIN" serve --bind "127.0.0.1:$port" --database-url "$PG/$db" \
    --admin-key "$KEY" --max-seats-per-user 4 "$@" >/dev/null 2>&1 &
  PIDS+=($!)
  limit "$!" "$port"
}

# CPU seconds so far of the given pids (utime + stime, 100 ticks a second), and the
# machine's busy and total jiffies.
cpu_of() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
machine() { awk '/^cpu /{print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8}' /proc/stat; }
report_cpu() { # nodes-before nodes-after machine-before machine-after
  local nodes=$(( $2 - $1 )); read -r b0 t0 <<< "$3"; read -r b1 t1 <<< "$4"
  echo "CPU during the drop: nodes $(awk "BEGIN{printf \"%.1f\", $nodes/100}") s; machine busy $(awk "BEGIN{printf \"%.0f\", 100*($b1-$b0)/($t1-$t0)}") %"
}

counters() { # base
  curl -fs "$1/metrics" | grep -E '^boxoffice_(forwards_total|forward_seconds|polls_total|fence_refusals_total|remote_pins_resolved_total|seat_copies_loaded_total)' || true
}

one_node() {
  fresh_db bench_drop_one
  node 18100 bench_drop_one
  wait_ready http://127.0.0.1:18100
  echo "### one node (plain, not cluster mode)"
  local c0 m0; c0=$(cpu_of "${PIDS[@]}"); m0=$(machine)
  "$DROP" --base-url http://127.0.0.1:18100 --admin-key "$KEY" --database-url "$PG/bench_drop_one" "${ARGS[@]}"
  report_cpu "$c0" "$(cpu_of "${PIDS[@]}")" "$m0" "$(machine)"
  cleanup
}

three_nodes() {
  fresh_db bench_drop_three
  local urls=""
  for i in 0 1 2; do
    local port=$((18200 + i))
    node "$port" bench_drop_three --cluster --node-id "n$i" --advertise-url "http://127.0.0.1:$port" "${CLUSTER_FLAGS[@]}"
    wait_ready "http://127.0.0.1:$port"
    urls="${urls:+$urls,}http://127.0.0.1:$port"
  done
  echo "### three nodes (cluster mode, one database; flags: ${CLUSTER_FLAGS[*]:-none})"
  # Under the drop's load: a forwarded request against one sent straight to the wallets'
  # owner (n0 started first and holds every wallet bucket), interleaved.
  (sleep 4; python3 scripts/forward_latency.py 18200 18201 3000 > /tmp/forward_under_load.txt 2>&1) &
  local probe=$!
  local c0 m0; c0=$(cpu_of "${PIDS[@]}"); m0=$(machine)
  "$DROP" --base-url "$urls" --admin-key "$KEY" --database-url "$PG/bench_drop_three" "${ARGS[@]}"
  report_cpu "$c0" "$(cpu_of "${PIDS[@]}")" "$m0" "$(machine)"
  wait "$probe" || true
  echo "forward latency under the drop's load:"; cat /tmp/forward_under_load.txt
  for i in 0 1 2; do echo "n$i:"; counters "http://127.0.0.1:$((18200 + i))"; done
  cleanup
}

for round in $(seq 1 "$ROUNDS"); do
  echo "## round $round ($(date -u +%H:%M:%S) UTC, commit $(git rev-parse --short HEAD), quota per node: ${QUOTA:-none})"
  one_node
  three_nodes
done

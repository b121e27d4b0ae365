#!/usr/bin/env bash
# Issue 17's waiting-room target: with three nodes, the share of polls answered without
# asking the queue's owner, and the CPU per poll. Node n0 starts first and holds the queue;
# the line's users join through n1, and then poll it flat out for POLL_SECS: n1 answers from
# n0's snapshot what it can place, and forwards the rest. The CPU of all three nodes over
# the poll phase is divided by the polls answered.
#
#   cargo build --release --bin boxoffice --example waiting_room
#   scripts/cluster_polls.sh [USERS] [POLL_SECS]
set -euo pipefail
cd "$(dirname "$0")/.."
USERS=${1:-20000}
POLL_SECS=${2:-10}
BIN=target/release/boxoffice
LOAD=target/release/examples/waiting_room
KEY=cluster-bench-admin-key-at-least-32-bytes-long
DB=postgres://postgres@127.0.0.1:5432/bench_polls
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS bench_polls WITH (FORCE)" >/dev/null
psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE bench_polls" >/dev/null
"$BIN" migrate --database-url "$DB" >/dev/null
"$LOAD" --prepare-only --bulk-users --users "$USERS" --database-url "$DB"
for i in 0 1 2; do
  port=$((18300 + i))
  RUST_LOG=error "$BIN" serve --bind "127.0.0.1:$port" --database-url "$DB" --admin-key "$KEY" \
    --cluster --node-id "n$i" --advertise-url "http://127.0.0.1:$port" \
    --max-active 100 --idle-timeout-secs 3600 >/dev/null 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 600); do curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
done
# Twice: the first run's first poll of each token goes to the owner (n1 learns the waiter
# from the answer); the second run (the same waiters join again: 200, their tokens) is the
# steady state of a line whose waiters poll for minutes.
for run in first second; do
  echo "## $run run, $(date -u +%H:%M:%S) UTC, commit $(git rev-parse --short HEAD): $USERS waiters, polls to n1"
  "$LOAD" --base-url http://127.0.0.1:18301 --database-url "$DB" --bulk-users --users "$USERS" \
    --poll-secs "$POLL_SECS" --poll-concurrency 64 --cpu-pids "$(IFS=,; echo "${PIDS[*]}")"
  for i in 0 1 2; do
    echo "n$i:"; curl -fs "http://127.0.0.1:$((18300 + i))/metrics" | grep -E '^boxoffice_(polls_total|forwards_total)' || true
  done
done

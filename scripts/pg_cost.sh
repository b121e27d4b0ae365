#!/usr/bin/env bash
# PostgreSQL's cost per durable hold over a window of a running load (issue 30), by /proc
# accounting: the CPU (user + system) of every `postgres` process, plus what the postmaster
# reaped from backends that ended in the window (its cutime + cstime), the WAL written
# (`pg_current_wal_lsn()` difference), and the reservations committed in the database the
# `boxoffice` connections use, all over the same SECONDS.
#
#   target/release/examples/holds --systems boxoffice --seconds 12 &
#   sleep 4; scripts/pg_cost.sh 6
#
# Prints one line: holds, PostgreSQL CPU µs per hold, WAL bytes per hold.
set -euo pipefail
seconds=${1:?usage: pg_cost.sh SECONDS [DATABASE]}
PG=${PG:-"-h 127.0.0.1 -U postgres"}
db=${2:-$(psql $PG -XAtqc "SELECT datname FROM pg_stat_activity
          WHERE application_name = 'boxoffice' AND datname IS NOT NULL LIMIT 1" postgres)}
[ -n "$db" ] || { echo "no boxoffice connection found" >&2; exit 1; }
tick=$(getconf CLK_TCK)

# Sum of utime+stime of every postgres process, and cutime+cstime of the postmaster(s).
cpu_ticks() {
  local total=0 pid stat rest
  for pid in $(pgrep -x postgres); do
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
    rest=${stat##*) }            # fields from 3 (state) on; comm may hold spaces
    set -- $rest
    total=$((total + ${12} + ${13}))          # utime, stime (fields 14, 15)
    # The postmaster (its parent is not postgres) also counts the backends it reaped.
    if [ "$(cat "/proc/$2/comm" 2>/dev/null)" != postgres ]; then
      total=$((total + ${14} + ${15}))        # cutime, cstime (fields 16, 17)
    fi
  done
  echo "$total"
}
count() { psql $PG -XAtqc "SELECT count(*) FROM reservations" "$db"; }
lsn() { psql $PG -XAtqc "SELECT pg_current_wal_lsn()" postgres; }

h0=$(count); w0=$(lsn); c0=$(cpu_ticks)
sleep "$seconds"
c1=$(cpu_ticks); w1=$(lsn); h1=$(count)
wal=$(psql $PG -XAtqc "SELECT pg_wal_lsn_diff('$w1', '$w0')::bigint" postgres)
holds=$((h1 - h0))
[ "$holds" -gt 0 ] || { echo "no hold committed in the window" >&2; exit 1; }
awk -v h="$holds" -v c=$((c1 - c0)) -v t="$tick" -v w="$wal" -v s="$seconds" 'BEGIN {
  printf "holds %d (%.0f/s)  postgres CPU %.1f us/hold  WAL %.0f bytes/hold\n",
         h, h / s, c / t * 1e6 / h, w / h }'

#!/usr/bin/env bash
# PostgreSQL's commit and row ceilings on this machine (docs/SCALING.md): 1-row, 64-row and
# 512-row INSERT transactions through pgbench, 10 s each, into a throwaway database.
set -euo pipefail
PG=${PG:-"-h 127.0.0.1 -U postgres"}
dir=$(mktemp -d)
trap 'rm -rf "$dir"; psql $PG -qc "DROP DATABASE IF EXISTS pg_ceiling" postgres' EXIT
psql $PG -qc "DROP DATABASE IF EXISTS pg_ceiling" -c "CREATE DATABASE pg_ceiling" postgres
psql $PG -qc "CREATE TABLE t (id BIGSERIAL PRIMARY KEY, v BIGINT NOT NULL)" pg_ceiling
echo 'INSERT INTO t (v) VALUES (1);' > "$dir/one.sql"
echo 'INSERT INTO t (v) SELECT g FROM generate_series(1, 64) g;' > "$dir/b64.sql"
echo 'INSERT INTO t (v) SELECT g FROM generate_series(1, 512) g;' > "$dir/b512.sql"
for spec in "one.sql 1" "one.sql 16" "one.sql 64" "b64.sql 8" "b64.sql 64" "b512.sql 8"; do
  set -- $spec
  echo "== $1, $2 clients"
  pgbench $PG -n -f "$dir/$1" -c "$2" -j 2 -T 10 pg_ceiling 2>&1 | grep -E '^tps|latency average'
done

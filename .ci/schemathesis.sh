#!/usr/bin/env bash
# Fuzzes the running service from its own OpenAPI document: zero 5xx, every response (errors
# included) must match the documented status codes and schemas (the envelope).
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check "schemathesis==4.32.5"
cargo build --quiet

work=$(mktemp -d)
port=18765
"${CARGO_TARGET_DIR:-target}/debug/boxoffice" serve --bind "127.0.0.1:$port" --database-url "sqlite://$work/fuzz.db" \
  --demo --admin-key fuzz >"$work/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT
ready=no
for _ in $(seq 1 60); do
  if curl -fs "http://127.0.0.1:$port/readyz" >/dev/null; then ready=yes; break; fi
  sleep 0.5
done
if [ "$ready" != yes ]; then
  echo "the service did not become ready:"; cat "$work/server.log"; exit 1
fi

# The stateful phase is left out: schemathesis 4.32 fails on integer header values there.
# The CLI sits beside the interpreter that installed it (shims may not know it yet).
st=$(python3 -c 'import os, sys; print(os.path.join(os.path.dirname(sys.executable), "st"))')
"$st" run "http://127.0.0.1:$port/openapi.json" \
  --checks not_a_server_error,response_schema_conformance,status_code_conformance \
  --phases examples,coverage,fuzzing --max-examples 20 -H "X-Admin-Key: fuzz"

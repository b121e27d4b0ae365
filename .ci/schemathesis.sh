#!/usr/bin/env bash
# Fuzzes the running service from its own OpenAPI document with every check and every phase
# (examples, coverage, fuzzing, stateful), holding a real ACTIVE TOKEN-ID: zero failures means
# no 5xx, every answer (errors included) documented, every request the document calls valid
# accepted and every invalid one refused, and every 405 carrying `Allow`.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check "schemathesis==4.32.5"
cargo build --quiet

work=$(mktemp -d)
port=${PORT:-18765}
base="http://127.0.0.1:$port"
admin_key="fuzz-admin-key-that-is-long-enough-000"
server=
trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT

# Starts the service on a fresh database with the given extra flags, and prepares it through
# the API, as a client would: a user (id 1, the smallest id the document allows, so the
# fuzzer's boundary values name it), a concert open for booking (concert 1, schedule 1, seats
# 1-50), and that user's token once ACTIVE. With a bearer (jwt mode) every user-scoped call
# carries it. Leaves the parameters for the fuzzer in $work/schemathesis.toml.
start() {
  local name=$1; shift
  "${CARGO_TARGET_DIR:-target}/debug/boxoffice" serve --bind "127.0.0.1:$port" \
    --database-url "${FUZZ_DATABASE_URL:-sqlite://$work/$name.db}" --admin-key "$admin_key" "$@" \
    >"$work/server-$name.log" 2>&1 &
  server=$!
  local ready=no
  for _ in $(seq 1 60); do
    if curl -fs "$base/readyz" >/dev/null; then ready=yes; break; fi
    sleep 0.5
  done
  if [ "$ready" != yes ]; then
    echo "the service did not become ready:"; cat "$work/server-$name.log"; exit 1
  fi
  json() { sed -n "s/.*\"$1\":\"\{0,1\}\([^,\"}]*\).*/\1/p"; }
  admin() { curl -fs -XPOST "$base$1" -H "X-Admin-Key: $admin_key" -H 'Content-Type: application/json' -d "$2"; }
  user=$(admin /v1/admin/users '{"name":"fuzzer","balance":100000000}' | json userId)
  seats=$(seq -s, 1 50 | sed 's/\([0-9]*\)/{"seatNumber":\1,"price":1000}/g')
  admin /v1/admin/concerts "{\"name\":\"fuzz\",\"schedules\":[{\"concertAt\":\"2099-01-01T20:00:00\",\
\"reservationAt\":\"2020-01-01T00:00:00\",\"seats\":[$seats]}]}" >/dev/null
  local authorization=()
  if [ -n "${bearer:-}" ]; then authorization=(-H "Authorization: Bearer $bearer"); fi
  token=$(curl -fs -XPOST "$base/v1/queue-tokens/users/$user" "${authorization[@]}" | json tokenId)
  local status=
  for _ in $(seq 1 50); do
    status=$(curl -fs "$base/v1/queue-status/users/$user" -H "TOKEN-ID: $token" "${authorization[@]}" | json status)
    if [ "$status" = ACTIVE ]; then break; fi
    sleep 0.1
  done
  if [ "$status" != ACTIVE ]; then
    echo "token $token of user $user never became ACTIVE ($status)"; exit 1
  fi
  # The key, the token and the bearer are parameter values, not `-H` headers: a header added
  # to every request replaces the fuzzer's invalid values after it chose them, and a request
  # it meant as invalid is then (rightly) accepted.
  {
    echo '[parameters]'
    echo "\"header.X-Admin-Key\" = \"$admin_key\""
    echo "\"header.TOKEN-ID\" = \"$token\""
    if [ -n "${bearer:-}" ]; then echo "\"header.Authorization\" = \"Bearer $bearer\""; fi
  } >"$work/schemathesis.toml"
}

stop() {
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
}

mkdir -p "$work/hooks"
cat >"$work/hooks/boxoffice_hooks.py" <<'PY'
import json
import re

import schemathesis
from schemathesis.specs.openapi.checks import positive_data_acceptance, use_after_free

STATE_RULES = {
    "reservation_failed",
    "seat_limit_exceeded",
    "reservation_not_open",
    "reservation_expired",
    "not_enough_balance",
    "invalid_recharge_amount",
    "idempotency_key_reused",
}
CONCERT_RULES = re.compile(
    r"^(seat number -?\d+ appears twice|reservationAt must not be after concertAt"
    r"|(concertAt|reservationAt) must look like 2024-07-04T10:00:00)$"
)
# Rules a document cannot state: a date in the past, or one the calendar does not have.
OPENING_RULES = re.compile(
    r"^(opensAt must be in the future|opensAt must look like 2024-07-04T10:00:00)$"
)
# The waiting list's seats: up to --max-seats-per-user, a setting the document cannot state.
WAITLIST_RULES = re.compile(r"^seats must be 1 to \d+$")
RULES_BY_OPERATION = {
    "POST /v1/admin/concerts": CONCERT_RULES,
    "POST /v1/concerts/{concertId}/schedules/{scheduleId}/waitlist/users/{userId}": WAITLIST_RULES,
    "PUT /v1/admin/queue/opening": OPENING_RULES,
}


def refused_by_a_rule(response, case):
    try:
        body = json.loads(response.text)
    except ValueError:
        return False
    if body.get("error") in STATE_RULES:
        return True
    rules = RULES_BY_OPERATION.get(case.operation.label)
    return (
        rules is not None
        and body.get("error") == "invalid_request"
        and rules.match(body.get("message", "")) is not None
    )


@schemathesis.check
def positive_data_acceptance_beyond_state_rules(ctx, response, case):
    try:
        return positive_data_acceptance(ctx, response, case)
    except AssertionError:
        if refused_by_a_rule(response, case):
            return None
        raise


# DELETE /v1/reservations/{id} is the seed's cancel, not an erasure: API.md documents the
# reservation staying readable as CANCELLED (its seats free again). Any other read after a
# DELETE, or a cancelled reservation in any other state, is still a failure.
def cancelled_reservation(response, case):
    if case.operation.label != "GET /v1/reservations/{reservationId}":
        return False
    try:
        return json.loads(response.text).get("reservationStatus") == "CANCELLED"
    except ValueError:
        return False


@schemathesis.check
def use_after_free_beyond_cancel(ctx, response, case):
    try:
        return use_after_free(ctx, response, case)
    except AssertionError:
        if cancelled_reservation(response, case):
            return None
        raise
PY

# The CLI sits beside the interpreter that installed it (shims may not know it yet).
st=$(python3 -c 'import os, sys; print(os.path.join(os.path.dirname(sys.executable), "st"))')
fuzz() {
  PYTHONPATH="$work/hooks" SCHEMATHESIS_HOOKS=boxoffice_hooks \
    "$st" --config-file "$work/schemathesis.toml" run "$base/openapi.json" \
    --checks all --exclude-checks positive_data_acceptance,use_after_free \
    --phases examples,coverage,fuzzing,stateful --max-examples "${MAX_EXAMPLES:-20}" \
    --exclude-path /v1/admin/live
}

# The seed's mode: users named by the id in the path.
echo "== schemathesis: --auth none"
start seed
fuzz
stop

# jwt mode (API.md §8): the fuzzer holds user 1's bearer; every other user's route answers 403
# and every bearer it mangles 401, each as documented. Users may recharge with their bearer.
echo "== schemathesis: --auth jwt"
secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
bearer=$(cargo run --quiet --example mint_token -- --user 1 --secret "$secret" --ttl-secs 7200)
start jwt --auth jwt --jwt-secret "$secret" --user-recharge
fuzz
stop

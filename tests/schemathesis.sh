#!/usr/bin/env bash
# Fuzzes the running server against its own OpenAPI document with schemathesis:
# no 5xx, and no response that contradicts the document. Bounded: a fixed seed
# and a fixed number of examples per operation. Needs target/debug/portcullis
# (built by `cargo test`) and `pip install schemathesis`.
#
# `positive_data_acceptance` is left out: the SPEC answers some schema-valid
# bodies with a documented 400 on purpose (a weak password, an unknown reset
# token, an empty grant_type), which that check counts as a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=target/debug/portcullis
work=$(mktemp -d)
pid=""
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

export PORTCULLIS_PASSWORDS__ARGON2_MEMORY_KIB=1024
export PORTCULLIS_PASSWORDS__ARGON2_ITERATIONS=1
password='a long fuzzing admin passphrase'
echo "$password" | "$bin" user add --email fuzz@example.com --admin --password-stdin --data-dir "$work/data" >/dev/null

"$bin" --bind 127.0.0.1:0 --data-dir "$work/data" 2>"$work/log" &
pid=$!
addr=""
for _ in $(seq 1 200); do
    addr=$(grep -o 'address=[0-9.:]*' "$work/log" | head -n 1 | cut -d= -f2 || true)
    [ -n "$addr" ] && break
    sleep 0.05
done
[ -n "$addr" ] || { echo "server did not start"; cat "$work/log"; exit 1; }

token=$(curl -sf "http://$addr/auth/login" -H 'content-type: application/json' \
    -d "{\"email\":\"fuzz@example.com\",\"password\":\"$password\"}" \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')

schemathesis run "http://$addr/openapi.json" \
    -H "Authorization: Bearer $token" \
    --max-examples "${SCHEMATHESIS_EXAMPLES:-25}" --seed 1 \
    --checks all --exclude-checks positive_data_acceptance

#!/usr/bin/env bash
# Property-based test of the HTTP API against its own OpenAPI document (issue 6).
#
# Starts `agentlab demo` (the real service with its built-in Telegram simulator
# and test agent) from the debug build on a temporary directory and port 0, with
# an admin token, then runs schemathesis (PyPI: pip install schemathesis) against
# GET /api/openapi.json with the checks `not_a_server_error` (no 5xx for any
# input, except a documented 503) and `response_schema_conformance` (every
# answer matches the documented schema). `/api/restart` is left out: it restarts
# the service under test. Exits 0 with a message when schemathesis is missing
# (1 with CI set: in CI nothing may skip).
#
# Environment: MAX_EXAMPLES (default 30 per operation), MAX_TIME (default 120 s
# for the whole run), CHECKS (default the two above; `all` for every check),
# SEED (optional, for a reproducible run), AGENTLAB_BIN (a built binary to use
# instead of building the debug one; `cargo test` sets it).
set -euo pipefail

cd "$(dirname "$0")/.."
MAX_EXAMPLES="${MAX_EXAMPLES:-30}"
MAX_TIME="${MAX_TIME:-120}"
CHECKS="${CHECKS:-not_a_server_error,response_schema_conformance}"

if ! command -v schemathesis >/dev/null; then
    # In CI nothing may skip.
    if [[ -n "${CI:-}" && "${CI}" != "false" ]]; then
        echo "schemathesis is not installed (pip install schemathesis)" >&2
        exit 1
    fi
    echo "schemathesis is not installed (pip install schemathesis); skipping"
    exit 0
fi

if [[ -n "${AGENTLAB_BIN:-}" ]]; then
    BIN="$AGENTLAB_BIN"
else
    cargo build --bin agentlab >&2
    BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/agentlab"
fi
DIR="$(mktemp -d)"
mkfifo "$DIR/stdin"
TOKEN="schemathesis-$(date +%s%N)"

AGENTLAB_ADMIN_TOKEN="$TOKEN" "$BIN" demo --data-dir "$DIR" --port 0 \
    <"$DIR/stdin" >"$DIR/demo.out" 2>&1 &
PID=$!
# Hold the demo's stdin open; closing it (at exit) ends the demo cleanly.
exec 3>"$DIR/stdin"
cleanup() {
    exec 3>&-
    for _ in $(seq 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    kill "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT

ADDR=""
for _ in $(seq 300); do
    if [[ -s "$DIR/data/agentlab.addr" ]]; then
        ADDR="$(cat "$DIR/data/agentlab.addr")"
        if curl -fs "http://$ADDR/readyz" >/dev/null 2>&1; then break; fi
    fi
    sleep 0.1
done
[[ -n "$ADDR" ]] && curl -fs "http://$ADDR/readyz" >/dev/null \
    || { echo "the service did not start:" >&2; cat "$DIR/demo.out" >&2; exit 1; }

seed=()
[[ -z "${SEED:-}" ]] || seed=(--seed "$SEED")
status=0
schemathesis --config-file tests/schemathesis.toml run "http://$ADDR/api/openapi.json" \
    --checks "$CHECKS" \
    --max-examples "$MAX_EXAMPLES" \
    --max-time "$MAX_TIME" \
    --request-timeout 10 \
    --header "Authorization: Bearer $TOKEN" \
    --exclude-path /api/restart \
    --no-color \
    "${seed[@]}" || status=$?
if ! kill -0 "$PID" 2>/dev/null; then
    echo "the service died during the run:" >&2
    tail -50 "$DIR/demo.out" >&2
    exit 1
fi
exit "$status"

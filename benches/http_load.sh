#!/usr/bin/env bash
# Load test of the HTTP API (issue 6): GET /health and GET /api/bot/{id}/status
# at 1, 16 and 64 connections, from a second process (wrk) on loopback.
#
# Starts `agentlab demo` (the real service with its built-in Telegram simulator
# and test agent) from the release build on a temporary directory and port 0,
# then prints a Markdown table: requests/s, p50, p99. Needs `wrk`
# (Debian: apt-get install wrk).
#
# Environment: DURATION (default 10s per run), CONNECTIONS (default "1 16 64"),
# AGENTLAB_BIN (a built binary to load instead of building the release one).
set -euo pipefail

cd "$(dirname "$0")/.."
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-1 16 64}"

if ! command -v wrk >/dev/null; then
    echo "wrk is not installed (apt-get install wrk)" >&2
    exit 2
fi

if [[ -n "${AGENTLAB_BIN:-}" ]]; then
    BIN="$AGENTLAB_BIN"   # e.g. an older build, for a side-by-side baseline
else
    cargo build --release --bin agentlab >&2
    BIN="$PWD/target/release/agentlab"
fi
DIR="$(mktemp -d)"
mkfifo "$DIR/stdin"

"$BIN" demo --data-dir "$DIR" --port 0 <"$DIR/stdin" >"$DIR/demo.out" 2>&1 &
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
[[ -n "$ADDR" ]] || { echo "the service did not start:" >&2; cat "$DIR/demo.out" >&2; exit 1; }

echo "| route | connections | requests/s | p50 | p99 |"
echo "|---|---:|---:|---:|---:|"
for route in /health /api/bot/DEMO/status; do
    curl -fs "http://$ADDR$route" >/dev/null || { echo "$route does not answer 200" >&2; exit 1; }
    for c in $CONNECTIONS; do
        threads=$(( c < 2 ? 1 : 2 ))
        out="$(wrk -t"$threads" -c"$c" -d"$DURATION" --latency "http://$ADDR$route")"
        rps="$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' <<<"$out")"
        p50="$(awk '$1 == "50%" {print $2}' <<<"$out")"
        p99="$(awk '$1 == "99%" {print $2}' <<<"$out")"
        errors="$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out")"
        [[ -z "$errors" ]] || echo "warning: $route c=$c: $errors" >&2
        echo "| \`GET $route\` | $c | $rps | $p50 | $p99 |"
    done
done

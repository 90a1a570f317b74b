#!/usr/bin/env bash
# A throwaway PostgreSQL server for canny's ledger tests: loopback only, in a temp dir.
#
#   scripts/pg-test-server.sh run CMD [ARGS...]   start, run CMD with CANNY_TEST_POSTGRES_DSN set, stop
#   eval "$(scripts/pg-test-server.sh start)"     start; prints `export` lines (DSN and the server dir)
#   scripts/pg-test-server.sh stop [DIR]          stop the server in DIR (default $CANNY_PG_TEST_DIR), delete DIR
#
# Example:  scripts/pg-test-server.sh run .venv/bin/pytest tests/test_ledger_contract.py
#
# `start --durable` / `run --durable CMD` (or PGTEST_DURABLE=1) start a production-like server
# instead: fsync=on, synchronous_commit=on, full_page_writes=on (what benchmarks/bench_budget.py
# measures against; see docs/scale.md).
#
# The server listens on 127.0.0.1 on a free port, with a random password (scram-sha-256),
# fsync off (it is disposable). As root it runs as the `postgres` user (initdb refuses root).
# If no PostgreSQL binaries are found and we are root, `apt-get install -y postgresql` runs
# first. Environment: PG_BIN (bin dir), PGTEST_PORT (port), PGTEST_DB (database, canny_test).
# A second database, DB_ascii, uses the SQL_ASCII server encoding (as initdb in the C locale
# makes it); its DSN is exported as CANNY_TEST_POSTGRES_ASCII_DSN.
set -euo pipefail

log() { printf 'pg-test-server: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

find_bin() {
    if [[ -n "${PG_BIN:-}" && -x "$PG_BIN/initdb" ]]; then echo "$PG_BIN"; return; fi
    local dir
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        [[ -x "$dir/initdb" ]] && { echo "$dir"; return; }
    done
    if command -v pg_config >/dev/null 2>&1 && [[ -x "$(pg_config --bindir)/initdb" ]]; then
        pg_config --bindir; return
    fi
    command -v initdb >/dev/null 2>&1 && { dirname "$(command -v initdb)"; return; }
    return 1
}

ensure_bin() {
    local bin
    if bin=$(find_bin); then echo "$bin"; return; fi
    [[ $(id -u) -eq 0 ]] || die "no PostgreSQL binaries (initdb) found; install postgresql or set PG_BIN"
    command -v apt-get >/dev/null 2>&1 || die "no PostgreSQL binaries and no apt-get; install postgresql or set PG_BIN"
    log "initdb not found: installing postgresql with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2
    bin=$(find_bin) || die "postgresql installed but initdb still not found"
    echo "$bin"
}

# Run a command as the server's owner: `postgres` when we are root, ourselves otherwise.
as_owner() {
    if [[ $(id -u) -eq 0 ]]; then
        if command -v runuser >/dev/null 2>&1; then runuser -u postgres -- "$@"; else su postgres -s /bin/sh -c "$(printf '%q ' "$@")"; fi
    else
        "$@"
    fi
}

free_port() {
    if [[ -n "${PGTEST_PORT:-}" ]]; then echo "$PGTEST_PORT"; return; fi
    local py
    for py in python3 python; do
        if command -v "$py" >/dev/null 2>&1; then
            "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
            return
        fi
    done
    echo $((20000 + RANDOM % 20000))
}

start() {
    local bin dir port password db dsn
    bin=$(ensure_bin)
    if [[ $(id -u) -eq 0 ]] && ! id postgres >/dev/null 2>&1; then
        log "creating system user postgres"
        useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
    fi
    dir=$(mktemp -d "${TMPDIR:-/tmp}/canny-pg.XXXXXX")
    chmod 0755 "$dir"
    [[ $(id -u) -eq 0 ]] && chown postgres: "$dir"
    port=$(free_port)
    db=${PGTEST_DB:-canny_test}
    password=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
    printf '%s\n' "$password" >"$dir/pwfile"
    chmod 0600 "$dir/pwfile"
    [[ $(id -u) -eq 0 ]] && chown postgres: "$dir/pwfile"
    log "initdb in $dir/data ($bin)"
    as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=scram-sha-256 --pwfile="$dir/pwfile" \
        -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
    rm -f "$dir/pwfile"
    local durability="-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    if [[ "${PGTEST_DURABLE:-0}" == 1 ]]; then
        durability="-c fsync=on -c synchronous_commit=on -c full_page_writes=on -c max_connections=200"
    fi
    log "starting on 127.0.0.1:$port ($durability)"
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir $durability" \
        start >/dev/null || { cat "$dir/server.log" >&2; die "the server did not start"; }
    PGPASSWORD=$password "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres "$db" \
        || { stop "$dir"; die "createdb failed"; }
    PGPASSWORD=$password "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres -E SQL_ASCII --locale=C -T template0 \
        "${db}_ascii" || { stop "$dir"; die "createdb (SQL_ASCII) failed"; }
    dsn="postgresql://postgres:$password@127.0.0.1:$port/$db"
    printf '%s\n' "$bin" >"$dir/bindir"
    printf '%s\n' "$dsn" >"$dir/dsn"
    chmod 0600 "$dir/dsn"
    printf 'export CANNY_TEST_POSTGRES_DSN=%q\nexport CANNY_TEST_POSTGRES_ASCII_DSN=%q\nexport CANNY_PG_TEST_DIR=%q\n' \
        "$dsn" "${dsn}_ascii" "$dir"
}

stop() {
    local dir=${1:-${CANNY_PG_TEST_DIR:-}} bin
    [[ -n "$dir" ]] || die "stop: which server? pass its dir or set CANNY_PG_TEST_DIR"
    [[ -d "$dir/data" ]] || die "stop: $dir holds no server"
    # The bin dir recorded at start, so stopping never depends on searching again.
    if [[ -r "$dir/bindir" ]]; then bin=$(<"$dir/bindir"); else bin=$(find_bin) || die "no PostgreSQL binaries found"; fi
    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || log "server in $dir was not running"
    rm -rf "$dir"
    log "stopped and removed $dir"
}

run() {
    [[ $# -gt 0 ]] || die "run: give a command to run"
    local exports status=0
    exports=$(start)
    eval "$exports"
    trap 'stop "$CANNY_PG_TEST_DIR"' EXIT
    "$@" || status=$?
    return "$status"
}

if [[ "${2:-}" == --durable ]]; then
    export PGTEST_DURABLE=1
    set -- "$1" "${@:3}"
fi
case "${1:-}" in
    start) start ;;
    stop) shift; stop "$@" ;;
    run) shift; run "$@" ;;
    *) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac

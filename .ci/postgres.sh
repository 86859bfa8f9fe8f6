#!/usr/bin/env bash
# A throwaway PostgreSQL server for tests, listening on a Unix socket only.
#
#   .ci/postgres.sh start [DIR]   # prints the connection URL as its last line
#   .ci/postgres.sh stop DIR
#
# `start` makes DIR (a new temporary directory when omitted), creates a
# cluster in DIR/data with trust authentication, starts it with its socket in
# DIR and creates the database `troupe_test`. Use the URL it prints as
# TROUPE_TEST_POSTGRES_URL. As root the server runs as the `postgres` user
# (initdb refuses root); PostgreSQL is installed with apt-get if missing.
set -euo pipefail

find_bin() {
    local name=$1
    if command -v "$name" >/dev/null 2>&1; then
        command -v "$name"
        return
    fi
    local found
    found=$(ls -d /usr/lib/postgresql/*/bin/"$name" 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -n "$found" ]; then
        echo "$found"
    fi
}

ensure_installed() {
    if [ -z "$(find_bin initdb)" ]; then
        if [ "$(id -u)" -ne 0 ]; then
            echo "initdb not found: install PostgreSQL (e.g. apt-get install postgresql)" >&2
            exit 1
        fi
        echo "installing PostgreSQL with apt-get" >&2
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
    fi
}

# Runs a command as the server's owner: `postgres` when we are root.
as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        su postgres -s /bin/bash -c "$(printf '%q ' "$@")"
    else
        "$@"
    fi
}

start() {
    ensure_installed
    local initdb pg_ctl psql dir
    initdb=$(find_bin initdb)
    pg_ctl=$(find_bin pg_ctl)
    psql=$(find_bin psql)
    dir=${1:-$(mktemp -d /tmp/troupe-pg.XXXXXX)}
    mkdir -p "$dir"
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres "$dir"
    fi
    chmod 0700 "$dir"
    as_owner "$initdb" -D "$dir/data" -A trust -U postgres >"$dir/initdb.log" 2>&1 || {
        cat "$dir/initdb.log" >&2
        exit 1
    }
    as_owner "$pg_ctl" -D "$dir/data" -o "-k $dir -c listen_addresses=" -l "$dir/log" start -w >&2 || {
        cat "$dir/log" >&2
        exit 1
    }
    "$psql" -h "$dir" -U postgres -d postgres -v ON_ERROR_STOP=1 -q \
        -c 'create database troupe_test' >&2
    echo "host=$dir user=postgres dbname=troupe_test"
}

stop() {
    local dir=${1:?usage: postgres.sh stop DIR}
    local pg_ctl
    pg_ctl=$(find_bin pg_ctl)
    if [ -d "$dir/data" ]; then
        as_owner "$pg_ctl" -D "$dir/data" -m immediate stop >&2 || true
    fi
    rm -rf "$dir"
}

case "${1:-}" in
start) start "${2:-}" ;;
stop) stop "${2:-}" ;;
*)
    echo "usage: $0 start [DIR] | stop DIR" >&2
    exit 2
    ;;
esac

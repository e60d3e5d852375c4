#!/usr/bin/env bash
# Start a throw-away PostgreSQL server on loopback for the multi-worker tests and print its URL.
# Installs Debian's server package when it is missing. Usage: eval "$(.ci/postgres.sh)"
set -euo pipefail
PORT=${NASPRUNE_PG_PORT:-54329}
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
    echo "installing postgresql (Debian package)..." >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2
    bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi
# The server refuses to run as root: use the 'postgres' system user (created by the package).
id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
datadir=$(mktemp -d /tmp/nasprune-pg.XXXXXX)
chown postgres "$datadir"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
as_pg "$bindir/initdb" -D "$datadir/data" -U postgres --auth=trust >/dev/null
as_pg "$bindir/pg_ctl" -D "$datadir/data" -l "$datadir/log" -w \
    -o "-h 127.0.0.1 -p $PORT -k $datadir -c max_connections=200 -c fsync=off" start >&2
as_pg "$bindir/createdb" -h 127.0.0.1 -p "$PORT" -U postgres nasprune_test
echo "export NASPRUNE_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:$PORT/nasprune_test"
echo "export NASPRUNE_PG_DATADIR=$datadir"

#!/usr/bin/env bash
# Runs a command beside a throwaway PostgreSQL cluster: initdb into a temp
# directory, the server on a free 127.0.0.1 port, INGEST_TEST_PG set to its
# URL for the command, and the cluster stopped and deleted afterwards
# (whatever the command's end). The server binaries come from Debian's
# `postgresql` package; without them this fails and says how to get them.
# PG_FSYNC=on keeps fsync (the bench); tests run with it off.
set -euo pipefail

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ] || [ ! -x "$bin/pg_ctl" ]; then
    echo "with-postgres: the PostgreSQL server (initdb, pg_ctl) is not installed; the Postgres tests need it." >&2
    echo "with-postgres: install it with:  sudo apt-get install -y postgresql" >&2
    exit 1
fi

as=()
if [ "$(id -u)" = 0 ]; then
    # the server runs as `postgres`, which must reach the directory: /tmp,
    # whatever TMPDIR says
    dir=$(mktemp -d /tmp/ingest-pg.XXXXXX)
else
    dir=$(mktemp -d "${TMPDIR:-/tmp}/ingest-pg.XXXXXX")
fi
chmod 755 "$dir"
if [ "$(id -u)" = 0 ]; then
    # the server refuses to run as root
    chown postgres: "$dir"
    as=(runuser -u postgres --)
fi

# a free port: one nothing answers on
port=""
for _ in $(seq 1 50); do
    p=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then port=$p; break; fi
done
[ -n "$port" ] || { echo "with-postgres: no free port found" >&2; exit 1; }

stop() {
    "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap stop EXIT

"${as[@]}" "$bin/initdb" -D "$dir/data" -U ingest -A trust -E UTF8 --locale=C --no-sync >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; exit 1; }
fsync=${PG_FSYNC:-off}
"${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=$fsync -c max_connections=200" start >/dev/null \
    || { cat "$dir/server.log" >&2; exit 1; }

echo "with-postgres: PostgreSQL $("$bin/pg_ctl" --version | awk '{print $3}') on 127.0.0.1:$port (data in $dir)" >&2
export INGEST_TEST_PG="postgres://ingest@127.0.0.1:$port/postgres"
set +e
"$@"
status=$?
set -e
exit "$status"

#!/bin/sh
# First start: a cluster whose superuser password comes from the environment, password
# (scram-sha-256) authentication for every connection, and the platform's database.
set -eu
: "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"
mkdir -p "$PGDATA" /run/postgresql
chown -R postgres:postgres "$PGDATA" /run/postgresql
chmod 700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    printf '%s\n' "$POSTGRES_PASSWORD" >/tmp/pwfile
    chown postgres /tmp/pwfile
    su postgres -c "initdb -D '$PGDATA' -U postgres --pwfile=/tmp/pwfile --auth=scram-sha-256" >/dev/null
    rm -f /tmp/pwfile
    echo "host all all 0.0.0.0/0 scram-sha-256" >>"$PGDATA/pg_hba.conf"
    su postgres -c "pg_ctl -D '$PGDATA' -o '-c listen_addresses=127.0.0.1' -w start" >/dev/null
    PGPASSWORD=$POSTGRES_PASSWORD psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE ${POSTGRES_DB:-eventshop}"
    su postgres -c "pg_ctl -D '$PGDATA' -m fast -w stop" >/dev/null
fi
exec su postgres -c "exec postgres -D '$PGDATA' -c listen_addresses='*'"

#!/usr/bin/env bash
# A PostgreSQL server on loopback for the MLflow tracking server: `postgres_up.sh STATE_DIR` (as root).
# Installs Debian's postgresql if missing, creates a cluster in STATE_DIR/pg (owned by postgres), starts it on
# 127.0.0.1:$PG_PORT (default 15432) and creates the user and database `mlflow`. Prints the backend URI last.
# postgres_down.sh STATE_DIR stops it.
set -euo pipefail
STATE=$(realpath -m "${1:?usage: postgres_up.sh STATE_DIR}")
PORT=${PG_PORT:-15432}
say() { echo "[postgres_up $(date +%H:%M:%S)] $*" >&2; }
[[ $(id -u) == 0 ]] || { echo "postgres_up.sh must run as root (it installs packages and starts PostgreSQL)"; exit 1; }
if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
    say "installing postgresql"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi
BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
as_pg() { runuser -u postgres -- "$@"; }

install -d -o postgres -g postgres -m 0700 "$STATE/pg"
if [[ ! -s $STATE/pg/data/PG_VERSION ]]; then
    as_pg "$BIN/initdb" -D "$STATE/pg/data" -U postgres --auth=trust --no-sync >"$STATE/pg/initdb.log"
fi
say "starting PostgreSQL on 127.0.0.1:$PORT"
as_pg "$BIN/pg_ctl" -D "$STATE/pg/data" -l "$STATE/pg/server.log" -w -t 60 start \
    -o "-c listen_addresses=127.0.0.1 -p $PORT -k $STATE/pg -c max_connections=200" >&2
psql_pg() { as_pg psql -h "$STATE/pg" -p "$PORT" -U postgres -v ON_ERROR_STOP=1 -qAt "$@"; }
[[ $(psql_pg -c "SELECT 1 FROM pg_roles WHERE rolname = 'mlflow'") == 1 ]] ||
    psql_pg -c "CREATE USER mlflow WITH PASSWORD 'mlflow'"
[[ $(psql_pg -c "SELECT 1 FROM pg_database WHERE datname = 'mlflow'") == 1 ]] ||
    psql_pg -c "CREATE DATABASE mlflow OWNER mlflow"
echo "postgresql://mlflow:mlflow@127.0.0.1:$PORT/mlflow"

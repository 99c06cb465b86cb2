#!/usr/bin/env bash
# Stop the PostgreSQL server postgres_up.sh STATE_DIR started (fast shutdown). Safe to run twice.
set -uo pipefail
STATE=$(realpath -m "${1:?usage: postgres_down.sh STATE_DIR}")
[[ -s $STATE/pg/data/postmaster.pid ]] || exit 0
BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
echo "[postgres_down $(date +%H:%M:%S)] stopping PostgreSQL"
runuser -u postgres -- "$BIN/pg_ctl" -D "$STATE/pg/data" -m fast -w -t 60 stop

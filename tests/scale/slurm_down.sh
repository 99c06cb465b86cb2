#!/usr/bin/env bash
# Stop what slurm_up.sh STATE_DIR started: cancel the jobs left, then slurmd, slurmctld, slurmdbd, MariaDB and
# munged (only if slurm_up.sh started it), each by the pid it wrote. Safe to run twice or after a partial start.
set -uo pipefail
STATE=$(realpath -m "${1:?usage: slurm_down.sh STATE_DIR}")
export SLURM_CONF=$STATE/slurm.conf
say() { echo "[slurm_down $(date +%H:%M:%S)] $*"; }

stop_pidfile() {  # stop_pidfile NAME PIDFILE: SIGTERM, then SIGKILL after 20 s
    local name=$1 file=$2 pid
    [[ -s $file ]] || return 0
    pid=$(<"$file")
    if kill -0 "$pid" 2>/dev/null; then
        say "stopping $name (pid $pid)"
        kill "$pid"
        for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
        kill -0 "$pid" 2>/dev/null && { say "$name still running: SIGKILL"; kill -9 "$pid"; }
    fi
    rm -f "$file"
}

if [[ -s $STATE/slurmctld.pid ]] && kill -0 "$(<"$STATE/slurmctld.pid")" 2>/dev/null; then
    if [[ -n $(squeue -h -o %i 2>/dev/null) ]]; then
        say "cancelling the jobs left: $(squeue -h -o %i | tr '\n' ' ')"
        scancel --full --partition=local 2>/dev/null
        for _ in $(seq 30); do [[ -z $(squeue -h -o %i 2>/dev/null) ]] && break; sleep 1; done
    fi
fi
stop_pidfile slurmd "$STATE/slurmd.pid"
stop_pidfile slurmctld "$STATE/slurmctld.pid"
stop_pidfile slurmdbd "$STATE/slurmdbd.pid"
stop_pidfile MariaDB "$STATE/db/mariadb.pid"
stop_pidfile munged "$STATE/munged.pid"
exit 0

#!/usr/bin/env bash
# A single-node Slurm cluster on loopback, for the scale tests: `slurm_up.sh STATE_DIR` (as root).
# Installs Debian's slurm-wlm, slurmdbd, munge and mariadb-server if missing, writes slurm.conf (this host as the
# only node, with its CPUs, in one partition `local`) and slurmdbd.conf under STATE_DIR, starts munged (unless one
# already answers), MariaDB (slurmdbd's store: sacct needs it, and submitit polls sacct to see a cancelled job),
# slurmdbd, slurmctld and slurmd, and waits until `sinfo` shows the node idle. Every daemon it starts writes its
# pid under STATE_DIR; slurm_down.sh STATE_DIR stops them. Clients need SLURM_CONF=STATE_DIR/slurm.conf.
set -euo pipefail
STATE=$(realpath -m "${1:?usage: slurm_up.sh STATE_DIR}")
CTLD_PORT=${SLURMCTLD_PORT:-16817} SLURMD_PORT=${SLURMD_PORT:-16818} DBD_PORT=${SLURMDBD_PORT:-16819}
DB_PORT=${SLURM_DB_PORT:-13306}
say() { echo "[slurm_up $(date +%H:%M:%S)] $*"; }
wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local deadline=$((SECONDS + $1)) what=$2; shift 2
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || { say "timed out waiting for $what"; exit 1; }
        sleep 1
    done
}

[[ $(id -u) == 0 ]] || { echo "slurm_up.sh must run as root (it installs packages and starts daemons)"; exit 1; }
missing=()
for cmd_pkg in slurmctld:slurm-wlm slurmd:slurm-wlm slurmdbd:slurmdbd munged:munge mariadbd:mariadb-server; do
    command -v "${cmd_pkg%%:*}" >/dev/null || missing+=("${cmd_pkg#*:}")
done
if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

mkdir -p "$STATE"/{ctld,spool,log,db}
export SLURM_CONF=$STATE/slurm.conf
NODE=$(hostname -s)
read -r CPUS MEM < <(slurmd -C | awk '/^NodeName/ { for (i = 1; i <= NF; i++) { split($i, kv, "=");
    if (kv[1] == "CPUs") c = kv[2]; if (kv[1] == "RealMemory") m = kv[2] } print c, m }')
MEM=$((MEM * 3 / 4))   # leave the rest of the memory to the OS and the tracking server
DB_PASS=prunesec-slurm

cat >"$STATE/slurm.conf" <<EOF
ClusterName=prunesec
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=1024
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
ReturnToService=2
KillWait=1
SchedulerParameters=sched_interval=2
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=local Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF

cat >"$STATE/slurmdbd.conf" <<EOF
DbdHost=$NODE
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
AuthType=auth/munge
PidFile=$STATE/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
chmod 600 "$STATE/slurmdbd.conf"

if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    say "munged already running: using it"
else
    say "starting munged"
    install -d -o munge -g munge -m 0755 /run/munge
    runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/prunesec-munged.pid
    wait_for 20 munged sh -c 'munge -n | unmunge'
    cp /run/munge/prunesec-munged.pid "$STATE/munged.pid"
fi

say "starting MariaDB on 127.0.0.1:$DB_PORT (slurmdbd's store)"
chown -R mysql:mysql "$STATE/db"
if [[ ! -d $STATE/db/mysql ]]; then
    mariadb-install-db --no-defaults --user=mysql --datadir="$STATE/db" --auth-root-authentication-method=socket \
        >"$STATE/log/mariadb-install.log" 2>&1
fi
runuser -u mysql -- mariadbd --no-defaults --datadir="$STATE/db" --socket="$STATE/db/mysqld.sock" \
    --bind-address=127.0.0.1 --port="$DB_PORT" --pid-file="$STATE/db/mariadb.pid" \
    --innodb-buffer-pool-size=64M --innodb-lock-wait-timeout=900 --log-error="$STATE/db/mariadb.log" \
    </dev/null >/dev/null 2>&1 &
wait_for 60 MariaDB mariadb --no-defaults --socket="$STATE/db/mysqld.sock" -e "SELECT 1"
mariadb --no-defaults --socket="$STATE/db/mysqld.sock" <<EOF
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
EOF

say "starting slurmdbd, slurmctld, slurmd"
slurmdbd
wait_for 60 slurmdbd sacctmgr -n list cluster
sacctmgr -i add cluster prunesec >/dev/null 2>&1 || true
slurmctld
wait_for 60 slurmctld scontrol ping
slurmd
wait_for 90 "the node to be idle" sh -c "sinfo -h -n '$NODE' -o '%t' | grep -qx idle"
sinfo
say "Slurm is up: export SLURM_CONF=$SLURM_CONF"

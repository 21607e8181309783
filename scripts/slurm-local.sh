#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for testing workflow/profiles/slurm (issue 17).
#
#   scripts/slurm-local.sh up      # install what is missing (apt-get, as root), configure, start, wait for `idle`
#   scripts/slurm-local.sh status  # sinfo + the daemons this script started
#   scripts/slurm-local.sh down    # stop exactly what `up` started, remove the config it wrote
#
# The node is this host with its cores and memory; a `gpu` gres only where NVIDIA GPUs exist. Job
# accounting (slurmdbd on a private MariaDB, so that `sacct` works as on a real cluster) is part of it:
# the SLURM executor plugin queries job states with `sacct`.
#
# Everything the cluster writes lives in $MCIL_SLURM_DIR (default /tmp/mcil-slurm): spool and state
# folders, logs, the database, the pid files. /etc/slurm/slurm.conf and slurmdbd.conf are written
# only when absent (or written by an earlier `up`), and removed by `down`. A daemon already running
# that this script did not start (munged, mariadbd of the system) is used, never stopped.
#
# Exit codes: 0 ok; 2 cannot start here (not root, no apt-get, a foreign SLURM on this host): the
# message on stderr says why (the cluster test skips, or fails under CI=true, with that message).
set -euo pipefail

STATE=${MCIL_SLURM_DIR:-/tmp/mcil-slurm}
CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
DBD_CONF=$CONF_DIR/slurmdbd.conf
MARK="# written by mcil scripts/slurm-local.sh"
CLUSTER=mcil-local
PARTITION=${MCIL_SLURM_PARTITION:-local}
DB_PORT=${MCIL_SLURM_DB_PORT:-3307}
PACKAGES=(munge slurm-client slurmctld slurmd slurmdbd mariadb-server)

log() { echo "slurm-local: $*" >&2; }
cannot() { log "cannot start SLURM here: $*"; exit 2; }
alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local secs=$1 what=$2
    shift 2
    for ((i = 0; i < secs * 2; i++)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.5
    done
    log "timed out after ${secs}s waiting for $what; logs in $STATE/log:"
    tail -n 20 "$STATE"/log/*.log >&2 2>/dev/null || true
    return 1
}

install_packages() {
    local missing=()
    for cmd in munged slurmctld slurmd slurmdbd sbatch sacct mariadbd mariadb-install-db; do
        command -v "$cmd" >/dev/null || missing+=("$cmd")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    [[ $(id -u) -eq 0 ]] || cannot "missing ${missing[*]} and not root (run as root, or install: ${PACKAGES[*]})"
    command -v apt-get >/dev/null || cannot "missing ${missing[*]} and no apt-get (install: ${PACKAGES[*]})"
    log "installing ${PACKAGES[*]} (missing: ${missing[*]})"
    export DEBIAN_FRONTEND=noninteractive
    # Debian's postinst scripts would start the daemons: forbid that while installing.
    local policy=/usr/sbin/policy-rc.d had_policy=0
    [[ -e $policy ]] && had_policy=1
    if [[ $had_policy -eq 0 ]]; then printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy"; fi
    {
        apt-get update -qq &&
            apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}"
    } >"$STATE/log/apt.log" 2>&1 || {
        [[ $had_policy -eq 1 ]] || rm -f "$policy"
        tail -n 20 "$STATE/log/apt.log" >&2
        cannot "apt-get install ${PACKAGES[*]} failed (log: $STATE/log/apt.log)"
    }
    [[ $had_policy -eq 1 ]] || rm -f "$policy"
}

gpu_count() {
    if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
        nvidia-smi -L | grep -c '^GPU '
    else
        echo 0
    fi
}

write_configs() {
    local host cpus mem_mb ngpu gres="" gres_types=""
    host=$(hostname -s)
    cpus=$(nproc)
    mem_mb=$(($(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 * 9 / 10))  # 10 % for the OS and the daemons
    ngpu=$(gpu_count)
    for f in "$CONF" "$DBD_CONF"; do
        if [[ -e $f ]] && ! grep -qF "$MARK" "$f"; then
            cannot "$f exists and was not written by this script (a real SLURM installation?); not touching it"
        fi
    done
    mkdir -p "$CONF_DIR"
    if [[ $ngpu -gt 0 ]]; then
        gres=" Gres=gpu:$ngpu"
        gres_types="GresTypes=gpu"
        {
            echo "$MARK"
            echo "Name=gpu File=/dev/nvidia[0-$((ngpu - 1))]"
        } >"$CONF_DIR/gres.conf"
    fi
    cat >"$CONF" <<EOF
$MARK (state in $STATE)
ClusterName=$CLUSTER
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
# containers and small VMs: no cgroup plugins needed
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
# a cancelled job gets SIGTERM, then SIGKILL after KillWait seconds
KillWait=10
MinJobAge=300
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageEnforce=associations
# sacct shows the plugin's --comment (rule_<rule>_wildcards_<...>): which job ran which rule
AccountingStoreFlags=job_comment
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
$gres_types
NodeName=$host CPUs=$cpus RealMemory=$mem_mb$gres State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    (
        umask 077
        cat >"$DBD_CONF" <<EOF
$MARK
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=$STATE/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=mcil-local
StorageLoc=slurm_acct_db
EOF
    )
    log "node $host: $cpus CPUs, ${mem_mb} MB, $ngpu GPU(s); partition $PARTITION"
}

start_munge() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        log "munged already running: using it"
        return 0
    fi
    [[ -s /etc/munge/munge.key ]] || { mungekey --create 2>/dev/null || create-munge-key -f; }
    chown munge:munge /etc/munge/munge.key && chmod 600 /etc/munge/munge.key
    install -d -o munge -g munge -m 0755 /run/munge
    runuser -u munge -- munged --pid-file=/run/munge/munged.pid </dev/null >/dev/null 2>&1
    cp /run/munge/munged.pid "$STATE/munged.pid"
    wait_for 20 munged sh -c 'munge -n | unmunge'
}

start_db() {
    local sql="mariadb --no-defaults --protocol=socket -S $STATE/db.sock -uroot"
    if [[ ! -d $STATE/db/mysql ]]; then
        mariadb-install-db --no-defaults --datadir="$STATE/db" --user=root --auth-root-authentication-method=normal \
            --skip-test-db >"$STATE/log/mariadb-install.log" 2>&1
    fi
    mariadbd --no-defaults --datadir="$STATE/db" --user=root --bind-address=127.0.0.1 --port="$DB_PORT" \
        --socket="$STATE/db.sock" --pid-file="$STATE/mariadb.pid" --log-error="$STATE/log/mariadb.log" \
        --innodb-buffer-pool-size=64M --skip-name-resolve </dev/null >>"$STATE/log/mariadb.log" 2>&1 &
    wait_for 60 mariadb $sql -e 'select 1'
    $sql -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
             CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'mcil-local';
             GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;"
}

up() {
    if alive "$STATE/slurmctld.pid" && alive "$STATE/slurmd.pid"; then
        log "already up (state in $STATE)"
        sinfo
        return 0
    fi
    [[ $(id -u) -eq 0 ]] || cannot "not root (munge, slurmctld, slurmd and slurmdbd need root here)"
    mkdir -p "$STATE"/{log,ctld,d}
    install_packages
    write_configs
    start_munge
    start_db
    slurmdbd </dev/null >/dev/null 2>&1
    wait_for 60 slurmdbd sacctmgr -n list cluster
    # the cluster, an account and root's association (AccountingStorageEnforce=associations)
    sacctmgr -i -Q add cluster "$CLUSTER" >/dev/null 2>&1 || true
    sacctmgr -i -Q add account mcil Cluster="$CLUSTER" Description=local Organization=local >/dev/null 2>&1 || true
    sacctmgr -i -Q add user root Account=mcil DefaultAccount=mcil Cluster="$CLUSTER" >/dev/null 2>&1 || true
    slurmctld </dev/null >/dev/null 2>&1
    wait_for 60 slurmctld scontrol ping
    slurmd </dev/null >/dev/null 2>&1
    # ReturnToService=2 brings the node back from an earlier run's down/drain state
    wait_for 60 "node $(hostname -s) idle" sh -c "sinfo -h -N -o '%T' | grep -qx idle"
    sinfo
    log "up: state in $STATE; \`$0 down\` stops it"
}

stop_pidfile() {  # stop_pidfile NAME: SIGTERM the pid in $STATE/NAME.pid, wait, SIGKILL if needed
    local f=$STATE/$1.pid pid
    alive "$f" || { rm -f "$f"; return 0; }
    pid=$(cat "$f")
    kill "$pid" 2>/dev/null || true
    for ((i = 0; i < 40; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then
        log "$1 ($pid) did not stop on SIGTERM: SIGKILL"
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
}

down() {
    # jobs first (their processes are children of slurmstepd), then the daemons in reverse order
    if alive "$STATE/slurmctld.pid"; then scancel --cluster="$CLUSTER" -u root 2>/dev/null || scancel -u root 2>/dev/null || true; fi
    stop_pidfile slurmd
    stop_pidfile slurmctld
    stop_pidfile slurmdbd
    stop_pidfile mariadb
    stop_pidfile munged
    for f in "$CONF" "$DBD_CONF" "$CONF_DIR/gres.conf"; do
        [[ -e $f ]] && grep -qF "$MARK" "$f" && rm -f "$f"
    done
    rm -rf "$STATE"
    log "down"
}

status() {
    for n in munged mariadb slurmdbd slurmctld slurmd; do
        if alive "$STATE/$n.pid"; then echo "$n: running ($(cat "$STATE/$n.pid"))"; else echo "$n: not started by this script"; fi
    done
    sinfo 2>&1 || true
}

case ${1:-} in
    up) up ;;
    down) down ;;
    status) status ;;
    *) echo "usage: $0 up|down|status" >&2; exit 64 ;;
esac

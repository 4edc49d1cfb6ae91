#!/usr/bin/env bash
# Start a one-node SLURM cluster on 127.0.0.1 for the workflow's SLURM test (tests/test_slurm.py).
#
#   .ci/start_slurm.sh          install (if missing), configure, start, wait until the node is idle
#   .ci/start_slurm.sh stop     stop the daemons this script started (by the pids in their pid files)
#   .ci/start_slurm.sh status   print sinfo / squeue
#
# Debian 12 (SLURM 22.05), run as root. PID 1 is not systemd on the CI machines, so the daemons are
# started directly: munged as user munge, then `slurmctld -i` and `slurmd`. No accounting (sacct sees
# nothing: use `--slurm-status-command squeue` with the executor plugin), ProctrackType=proctrack/linuxproc,
# TaskPlugin=task/none and no cgroup.conf (22.05 refuses CgroupPlugin=disabled). MinJobAge stays at its
# default (300 s): squeue only reports jobs that finished within MinJobAge, and that is how the executor
# plugin learns that a job has finished.
#
# Exit codes: 0 = cluster up and the node idle; 77 = cannot be done here (not root, no apt-get, packages
# not installable) so the caller should skip; anything else = a real failure (logs are printed).
# Every wait is bounded (SLURM_START_TIMEOUT seconds, default 90).
set -uo pipefail

TIMEOUT=${SLURM_START_TIMEOUT:-90}
CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
STATE=/var/lib/slurm
LOGS=/var/log/slurm
RUN=/run/slurm
PKGS=(slurmctld slurmd slurm-client munge)

say() { echo "[start_slurm] $*" >&2; }
skip() { say "SKIP: $*"; exit 77; }
fail() {
    say "FAIL: $*"
    for f in "$LOGS/slurmctld.log" "$LOGS/slurmd.log" /var/log/munge/munged.log; do
        [ -f "$f" ] && { echo "---- tail $f" >&2; tail -n 30 "$f" >&2; }
    done
    exit 1
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop_daemons() {
    local pidfiles=("$RUN/slurmd.pid" "$RUN/slurmctld.pid")
    # munged only if this script started it (a munged that was running before is left alone)
    [ -f "$RUN/genodae-started-munged" ] && pidfiles+=(/run/munge/munged.pid)
    for f in "${pidfiles[@]}"; do
        if pid_alive "$f"; then
            say "stopping $(basename "$f" .pid) (pid $(cat "$f"))"
            kill "$(cat "$f")" 2>/dev/null || true
        fi
    done
    for _ in $(seq 1 20); do
        pid_alive "$RUN/slurmd.pid" || pid_alive "$RUN/slurmctld.pid" || {
            [ -f "$RUN/genodae-started-munged" ] && pid_alive /run/munge/munged.pid
        } || { rm -f "$RUN/genodae-started-munged"; return 0; }
        sleep 0.5
    done
}

case "${1:-start}" in
    stop) stop_daemons; exit 0 ;;
    status) sinfo; squeue; exit 0 ;;
    start) ;;
    *) echo "usage: $0 [start|stop|status]" >&2; exit 2 ;;
esac

[ "$(id -u)" = 0 ] || skip "needs root (installs packages, starts daemons)"

# ---- 1. packages -------------------------------------------------------------------------------------
missing=()
for cmd in slurmctld slurmd sinfo munged; do
    command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || missing+=("$cmd")
done
if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null 2>&1 || skip "apt-get not available and SLURM not installed (${missing[*]})"
    say "installing ${PKGS[*]}"
    # Keep the packages' maintainer scripts from trying to start services (no init system here).
    policy=/usr/sbin/policy-rc.d
    made_policy=0
    if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; made_policy=1; fi
    export DEBIAN_FRONTEND=noninteractive
    timeout 300 apt-get update -qq >/dev/null 2>&1 || say "apt-get update failed; trying the cached lists"
    timeout 600 apt-get install -y -qq --no-install-recommends "${PKGS[@]}" >/tmp/start_slurm.apt.log 2>&1
    rc=$?
    [ $made_policy = 1 ] && rm -f "$policy"
    if [ $rc -ne 0 ]; then tail -n 20 /tmp/start_slurm.apt.log >&2; skip "apt-get install ${PKGS[*]} failed (rc $rc)"; fi
fi
export PATH="$PATH:/usr/sbin:/sbin"

# ---- 2. munge ----------------------------------------------------------------------------------------
getent passwd munge >/dev/null || fail "user munge missing after installing munge"
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
    say "writing a munge key"
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
if ! pid_alive /run/munge/munged.pid; then
    say "starting munged"
    runuser -u munge -- /usr/sbin/munged || fail "munged did not start"
    install -d -m 0755 "$RUN" && touch "$RUN/genodae-started-munged"
fi
for _ in $(seq 1 20); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.5; done
munge -n | unmunge >/dev/null 2>&1 || fail "munge does not work"

# ---- 3. slurm.conf -----------------------------------------------------------------------------------
host=$(hostname -s)
cpus=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)  # GNU nproc obeys OMP_NUM_THREADS: not what the node has
mem_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
real_mem=$((mem_kb / 1024 * 95 / 100)) # slurmd drains a node whose RealMemory exceeds what it finds
install -d -m 0755 "$CONF_DIR" "$STATE" "$STATE/slurmctld" "$STATE/slurmd" "$LOGS" "$RUN"
new_conf=$(mktemp)
cat >"$new_conf" <<EOF
# Written by genodae .ci/start_slurm.sh: a one-node test cluster on 127.0.0.1. Not for production.
ClusterName=genodae-ci
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=${STATE}/slurmctld
SlurmdSpoolDir=${STATE}/slurmd
SlurmctldPidFile=${RUN}/slurmctld.pid
SlurmdPidFile=${RUN}/slurmd.pid
SlurmctldLogFile=${LOGS}/slurmctld.log
SlurmdLogFile=${LOGS}/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
# MinJobAge is left at its default (300 s): finished jobs stay visible to squeue that long.
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${real_mem} State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
changed=1
if [ -f "$CONF" ] && cmp -s "$new_conf" "$CONF"; then changed=0; fi
if [ $changed = 1 ]; then
    say "writing $CONF (node $host, $cpus CPUs, ${real_mem} MB)"
    for f in "$RUN/slurmd.pid" "$RUN/slurmctld.pid"; do
        pid_alive "$f" && { kill "$(cat "$f")"; sleep 1; }
    done
    install -m 0644 "$new_conf" "$CONF"
fi
rm -f "$new_conf"

# ---- 4. daemons --------------------------------------------------------------------------------------
if ! pid_alive "$RUN/slurmctld.pid"; then
    say "starting slurmctld -i"
    slurmctld -i || fail "slurmctld did not start"
fi
if ! pid_alive "$RUN/slurmd.pid"; then
    say "starting slurmd"
    slurmd || fail "slurmd did not start"
fi

# ---- 5. wait until the node is idle (bounded) --------------------------------------------------------
deadline=$((SECONDS + TIMEOUT))
state=""
while [ $SECONDS -lt $deadline ]; do
    state=$(timeout 10 sinfo -h -N -n "$host" -o '%T' 2>/dev/null | head -n 1)
    case "$state" in
        idle | mixed | allocated) say "node $host is $state"; exit 0 ;;
        down* | drain* | drained*)
            timeout 10 scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    pid_alive "$RUN/slurmctld.pid" || fail "slurmctld died"
    pid_alive "$RUN/slurmd.pid" || fail "slurmd died"
    sleep 1
done
fail "node $host not idle after ${TIMEOUT}s (state: ${state:-unknown})"

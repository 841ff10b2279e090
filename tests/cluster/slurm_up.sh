#!/usr/bin/env bash
# Starts a one-node Slurm on this machine for the cluster tests (CTest fixture `slurm`):
# munged, slurmctld and slurmd, detached, with /etc/slurm/slurm.conf written from the recipe in
# shared/TOOLCHAIN.md section 9 (host from `hostname -s`, CPUs and memory from `slurmd -C`).
# Both daemons are addressed as 127.0.0.1, so a machine whose name does not resolve (a bare
# container) runs it too.
# Idempotent: when the daemons already answer with this configuration and the node is idle it
# only says so. Fails (non-zero, with a message) when Slurm cannot start; it never skips.
# Needs root and scripts/setup's packages (slurmctld slurmd slurm-client munge).
# Usage: tests/cluster/slurm_up.sh [--timeout SECONDS]   (default 30: wait for the node to be idle)
set -euo pipefail
timeout=30
[[ ${1:-} == --timeout ]] && timeout=$2
die() { echo "slurm_up: $*" >&2; exit 1; }
log() { echo "slurm_up: $*"; }

[[ $(id -u) -eq 0 ]] || die "must run as root (it writes /etc/slurm and starts munged, slurmctld, slurmd)"
for c in munged mungekey slurmctld slurmd sinfo srun scontrol; do
  command -v "$c" >/dev/null 2>&1 || [[ -x /usr/sbin/$c ]] ||
    die "$c not found: install slurmctld slurmd slurm-client munge (scripts/setup does)"
done
export PATH=$PATH:/usr/sbin
host=$(hostname -s)
logdir=/var/log/slurm
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd "$logdir"

# --- MUNGE: the credential every Slurm message carries.
[[ -s /etc/munge/munge.key ]] ||
  runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key ||
  die "cannot create /etc/munge/munge.key"
install -d -o munge -g munge -m 0755 /run/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  rm -f /run/munge/munged.pid /run/munge/munge.socket.2*
  runuser -u munge -- /usr/sbin/munged </dev/null >>"$logdir/munged.out" 2>&1 ||
    die "munged did not start (see $logdir/munged.out and /var/log/munge/munged.log)"
  for _ in $(seq 40); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.25; done
  munge -n | unmunge >/dev/null || die "munged started but 'munge -n | unmunge' fails"
fi

# --- Process tracking: proctrack/cgroup (cgroup v1 freezer) holds every process of a step, also
# one that daemonized away from its parent, so scancel leaves nothing behind; linuxproc (the
# parent-pid tree) loses such a process. cgroup is used when the freezer hierarchy is mounted
# and writable; ZF_SLURM_PROCTRACK=linuxproc forces the other.
proctrack=${ZF_SLURM_PROCTRACK:-}
if [[ -z $proctrack ]]; then
  proctrack=linuxproc
  probe=/sys/fs/cgroup/freezer/zf_slurm_probe_$$
  if [[ -d /sys/fs/cgroup/freezer ]] && mkdir "$probe" 2>/dev/null; then
    rmdir "$probe"
    proctrack=cgroup
  fi
fi

# --- The configuration (rewritten only when it changes, so a second run keeps the daemons).
node=$(slurmd -C | head -1) || die "'slurmd -C' failed"
[[ $node == NodeName=* ]] || die "unexpected 'slurmd -C' output: $node"
conf=$(
  cat <<EOF
# Written by tests/cluster/slurm_up.sh: one node, for zeroflow's cluster tests.
ClusterName=ci
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MailProg=/bin/true
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$logdir/slurmctld.log
SlurmdLogFile=$logdir/slurmd.log
ProctrackType=proctrack/$proctrack
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
InactiveLimit=0
KillWait=5
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
)
cgroup_conf='CgroupPlugin=autodetect
CgroupAutomount=yes
ConstrainCores=no
ConstrainRAMSpace=no'
pid_alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
changed=0
if [[ ! -f /etc/slurm/slurm.conf ]] || [[ $(cat /etc/slurm/slurm.conf) != "$conf" ]]; then
  echo "$conf" >/etc/slurm/slurm.conf
  changed=1
fi
if [[ $proctrack == cgroup ]] &&
  { [[ ! -f /etc/slurm/cgroup.conf ]] || [[ $(cat /etc/slurm/cgroup.conf) != "$cgroup_conf" ]]; }; then
  echo "$cgroup_conf" >/etc/slurm/cgroup.conf
  changed=1
fi
if ((changed)) && { pid_alive /run/slurmctld.pid || pid_alive /run/slurmd.pid; }; then
  log "configuration changed: restarting the daemons"
  "$(dirname "$0")/slurm_down.sh" --keep-munge
fi

# --- The daemons: setsid + no inherited descriptors, so CTest does not wait on them.
start_daemon() {  # name pidfile
  local name=$1 pidfile=$2
  pid_alive "$pidfile" && return 0
  rm -f "$pidfile"
  setsid -f "$name" -D </dev/null >>"$logdir/$name.out" 2>&1
  for _ in $(seq 40); do pid_alive "$pidfile" && return 0; sleep 0.25; done
  die "$name did not start: see $logdir/$name.out and $logdir/$name.log"
}
start_daemon slurmctld /run/slurmctld.pid
start_daemon slurmd /run/slurmd.pid

# --- Ready when the node is idle (a node left down by an earlier run is resumed).
deadline=$((SECONDS + timeout))
state=""
while ((SECONDS < deadline)); do
  state=$(sinfo -h -N -n "$host" -o %t 2>/dev/null | head -1 || true)
  case $state in
    idle) log "node $host idle (proctrack/$proctrack)"; exit 0 ;;
    down* | drain* | drng*) scontrol update nodename="$host" state=resume 2>/dev/null || true ;;
  esac
  sleep 0.25
done
die "node $host not idle after ${timeout} s (state '${state:-no answer}'); see $logdir/slurmctld.log and $logdir/slurmd.log"

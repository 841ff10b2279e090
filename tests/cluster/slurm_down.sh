#!/usr/bin/env bash
# Stops what tests/cluster/slurm_up.sh started: cancels the jobs left, stops slurmd, slurmctld
# and munged (by their pid files), and removes Slurm's freezer cgroup. Idempotent: nothing
# running is fine. Usage: tests/cluster/slurm_down.sh [--keep-munge]
set -uo pipefail
export PATH=$PATH:/usr/sbin
keep_munge=0
[[ ${1:-} == --keep-munge ]] && keep_munge=1
log() { echo "slurm_down: $*"; }

pid_of() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null && cat "$1"; }
stop() {  # name pidfile: SIGTERM, then SIGKILL after 15 s (slurmctld takes up to ~5 s)
  local name=$1 pid
  pid=$(pid_of "$2") || return 0
  kill "$pid" 2>/dev/null
  for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || { log "stopped $name ($pid)"; return 0; }; sleep 0.25; done
  kill -9 "$pid" 2>/dev/null
  log "killed $name ($pid): it did not exit on SIGTERM"
}

if pid_of /run/slurmctld.pid >/dev/null; then
  scancel --full --signal=KILL --state=RUNNING "--user=$(id -un)" 2>/dev/null
  scancel "--user=$(id -un)" 2>/dev/null
fi
stop slurmd /run/slurmd.pid
stop slurmctld /run/slurmctld.pid
((keep_munge)) || stop munged /run/munge/munged.pid
for d in /sys/fs/cgroup/freezer/slurm*; do
  [[ -d $d ]] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
done
exit 0

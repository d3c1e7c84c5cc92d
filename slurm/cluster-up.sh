#!/usr/bin/env bash
# Bring up a real single-node SLURM cluster on this Debian/Ubuntu machine (as root, no systemd needed):
# munge, slurmctld and slurmd on localhost, one partition `local` holding every CPU. For trying roar's
# SLURM path (`hydra/launcher=slurm`) and for CI; `slurm/cluster-down.sh` stops it.
#
# No accounting database: `sacct` is replaced on the PATH by slurm/sacct, which answers from squeue
# (submitit polls sacct for job states). Finished jobs stay visible to squeue for MinJobAge.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
conf=/etc/slurm/slurm.conf

if [[ $EUID -ne 0 ]]; then
    echo "cluster-up: run as root (it installs packages and starts the SLURM daemons)" >&2
    exit 1
fi

if sinfo --noheader --states=idle,mix,alloc >/dev/null 2>&1 && [[ -n "$(sinfo --noheader --states=idle,mix,alloc 2>/dev/null)" ]]; then
    echo "cluster-up: a SLURM cluster is already up:"
    sinfo
    exit 0
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
fi

# munge authenticates the daemons to each other; its package creates the key, the run directory is ours.
[[ -s /etc/munge/munge.key ]] || mungekey --create --keyfile=/etc/munge/munge.key
chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
install -d -o munge -g munge -m 0755 /run/munge
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
    runuser -u munge -- /usr/sbin/munged
fi

node="$(hostname -s)"
cpus="$(nproc)"
# Leave a tenth of the memory to the system; each CPU's share is the default for jobs that ask for none
# (without DefMemPerCPU such a job takes the whole node and jobs run one at a time).
memory_mb="$(awk '/^MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)"
mem_per_cpu=$((memory_mb / cpus))

install -d -m 0755 /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
cat >"$conf" <<EOF
# Written by roar's slurm/cluster-up.sh: a single-node test cluster.
ClusterName=roar-local
SlurmctldHost=${node}(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
# A requeued job (preempted, or near its time limit: submitit requeues it) waits cred_expire seconds before
# it may start again; 120 by default.
AuthInfo=cred_expire=20
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
# No cgroups here: track processes by parent pid, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
# No accounting (no slurmdbd); slurm/sacct stands in for sacct.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# Keep finished jobs visible to squeue (and so to the sacct stand-in) for a day.
MinJobAge=86400
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=${mem_per_cpu}
# Trust the node description below rather than probing the hardware.
SlurmdParameters=config_overrides
NodeName=${node} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${memory_mb} State=UNKNOWN
PartitionName=local Nodes=${node} Default=YES MaxTime=INFINITE State=UP
EOF

ln -sf "$here/sacct" /usr/local/bin/sacct

# -c: start from an empty job table (a test cluster carries no jobs over).
slurmctld -c
slurmd

for _ in $(seq 60); do
    if [[ -n "$(sinfo --noheader --states=idle 2>/dev/null)" ]]; then
        sinfo
        exit 0
    fi
    sleep 0.5
done
echo "cluster-up: the node did not become idle; see /var/log/slurm/" >&2
sinfo >&2 || true
exit 1

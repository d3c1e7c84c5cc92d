#!/usr/bin/env bash
# Stop the cluster slurm/cluster-up.sh started: its jobs, slurmd, slurmctld and munged (by their pid
# files), and remove the sacct stand-in from the PATH. Packages and /etc/slurm/slurm.conf stay.
set -uo pipefail

here="$(cd "$(dirname "$0")" && pwd)"

# Cancel every job first: with proctrack/linuxproc, stopping slurmd would leave their processes running.
squeue --noheader --format=%A 2>/dev/null | sort -u | xargs -r scancel 2>/dev/null

stop() {  # pid file, name
    [[ -f $1 ]] || return 0
    local pid
    pid="$(cat "$1")"
    if kill "$pid" 2>/dev/null; then
        for _ in $(seq 40); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.25
        done
        echo "cluster-down: stopped $2 ($pid)"
    fi
    rm -f "$1"
}

stop /run/slurmd.pid slurmd
stop /run/slurmctld.pid slurmctld
stop /run/munge/munged.pid munged

if [[ "$(readlink /usr/local/bin/sacct)" == "$here/sacct" ]]; then
    rm -f /usr/local/bin/sacct
fi

"""How many intra-op threads roar computes with: one per CPU the process was given.

torch's default is one thread per CPU of the affinity mask. It ignores a cgroup CPU quota (a container or a
SLURM job on a shared node granted 2 CPUs of a 64-core machine would start 64 threads and be throttled)
and SLURM's `--cpus-per-task` where the cluster does not also pin the job to its CPUs. The policy takes the
fewest of the three; `OMP_NUM_THREADS`, where set, is the user's choice and is left as torch read it.

Threads that wait do not spin: roar/__init__.py sets `OMP_WAIT_POLICY=PASSIVE` before torch loads (see
docs/threads.md for what it changes on a loaded machine).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import torch

from roar.errors import ConfigError

log = logging.getLogger(__name__)


def affinity_cpus() -> int:
    """The CPUs this process may run on (`taskset`, cpusets, SLURM's task binding)."""
    if not hasattr(os, "sched_getaffinity"):  # macOS has no affinity masks
        return os.cpu_count() or 1
    return len(os.sched_getaffinity(0))


def _cgroup_mounts(mountinfo: Path) -> list[tuple[str, set[str], str, Path]]:
    """(filesystem type, controllers, cgroup path at the mount's root, mount point) of each cgroup mount."""
    mounts = []
    for line in mountinfo.read_text().splitlines():
        fields, _, filesystem = line.partition(" - ")
        fs_type, _source, options = filesystem.split()[:3]
        if fs_type in ("cgroup", "cgroup2"):
            _id, _parent, _device, root, mount_point = fields.split()[:5]
            mounts.append((fs_type, set(options.split(",")), root, Path(mount_point)))
    return mounts


def _quota(directory: Path, version: str) -> float | None:
    """The CPUs the cgroup at `directory` allows (quota / period), or None where it sets no quota."""
    if version == "cgroup2":
        cpu_max = directory / "cpu.max"
        if not cpu_max.is_file():
            return None
        quota, period = cpu_max.read_text().split()
        return None if quota == "max" else int(quota) / int(period)
    quota_file, period_file = directory / "cpu.cfs_quota_us", directory / "cpu.cfs_period_us"
    if not quota_file.is_file():
        return None
    quota = int(quota_file.read_text())
    return None if quota < 0 else quota / int(period_file.read_text())


def cgroup_cpu_quota(proc: Path = Path("/proc/self")) -> float | None:
    """The CPUs this process's cgroups allow it: the tightest quota on its cgroup and every ancestor (a
    container's limit usually sits above the process's own cgroup), cgroup v1 or v2; None where none."""
    if not (proc / "cgroup").is_file():  # not Linux
        return None
    mounts = _cgroup_mounts(proc / "mountinfo")
    quotas = []
    for line in (proc / "cgroup").read_text().splitlines():
        hierarchy, controllers, path = line.split(":", 2)
        version = "cgroup2" if hierarchy == "0" else "cgroup"
        if version == "cgroup" and "cpu" not in controllers.split(","):
            continue
        for fs_type, options, root, mount_point in mounts:
            if fs_type != version or (version == "cgroup" and "cpu" not in options):
                continue
            if not (path == root or path.startswith(root.rstrip("/") + "/")):
                continue  # this mount shows another part of the hierarchy
            directory = mount_point / path[len(root) :].lstrip("/")
            while True:  # up to the mount point: a quota anywhere above limits this cgroup too
                quota = _quota(directory, version)
                if quota is not None:
                    quotas.append(quota)
                if directory == mount_point:
                    break
                directory = directory.parent
    return min(quotas, default=None)


def slurm_cpus(environ=os.environ) -> int | None:
    """SLURM's `--cpus-per-task`, where the job sets it."""
    value = environ.get("SLURM_CPUS_PER_TASK")
    if value is None:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"SLURM_CPUS_PER_TASK={value!r} is not a positive whole number of CPUs")
    return int(value)


def policy_threads(environ=os.environ, proc: Path = Path("/proc/self")) -> tuple[int, str]:
    """The intra-op thread count for the CPUs this process was given, and a line saying where it came
    from. A fractional quota rounds down: a thread beyond it would be throttled in every parallel region."""
    affinity, quota, slurm = affinity_cpus(), cgroup_cpu_quota(proc), slurm_cpus(environ)
    limits = [affinity]
    if quota is not None:
        limits.append(max(1, math.floor(quota)))
    if slurm is not None:
        limits.append(slurm)
    quota_text = "none" if quota is None else f"{quota:g} CPUs"
    return min(limits), (
        f"affinity {affinity} CPUs, cgroup quota {quota_text}, "
        f"SLURM_CPUS_PER_TASK {'unset' if slurm is None else slurm}"
    )


def apply_thread_policy() -> int:
    """Set torch's intra-op thread count by the policy (unless OMP_NUM_THREADS chose it); returns it."""
    if "OMP_NUM_THREADS" in os.environ:
        # Set again, not only read: something in this process may have changed torch's count since it
        # loaded (a library, a benchmark), and the count is part of the cache key.
        try:
            torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"].split(",")[0]))
        except ValueError:  # not a count; OpenMP itself ignores it too
            pass
        log.info("threads: %d (OMP_NUM_THREADS)", torch.get_num_threads())
        return torch.get_num_threads()
    threads, reason = policy_threads()
    torch.set_num_threads(threads)
    log.info("threads: %d (%s)", threads, reason)
    return threads

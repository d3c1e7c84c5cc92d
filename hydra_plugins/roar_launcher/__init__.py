"""`hydra/launcher=slurm` (roar/conf/hydra/launcher/slurm.yaml): hydra-submitit-launcher's SLURM launcher,
with its settings checked before anything is submitted. Hydra takes launchers only from the `hydra_plugins`
namespace package, hence this package beside `roar`."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from typing import NamedTuple

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as SubmititSlurmLauncher
from omegaconf import OmegaConf


class LaunchError(ValueError):
    """A sweep that must not be submitted; its message is one line."""


class Node(NamedTuple):
    """One node of a partition, as sinfo describes it. (Not a dataclass: Hydra's plugin scan runs this
    module without registering it in sys.modules, which dataclasses need.)"""

    name: str
    cpus: int
    memory_mb: int
    gpus: int


def partition_nodes(partition: str | None) -> tuple[str, list[Node]] | None:
    """The partition's name (the cluster's default where `partition` is None) and its nodes, as `sinfo`
    reports them; None where sinfo cannot be asked (no SLURM client here: submitting would fail anyway)."""
    if shutil.which("sinfo") is None:
        return None
    try:
        listed = subprocess.run(
            ["sinfo", "--noheader", "--Node", "--format=%P|%n|%c|%m|%G"], capture_output=True, text=True,
            timeout=30,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return None
    if listed.returncode != 0:
        return None
    nodes: dict[str, list[Node]] = {}
    default = None
    for line in listed.stdout.splitlines():
        name, host, cpus, memory, gres = line.strip().split("|")
        if name.endswith("*"):  # sinfo marks the default partition
            name = default = name[:-1]
        nodes.setdefault(name, []).append(Node(host, int(cpus), int(memory), _gpus(gres)))
    partition = partition or default
    if partition not in nodes:
        raise LaunchError(
            f"hydra.launcher.partition: the cluster has no partition {partition!r}; it has "
            f"{', '.join(sorted(nodes))}"
        )
    return partition, nodes[partition]


def _gpus(gres: str) -> int:
    """The GPUs in sinfo's GRES column, e.g. `gpu:a100:4(S:0-1),shard:8` -> 4."""
    return sum(int(m.group(1)) for m in re.finditer(r"(?:^|,)gpu(?::[^:,(]+)*?:(\d+)", gres))


def _megabytes(size: str) -> int:
    """A SLURM memory size (`4G`, `500M`, `2048`: megabytes unless a unit says otherwise) in MB."""
    number, unit = re.fullmatch(r"(\d+)\s*([KMGT]?)B?", str(size).strip().upper()).groups()
    return int(number) * {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024**2}[unit]


class SlurmLauncher(SubmititSlurmLauncher):
    """Submits the sweep as a SLURM job array; on USR2 (time limit near, or preemption) a job is requeued
    and, rerun, resumes from the stage cache and its last checkpoint."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from submitit.core.utils import FailedJobError, UncompletedJobError

        try:
            self.check()
        except LaunchError as error:
            print(f"roar: error: {error}", file=sys.stderr)
            sys.exit(2)
        try:
            return super().launch(job_overrides, initial_job_idx)
        except (FailedJobError, UncompletedJobError) as error:
            # submitit's message is the failed job's whole log: its first line names the job, the log why.
            first = next(
                (line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__
            )
            logs = self.params["submitit_folder"]
            print(f"roar: error: a SLURM job failed: {first}; its log is under {logs}; submit the same "
                  "command again to resume (finished stages are reused, an interrupted fit continues from "
                  "its last.ckpt)", file=sys.stderr)  # fmt: skip
            sys.exit(1)

    def check(self) -> None:
        """Refuse a sweep whose jobs could never run as asked: a time limit within the requeue signal's
        delay, or a request no node of the partition can hold (SLURM would keep it pending forever, with
        reason PartitionConfig or Resources, and this process would wait with it)."""
        timeout_s, delay_s = 60 * self.params["timeout_min"], self.params["signal_delay_s"]
        if timeout_s <= delay_s:
            raise LaunchError(
                f"hydra.launcher.timeout_min: {self.params['timeout_min']} min does not outlast "
                f"hydra.launcher.signal_delay_s ({delay_s} s): every job would be told to requeue at once"
            )
        tasks, job_nodes = self.params.get("tasks_per_node") or 1, self.params.get("nodes") or 1
        trainer = OmegaConf.select(self.config, "hydra.runtime.choices.trainer") if self.config else None
        if tasks * job_nodes > 1 and trainer != "ddp":
            raise LaunchError(
                f"hydra.launcher: {job_nodes} node(s) x {tasks} task(s) per job with trainer={trainer}: "
                "every task would run the whole job alone; use trainer=ddp, whose fits span the tasks"
            )
        found = partition_nodes(self.params.get("partition"))
        if found is None:
            return
        partition, nodes = found
        if job_nodes > len(nodes):
            raise LaunchError(
                f"hydra.launcher.nodes: {job_nodes}, but partition {partition} has {len(nodes)} node(s)"
            )
        cpus = tasks * (self.params.get("cpus_per_task") or 1)
        gpus = self.params.get("gpus_per_node") or 0
        if self.params.get("mem_gb"):
            memory_mb = 1024 * self.params["mem_gb"]
        elif self.params.get("mem_per_cpu"):
            memory_mb = cpus * _megabytes(self.params["mem_per_cpu"])
        else:
            memory_mb = 0  # the cluster's default share of the CPUs asked for
        if any(n.cpus >= cpus and n.memory_mb >= memory_mb and n.gpus >= gpus for n in nodes):
            return
        largest = max(nodes, key=lambda n: (n.cpus, n.memory_mb, n.gpus))
        raise LaunchError(
            f"hydra.launcher: each job asks for {_resources(cpus, memory_mb, gpus)} on one node, but no node "
            f"of partition {partition} has that; the largest, {largest.name}, offers "
            f"{_resources(largest.cpus, largest.memory_mb, largest.gpus)}: ask for less "
            "(hydra.launcher.cpus_per_task, mem_gb, gpus_per_node) or another partition"
        )


def _resources(cpus: int, memory_mb: float, gpus: int) -> str:
    return f"{cpus} CPUs, {memory_mb / 1024:.3g} GB of memory and {gpus} GPUs"

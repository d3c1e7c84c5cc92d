"""One job as several processes: the tasks of a multi-task SLURM job (`hydra/launcher=slurm
hydra.launcher.nodes=N hydra.launcher.tasks_per_node=G`), every task running the whole job.

Each task runs the same pipeline, and what each stage needs of the others is decided here:

- **Fits** are one DDP run over every task (Lightning's `ddp` strategy with its SLURM environment): all
  tasks train together, rank 0 stores the model, the others load it (`StageCache.get_or_compute` with
  `ranks`).
- **Shards** (the dataset store, removal codes) are filled together as any concurrent jobs fill them: each
  task writes the shards no other holds (`StageCache.fill`), so the decoding and the saliency stages are
  split across the tasks.
- **What a person reads** — the run's report, stages.csv, the W&B run — is written by rank 0 alone; the
  other tasks log to `app.rank<N>.log` beside rank 0's `app.log`.

The process group is started here, before the first stage, from the same SLURM variables Lightning reads
(its `SLURMEnvironment`: the first node of the job's node list, a port from the job id), so that barriers
and broadcasts work between fits; Lightning finds it started and uses it. Outside such a job (a laptop, a
one-task SLURM job, `trainer=ddp` spawning its workers on one node) there is one rank and nothing here does
anything.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

import torch

from roar.errors import ConfigError

log = logging.getLogger(__name__)

# How long a task waits at a barrier or in a collective for the others: a task that died (its node lost,
# killed) stops the rest after this long, where SLURM has not stopped them already (SLURM_KILL_BAD_EXIT).
TIMEOUT = datetime.timedelta(minutes=30)


@dataclass(frozen=True)
class Ranks:
    """This process's place among the tasks of its job."""

    rank: int = 0
    world: int = 1
    local: int = 0
    nodes: int = 1
    per_node: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def broadcast(self, value):
        """Rank 0's `value`, on every rank (any picklable value)."""
        if self.world == 1:
            return value
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]


def job_ranks() -> Ranks:
    """The tasks of the SLURM job step this process is one of (srun sets SLURM_STEP_ID; a batch script's
    own process is no step), else one rank."""
    env = os.environ
    if "SLURM_STEP_ID" not in env or int(env.get("SLURM_NTASKS", "1")) <= 1:
        return Ranks()
    world, nodes = int(env["SLURM_NTASKS"]), int(env.get("SLURM_NNODES", "1"))
    per_node = (
        int(env["SLURM_NTASKS_PER_NODE"].split("(")[0])
        if env.get("SLURM_NTASKS_PER_NODE")
        else world // nodes
    )
    return Ranks(int(env["SLURM_PROCID"]), world, int(env.get("SLURM_LOCALID", "0")), nodes, per_node)


def trainer_setting(key: str):
    """`${roar_ddp:strategy|devices|nodes}` of trainer=ddp: across the job's tasks under a multi-task SLURM
    job (Lightning's `ddp`, one device per task), else every device of this node in spawned workers."""
    ranks = job_ranks()
    multi = ranks.world > 1
    settings = {"strategy": "ddp" if multi else "ddp_spawn", "devices": ranks.per_node if multi else -1,
                "nodes": ranks.nodes}  # fmt: skip
    if key not in settings:
        raise ValueError(f"${{roar_ddp:{key}}}: unknown key; use {', '.join(settings)}")
    return settings[key]


def start(trainer_cfg) -> Ranks:
    """This process's ranks, with the process group started where there are several (once per process):
    one task per device, each its own GPU. A multi-task job whose trainer is not DDP would run the whole
    job once per task, each fit alone: refused in one line."""
    ranks = job_ranks()
    if ranks.world == 1:
        return ranks
    strategy = str(trainer_cfg.get("strategy", ""))
    if strategy != "ddp":
        raise ConfigError(
            f"trainer.strategy: {strategy or 'none'}, but this job runs as {ranks.world} SLURM tasks "
            "(hydra.launcher.nodes, tasks_per_node): each would run the whole job alone; use trainer=ddp, "
            "whose fits span the tasks, or one task per job"
        )
    if torch.distributed.is_initialized():
        return ranks
    from lightning_fabric.plugins.environments import SLURMEnvironment

    environment = SLURMEnvironment()
    gpu = str(trainer_cfg.get("accelerator", "cpu")) in ("gpu", "cuda") and torch.cuda.is_available()
    if gpu:
        torch.cuda.set_device(ranks.local)  # "cuda" is this task's GPU for every stage outside the fits too
    torch.distributed.init_process_group(
        "nccl" if gpu else "gloo",
        init_method=f"tcp://{environment.main_address}:{environment.main_port}",
        rank=ranks.rank,
        world_size=ranks.world,
        timeout=TIMEOUT,
    )
    log.info("rank %d of %d (node %d of %d) started", ranks.rank, ranks.world, ranks.rank // ranks.per_node,
             ranks.nodes)  # fmt: skip
    return ranks


def log_suffix() -> str:
    """`${roar_rank_suffix:}`: "" for rank 0 (app.log), ".rank<N>" for the others (app.rank1.log)."""
    ranks = job_ranks()
    return "" if ranks.main else f".rank{ranks.rank}"

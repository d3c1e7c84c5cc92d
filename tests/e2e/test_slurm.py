"""On a real SLURM cluster (`slurm/cluster-up.sh` brings one up on this machine): a sweep through
hydra/launcher=slurm and its report, and a job told to requeue (USR2) that resumes where it stopped."""

from __future__ import annotations

import csv
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import wandb_records
from tests.conftest import run_command, succeeded


def _no_cluster() -> str | None:
    """Why the SLURM tests cannot run here, or None where a cluster answers."""
    bring_up = "bring one up with `slurm/cluster-up.sh` (as root, Debian/Ubuntu) or `make slurm-up`"
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return f"no SLURM client (sinfo, sbatch) on this machine; {bring_up}"
    try:
        nodes = subprocess.run(
            ["sinfo", "--noheader", "--responding", "--states=idle,mixed,allocated", "--format=%N"],
            capture_output=True, text=True, timeout=20,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return f"no SLURM controller answers (sinfo timed out); {bring_up}"
    if nodes.returncode != 0 or not nodes.stdout.strip():
        return f"no SLURM cluster is up ({nodes.stderr.strip() or 'no node is available'}); {bring_up}"
    return None


NO_CLUSTER = _no_cluster()
pytestmark = [pytest.mark.slurm, pytest.mark.skipif(NO_CLUSTER is not None, reason=str(NO_CLUSTER))]

# Small jobs for a test cluster (the defaults in roar/conf/hydra/launcher/slurm.yaml are for real clusters).
SLURM = ["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1",
         "hydra.launcher.timeout_min=10"]  # fmt: skip


def _final_states(array: str) -> dict[str, str]:
    """Job id -> state once every job has ended, as submitit sees them (through sacct, or its stand-in on a
    cluster without accounting). A job writes its result before it exits, so it may still be running."""
    deadline = time.time() + 120
    while True:
        out = succeeded(subprocess.run(["sacct", "-o", "JobID,State", "--parsable2", "-j", array],
                                 capture_output=True, text=True, timeout=30)).stdout  # fmt: skip
        states = {line.split("|")[0]: line.split("|")[1] for line in out.splitlines()[1:] if "." not in line}
        if not {"RUNNING", "COMPLETING"} & set(states.values()) or time.time() > deadline:
            return states
        time.sleep(1)


def test_a_sweep_on_slurm_completes_and_its_report_is_made(tmp_path):
    methods = ("fullgrad", "random", "simple_fullgrad")
    succeeded(run_command("roar", "-m", *SLURM, f"method={','.join(methods)}", "roar.fractions=[0.5]",
                    "trainer.max_epochs=2", "hydra.sweep.dir=sweep", cwd=tmp_path))  # fmt: skip
    sweep = tmp_path / "sweep"
    # Three SLURM jobs (one array), each done, each with its own run directory.
    tasks = [p.name for p in (sweep / ".submitit").iterdir() if re.fullmatch(r"\d+_\d+", p.name)]
    (array,) = {task.split("_")[0] for task in tasks}
    assert _final_states(array) == {f"{array}_{i}": "COMPLETED" for i in range(3)}
    for i, method in enumerate(methods):
        with open(sweep / str(i) / "results.csv") as f:
            assert {r["method"] for r in csv.DictReader(f)} == {method}
        assert "Job completed successfully" in (sweep / str(i) / "app.log").read_text()

    succeeded(run_command("roar-report", "sweep", cwd=tmp_path))
    with open(sweep / "results.csv") as f:
        cells = {(r["method"], float(r["fraction"])) for r in csv.DictReader(f)}
    assert cells == {(m, f) for m in methods for f in (0.0, 0.5)}
    assert (sweep / "roar_curve.png").exists() and (sweep / "summary.md").exists()
    info = wandb_records.run_info(wandb_records.run_file(sweep))
    assert (info.run_group, info.job_type) == ("roar · digits · small_cnn · sweep (sweep)", "report")


def test_a_job_told_to_requeue_resumes_from_its_last_checkpoint_to_the_same_result(tmp_path):
    cell = ["method=random", "roar.fractions=[0.5]", "trainer.max_epochs=8", "logger=none"]
    roar = str(Path(sys.executable).parent / "roar")
    sweep = subprocess.Popen(
        [roar, "-m", *SLURM, *cell, "hydra.sweep.dir=sweep"], cwd=tmp_path,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.time() + 300
    while not list(tmp_path.glob("cache/train/*/work/checkpoints/last.ckpt")):
        assert sweep.poll() is None and time.time() < deadline, "the job ended before it could be signalled"
        time.sleep(0.05)
    (job,) = [p.name for p in (tmp_path / "sweep" / ".submitit").iterdir() if p.name.isdigit()]
    # What SLURM sends ahead of a time limit (--signal) or what a preemption looks like to submitit.
    succeeded(subprocess.run(["scancel", "--signal=USR2", job], capture_output=True, text=True, timeout=30))
    assert sweep.wait(timeout=600) == 0, sweep.stderr.read()[-3000:]

    log = (tmp_path / "sweep" / "0" / "app.log").read_text()
    assert "Requeued job" in log and "resuming from" in log
    succeeded(
        run_command("roar", *cell, "hydra.run.dir=uninterrupted", "paths.cache_dir=fresh", cwd=tmp_path)
    )
    resumed = (tmp_path / "sweep" / "0" / "results.csv").read_text()
    assert resumed == (tmp_path / "uninterrupted" / "results.csv").read_text()


def _largest_node() -> tuple[int, int]:
    """CPUs and memory (MB) of the partition's largest node, as sinfo reports them."""
    out = succeeded(subprocess.run(["sinfo", "--noheader", "--Node", "--format=%c %m"], capture_output=True,
                                   text=True, timeout=30)).stdout  # fmt: skip
    return max(tuple(map(int, line.split())) for line in out.splitlines())


@pytest.mark.parametrize("resource", ["cpus", "memory"])
def test_a_request_larger_than_every_node_is_refused_before_submitting(tmp_path, resource):
    cpus, memory_mb = _largest_node()
    too_large = (
        f"hydra.launcher.cpus_per_task={cpus + 1}" if resource == "cpus"
        else f"hydra.launcher.mem_gb={memory_mb // 1024 + 1}"
    )  # fmt: skip
    done = run_command("roar", "-m", *SLURM, too_large, "method=random,fullgrad", "hydra.sweep.dir=sweep",
                       cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    (line,) = done.stderr.strip().splitlines()
    assert (
        line.startswith("roar: error: hydra.launcher: each job asks for ") and "no node of partition" in line
    )
    assert f"offers {cpus} CPUs, {memory_mb / 1024:.3g} GB of memory and 0 GPUs" in line
    assert not (tmp_path / "sweep" / ".submitit").exists()  # nothing was submitted


# Every fit of a job as one DDP run over its two tasks (gloo on the CPU; sync_batchnorm needs CUDA).
DDP = [*SLURM, "hydra.launcher.tasks_per_node=2", "hydra.launcher.mem_gb=4", "trainer=ddp",
       "trainer.accelerator=cpu", "trainer.precision=32-true", "trainer.sync_batchnorm=false"]  # fmt: skip


def _steps(log: Path) -> list[int]:
    """The optimizer steps of each fit a rank's log reports."""
    return [int(n) for n in re.findall(r": (\d+) optimizer steps on rank \d of 2", log.read_text())]


def test_a_two_task_ddp_job_trains_every_fit_on_both_ranks_and_reports_once(tmp_path):
    grid = ["method=random", "roar.fractions=[0.5]", "trainer.max_epochs=2"]
    succeeded(run_command("roar", "-m", *DDP, *grid, "hydra.sweep.dir=sweep", cwd=tmp_path))
    job = tmp_path / "sweep" / "0"
    # Both ranks took part in both fits (the base model and the cell), each with half of the batches:
    # digits' 1167 training images in batches of 128 are 10 steps an epoch in one process, 5 per rank.
    assert _steps(job / "app.log") == _steps(job / "app.rank1.log") == [10, 10]
    # One report, one W&B run, each stage computed once.
    assert (job / "results.csv").is_file() and not list(job.glob("results.rank*"))
    assert len(list((job / "wandb").glob("offline-run-*"))) == 1
    with open(job / "stages.csv") as f:
        stages = list(csv.DictReader(f))
    assert [s["status"] for s in stages if s["stage"] == "train"] == ["computed", "computed"]
    shards = [m for m in (tmp_path / "cache" / "saliency").glob("*/manifest.json")]
    assert (
        len(shards) == 3
    )  # the codes of train, val and test: one shard each, written by one rank or the other
    computed = sum(
        int(n)
        for log in (job / "app.log", job / "app.rank1.log")
        for n in re.findall(r"removal codes \(\w+\) \(1 shard, (\d) computed here\)", log.read_text())
    )
    assert computed == 3  # fmt: skip


def _rank_pid(job_id: str, rank: int) -> int | None:
    """The pid of the Python process of task `rank` of SLURM job `job_id` on this machine."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = dict(v.split("=", 1) for v in (entry / "environ").read_text().split("\0") if "=" in v)
            command = (entry / "cmdline").read_text()
        except OSError:
            continue
        if (env.get("SLURM_JOB_ID"), env.get("SLURM_PROCID")) == (
            job_id,
            str(rank),
        ) and "submitit" in command:
            return int(entry.name)
    return None


def test_a_rank_killed_mid_fit_fails_the_job_in_one_line_and_the_job_submitted_again_resumes(tmp_path):
    cell = [*DDP, "method=random", "roar.fractions=[0.5]", "trainer.max_epochs=8", "logger=none"]
    roar = str(Path(sys.executable).parent / "roar")
    sweep = subprocess.Popen([roar, "-m", *cell, "hydra.sweep.dir=sweep"], cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.time() + 300
    while not list(tmp_path.glob("cache/train/*/work/checkpoints/last.ckpt")):
        assert sweep.poll() is None and time.time() < deadline, "the job ended before a rank could be killed"
        time.sleep(0.05)
    (job,) = [p.name for p in (tmp_path / "sweep" / ".submitit").iterdir() if p.name.isdigit()]
    pid = _rank_pid(job, 1)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert sweep.wait(timeout=600) == 1
    (line,) = sweep.stderr.read().strip().splitlines()
    assert line.startswith("roar: error: a SLURM job failed: ") and "submit the same command again" in line

    resumed = succeeded(run_command("roar", "-m", *cell, "hydra.sweep.dir=sweep", cwd=tmp_path))
    assert resumed.returncode == 0
    assert "resuming from" in (tmp_path / "sweep" / "0" / "app.log").read_text()
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    succeeded(run_command("roar", "-m", *cell, "hydra.sweep.dir=sweep", cwd=fresh))
    # The same weights as a job never interrupted: the same results.
    assert (tmp_path / "sweep" / "0" / "results.csv").read_text() == (
        fresh / "sweep" / "0" / "results.csv"
    ).read_text()


def test_several_tasks_without_a_ddp_trainer_are_refused_before_submitting(tmp_path):
    done = run_command("roar", "-m", *SLURM, "hydra.launcher.tasks_per_node=2", "method=random,fullgrad",
                       "hydra.sweep.dir=sweep", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("roar: error: hydra.launcher: 1 node(s) x 2 task(s) per job with trainer=cpu")
    assert not (tmp_path / "sweep" / ".submitit").exists()

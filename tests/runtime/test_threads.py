"""The thread policy (roar/threads.py) and the thread count in the stage cache's keys."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from roar.cli.app import experiment
from roar.config import ConfigError
from roar.runtime.cache import MANIFEST
from roar.runtime.threads import affinity_cpus, cgroup_cpu_quota, policy_threads
from tests.conftest import REPO, compose_config, run_command

needs_two_cpus = pytest.mark.skipif(
    policy_threads(environ={})[0] < 2, reason="needs 2 CPUs (affinity mask and cgroup quota)"
)


@pytest.fixture
def torch_threads():
    """Restores this process's thread count, which the tests below change."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@needs_two_cpus
def test_policy_takes_the_affinity_mask():
    everything = os.sched_getaffinity(0)
    if cgroup_cpu_quota() is None:
        assert policy_threads(environ={})[0] == len(everything)
    os.sched_setaffinity(0, {min(everything)})
    try:
        threads, reason = policy_threads(environ={})
    finally:
        os.sched_setaffinity(0, everything)
    assert threads == 1 and "affinity 1 CPUs" in reason


@needs_two_cpus
def test_policy_takes_slurm_cpus_per_task():
    threads, reason = policy_threads(environ={"SLURM_CPUS_PER_TASK": "1"})
    assert threads == 1 and "SLURM_CPUS_PER_TASK 1" in reason
    # More than the job may run on is not granted: the affinity mask and quota still bound it.
    assert policy_threads(environ={"SLURM_CPUS_PER_TASK": "4096"})[0] == policy_threads(environ={})[0]
    with pytest.raises(ConfigError, match="SLURM_CPUS_PER_TASK='two'"):
        policy_threads(environ={"SLURM_CPUS_PER_TASK": "two"})


def _fake_proc(tmp_path: Path, cgroup: str, mounts: list[tuple[str, str, str, Path]]) -> Path:
    """A /proc/self with the given /proc/self/cgroup text and cgroup mounts (type, options, root, point)."""
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "cgroup").write_text(cgroup)
    lines = ["22 1 0:21 / /proc rw,nosuid - proc proc rw"]
    lines += [
        f"{30 + i} 23 0:{40 + i} {root} {point} rw,relatime - {fs_type} cgroup {options}"
        for i, (fs_type, options, root, point) in enumerate(mounts)
    ]
    (proc / "mountinfo").write_text("\n".join(lines) + "\n")
    return proc


def test_cgroup_v2_quota_of_an_ancestor_limits_the_process(tmp_path):
    mount = tmp_path / "sys/fs/cgroup"
    job = mount / "slurm/job_7/step_0"
    job.mkdir(parents=True)
    (mount / "cpu.max").write_text("max 100000\n")
    (mount / "slurm/job_7/cpu.max").write_text("250000 100000\n")  # the job's 2.5 CPUs
    (job / "cpu.max").write_text("max 100000\n")
    proc = _fake_proc(tmp_path, "0::/slurm/job_7/step_0\n", [("cgroup2", "rw,nsdelegate", "/", mount)])
    assert cgroup_cpu_quota(proc) == 2.5
    if affinity_cpus() >= 3:
        assert policy_threads(environ={}, proc=proc)[0] == 2  # a fraction of a CPU gets no thread


def test_cgroup_v1_quota_inside_a_container(tmp_path):
    # A container sees its own cgroup as the mount's root: /proc/self/cgroup names the host's path.
    point = tmp_path / "sys/fs/cgroup/cpu,cpuacct"
    point.mkdir(parents=True)
    (point / "cpu.cfs_quota_us").write_text("50000\n")
    (point / "cpu.cfs_period_us").write_text("100000\n")
    cgroup = "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n0::/\n"
    mounts = [("cgroup", "rw,cpu,cpuacct", "/docker/abc", point)]
    proc = _fake_proc(tmp_path, cgroup, mounts)
    assert cgroup_cpu_quota(proc) == 0.5
    assert policy_threads(environ={}, proc=proc)[0] == 1  # never fewer than one thread
    (point / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_quota(proc) is None


CPU_CGROUP_V1 = Path("/sys/fs/cgroup/cpu")


@needs_two_cpus
@pytest.mark.skipif(
    not os.access(CPU_CGROUP_V1 / "cgroup.procs", os.W_OK),
    reason="needs a writable cgroup v1 cpu hierarchy (root) to put a process under a real quota",
)
def test_policy_takes_a_real_cgroup_quota(tmp_path):
    group = CPU_CGROUP_V1 / f"roar-test-{os.getpid()}"
    group.mkdir()
    try:
        (group / "cpu.cfs_period_us").write_text("100000")
        (group / "cpu.cfs_quota_us").write_text("150000")  # 1.5 CPUs
        program = "from roar.runtime.threads import policy_threads; print(policy_threads(environ={})[0])"
        done = subprocess.run(
            ["sh", "-c", f'echo $$ > {group}/cgroup.procs && exec "$0" -c "$1"', sys.executable, program],
            cwd=REPO, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    finally:
        group.rmdir()
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"


def _run(tmp_path: Path, name: str, slurm_cpus: str, monkeypatch) -> Path:
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", slurm_cpus)
    overrides = ("trainer.max_epochs=1", "method=[random]", "roar.fractions=[0.5]", "logger=none")
    return experiment(compose_config(tmp_path, *overrides, f"paths.output_dir={tmp_path / name}"))


@needs_two_cpus
def test_two_thread_counts_on_one_cache_do_not_mix_artifacts(tmp_path, monkeypatch, torch_threads):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # so that roar's policy chooses the count
    one = _run(tmp_path, "one", "1", monkeypatch)
    assert torch.get_num_threads() == 1
    two = _run(tmp_path, "two", "2", monkeypatch)
    assert torch.get_num_threads() == 2
    with open(two / "stages.csv") as f:
        stages = list(csv.DictReader(f))
    # Nothing the one-thread run computed was reused: each stage has a key per thread count.
    assert {s["stage"] for s in stages} == {"train", "saliency"}
    assert all(s["status"] == "computed" for s in stages), stages
    cache = tmp_path / "cache"
    for stage in (s for s in stages if s["stage"] == "train"):
        manifest = json.loads((cache / "train" / stage["key"] / MANIFEST).read_text())
        assert manifest["spec"]["cpu_threads"] == 2
    # The removal codes' shards: each shard's spec holds the method's, with the thread count.
    shards = [json.loads(p.read_text())["spec"] for p in (cache / "saliency").glob("*/" + MANIFEST)]
    assert sorted(s["saliency"]["cpu_threads"] for s in shards) == [1, 1, 1, 2, 2, 2]  # 3 splits each
    assert len(list((cache / "train").glob("*/" + MANIFEST))) == 4  # base and cell, for each count
    assert (one / "results.csv").is_file()


def test_a_bad_slurm_cpus_per_task_is_one_line_before_any_compute(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "lots")
    done = run_command("roar", "logger=none", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "roar: error: SLURM_CPUS_PER_TASK='lots' is not a positive whole number of CPUs"
    ]
    assert not (tmp_path / "cache").exists()

"""Small-CNN training throughput on an idle CPU and on one where another process is busy on every core.

The demo's training (digits, small_cnn, batch 128, roar/conf/trainer/cpu.yaml: deterministic, float32) runs
under Lightning, without validation, checkpoints or logger, for WINDOW seconds of steps after a warm-up;
idle and loaded windows alternate ROUNDS times and the medians are compared. A loaded window first starts
one busy-looping process per CPU this process may run on (each ends by itself after a bound and is killed
once the window is over). Each variant runs in a fresh process, since the wait policy is read when torch
loads:

- roar's defaults: roar imported before torch, as its entry points do (OMP_WAIT_POLICY=PASSIVE), and the
  thread count chosen by roar/runtime/threads.py;
- the libgomp default: torch imported first, so its threads spin while they wait, and torch's own thread
  count (one per CPU of the affinity mask), as roar ran before it had a thread policy;
- one thread (what the README advised for a shared machine before), for comparison.

OMP_NUM_THREADS and OMP_WAIT_POLICY are removed from the measuring processes' environment (the third
variant sets its own): the rows are of the defaults. Other load on the machine shows in the idle figures,
so each row gives the load average.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

WINDOW, ROUNDS, WARMUP_STEPS = 6.0, 2, 10
TARGET = 0.40  # loaded throughput as a share of the idle one
ROAR_FIRST = "import roar, benchmarks.threads as b; b.measure(apply_policy=True)"
TORCH_FIRST = "import torch, roar, benchmarks.threads as b; b.measure(apply_policy=False)"
# label -> (the measuring process's program, environment it adds)
VARIANTS = {
    "roar's defaults (OMP_WAIT_POLICY=PASSIVE, thread policy)": (ROAR_FIRST, {}),
    "libgomp default (spinning waits), torch's thread count": (TORCH_FIRST, {}),
    "OMP_NUM_THREADS=1, OMP_WAIT_POLICY=PASSIVE": (ROAR_FIRST, {"OMP_NUM_THREADS": "1"}),
}
REPO = Path(__file__).resolve().parent.parent


@contextmanager
def busy_processes(count: int, bound_seconds: float) -> Iterator[None]:
    """`count` processes spinning in a Python loop; each stops by itself after `bound_seconds` should this
    process die, and all are killed when the block ends."""
    loop = f"import time\nend = time.monotonic() + {bound_seconds}\nwhile time.monotonic() < end: pass"
    spinners = [subprocess.Popen([sys.executable, "-c", loop]) for _ in range(count)]
    try:
        time.sleep(0.5)  # running before the window opens
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def steps_per_second(cfg, datamodule, seconds: float) -> float:
    """Training steps per second of wall time over `seconds`, after WARMUP_STEPS untimed ones."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    class Window(pl.Callback):
        steps, start, rate = 0, 0.0, 0.0

        def on_train_batch_end(self, trainer, *args):
            self.steps += 1
            now = time.perf_counter()
            if self.steps == WARMUP_STEPS:
                self.start = now
            elif self.steps > WARMUP_STEPS and now - self.start >= seconds:
                self.rate = (self.steps - WARMUP_STEPS) / (now - self.start)
                trainer.should_stop = True

    window = Window()  # max_epochs only sizes the one-cycle schedule: the window stops the fit
    trainer = instantiate(
        cfg.trainer, max_epochs=10_000, limit_val_batches=0, num_sanity_val_steps=0, callbacks=[window],
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(instantiate(cfg.model), datamodule=datamodule)
    return window.rate


def measure(apply_policy: bool) -> None:
    """Run in the measuring process: prints one JSON line of threads, rates and load averages."""
    import logging
    import warnings

    import torch
    from hydra.utils import instantiate

    from benchmarks.timing import config
    from roar.runtime.threads import affinity_cpus, apply_thread_policy

    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    if apply_policy:
        apply_thread_policy()
    cfg = config("experiment=digits")
    datamodule = instantiate(cfg.dataset.datamodule)
    load_before = os.getloadavg()[0]
    idle, loaded = [], []
    for _ in range(ROUNDS):
        idle.append(steps_per_second(cfg, datamodule, WINDOW))
        with busy_processes(affinity_cpus(), bound_seconds=10 * WINDOW + 60):
            loaded.append(steps_per_second(cfg, datamodule, WINDOW))
    print(json.dumps({
        "threads": torch.get_num_threads(), "busy": affinity_cpus(),
        "batch": cfg.dataset.datamodule.batch_size,
        "idle": statistics.median(idle), "loaded": statistics.median(loaded),
        "load_before": load_before, "load_after": os.getloadavg()[0],
    }))  # fmt: skip


def run() -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    rows = []
    for label, (program, settings) in VARIANTS.items():
        done = subprocess.run([sys.executable, "-c", program], cwd=REPO, env={**env, **settings},
                              capture_output=True, text=True, timeout=900)  # fmt: skip
        if done.returncode != 0:
            rows.append(f"small-CNN training, idle vs loaded, {label}: failed ({done.stderr.strip()[-300:]})")
            continue
        m = json.loads(done.stdout.strip().splitlines()[-1])
        share = m["loaded"] / m["idle"]
        verdict = "met" if share >= TARGET else "NOT met"
        rows.append(
            f"small-CNN training (digits, batch {m['batch']}, trainer=cpu), {label}, {m['threads']} threads: "
            f"idle {m['idle']:.1f} it/s, loaded ({m['busy']} busy processes) {m['loaded']:.1f} it/s = "
            f"{100 * share:.0f}% of idle (target {100 * TARGET:.0f}%: {verdict}); medians of {ROUNDS} "
            f"interleaved {WINDOW:g} s windows; load average {m['load_before']:.1f} before, "
            f"{m['load_after']:.1f} after"
        )
    return rows


if __name__ == "__main__":
    print("\n".join(run()))

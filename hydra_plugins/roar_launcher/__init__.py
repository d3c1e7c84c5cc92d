"""`hydra/launcher=slurm` (conf/hydra/launcher/slurm.yaml): hydra-submitit-launcher's SLURM launcher, with
its settings checked before anything is submitted. Hydra takes launchers only from the `hydra_plugins`
namespace package, hence this package beside `roar`."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as SubmititSlurmLauncher


class SlurmLauncher(SubmititSlurmLauncher):
    """Submits the sweep as a SLURM job array; on USR2 (time limit near, or preemption) a job is requeued
    and, rerun, resumes from the stage cache and its last checkpoint."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        timeout_s, delay_s = 60 * self.params["timeout_min"], self.params["signal_delay_s"]
        if timeout_s <= delay_s:
            print(
                f"roar: error: hydra.launcher.timeout_min: {self.params['timeout_min']} min does not outlast "
                f"hydra.launcher.signal_delay_s ({delay_s} s): every job would be told to requeue at once",
                file=sys.stderr,
            )
            sys.exit(2)
        return super().launch(job_overrides, initial_job_idx)

"""The OmegaConf resolvers roar's configuration uses, registered in one place before anything composes it
(the commands, `roar.run`, the tests, the benchmarks)."""

from __future__ import annotations

from omegaconf import OmegaConf

from roar.conf import options
from roar.data.vision import image_folder
from roar.removal import FILLS
from roar.report.naming import run_and_group_name, unique_dir
from roar.runtime.distributed import log_suffix, trainer_setting


def register_resolvers() -> None:
    # `${sweep:name}` and `${sweep:group}`: how a job names itself to the logger (roar/report/naming.py).
    OmegaConf.register_new_resolver("sweep", run_and_group_name, replace=True)
    # Cached, as Hydra's `now`: every later look-up of the run directory gives the one created first (Hydra
    # carries the cache over to each job of a sweep).
    OmegaConf.register_new_resolver("unique_dir", unique_dir, use_cache=True, replace=True)
    # `${image_folder:classes|channels,ROOT}`: what dataset=imagefolder reads from the folder itself.
    OmegaConf.register_new_resolver("image_folder", image_folder, replace=True)
    # The help's lists are read from what exists, not written out in it: a preset, task or fill added
    # later shows up without anyone editing the help (tests/docs/test_drift.py).
    OmegaConf.register_new_resolver("roar_options", lambda group: ", ".join(options(group)), replace=True)
    OmegaConf.register_new_resolver("roar_fills", lambda: ", ".join(FILLS), replace=True)
    # trainer=ddp across the tasks of a multi-task SLURM job, and each task's own log file there.
    OmegaConf.register_new_resolver("roar_ddp", trainer_setting, replace=True)
    OmegaConf.register_new_resolver("roar_rank_suffix", log_suffix, replace=True)

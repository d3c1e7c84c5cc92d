"""roar's Hydra configuration groups, shipped inside the package (Hydra finds them as `pkg://roar.conf`).

Each group mirrors a code folder: dataset/ -> roar/data, model/ -> roar/models, method/ -> roar/saliency,
task/ -> roar/tasks, roar/ -> roar/removal (what is removed and how it is filled), trainer/ and logger/ ->
roar/stages/training.py and roar/report/wandb.py; experiment/ holds presets over all of them."""

from pathlib import Path

# The directory of the YAML files, for the code that reads them without Hydra (the method registry, the
# one-line check of `group=option` overrides, the loggers roar-report may start).
CONFIG_DIR = Path(__file__).resolve().parent
# Hydra's name for the same directory: a search-path entry that works wherever roar is installed.
CONFIG_MODULE = "pkg://roar.conf"


def options(group: str) -> list[str]:
    """The options of the config group `group`: the names of its YAML files here, sorted. `roar --help`
    lists presets and tasks from them (`${roar_options:GROUP}`), so the help cannot name one that is gone
    or miss one that was added."""
    return sorted(path.stem for path in (CONFIG_DIR / group).glob("*.yaml"))

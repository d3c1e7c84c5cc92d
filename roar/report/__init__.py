"""What a run writes and shows: the results table and curve (results.py, figures.py, publish.py), the ranking
by area under the curve (summary.py), the agreement between protocols (agreement.py), the W&B logger
(wandb.py) and how runs and sweeps are named for it (naming.py)."""

from roar.report.publish import publish
from roar.report.results import PER_IMAGE, Outputs, read_csv, read_per_image
from roar.report.wandb import RoarWandbLogger, SeedCurves, close_logger

__all__ = [
    "PER_IMAGE",
    "Outputs",
    "RoarWandbLogger",
    "SeedCurves",
    "close_logger",
    "publish",
    "read_csv",
    "read_per_image",
]

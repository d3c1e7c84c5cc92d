"""The stages every task is built from: base model -> saliency maps -> retrained models on modified data.

Each stage is a function of (config, upstream artifacts) returning an artifact, keyed in the cache by the
configuration values that determine it (specs.py): the checks before any compute (checks.py), training
(train.py around the Lightning fit of training.py), a method's removal codes and maps (saliency.py) and a
cell's modified data (modified.py); the dataset store (roar/data/store.py) comes first."""

from roar.stages.checks import MethodError, check_methods, check_model, load_data
from roar.stages.modified import removed_datamodule
from roar.stages.saliency import code_stage, map_stage
from roar.stages.specs import mask_spec, removal_spec, saliency_spec, training_spec
from roar.stages.train import train_stage

__all__ = [
    "MethodError",
    "check_methods",
    "check_model",
    "code_stage",
    "load_data",
    "mask_spec",
    "removal_spec",
    "removed_datamodule",
    "saliency_spec",
    "map_stage",
    "train_stage",
    "training_spec",
]

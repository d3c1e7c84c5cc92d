"""The configuration's schema: the type and range of every value roar/conf/ defines, checked in one pass over
the composed, resolved configuration before any data loads.

The models are strict: a value must already have its type (the command line gives `true` a bool, `1.5` a
float), so `trainer.max_epochs=true` is not one epoch and `seed=1.5` is not a seed. Keys roar/conf/ does not
define (`+trainer.gradient_clip_val=1`) pass through to the object they configure, which checks them.
Checks that relate several values (the oracle needs a dataset with ground truth) and a method's own
parameters (checked by constructing the method) are in roar/config/validate.py.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from roar.data.datamodule import STORAGES
from roar.models.classifier import ImageClassifier
from roar.removal import FILLS, MODES, RANK_BY, grid_level

NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveInt = Annotated[int, Field(ge=1)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
# A fraction of the pixels removed (0: the unmodified data) or of the images split off.
RemovedFraction = Annotated[float, Field(ge=0, lt=1)]
ProperFraction = Annotated[float, Field(gt=0, lt=1)]
ClassCount = Annotated[int, Field(ge=2)]

# explain.target: which class each gallery map explains.
EXPLAIN_TARGETS = ("label", "predicted")
# task=perturbation (roar/tasks/perturbation.py): which entries first (least or most salient), removing them
# or restoring them, and what is measured.
ORDERS = ("lerf", "morf")
PERTURBATION_MODES = ("deletion", "insertion")
METRICS = ("logit_change", "probability", "accuracy")
# task=fidelity (roar/tasks/fidelity.py): its scores are of the prediction, not of a logit's change.
FIDELITY_METRICS = ("accuracy", "probability")
# task.order of task=randomization: the layers re-initialised from the logits down, one more at each step,
# or each on its own (roar/tasks/randomization.py).
RANDOMIZATION_ORDERS = ("cascading", "independent")


def _devices(value: Any) -> Any:
    """Lightning's `devices`: a count, -1 (every device), "auto", or a list of device indices."""
    count = isinstance(value, int) and not isinstance(value, bool) and (value >= 1 or value == -1)
    indices = (
        isinstance(value, list)
        and len(value) > 0
        and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in value)
    )
    if not (count or indices or value == "auto"):
        raise ValueError("give a positive number of devices, -1 (all), auto, or a list of device indices")
    return value


class Section(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


def _on_grid(fraction: float) -> float:
    """A ROAR fraction on the 1 % grid, the fractions removal codes store exactly (roar/removal/masks.py)."""
    grid_level(fraction)
    return fraction


class Roar(Section):
    fractions: Annotated[list[Annotated[RemovedFraction, AfterValidator(_on_grid)]], Field(min_length=1)]
    rank_by: Literal[RANK_BY]
    signed: bool
    proceed_at_chance: bool
    mode: Literal[MODES]
    fill: Literal[FILLS]
    saliency_batch_size: PositiveInt


class Explain(Section):
    num_images: PositiveInt
    target: Literal[EXPLAIN_TARGETS]
    logit_shares: bool


def _orders(value: Any) -> Any:
    """task.order of task=perturbation: one of ORDERS, or a list of distinct ones (both: SRG)."""
    if value in ORDERS or (isinstance(value, list) and value and len(set(value)) == len(value) <= len(ORDERS)
                           and all(order in ORDERS for order in value)):  # fmt: skip
        return value
    raise ValueError(f"give {' or '.join(ORDERS)}, or both as [{','.join(ORDERS)}]")


class Task(Section):
    """The options every task may have: none. A task with options of its own has its own model in TASKS,
    chosen by the task's name (the module of its `_target_`), so that one key (`order`) can mean one thing
    to one task and another to another."""


class PerturbationTask(Task):
    """roar/conf/task/perturbation.yaml (roar/tasks/perturbation.py)."""

    fractions: Annotated[list[ProperFraction], Field(min_length=1)] | None = None
    fill: Literal[FILLS] | None = None
    order: Annotated[Any, AfterValidator(_orders)] = None
    mode: Literal[PERTURBATION_MODES] | None = None
    metric: Literal[METRICS] | None = None


class RandomizationTask(Task):
    """roar/conf/task/randomization.yaml (roar/tasks/randomization.py)."""

    order: Literal[RANDOMIZATION_ORDERS] | None = None
    num_images: PositiveInt | None = None


class FidelityTask(Task):
    """roar/conf/task/fidelity.yaml (roar/tasks/fidelity.py)."""

    fractions: Annotated[list[ProperFraction], Field(min_length=1)] | None = None
    beta: ProperFraction | None = None
    samples: PositiveInt | None = None
    epochs: PositiveInt | None = None
    fill: Literal[FILLS] | None = None
    metric: Literal[FIDELITY_METRICS] | None = None


# roar.tasks.<name>.run -> the model of its options; the other tasks have none (Task).
TASKS: dict[str, type[Task]] = {
    "perturbation": PerturbationTask,
    "randomization": RandomizationTask,
    "fidelity": FidelityTask,
}


def task_name(task: dict) -> str | None:
    """The name of the task whose `_target_` is roar.tasks.<name>.run (None for a target elsewhere)."""
    parts = str(task.get("_target_", "")).split(".")
    return parts[2] if len(parts) == 4 and parts[:2] == ["roar", "tasks"] else None


class DataModule(Section):
    """The keys of every datamodule in roar/conf/dataset/ (each has a subset of them)."""

    batch_size: PositiveInt
    # A fraction of the images, or (an int) a number of them (roar.data.vision.holdout).
    val_fraction: ProperFraction | PositiveInt | None = None
    test_fraction: ProperFraction | None = None
    split_seed: NonNegativeInt | None = None
    train_size: PositiveInt | None = None
    val_size: PositiveInt | None = None
    test_size: PositiveInt | None = None
    num_classes: ClassCount | None = None
    channels: PositiveInt | None = None
    image_size: PositiveInt | None = None
    patch_sizes: Annotated[list[PositiveInt], Field(min_length=1)] | None = None
    noise: NonNegativeFloat | None = None
    contrast: PositiveFloat | None = None
    seed: NonNegativeInt | None = None
    read_workers: NonNegativeInt | None = None
    on_device: bool | None = None
    download: bool | None = None
    missing: str | None = None
    augment: dict | None = None

    @model_validator(mode="after")
    def _splits_leave_training_images(self) -> DataModule:
        if self.val_fraction is not None and self.test_fraction is not None:
            if isinstance(self.val_fraction, float) and self.val_fraction + self.test_fraction >= 1:
                raise ValueError(
                    f"val_fraction + test_fraction is {self.val_fraction + self.test_fraction:g}: "
                    "it must stay below 1 to leave training images"
                )
        return self


class Dataset(Section):
    name: str
    num_classes: ClassCount
    channels: PositiveInt
    # Defaults for a user's dataset config written before these existed (roar's own set them).
    storage: Literal[STORAGES] = "auto"
    workers: NonNegativeInt = 2
    ground_truth: bool = False
    root: str | None = None
    download: bool | None = None
    image_size: PositiveInt | None = None
    datamodule: DataModule


class Optimizer(Section):
    lr: PositiveFloat
    weight_decay: NonNegativeFloat | None = None
    momentum: Annotated[float, Field(ge=0, lt=1)] | None = None
    nesterov: bool | None = None


class Scheduler(Section):
    max_lr: PositiveFloat | None = None


class Net(Section):
    in_channels: PositiveInt | None = None
    num_classes: ClassCount | None = None
    widths: Annotated[list[PositiveInt], Field(min_length=1)] | None = None
    depth: PositiveInt | None = None


class Model(Section):
    num_classes: ClassCount
    name: str | None = None
    image_size: PositiveInt | None = None
    in_channels: PositiveInt | None = None
    net: Net | None = None
    optimizer: Optimizer
    scheduler: Scheduler | None = None
    compile: bool
    memory_format: Literal[ImageClassifier.MEMORY_FORMATS]


class Trainer(Section):
    accelerator: str = "cpu"
    devices: Annotated[Any, AfterValidator(_devices)] = "auto"
    num_nodes: PositiveInt | None = None
    max_epochs: PositiveInt
    precision: str | int | None = None
    deterministic: bool | None = None
    benchmark: bool | None = None
    log_every_n_steps: PositiveInt | None = None
    strategy: str | None = None
    sync_batchnorm: bool | None = None


class Noise(BaseModel):
    """A method's noise ensemble (roar.saliency.NoiseEnsemble, which checks which types exist: the schema
    loads no attribution library). Its seed is required: a config says where the noise comes from (the
    shipped ones: `${seed}`, the run's), rather than every run silently drawing seed 0's."""

    model_config = ConfigDict(strict=True, extra="forbid")

    type: str
    n_samples: PositiveInt | None = None
    noise_level: NonNegativeFloat | None = None
    seed: NonNegativeInt
    samples_per_pass: PositiveInt | None = None


class MethodParameters(Section):
    """The seed of the methods that draw noise, the noise ensemble and the blur of every method's maps; the
    rest each method checks when it is constructed
    (roar/config/validate.py), where torch would take a seed of the wrong type for an error of its own."""

    seed: NonNegativeInt | None = None
    # Not parameters of the method: the noisy copies its attributions are averaged over, and a Gaussian blur
    # of its maps (roar.saliency.PixelSaliency), 0 for none.
    noise: Noise | None = None
    blur_sigma: NonNegativeFloat | None = None


class Logger(Section):
    save_dir: str | None = None
    name: str | None = None
    project: str | None = None
    mode: str | None = None
    group: str | None = None


class Paths(Section):
    root_dir: str
    output_dir: str
    cache_dir: str
    data_dir: str


class Config(Section):
    seed: NonNegativeInt
    seeds: Annotated[list[NonNegativeInt], Field(min_length=1)]
    task: Task
    dataset: Dataset
    model: Model
    method: dict[str, MethodParameters] | None = None
    roar: Roar
    explain: Explain
    trainer: Trainer
    logger: Logger | None = None
    paths: Paths


def _values(node: Any) -> Any:
    """The configuration as plain values, without the keys that say how to build an object (`_target_`,
    `_partial_`): those are not values, and pydantic reserves names with a leading underscore."""
    if isinstance(node, dict):
        return {k: _values(v) for k, v in node.items() if not (k.startswith("_") and k.endswith("_"))}
    if isinstance(node, list):
        return [_values(v) for v in node]
    return node


UNION_MEMBERS = {"constrained-float", "constrained-int", "int", "float"}


def _error_line(error: ValidationError, prefix: tuple = ()) -> str:
    """The first error of `error` as one line naming its key (`prefix` + its location)."""
    first = error.errors()[0]
    # A union's member is named in the location (`val_fraction.constrained-float`): not a key.
    parts = [
        part for part in (*prefix, *first["loc"]) if not (isinstance(part, str) and part in UNION_MEMBERS)
    ]
    key = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in parts)
    key = key.lstrip(".")
    message = first["msg"].removeprefix("Value error, ")
    message = message[0].lower() + message[1:]
    if first["type"] == "missing":
        return f"{key}: required"
    if first["type"] == "value_error" and isinstance(first["input"], dict):
        return f"{key}: {message}"  # a check over several of the section's values
    return f"{key}: {first['input']!r}: {message}"


def schema_error(values: dict) -> str | None:
    """The first value of `values` (the resolved configuration as a dict) that the schema refuses, as one
    line naming its key (`trainer.max_epochs: True: input should be a valid integer`), or None. The task's
    options are checked by the model of that task (TASKS), once the rest has passed."""
    try:
        Config.model_validate(_values(values))
    except ValidationError as error:
        return _error_line(error)
    task = values.get("task") or {}
    try:
        TASKS.get(task_name(task), Task).model_validate(_values(task))
    except ValidationError as error:
        return _error_line(error, ("task",))
    return None

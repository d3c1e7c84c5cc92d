"""Train one classifier from scratch: the base model and every ROAR cell go through here."""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.callbacks import Callback, ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.callbacks.progress.tqdm_progress import Tqdm
from pytorch_lightning.loggers import CSVLogger, Logger
from pytorch_lightning.plugins import TorchCheckpointIO

from roar.data import TensorDataModule
from roar.models import ImageClassifier
from roar.runtime.cache import Work
from roar.runtime.console import interactive
from roar.runtime.distributed import job_ranks
from roar.runtime.files import UNREADABLE_TORCH_FILE, save_torch
from roar.runtime.interrupt import Interrupted

log = logging.getLogger(__name__)


class StageProgressBar(TQDMProgressBar):
    """One training bar per fit, labelled with what is being trained; no validation or test bars."""

    def __init__(self, label: str):
        super().__init__(leave=True)
        self.label = label

    def on_train_epoch_start(self, trainer, *args):
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description(f"{self.label} | epoch {trainer.current_epoch}")

    def init_validation_tqdm(self):
        return Tqdm(disable=True)

    def init_test_tqdm(self):
        return Tqdm(disable=True)


class RngStateInCheckpoint(Callback):
    """Saves torch's random-number-generator states with each checkpoint and restores them on resume, so
    that a fit resumed from last.ckpt draws the same shuffles (and dropout masks) as one never interrupted."""

    def state_dict(self) -> dict:
        state = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        torch.set_rng_state(state_dict["cpu"])
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint beside its target, fsyncs and renames it into place (`roar.runtime.files`),
    instead of Lightning's staging in $TMPDIR and copy across filesystems, which a kill or a full disk cut
    short."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_torch(checkpoint, path)


def resumable_checkpoint(path: Path) -> Path | None:
    """`path` if it holds a checkpoint that loads; one that does not (cut short, garbled) is removed, with
    a warning, so that the fit starts afresh and no later rerun trips over it again."""
    if not path.exists():
        return None
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except UNREADABLE_TORCH_FILE as error:
        log.warning("ignoring unreadable checkpoint %s (%s); training from scratch", path, error)
        path.unlink()
        return None
    return path


def _kept(label: str, last: Path, max_epochs: int) -> str:
    """What an interrupted fit leaves to resume from, in words."""
    if not last.exists():
        return f"{label}: no epoch had finished, it starts afresh"
    epochs = torch.load(last, map_location="cpu", weights_only=True)["epoch"] + 1
    return f"{label}: {last} holds epoch {epochs} of {max_epochs}"


def build_classifier(model_cfg: DictConfig) -> ImageClassifier:
    return instantiate(model_cfg)


def device_of(trainer_cfg: DictConfig) -> torch.device:
    """The device the trainer's accelerator trains on, for the stages that run outside a Trainer."""
    wants_gpu = trainer_cfg.get("accelerator", "cpu") in ("gpu", "cuda", "auto")
    return torch.device("cuda" if wants_gpu and torch.cuda.is_available() else "cpu")


def train_classifier(
    model_cfg: DictConfig,
    trainer_cfg: DictConfig,
    datamodule: TensorDataModule,
    seed: int,
    work: Work,
    label: str = "training",
    logger: Logger | None = None,
    init: dict | None = None,
) -> dict:
    """Fit a fresh model (or, with `init`, a state_dict to start from: a fine-tuning), keep the checkpoint
    with the best validation accuracy, then evaluate it on the test split.

    Returns an artifact: the kept weights (`state_dict`), their `val_acc` and `test_acc`, and
    `test_correct`, whether they classify each test image correctly ((N,) bool, in the split's order; its
    mean is `test_acc`). The test split is evaluated after selection; it never influences which checkpoint
    is kept.

    `logger`, if given, receives the fit's epoch-wise training and validation metrics as it trains, beside
    the CSV log in `work.dir`.

    `work.dir` outlives a crash (see StageCache): a fit killed or interrupted mid-way resumes from the
    last.ckpt there, written after every epoch, with the optimiser, schedule, best-so-far checkpoint and RNG
    states it had, and ends with the same weights; it sets `work.resumed` when it does.
    """
    pl.seed_everything(seed, workers=True, verbose=False)
    classifier = build_classifier(model_cfg)
    if init is not None:
        classifier.load_state_dict(init)
        classifier.from_weights = True
    checkpoints = work.dir / "checkpoints"
    # The first ModelCheckpoint is the trainer's `checkpoint_callback`, whose best path DDP returns to this
    # process.
    best = ModelCheckpoint(dirpath=checkpoints, monitor="val/acc", mode="max", save_top_k=1)
    # last.ckpt after every epoch, so that a kill or Ctrl-C loses at most the epoch it cuts short (`best`'s
    # own save_last rewrites it only at a new best). It is not written mid-epoch on an interrupt: a fit
    # resumed from there would see other shuffles than an uninterrupted one, and end with other weights.
    latest = ModelCheckpoint(dirpath=checkpoints, filename="last", enable_version_counter=False)
    last = resumable_checkpoint(checkpoints / "last.ckpt")
    work.resumed = last is not None
    if last is not None:
        log.info("%s: resuming from %s", label, last)
    # Bars only where they redraw in place; elsewhere (a SLURM log file) the grid's progress line
    # (roar.runtime.console.GridProgress) is the training's one line.
    bar = [StageProgressBar(label)] if interactive() else []
    trainer: pl.Trainer = instantiate(
        trainer_cfg,
        callbacks=[RngStateInCheckpoint(), *bar, best, latest],
        plugins=[AtomicCheckpointIO()],
        logger=[CSVLogger(work.dir, name="", version=""), *([logger] if logger is not None else [])],
        default_root_dir=work.dir,
        enable_model_summary=False,
        enable_progress_bar=bool(bar),
    )
    # Library warnings known to be harmless are silenced once per process (roar.runtime.console); no per-fit
    # warning filters here, as changing the filters makes Python repeat every warning on the next fit.
    try:
        trainer.fit(classifier, datamodule=datamodule, ckpt_path=last, weights_only=True)
        (tested,) = trainer.test(
            classifier,
            datamodule=datamodule,
            ckpt_path=best.best_model_path,
            verbose=False,
            weights_only=True,
        )
    except Interrupted as interrupt:
        interrupt.kept.append(_kept(label, checkpoints / "last.ckpt", trainer.max_epochs))
        raise
    if job_ranks().world > 1:  # one rank of a fit over a multi-task job's tasks
        log.info("%s: %d optimizer steps on rank %d of %d", label, trainer.global_step, trainer.global_rank,
                 trainer.world_size)  # fmt: skip
    # Read back from the kept checkpoint rather than from this process's objects: under DDP (spawn) training
    # runs in worker processes, and only the checkpoint's path comes back.
    kept = torch.load(best.best_model_path, map_location="cpu", weights_only=True)
    artifact = {
        "state_dict": kept["state_dict"],
        "val_acc": float(kept["callbacks"][best.state_key]["best_model_score"]),
        "test_acc": float(tested["test/acc"]),
    }
    return {
        **artifact,
        "test_correct": test_correctness(model_cfg, artifact, datamodule, device_of(trainer_cfg)),
    }


@torch.no_grad()
def test_correctness(
    model_cfg: DictConfig, artifact: dict, datamodule: TensorDataModule, device: torch.device
) -> torch.Tensor:
    """Whether the trained model classifies each test image (as the fit's test saw it: normalised, removed
    pixels filled) correctly: (N,) bool on the CPU, for the per-image values of a report
    (`roar.report.publish`). Computed here, in this process, from the kept weights: under DDP the test
    ran in worker processes, each over a share of the images."""
    net = load_classifier(model_cfg, artifact).net.to(device)
    test = datamodule.splits["test"]
    correct = []
    for start in range(0, len(test), datamodule.batch_size):
        indices = torch.arange(
            start, min(start + datamodule.batch_size, len(test)), device=test.labels.device
        )
        images, labels, *removed = test.batch(indices)
        inputs = datamodule.prepared(images.to(device), *(r.to(device) for r in removed))
        correct.append((net(inputs).argmax(1) == labels.to(device)).cpu())
    return torch.cat(correct)


def load_classifier(model_cfg: DictConfig, artifact: dict) -> ImageClassifier:
    classifier = build_classifier(model_cfg)
    classifier.load_state_dict(artifact["state_dict"])
    return classifier.eval()

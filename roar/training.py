"""Train one classifier from scratch: the base model and every ROAR cell go through here."""

from __future__ import annotations

import logging
import pickle
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.callbacks import Callback, ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.callbacks.progress.tqdm_progress import Tqdm
from pytorch_lightning.loggers import CSVLogger, Logger

from roar.data import TensorDataModule
from roar.models import ImageClassifier

log = logging.getLogger(__name__)
# Lightning's INFO lines (accelerator summary, checkpoint restores) repeat for every one of the many fits.
logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)


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


def resumable_checkpoint(path: Path) -> Path | None:
    """`path` if it holds a checkpoint that loads; a file cut short by a kill is removed instead."""
    if not path.exists():
        return None
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as error:  # cut short or garbled
        log.warning("ignoring unreadable checkpoint %s (%s); training from scratch", path, error)
        path.unlink()
        return None
    return path


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
    workdir: Path,
    label: str = "training",
    logger: Logger | None = None,
) -> dict:
    """Fit a fresh model, keep the checkpoint with the best validation accuracy, then evaluate it on the
    test split.

    Returns an artifact: the kept weights (`state_dict`) and their `val_acc` and `test_acc`. The test split
    is evaluated once, after selection; it never influences which checkpoint is kept.

    `logger`, if given, receives the fit's epoch-wise training and validation metrics as it trains, beside
    the CSV log in `workdir`.

    `workdir` outlives a crash (see StageCache): a fit killed mid-way resumes from its last.ckpt there, with
    the optimiser, schedule, best-so-far checkpoint and RNG states it had, and ends with the same weights.
    """
    pl.seed_everything(seed, workers=True, verbose=False)
    classifier = build_classifier(model_cfg)
    best = ModelCheckpoint(
        dirpath=workdir / "checkpoints", monitor="val/acc", mode="max", save_top_k=1, save_last=True
    )
    last = resumable_checkpoint(workdir / "checkpoints" / "last.ckpt")
    if last is not None:
        log.info("%s: resuming from %s", label, last)
    trainer: pl.Trainer = instantiate(
        trainer_cfg,
        callbacks=[best, RngStateInCheckpoint(), StageProgressBar(label)],
        logger=[CSVLogger(workdir, name="", version=""), *([logger] if logger is not None else [])],
        default_root_dir=workdir,
        enable_model_summary=False,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        # A fit resumed from last.ckpt reuses its directories, on purpose.
        warnings.filterwarnings("ignore", ".*exists and is not empty.*")
        trainer.fit(classifier, datamodule=datamodule, ckpt_path=last, weights_only=True)
        (tested,) = trainer.test(
            classifier, datamodule=datamodule, ckpt_path="best", verbose=False, weights_only=True
        )
    # Read back from the kept checkpoint rather than from this process's objects: under DDP (spawn) training
    # runs in worker processes, and only the checkpoint's path comes back.
    kept = torch.load(best.best_model_path, map_location="cpu", weights_only=True)
    return {
        "state_dict": kept["state_dict"],
        "val_acc": float(kept["callbacks"][best.state_key]["best_model_score"]),
        "test_acc": float(tested["test/acc"]),
    }


def load_classifier(model_cfg: DictConfig, artifact: dict) -> ImageClassifier:
    classifier = build_classifier(model_cfg)
    classifier.load_state_dict(artifact["state_dict"])
    return classifier.eval()

"""Weight averaging as a Lightning callback that a model's config lists (`model.callbacks`)."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import WeightAveraging


class WarmEMA(WeightAveraging):
    """An exponential moving average of the weights (and batch-norm statistics) whose decay grows with
    training progress p as `decay * p**power`: early on the average follows the fast-changing weights
    closely, at the end it averages over the last steps. Validation, the kept checkpoint and the test see
    the averaged weights (Lightning's WeightAveraging swaps them in), so a cell's reported accuracy is
    still the plain accuracy of the one model it keeps."""

    def __init__(self, decay: float = 0.99, power: float = 3.0, every_n_steps: int = 1):
        if not 0 <= decay < 1 or power < 0 or every_n_steps < 1:
            raise ValueError(f"WarmEMA: need 0 <= decay < 1, power >= 0, every_n_steps >= 1; got "
                             f"{decay}, {power}, {every_n_steps}")  # fmt: skip
        super().__init__(avg_fn=self._average)
        self.decay, self.power, self.every_n_steps = decay, power, every_n_steps
        self._progress = 0.0

    def _average(self, averaged: torch.Tensor, current: torch.Tensor, num_averaged) -> torch.Tensor:
        weight = self.decay * self._progress**self.power
        return averaged + (current - averaged) * (1 - weight)

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        return step_idx is not None and (step_idx + 1) % self.every_n_steps == 0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args) -> None:
        self._progress = trainer.global_step / max(trainer.estimated_stepping_batches, 1)
        super().on_train_batch_end(trainer, pl_module, *args)

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict):
        # Only a resumed fit restores the running average and the raw weights. Testing the kept checkpoint
        # must see its averaged weights (its state_dict), which Lightning's hook would replace by the raw
        # ones whenever this callback has run a fit before.
        if trainer.state.fn == "fit":
            super().on_load_checkpoint(trainer, pl_module, checkpoint)

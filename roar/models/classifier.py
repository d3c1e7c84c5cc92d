"""The LightningModule every stage trains: cross-entropy, accuracy, optimizer and schedule from config."""

from __future__ import annotations

from collections.abc import Callable

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy


class ImageClassifier(pl.LightningModule):
    """`compile`: train through `torch.compile` (the weights and their names are unchanged, and saliency
    methods always see the eager network). `memory_format`: `channels_last` for the network and its input
    batches while training, `contiguous`, or `auto` (channels-last on a CUDA device, where the tensor-core
    convolutions want it)."""

    MEMORY_FORMATS = ("auto", "channels_last", "contiguous")

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        compile: bool = False,
        memory_format: str = "auto",
    ):
        super().__init__()
        if memory_format not in self.MEMORY_FORMATS:
            raise ValueError(f"memory_format must be one of {self.MEMORY_FORMATS}, got {memory_format!r}")
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.compile_net = compile
        self.memory_format = memory_format
        self.channels_last = False
        self.loss = nn.CrossEntropyLoss()
        # Keyed "<split>_acc": a bare "train" would shadow nn.Module.train.
        self.accuracy = nn.ModuleDict(
            {
                f"{split}_acc": MulticlassAccuracy(num_classes, average="micro")
                for split in ("train", "val", "test")
            }
        )

    def setup(self, stage: str) -> None:
        auto = "channels_last" if self.trainer.strategy.root_device.type == "cuda" else "contiguous"
        self.channels_last = (auto if self.memory_format == "auto" else self.memory_format) == "channels_last"
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)
        if self.compile_net and stage == "fit":
            self.net.compile()  # in place: the state_dict keeps the eager network's names

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def _step(self, batch, split: str) -> torch.Tensor:
        images, labels = batch
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        logits = self(images)
        loss = self.loss(logits, labels)
        accuracy = self.accuracy[f"{split}_acc"]
        accuracy.update(logits, labels)  # not forward(): only the epoch's value is logged
        self.log(f"{split}/loss", loss, on_step=False, on_epoch=True, batch_size=len(labels))
        self.log(f"{split}/acc", accuracy, on_step=False, on_epoch=True, prog_bar=split != "test")
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        total_steps = self.trainer.estimated_stepping_batches
        scheduler = self.scheduler_factory(optimizer, total_steps=int(total_steps))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

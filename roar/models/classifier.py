"""The LightningModule every stage trains: cross-entropy, accuracy, optimizer and schedule from config."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torchmetrics.classification import MulticlassAccuracy


class ImageClassifier(pl.LightningModule):
    """`compile`: train through `torch.compile` (the weights and their names are unchanged, and saliency
    methods always see the eager network). `memory_format`: `channels_last` for the network and its input
    batches while training, `contiguous`, or `auto` (channels-last on a CUDA device, where the tensor-core
    convolutions want it).

    Training options of fast recipes: `label_smoothing` of the training loss (validation and test report
    plain accuracy either way); `norm_bias_lr_scale`, a learning rate that many times larger for the shifts
    of batch-norm layers, with their weight decay divided by it so that the decay per step stays the same;
    `callbacks`, Lightning callbacks every fit of this model uses (e.g. weight averaging). A network with an
    `init_from_data(images)` method gets the normalised training images (as the fit sees them, removals
    filled) before its first step, and one with `check_input(channels, size)` may refuse the data first."""

    MEMORY_FORMATS = ("auto", "channels_last", "contiguous")

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        compile: bool = False,
        memory_format: str = "auto",
        label_smoothing: float = 0.0,
        norm_bias_lr_scale: float = 1.0,
        callbacks: Sequence[pl.Callback] = (),
        init_images: int = 5000,
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
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if norm_bias_lr_scale <= 0:
            raise ValueError(f"norm_bias_lr_scale must be positive, got {norm_bias_lr_scale}")
        self.train_loss = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.loss = nn.CrossEntropyLoss()
        self.norm_bias_lr_scale = norm_bias_lr_scale
        self.fit_callbacks = list(callbacks)
        self.init_images = init_images
        # Set where a fit starts from trained weights (a fine-tuning): the data-dependent initialisation
        # would overwrite them.
        self.from_weights = False
        # Keyed "<split>_acc": a bare "train" would shadow nn.Module.train.
        self.accuracy = nn.ModuleDict(
            {
                f"{split}_acc": MulticlassAccuracy(num_classes, average="micro")
                for split in ("train", "val", "test")
            }
        )

    def setup(self, stage: str) -> None:
        if stage == "fit":
            self._prepare_net(self.trainer.datamodule)
        auto = "channels_last" if self.trainer.strategy.root_device.type == "cuda" else "contiguous"
        self.channels_last = (auto if self.memory_format == "auto" else self.memory_format) == "channels_last"
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)
        if self.compile_net and stage == "fit":
            self.net.compile()  # in place: the state_dict keeps the eager network's names

    def _prepare_net(self, datamodule) -> None:
        """The network's checks and data-dependent initialisation, from the data this fit trains on (a
        resumed fit then restores the weights from its checkpoint)."""
        check, init = getattr(self.net, "check_input", None), getattr(self.net, "init_from_data", None)
        if check is None and init is None:
            return
        if check is not None:
            check(datamodule.image_shape[0], min(datamodule.image_shape[1:]))
        if init is not None and not self.from_weights:
            init(datamodule.training_images(self.init_images))

    def configure_callbacks(self) -> list[pl.Callback]:
        return self.fit_callbacks

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def _step(self, batch, split: str) -> torch.Tensor:
        images, labels = batch
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        logits = self(images)
        loss = (self.train_loss if split == "train" else self.loss)(logits, labels)
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
        optimizer = self.optimizer_factory(self.parameter_groups())
        if self.scheduler_factory is None:
            return optimizer
        total_steps = self.trainer.estimated_stepping_batches
        scheduler = self.scheduler_factory(optimizer, total_steps=int(total_steps))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def parameter_groups(self) -> list[dict]:
        """The trainable parameters; batch-norm shifts in a group of their own when they learn faster."""
        trainable = [p for p in self.parameters() if p.requires_grad]
        if self.norm_bias_lr_scale == 1:
            return [{"params": trainable}]
        shifts = {id(m.bias) for m in self.modules() if isinstance(m, _BatchNorm) and m.bias is not None}
        defaults = getattr(self.optimizer_factory, "keywords", {})
        if "lr" not in defaults:
            raise ValueError("norm_bias_lr_scale needs the optimizer's lr in its config")
        scaled = {
            "params": [p for p in trainable if id(p) in shifts],
            "lr": defaults["lr"] * self.norm_bias_lr_scale,
            "weight_decay": defaults.get("weight_decay", 0.0) / self.norm_bias_lr_scale,
        }
        return [scaled, {"params": [p for p in trainable if id(p) not in shifts]}]

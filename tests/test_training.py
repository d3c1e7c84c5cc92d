"""Training survives a crash: a fit killed mid-way resumes from its last checkpoint to the same weights."""

import pytest
import torch
from hydra.utils import instantiate

from roar.training import RngStateInCheckpoint, train_classifier
from tests.conftest import compose_config


class Crash(Exception):
    pass


def _fit(cfg, workdir):
    return train_classifier(cfg.model, cfg.trainer, instantiate(cfg.dataset.datamodule), 0, workdir)


def test_a_fit_crashed_mid_way_resumes_from_last_ckpt_to_the_same_weights(tmp_path, monkeypatch):
    cfg = compose_config(tmp_path, "trainer.max_epochs=3")
    uninterrupted = _fit(cfg, tmp_path / "uninterrupted")

    workdir = tmp_path / "crashed"
    # Hooked into a callback every fit has (progress bars exist on a terminal only).
    start_epoch = RngStateInCheckpoint.on_train_epoch_start

    def crash_at_epoch_2(self, trainer, *args):
        if trainer.current_epoch == 2:
            raise Crash  # as if the job were killed after epoch 1's checkpoint was written
        start_epoch(self, trainer, *args)

    with monkeypatch.context() as patch:
        patch.setattr(RngStateInCheckpoint, "on_train_epoch_start", crash_at_epoch_2)
        with pytest.raises(Crash):
            _fit(cfg, workdir)
    assert torch.load(workdir / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1

    epochs_run = []
    monkeypatch.setattr(
        RngStateInCheckpoint,
        "on_train_epoch_start",
        lambda self, trainer, *a: epochs_run.append(trainer.current_epoch) or start_epoch(self, trainer, *a),
    )
    resumed = _fit(cfg, workdir)
    assert epochs_run == [2]  # only the epochs the crash cut off
    assert resumed["val_acc"] == uninterrupted["val_acc"] and resumed["test_acc"] == uninterrupted["test_acc"]
    for name, weights in uninterrupted["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], weights), name


def test_an_unreadable_last_ckpt_is_set_aside_and_the_fit_starts_afresh(tmp_path):
    cfg = compose_config(tmp_path, "trainer.max_epochs=1")
    fresh = _fit(cfg, tmp_path / "fresh")
    workdir = tmp_path / "cut"
    (workdir / "checkpoints").mkdir(parents=True)
    (workdir / "checkpoints" / "last.ckpt").write_bytes(b"PK\x03\x04 cut short by a kill")
    again = _fit(cfg, workdir)
    assert again["test_acc"] == fresh["test_acc"]

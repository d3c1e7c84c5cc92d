"""Training survives a crash: a fit killed mid-way resumes from its last checkpoint to the same weights;
a checkpoint cut short is discarded, never fatal."""

import logging
import tempfile

import pytest
import torch
from hydra.utils import instantiate

from roar.runtime.cache import Work
from roar.stages.training import RngStateInCheckpoint, resumable_checkpoint, train_classifier
from tests.conftest import compose_config


class Crash(Exception):
    pass


def _fit(cfg, workdir, work=None):
    return train_classifier(
        cfg.model, cfg.trainer, instantiate(cfg.dataset.datamodule), 0, work or Work(workdir)
    )


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
    work = Work(workdir)
    resumed = _fit(cfg, workdir, work)
    assert work.resumed
    assert epochs_run == [2]  # only the epochs the crash cut off
    assert resumed["val_acc"] == uninterrupted["val_acc"] and resumed["test_acc"] == uninterrupted["test_acc"]
    for name, weights in uninterrupted["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], weights), name


def test_last_ckpt_is_rewritten_after_every_epoch_not_only_at_a_new_best(tmp_path, monkeypatch):
    # A learning rate too small to change any prediction: validation accuracy never improves after epoch 0.
    cfg = compose_config(tmp_path, "trainer.max_epochs=4", "model.optimizer.lr=1e-12")
    last = tmp_path / "work" / "checkpoints" / "last.ckpt"
    seen = []
    start_epoch = RngStateInCheckpoint.on_train_epoch_start  # a callback every fit has (bars need a terminal)

    def record_last_ckpt(self, trainer, *args):
        seen.append(torch.load(last, weights_only=True)["epoch"] if last.exists() else None)
        start_epoch(self, trainer, *args)

    monkeypatch.setattr(RngStateInCheckpoint, "on_train_epoch_start", record_last_ckpt)
    trained = _fit(cfg, tmp_path / "work")
    assert seen == [None, 0, 1, 2]  # at each epoch's start, last.ckpt holds the epoch before
    assert torch.load(last, weights_only=True)["epoch"] == 3
    # The kept model is still the best one: the first epoch's, as no later one beat it.
    (best,) = (tmp_path / "work" / "checkpoints").glob("epoch=*.ckpt")
    assert best.name.startswith("epoch=0-")
    kept = torch.load(best, weights_only=True)["state_dict"]
    assert all(torch.equal(trained["state_dict"][name], weights) for name, weights in kept.items())


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory) -> bytes:
    """A real last.ckpt of the demo's small CNN after one epoch."""
    tmp_path = tmp_path_factory.mktemp("checkpoint")
    _fit(compose_config(tmp_path, "trainer.max_epochs=1"), tmp_path / "work")
    return (tmp_path / "work" / "checkpoints" / "last.ckpt").read_bytes()


def test_a_checkpoint_cut_at_any_4_kib_boundary_is_discarded_with_a_warning(
    tmp_path, checkpoint_bytes, caplog
):
    path = tmp_path / "last.ckpt"
    raised = set()
    cuts = range(0, len(checkpoint_bytes), 4096)
    for cut in cuts:
        path.write_bytes(checkpoint_bytes[:cut])
        try:
            torch.load(path, weights_only=True)
        except Exception as error:  # what the resume path has to survive, as the issue found it
            raised.add(type(error))
        with caplog.at_level(logging.WARNING, logger="roar.stages.training"):
            caplog.clear()
            assert resumable_checkpoint(path) is None, cut
        assert not path.exists(), cut  # removed: the next rerun does not trip over it again
        assert len(caplog.records) == 1 and "unreadable checkpoint" in caplog.text, cut
    assert OSError in raised and RuntimeError in raised  # the scan hits the cases the issue reported
    path.write_bytes(checkpoint_bytes)
    assert resumable_checkpoint(path) == path


def test_a_fit_whose_last_ckpt_was_cut_to_32_kib_after_a_kill_starts_afresh(tmp_path, checkpoint_bytes):
    cfg = compose_config(tmp_path, "trainer.max_epochs=1")
    fresh = _fit(cfg, tmp_path / "fresh")
    work = Work(tmp_path / "cut")
    (work.dir / "checkpoints").mkdir(parents=True)
    (work.dir / "checkpoints" / "last.ckpt").write_bytes(checkpoint_bytes[:32768])
    again = _fit(cfg, None, work)
    assert not work.resumed
    assert again["test_acc"] == fresh["test_acc"]
    for name, weights in fresh["state_dict"].items():
        assert torch.equal(again["state_dict"][name], weights), name


def test_checkpoints_are_written_beside_their_target_never_through_tmpdir(tmp_path, monkeypatch):
    # Lightning's own writer staged each checkpoint in $TMPDIR and copied it across filesystems; with no
    # usable $TMPDIR it fails at the first checkpoint.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-tmpdir"))
    work = Work(tmp_path / "work")
    trained = _fit(compose_config(tmp_path, "trainer.max_epochs=2"), None, work)
    assert 0 < trained["test_acc"] <= 1
    assert torch.load(work.dir / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1
    assert not list(work.dir.rglob("*.tmp"))

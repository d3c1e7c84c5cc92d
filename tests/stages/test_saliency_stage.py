"""The saliency stage's shards: a seeded method's noise is a stream per shard, so a shard's maps are the
same whichever job computes it and whatever it computed before."""

import torch

from roar.data import DigitsDataModule
from roar.models import SmallCNN
from roar.stages.saliency import explain_rows, explainer_of, shard_seed
from tests.conftest import compose_config


def test_a_seeded_methods_shard_has_its_own_stream_whatever_was_computed_before(tmp_path):
    cfg = compose_config(tmp_path, "method=[random,smoothgrad]", "method.smoothgrad.n_samples=2")
    torch.manual_seed(0)
    net = SmallCNN(1, 10, (4, 4)).eval()
    dm = DigitsDataModule()
    for method in ("random", "smoothgrad"):
        alone = explain_rows(explainer_of(cfg, method, net, "train", 1), dm, "train", 128, 256, 64)
        explainer = explainer_of(cfg, method, net, "train", 0)
        explain_rows(explainer, dm, "train", 0, 128, 64)  # shard 0 first, in the same job
        after = explain_rows(explainer_of(cfg, method, net, "train", 1), dm, "train", 128, 256, 64)
        assert torch.equal(alone, after), method
        # Shard 0's stream is another one: the same images get other noise there.
        other = explain_rows(explainer_of(cfg, method, net, "train", 0), dm, "train", 128, 256, 64)
        assert not torch.equal(alone, other), method
    assert len({shard_seed(0, split, shard) for split in ("train", "val") for shard in range(3)}) == 6

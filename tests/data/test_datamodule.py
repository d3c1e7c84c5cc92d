import torch

from roar.data import DigitsDataModule


def test_digits_split_is_seeded_disjoint_and_complete():
    dm = DigitsDataModule(val_fraction=0.15, test_fraction=0.2, split_seed=0)
    sizes = {name: len(split) for name, split in dm.splits.items()}
    assert sum(sizes.values()) == 1797
    assert abs(sizes["test"] - 0.2 * 1797) < 2 and abs(sizes["val"] - 0.15 * 1797) < 2
    again = DigitsDataModule(split_seed=0)
    other = DigitsDataModule(split_seed=1)
    assert torch.equal(dm.splits["test"].images[:], again.splits["test"].images[:])
    assert not torch.equal(dm.splits["test"].images[:], other.splits["test"].images[:])
    train = {tuple(x.flatten().tolist()) for x in dm.splits["train"].images[:]}
    test = [tuple(x.flatten().tolist()) for x in dm.splits["test"].images[:]]
    # Digits has a few duplicate images; a leaking split would share hundreds.
    assert sum(t in train for t in test) < 10


def test_images_in_unit_range_and_normalisation_uses_training_statistics():
    dm = DigitsDataModule()
    images = dm.splits["train"].images[:]
    assert images.shape[1:] == (1, 8, 8) and images.min() >= 0 and images.max() <= 1
    normalised = dm.normalize(images)
    assert abs(normalised.mean().item()) < 1e-5 and abs(normalised.std().item() - 1) < 1e-2
    # The removal fill (the raw training mean) is what the network sees as zero.
    assert torch.allclose(dm.normalize(dm.mean.view(1, 1, 1, 1)), torch.zeros(1))


def test_batches_are_cut_by_indexing_whole_tensors():
    dm = DigitsDataModule(batch_size=100)
    batches = list(dm.val_dataloader())
    assert sum(len(y) for _, y in batches) == len(dm.splits["val"])
    assert batches[0][0].shape == (100, 1, 8, 8)
    images, _ = dm.on_after_batch_transfer(batches[0], 0)
    assert torch.allclose(images, dm.normalize(dm.splits["val"].images[:100]))

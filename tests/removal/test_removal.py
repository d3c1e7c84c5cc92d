import pytest
import torch
from torchvision.transforms.v2.functional import gaussian_blur

from roar.data import Split, TensorDataModule
from roar.removal import (
    pixels_to_remove,
    ranking_reduction,
    removal_codes,
    removal_mask,
    remove,
    replace_pixels,
)
from roar.saliency import REDUCTIONS
from roar.stages import removed_datamodule


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.25, 0.5, 0.77, 0.9])
def test_exactly_round_k_hw_pixels_per_image_are_the_top_ranked(fraction):
    saliency = torch.rand(16, 7, 9, generator=torch.Generator().manual_seed(1))
    mask = removal_mask(saliency, fraction, 0)
    k = round(fraction * 7 * 9)
    assert pixels_to_remove(63, fraction) == k
    assert mask.shape == saliency.shape and mask.dtype == torch.bool
    assert (mask.flatten(1).sum(1) == k).all()
    for image_saliency, image_mask in zip(saliency, mask):
        top = image_saliency.flatten().argsort(descending=True)[:k]
        expected = torch.zeros(63, dtype=torch.bool)
        expected[top] = True
        assert torch.equal(image_mask.flatten(), expected)


def test_ties_are_broken_randomly_and_reproducibly_by_seed_and_differently_for_each_image():
    flat = torch.zeros(4, 8, 8)
    first = removal_mask(flat, 0.5, 3)
    again = removal_mask(flat, 0.5, 3)
    other = removal_mask(flat, 0.5, 4)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert (first.flatten(1).sum(1) == 32).all()
    # A constant map does not remove the first pixels in memory order, nor the same pixels in every image.
    assert not first[:, :4].all()
    assert not torch.equal(first[0], first[1])


def test_replaced_pixels_take_the_fill_in_every_channel_and_others_are_untouched():
    images = torch.rand(5, 3, 6, 6)
    mask = torch.rand(5, 6, 6) > 0.6
    fill = torch.tensor([0.1, 0.5, 0.9])
    out = replace_pixels(images, mask, fill)
    for c in range(3):
        assert torch.all(out[:, c][mask] == fill[c])
        assert torch.equal(out[:, c][~mask], images[:, c][~mask])


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_element_ranking_removes_round_k_chw_values_each_ranked_on_its_own(fraction):
    saliency = torch.randn(6, 3, 5, 7, generator=torch.Generator().manual_seed(2))
    mask = removal_mask(saliency, fraction, 0)
    k = round(fraction * (3 * 5 * 7))
    assert mask.shape == (6, 3, 5, 7)
    assert (mask.flatten(1).sum(1) == k).all()
    for image_saliency, image_mask in zip(saliency, mask):
        kth = image_saliency.flatten().sort(descending=True).values[k - 1]
        assert (image_saliency[image_mask] >= kth).all() and (image_saliency[~image_mask] < kth).all()


def test_signed_ranking_removes_the_most_positive_and_unsigned_the_largest_magnitude():
    attributions = torch.tensor([[[[-5.0, 1.0], [2.0, 0.5]]]])  # one image, one channel
    for signed, expected in ((False, [[True, False], [True, False]]), (True, [[False, True], [True, False]])):
        reduced = REDUCTIONS[ranking_reduction("element", signed)](attributions)
        assert torch.equal(removal_mask(reduced, 0.5)[0, 0], torch.tensor(expected))
    pixel = torch.tensor([[[[-5.0, 1.0]], [[2.0, 1.0]]]])  # channels sum to -3 and 2; |.| sums 7 and 2
    assert torch.equal(
        removal_mask(REDUCTIONS[ranking_reduction("pixel", False)](pixel), 0.5),
        torch.tensor([[[True, False]]]),
    )
    assert torch.equal(
        removal_mask(REDUCTIONS[ranking_reduction("pixel", True)](pixel), 0.5),
        torch.tensor([[[False, True]]]),
    )


@pytest.mark.parametrize("shape", [(5, 8, 8), (5, 3, 8, 8)])
def test_element_ties_are_reproducible_by_seed(shape):
    constant = torch.ones(shape)
    first = removal_mask(constant, 0.3, 5)
    assert torch.equal(first, removal_mask(constant, 0.3, 5))
    assert not torch.equal(first, removal_mask(constant, 0.3, 6))


@pytest.mark.parametrize("shape", [(7, 9, 9), (7, 3, 9, 9)])
@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.5, 0.9])
def test_kar_removes_exactly_the_complement_of_roar_at_the_same_fraction(shape, fraction):
    saliency = torch.rand(shape, generator=torch.Generator().manual_seed(3)).round(decimals=1)  # many ties
    roar = removal_mask(saliency, fraction, 1, mode="roar")
    kar = removal_mask(saliency, fraction, 1, mode="kar")
    assert torch.equal(kar, ~roar)
    assert (kar.flatten(1).sum(1) == kar[0].numel() - round(fraction * kar[0].numel())).all()


def test_mean_fill_gives_each_channel_its_training_mean_and_zero_fill_raw_black():
    images = torch.rand(4, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    mean = images.mean(dim=(0, 2, 3))
    mask = torch.rand(4, 5, 5, generator=torch.Generator().manual_seed(1)) > 0.5
    filled = remove(images, mask, "mean", mean)
    zeroed = remove(images, mask, "zero", mean)
    for c in range(3):
        assert torch.equal(filled[:, c][mask], mean[c].expand(int(mask.sum())))
        assert torch.equal(zeroed[:, c][mask], torch.zeros(int(mask.sum())))
        assert torch.equal(filled[:, c][~mask], images[:, c][~mask])
        assert torch.equal(zeroed[:, c][~mask], images[:, c][~mask])


def test_element_masks_fill_only_their_own_channel():
    images = torch.rand(2, 3, 4, 4)
    mask = torch.zeros(2, 3, 4, 4, dtype=torch.bool)
    mask[0, 1, 2, 3] = mask[1, 0, 0, 0] = True
    out = remove(images, mask, "mean", torch.tensor([0.1, 0.2, 0.3]))
    assert out[0, 1, 2, 3] == pytest.approx(0.2) and out[1, 0, 0, 0] == pytest.approx(0.1)
    assert torch.equal(out[~mask], images[~mask])


@pytest.mark.parametrize("mask_shape", [(4, 8, 8), (4, 3, 8, 8)])
def test_blur_fill_writes_the_images_own_gaussian_blur_where_removed(mask_shape):
    images = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    mask = torch.rand(mask_shape, generator=torch.Generator().manual_seed(1)) > 0.5
    out = remove(images, mask, "blur", torch.zeros(3))
    channels = mask.unsqueeze(1).expand_as(images) if mask.ndim == 3 else mask
    # sigma: an eighth of the shorter side, 1 pixel here; the kernel covers +-3 sigma.
    expected = gaussian_blur(images, kernel_size=[7, 7], sigma=[1.0, 1.0])
    assert torch.equal(out[channels], expected[channels])
    assert torch.equal(out[~channels], images[~channels])
    assert not torch.allclose(expected, images)  # the blur changes the removed values


def test_roar_with_the_blur_fill_stores_blurred_images():
    generator = torch.Generator().manual_seed(0)
    splits = {name: Split(torch.rand(6, 3, 8, 8, generator=generator), torch.arange(6) % 2)
              for name in ("train", "val", "test")}  # fmt: skip
    datamodule = TensorDataModule(splits, num_classes=2, batch_size=4)
    maps = {name: torch.rand(6, 8, 8, generator=generator) for name in splits}
    codes = {name: removal_codes(maps[name], 0, source=name) for name in splits}
    modified = removed_datamodule(datamodule, codes, 0.5, seed=0, fill="blur")
    mask = removal_mask(maps["train"], 0.5, 0, source="train")
    expected = remove(splits["train"].images[:], mask, "blur", None)
    assert torch.equal(modified.splits["train"].images[:], expected)


def test_unknown_fill_and_mode_are_named():
    with pytest.raises(ValueError, match="unknown fill 'grey'"):
        remove(torch.rand(1, 1, 2, 2), torch.ones(1, 2, 2, dtype=torch.bool), "grey", torch.zeros(1))
    with pytest.raises(ValueError, match="unknown removal mode 'keep'"):
        removal_mask(torch.rand(1, 2, 2), 0.5, mode="keep")

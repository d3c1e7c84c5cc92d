import pytest
import torch

from roar.removal import pixels_to_remove, removal_mask, replace_pixels


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.25, 0.5, 0.77, 0.9])
def test_exactly_round_k_hw_pixels_per_image_are_the_top_ranked(fraction):
    saliency = torch.rand(16, 7, 9, generator=torch.Generator().manual_seed(1))
    mask = removal_mask(saliency, fraction, torch.Generator().manual_seed(0))
    k = round(fraction * 7 * 9)
    assert pixels_to_remove(63, fraction) == k
    assert mask.shape == saliency.shape and mask.dtype == torch.bool
    assert (mask.flatten(1).sum(1) == k).all()
    for image_saliency, image_mask in zip(saliency, mask):
        top = image_saliency.flatten().argsort(descending=True)[:k]
        expected = torch.zeros(63, dtype=torch.bool)
        expected[top] = True
        assert torch.equal(image_mask.flatten(), expected)


def test_ties_are_broken_randomly_and_reproducibly_by_seed():
    flat = torch.zeros(4, 8, 8)
    first = removal_mask(flat, 0.5, torch.Generator().manual_seed(3))
    again = removal_mask(flat, 0.5, torch.Generator().manual_seed(3))
    other = removal_mask(flat, 0.5, torch.Generator().manual_seed(4))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert (first.flatten(1).sum(1) == 32).all()
    # A constant map does not remove the first pixels in memory order.
    assert not first[:, :4].all()


def test_replaced_pixels_take_the_fill_in_every_channel_and_others_are_untouched():
    images = torch.rand(5, 3, 6, 6)
    mask = torch.rand(5, 6, 6) > 0.6
    fill = torch.tensor([0.1, 0.5, 0.9])
    out = replace_pixels(images, mask, fill)
    for c in range(3):
        assert torch.all(out[:, c][mask] == fill[c])
        assert torch.equal(out[:, c][~mask], images[:, c][~mask])

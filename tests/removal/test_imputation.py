"""ROAD's noisy linear imputation: the batched torch solver against scipy's direct sparse solve, and both
against the definition (each removed pixel = the weighted mean of its in-image neighbours)."""

import pytest
import torch
import torch.nn.functional as F

from roar.removal import removal_mask
from roar.removal.imputation import (
    NEIGHBOUR_WEIGHTS,
    linear_impute,
    linear_impute_direct,
    noisy_linear_impute,
)


def _smooth_saliency(n, h, w, seed):
    """Blurred noise: its top pixels form large connected holes, the hard case for an iterative solver."""
    saliency = torch.rand(n, 1, h, w, generator=torch.Generator().manual_seed(seed))
    for _ in range(4):
        saliency = F.avg_pool2d(saliency, 5, stride=1, padding=2, count_include_pad=False)
    return saliency[:, 0]


def _masks(n, h, w, fraction, seed):
    generator = torch.Generator().manual_seed(seed)
    return {
        "random": removal_mask(torch.rand(n, h, w, generator=generator), fraction, seed),
        "blob": removal_mask(_smooth_saliency(n, h, w, seed), fraction, seed),
    }


@pytest.mark.parametrize("shape", [(6, 3, 32, 32), (6, 1, 8, 8), (4, 3, 13, 21)])
@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_batched_solver_equals_the_direct_sparse_solve(shape, fraction):
    n, c, h, w = shape
    images = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    for kind, mask in _masks(n, h, w, fraction, seed=1).items():
        batched = linear_impute(images, mask)
        direct = linear_impute_direct(images, mask)
        assert (batched - direct).abs().max() < 1e-4, kind
        assert torch.equal(
            batched[~mask.unsqueeze(1).expand_as(images)], images[~mask.unsqueeze(1).expand_as(images)]
        )


def test_element_masks_give_each_channel_its_own_system():
    images = torch.rand(5, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    mask = torch.rand(5, 3, 12, 12, generator=torch.Generator().manual_seed(1)) < 0.6
    batched, direct = linear_impute(images, mask), linear_impute_direct(images, mask)
    assert (batched - direct).abs().max() < 1e-4
    # Not the shared-system answer: channel 0's holes differ from channel 1's.
    assert (batched[:, 1] - linear_impute(images, mask[:, 0])[:, 1]).abs().max() > 1e-3


def _weighted_neighbour_mean(image, y, x):
    h, w = image.shape[-2:]
    total = weight_sum = 0.0
    for (dy, dx), weight in NEIGHBOUR_WEIGHTS.items():
        if 0 <= y + dy < h and 0 <= x + dx < w:
            total = total + weight * image[:, y + dy, x + dx]
            weight_sum += weight
    return total / weight_sum


def test_every_removed_pixel_is_the_renormalised_weighted_mean_of_its_neighbours():
    images = torch.rand(2, 2, 7, 6, generator=torch.Generator().manual_seed(4))
    mask = torch.rand(2, 7, 6, generator=torch.Generator().manual_seed(5)) < 0.5
    mask[:, 0, 0] = mask[:, 6, 5] = True  # corners: three neighbours, weights renormalised
    for solved in (linear_impute(images, mask), linear_impute_direct(images, mask)):
        for i, y, x in mask.nonzero().tolist():
            expected = _weighted_neighbour_mean(solved[i], y, x)
            assert torch.allclose(solved[i, :, y, x], expected, atol=1e-5)


def test_a_lone_pixel_takes_side_weights_one_sixth_and_diagonals_one_twelfth():
    image = torch.arange(9.0).view(1, 1, 3, 3)  # 0 1 2 / 3 4 5 / 6 7 8
    centre = torch.zeros(1, 3, 3, dtype=torch.bool)
    centre[0, 1, 1] = True
    expected = (1 + 3 + 5 + 7) / 6 + (0 + 2 + 6 + 8) / 12
    assert linear_impute(image, centre)[0, 0, 1, 1].item() == pytest.approx(expected, abs=1e-6)
    corner = torch.zeros(1, 3, 3, dtype=torch.bool)
    corner[0, 0, 0] = True
    expected = ((1 + 3) / 6 + 4 / 12) / (2 / 6 + 1 / 12)
    assert linear_impute(image, corner)[0, 0, 0, 0].item() == pytest.approx(expected, abs=1e-6)


def test_noise_has_sigma_0_01_on_removed_pixels_only_and_follows_the_seed():
    images = torch.rand(50, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    mask = torch.rand(50, 16, 16, generator=torch.Generator().manual_seed(1)) < 0.5
    clean = linear_impute(images, mask)
    noisy = noisy_linear_impute(images, mask, seed=2)
    removed = mask.unsqueeze(1).expand_as(images)
    assert torch.equal(noisy[~removed], images[~removed])
    assert (noisy[removed] - clean[removed]).std().item() == pytest.approx(0.01, rel=0.05)
    assert torch.equal(noisy, noisy_linear_impute(images, mask, seed=2))
    assert not torch.equal(noisy, noisy_linear_impute(images, mask, seed=3))


def test_a_channel_with_nothing_left_comes_out_zero():
    images = torch.rand(1, 2, 4, 4)
    mask = torch.zeros(1, 2, 4, 4, dtype=torch.bool)
    mask[0, 1] = True
    out = linear_impute(images, mask)
    assert torch.equal(out[0, 1], torch.zeros(4, 4)) and torch.equal(out[0, 0], images[0, 0])

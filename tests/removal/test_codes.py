"""Removal codes (one byte per pixel) and the random numbers that belong to one image: every mask on the 1 %
grid from the codes equals the mask from the float map; an image's ranking, codes and noise depend on it
alone; the hash matches a plain-integer reference."""

import pytest
import torch

from roar.removal import (
    grid_level,
    mask_of_codes,
    noisy_linear_impute,
    removal_codes,
    removal_mask,
    salience_order,
    salience_rank,
)
from roar.removal.keys import MASK32, entry_hashes, image_states, mix32, standard_normal

GRID = [j / 100 for j in range(0, 101)]


def lowbias32(x: int) -> int:
    """Chris Wellons' lowbias32 in plain Python integers: the reference the tensor version must equal."""
    x ^= x >> 16
    x = (x * 0x7FEB352D) & MASK32
    x ^= x >> 15
    x = (x * 0x846CA68B) & MASK32
    return x ^ (x >> 16)


def test_the_hash_equals_its_integer_reference_on_the_whole_range():
    values = [0, 1, 2, 0x7FFFFFFF, 0x80000000, MASK32, 123456789, *range(1000, 1100)]
    assert mix32(torch.tensor(values)).tolist() == [lowbias32(v) for v in values]


@pytest.mark.parametrize("shape", [(6, 9, 7), (4, 3, 5, 5), (3, 64, 64)])
def test_every_grid_mask_from_the_codes_is_the_mask_from_the_map(shape):
    saliency = torch.rand(shape, generator=torch.Generator().manual_seed(0)).round(decimals=1)  # many ties
    codes = removal_codes(saliency, seed=4)
    assert codes.dtype == torch.uint8 and codes.shape == saliency.shape
    assert codes.min() >= 1 and codes.max() <= 100
    for fraction in GRID:
        roar = removal_mask(saliency, fraction, seed=4)
        assert torch.equal(mask_of_codes(codes, fraction, "roar"), roar), fraction
        assert torch.equal(mask_of_codes(codes, fraction, "kar"), ~roar), fraction


def test_a_fraction_off_the_1_percent_grid_is_refused_and_one_on_it_named_by_its_percent():
    assert [grid_level(f) for f in (0.0, 0.07, 0.1, 0.3, 0.9, 1.0)] == [0, 7, 10, 30, 90, 100]
    for fraction in (0.125, 0.301, 1e-3):
        with pytest.raises(ValueError, match="not on the 1 % grid"):
            grid_level(fraction)


def test_an_image_is_ranked_and_coded_the_same_whatever_it_is_ranked_with():
    # Shard by shard or all at once, in any batch: what a shard holds depends on its images alone.
    saliency = torch.zeros(8, 6, 6)  # all ties: the order is the hash's alone
    saliency[:, 0, :3] = 1.0
    ids = torch.arange(100, 108)
    whole = removal_codes(saliency, seed=2, ids=ids, source="train")
    parts = torch.cat(
        [removal_codes(saliency[i : i + 3], 2, ids[i : i + 3], "train") for i in range(0, 8, 3)]
    )
    assert torch.equal(whole, parts)
    alone = salience_rank(saliency[5:6], seed=2, ids=ids[5:6], source="train")
    assert torch.equal(salience_rank(saliency, seed=2, ids=ids, source="train")[5:6], alone)


def test_ties_differ_between_images_seeds_and_sources_and_the_ranking_keeps_saliency_first():
    constant = torch.zeros(2, 10, 10)
    first = salience_order(constant, seed=0, source="train")
    assert not torch.equal(first[0], first[1])
    assert not torch.equal(first, salience_order(constant, seed=1, source="train"))
    assert not torch.equal(first, salience_order(constant, seed=0, source="test"))
    values = torch.tensor([[-1.0, -0.0, 0.0, 2.0, -3.0, float("inf"), -float("inf"), 1e-30, -1e-30]])
    order = salience_order(values).tolist()[0]
    assert order[:3] == [5, 3, 7] and order[-4:] == [8, 0, 4, 6]  # -0.0 ties with 0.0: both in between
    assert set(order[3:5]) == {1, 2}


def test_standard_normal_draws_are_per_image_and_look_normal():
    states = image_states(0, "train", torch.arange(400))
    draws = standard_normal(states, (3, 8, 8))
    assert draws.shape == (400, 3, 8, 8)
    assert torch.equal(draws[7:9], standard_normal(states[7:9], (3, 8, 8)))
    assert abs(draws.mean()) < 0.02 and abs(draws.std() - 1) < 0.02
    assert (entry_hashes(states, 5) < 2**32).all() and (entry_hashes(states, 5) >= 0).all()


def test_road_noise_of_an_image_does_not_depend_on_the_images_imputed_with_it():
    images = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    mask = torch.rand(6, 8, 8, generator=torch.Generator().manual_seed(1)) > 0.5
    ids = torch.arange(20, 26)
    together = noisy_linear_impute(images, mask, seed=3, ids=ids, source="train", noise=0.01)
    alone = noisy_linear_impute(images[2:3], mask[2:3], seed=3, ids=ids[2:3], source="train", noise=0.01)
    noiseless = noisy_linear_impute(images[2:3], mask[2:3], seed=3, ids=ids[2:3], source="train", noise=0.0)
    torch.testing.assert_close(together[2:3], alone, rtol=0, atol=1e-5)  # the solver's stop is per chunk
    assert not torch.allclose(alone, noiseless)

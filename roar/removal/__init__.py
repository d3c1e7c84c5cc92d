"""ROAR's data modification, as tensor operations that know nothing of datasets or methods: which pixels go
(masks.py: ranking, masks, one-byte removal codes), what they become (fills.py), ROAD's imputation
(imputation.py), and the random numbers that belong to one image (keys.py)."""

from roar.removal.fills import (
    BLUR_FILL_SHARE,
    FILLS,
    IMAGE_FILLS,
    blurred,
    fill_value,
    gaussian_blur,
    remove,
    replace_pixels,
)
from roar.removal.imputation import noisy_linear_impute
from roar.removal.masks import (
    CODE_LEVELS,
    MODES,
    RANK_BY,
    grid_level,
    mask_of_codes,
    mask_of_rank,
    pixels_to_remove,
    random_members,
    ranking_reduction,
    removal_codes,
    removal_mask,
    salience_order,
    salience_rank,
)

__all__ = [
    "BLUR_FILL_SHARE",
    "CODE_LEVELS",
    "FILLS",
    "IMAGE_FILLS",
    "MODES",
    "RANK_BY",
    "blurred",
    "fill_value",
    "gaussian_blur",
    "grid_level",
    "mask_of_codes",
    "mask_of_rank",
    "noisy_linear_impute",
    "pixels_to_remove",
    "random_members",
    "ranking_reduction",
    "remove",
    "removal_codes",
    "removal_mask",
    "replace_pixels",
    "salience_order",
    "salience_rank",
]

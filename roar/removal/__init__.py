"""ROAR's data modification, as tensor operations that know nothing of datasets or methods: which pixels go
(masks.py), what they become (fills.py), and ROAD's imputation (imputation.py)."""

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
    MODES,
    RANK_BY,
    mask_of_rank,
    pixels_to_remove,
    ranking_reduction,
    removal_mask,
    salience_rank,
)

__all__ = [
    "BLUR_FILL_SHARE",
    "FILLS",
    "IMAGE_FILLS",
    "MODES",
    "RANK_BY",
    "blurred",
    "fill_value",
    "gaussian_blur",
    "mask_of_rank",
    "noisy_linear_impute",
    "pixels_to_remove",
    "ranking_reduction",
    "remove",
    "removal_mask",
    "replace_pixels",
    "salience_rank",
]

"""ROAD's noisy linear imputation (Rong, Leemann et al., "A Consistent and Efficient Evaluation Strategy for
Attribution Methods", ICML 2022).

Every removed pixel takes the weighted mean of its 8 neighbours (side neighbours weigh 1/6, diagonal ones
1/12; at the border the weights of the neighbours inside the image are renormalised to sum to one), where
a neighbour that is itself removed enters with its own unknown value. All removed pixels of an image are
thus solved jointly as one sparse linear system

    sum_j w_ij * x_i - sum_{j removed} w_ij * x_j = sum_{j kept} w_ij * v_j     (i removed, j neighbour of i)

which is the system of ROAD's reference implementation (`road/imputations.py`, `NoisyLinearImputer`), and
Gaussian noise (sigma = 0.01) is then added to the imputed pixels only. With a pixel mask (N, H, W) the
channels share the system; with an element mask (N, C, H, W) each channel has its own.

`noisy_linear_impute` solves all systems of a batch at once in torch with Jacobi-preconditioned conjugate
gradients, the 3x3 stencil applied as one depthwise convolution over every (image, channel) plane (the
system is symmetric positive definite whenever each group of removed pixels touches a kept one).
`linear_impute_direct` is the per-image direct sparse solve (scipy) it is checked against: equal within
1e-4, typically within 1e-6 (tests/test_imputation.py, `make bench`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.sparse import coo_matrix
from scipy.sparse.linalg import spsolve

ROAD_NOISE = 0.01
# (row offset, column offset) -> weight; the weights of the 8 neighbours sum to one.
NEIGHBOUR_WEIGHTS = {
    (dy, dx): (1 / 6 if dy == 0 or dx == 0 else 1 / 12)
    for dy in (-1, 0, 1)
    for dx in (-1, 0, 1)
    if (dy, dx) != (0, 0)
}
# The same weights times 12, as a 3x3 stencil: small integers keep the float32 arithmetic exact.
_STENCIL = torch.tensor([[1.0, 2.0, 1.0], [2.0, 0.0, 2.0], [1.0, 2.0, 1.0]])
# Images solved together: the planes of a chunk stay in cache through the iterations.
_CHUNK = 128


def _planes(images: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, N*C, H, W) channels-last views of the images and of the mask expanded to every channel.

    Channels-last puts the N*C planes innermost, where the depthwise stencil vectorises."""
    n, c, h, w = images.shape
    if mask.ndim == 3:
        mask = mask.unsqueeze(1).expand(n, c, h, w)
    if mask.shape != images.shape:
        raise ValueError(f"mask {tuple(mask.shape)} does not fit images {tuple(images.shape)}")
    as_planes = lambda t: t.reshape(1, n * c, h, w).contiguous(memory_format=torch.channels_last)  # noqa: E731
    return as_planes(images), as_planes(mask.to(images.dtype))


def _solve_chunk(images: torch.Tensor, mask: torch.Tensor, tol: float, max_iter: int) -> torch.Tensor:
    n, c, h, w = images.shape
    values, removed = _planes(images, mask)
    stencil = _STENCIL.to(images).expand(n * c, 1, 3, 3).contiguous()

    def neighbours(planes: torch.Tensor) -> torch.Tensor:  # 12 * weighted sum of the in-image neighbours
        return F.conv2d(planes, stencil, padding=1, groups=n * c)

    # Everything is scaled by 12: diagonal = 12 * the in-image neighbours' weight sum.
    diagonal = neighbours(torch.ones_like(values)) * removed
    inverse = removed / neighbours(torch.ones_like(values))
    residual = removed * neighbours(values * (1 - removed))  # right-hand side, as the start is x = 0
    solution = torch.zeros_like(values)
    preconditioned = residual * inverse
    direction = preconditioned.clone()
    rz = (residual * preconditioned).sum((2, 3), keepdim=True)
    for iteration in range(max_iter):
        # |r_i| / (12 * weight sum) is how far pixel i is from the weighted mean of its neighbours.
        if iteration % 4 == 0 and (residual.abs() * inverse).amax() < tol:
            break
        product = torch.addcmul(diagonal * direction, removed, neighbours(direction), value=-1)
        curvature = (direction * product).sum((2, 3), keepdim=True)
        # A solved plane (or one with nothing removed) has zero curvature: it takes no further step.
        step = torch.where(curvature > 0, rz / curvature, 0.0)
        solution.addcmul_(step, direction)
        residual = residual.addcmul(step, product, value=-1)
        preconditioned = residual * inverse
        rz_next = (residual * preconditioned).sum((2, 3), keepdim=True)
        direction = direction.mul_(torch.where(rz > 0, rz_next / rz, 0.0)).add_(preconditioned)
        rz = rz_next
    else:
        raise RuntimeError(f"ROAD imputation did not converge to {tol:g} in {max_iter} iterations")
    filled = torch.where(removed > 0, solution, values)
    return filled.contiguous().view(n, c, h, w)


def linear_impute(
    images: torch.Tensor, mask: torch.Tensor, tol: float = 1e-6, max_iter: int | None = None
) -> torch.Tensor:
    """Images (N, C, H, W) with the pixels where `mask` is True ((N, H, W), or (N, C, H, W) per element)
    replaced by the solution of the linear system above; kept pixels are returned unchanged.

    Iterates until every removed value is within `tol` of the weighted mean of its neighbours. A group
    of removed pixels with no kept pixel around it (only possible when a whole channel is removed) has
    nothing to interpolate from and comes out as 0.
    """
    h, w = images.shape[-2:]
    max_iter = max_iter or 100 * max(h, w)
    chunks = [
        _solve_chunk(images[start : start + _CHUNK], mask[start : start + _CHUNK], tol, max_iter)
        for start in range(0, len(images), _CHUNK)
    ]
    return torch.cat(chunks) if chunks else images.clone()


def noisy_linear_impute(
    images: torch.Tensor,
    mask: torch.Tensor,
    generator: torch.Generator | None = None,
    noise: float = ROAD_NOISE,
) -> torch.Tensor:
    """ROAD's noisy linear imputation: `linear_impute`, then N(0, noise^2) added to the removed pixels
    only (drawn from `generator`)."""
    imputed = linear_impute(images, mask)
    removed = mask.unsqueeze(1).expand_as(images) if mask.ndim == 3 else mask
    jitter = torch.randn(images.shape, generator=generator, dtype=images.dtype).to(images.device)
    return torch.where(removed, imputed + noise * jitter, imputed)


def linear_impute_direct(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The same system solved directly, one image (and, for element masks, one channel) at a time, with
    scipy's sparse LU in float64: the reference the batched solver is checked against."""
    out = images.double().numpy().copy()
    for i in range(len(images)):
        if mask.ndim == 3:
            out[i] = _direct_solve(out[i], mask[i].numpy())
            continue
        for k in range(images.shape[1]):
            out[i, k : k + 1] = _direct_solve(out[i, k : k + 1], mask[i, k].numpy())
    return torch.from_numpy(out).to(images.dtype)


def _direct_solve(image: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """image (C, H, W) float64, removed (H, W) bool -> image with the removed pixels solved for."""
    c, h, w = image.shape
    unknown = np.flatnonzero(removed)
    index = np.full(h * w, -1)
    index[unknown] = np.arange(len(unknown))
    rows, cols, entries = [], [], []
    diagonal = np.zeros(len(unknown))
    rhs = np.zeros((len(unknown), c))
    y, x = np.divmod(unknown, w)
    flat = image.reshape(c, -1)
    for (dy, dx), weight in NEIGHBOUR_WEIGHTS.items():
        ny, nx = y + dy, x + dx
        inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        diagonal[inside] += weight
        neighbour = ny[inside] * w + nx[inside]
        is_unknown = index[neighbour] >= 0
        at = np.flatnonzero(inside)
        rows.append(at[is_unknown])
        cols.append(index[neighbour[is_unknown]])
        entries.append(np.full(is_unknown.sum(), -weight))
        np.add.at(rhs, at[~is_unknown], weight * flat[:, neighbour[~is_unknown]].T)
    rows.append(np.arange(len(unknown)))
    cols.append(np.arange(len(unknown)))
    entries.append(diagonal)
    system = coo_matrix(
        (np.concatenate(entries), (np.concatenate(rows), np.concatenate(cols))), shape=(len(unknown),) * 2
    ).tocsc()
    solved = image.copy().reshape(c, -1)
    if len(unknown):
        solved[:, unknown] = spsolve(system, rhs).reshape(len(unknown), c).T
    return solved.reshape(c, h, w)

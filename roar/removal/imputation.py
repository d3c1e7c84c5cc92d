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

roar applies it to raw images in [0, 1], so sigma is in those units (ROAD's code works on normalised ones;
the interpolation itself is the same in either space, as its weights sum to one).

`noisy_linear_impute` solves the systems of many images at once in torch with Jacobi-preconditioned
conjugate gradients (the system is symmetric positive definite whenever each group of removed pixels
touches a kept one): the 3x3 stencil is one depthwise convolution over every (image, channel) plane of a
chunk of images, and chunks run in parallel on torch's threads. A direct solve per image would be exact
but serial; CG on the whole batch needs only as many stencil passes as the largest hole is wide (about
20 on 32x32 images with random 50 % masks, 70 with one large hole), see `make bench`.
`linear_impute_direct` is the per-image direct sparse solve (scipy) it is checked against: equal within
1e-4, typically within 1e-6 (tests/removal/test_imputation.py, `make bench`).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from scipy.sparse import coo_matrix
from scipy.sparse.linalg import spsolve

from roar.removal.keys import image_states, standard_normal

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
# Images solved together: the planes of a chunk stay in cache through the iterations. The solver stops when
# every plane of a chunk has converged, so an image's last bits depend on its chunk: whoever imputes a
# split in parts (roar/stages/modified.py, shard by shard) cuts them at multiples of CHUNK from the split's
# start, so that every image lands in the same chunk as in one pass over the whole split.
CHUNK = 128


def _planes(images: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, N*C, H, W) channels-last copies of the images and of the mask (in every channel it covers).

    Channels-last puts the N*C planes innermost, where the depthwise stencil vectorises."""
    n, c, h, w = images.shape
    if mask.shape not in (images.shape, (n, h, w)):
        raise ValueError(f"mask {tuple(mask.shape)} does not fit images {tuple(images.shape)}")
    # One copy each, straight into the (H, W, N*C) memory order.
    mask = mask.to(images.dtype)
    mask = (
        mask.permute(1, 2, 0).unsqueeze(3).expand(h, w, n, c) if mask.ndim == 3 else mask.permute(2, 3, 0, 1)
    )
    planes = images.reshape(1, n * c, h, w).contiguous(memory_format=torch.channels_last)
    mask = mask.reshape(h, w, n * c).permute(2, 0, 1).unsqueeze(0)
    return planes, mask.contiguous(memory_format=torch.channels_last)  # a no-op for pixel masks


def _solve_chunk(images: torch.Tensor, mask: torch.Tensor, tol: float, max_iter: int) -> torch.Tensor:
    n, c, h, w = images.shape
    values, removed = _planes(images, mask)
    stencil = (-_STENCIL).to(images).expand(n * c, 1, 3, 3).contiguous()

    def minus_neighbours(planes: torch.Tensor) -> torch.Tensor:  # -12 * weighted sum of in-image neighbours
        return F.conv2d(planes, stencil, padding=1, groups=n * c)

    # The system times 12: diagonal = 12 * the in-image neighbours' weight sum (12 inside, less at borders).
    diagonal = -minus_neighbours(torch.ones_like(values))
    inverse = removed / diagonal
    known = values * (1 - removed)
    residual = -removed * minus_neighbours(known)  # the right-hand side, as x starts at 0
    solution = torch.zeros_like(values)
    # The search direction is zero off the removed pixels, so the products below need no masking there;
    # the residual's values off them are never read (the preconditioner zeroes them).
    preconditioned = residual * inverse
    direction = preconditioned.clone()
    rz = (residual * preconditioned).sum((2, 3), keepdim=True)
    for iteration in range(max_iter):
        # |r_i| / (12 * weight sum) is how far pixel i is from the weighted mean of its neighbours.
        if iteration % 4 == 0 and (residual.abs() * inverse).amax() < tol:
            break
        product = torch.addcmul(minus_neighbours(direction), diagonal, direction)
        curvature = (direction * product).sum((2, 3), keepdim=True)
        # A solved plane (or one with nothing removed) has zero curvature: it takes no further step.
        step = torch.where(curvature > 0, rz / curvature, 0.0)
        solution.addcmul_(step, direction)
        residual.addcmul_(step, product, value=-1)
        torch.mul(residual, inverse, out=preconditioned)
        rz_next = (residual * preconditioned).sum((2, 3), keepdim=True)
        direction.mul_(torch.where(rz > 0, rz_next / rz, 0.0)).add_(preconditioned)
        rz = rz_next
    else:
        raise RuntimeError(f"ROAD imputation did not converge to {tol:g} in {max_iter} iterations")
    # Back to (N, C, H, W) order; the caller's concatenation makes it contiguous.
    return solution.add_(known).squeeze(0).permute(1, 2, 0).view(h, w, n, c).permute(2, 3, 0, 1)


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
    starts = range(0, len(images), CHUNK)

    def solve(start: int) -> torch.Tensor:
        return _solve_chunk(images[start : start + CHUNK], mask[start : start + CHUNK], tol, max_iter)

    workers = min(torch.get_num_threads(), len(starts))
    if images.device.type != "cpu" or workers <= 1:
        chunks = [solve(start) for start in starts]
    else:
        # Chunks in parallel, each op on one thread: splitting every op of a ~1.5 MB chunk across threads
        # costs a barrier per op, which collapses on a machine shared with other processes.
        with _intra_op_threads(1), ThreadPoolExecutor(workers) as pool:
            chunks = list(pool.map(solve, starts))
    return torch.cat(chunks).contiguous() if chunks else images.clone()


@contextmanager
def _intra_op_threads(count: int):
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def noisy_linear_impute(
    images: torch.Tensor,
    mask: torch.Tensor,
    seed: int = 0,
    ids: torch.Tensor | None = None,
    source: str = "",
    noise: float = ROAD_NOISE,
) -> torch.Tensor:
    """ROAD's noisy linear imputation: `linear_impute`, then N(0, noise^2) added to the removed pixels
    only, each image's noise drawn from (seed, source, its id: `ids`, default 0..N-1) alone
    (roar/removal/keys.py), so that it is the same whichever images it is imputed with."""
    imputed = linear_impute(images, mask)
    removed = (mask.unsqueeze(1) if mask.ndim == 3 else mask).to(images.dtype)
    if ids is None:
        ids = torch.arange(len(images))
    jitter = standard_normal(image_states(seed, source, ids.to(images.device)), tuple(images.shape[1:]))
    return imputed.add_(jitter.to(images.dtype).mul_(removed).mul_(noise))


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

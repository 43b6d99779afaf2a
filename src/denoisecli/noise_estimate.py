"""Estimating an image's noise level from the image alone, so a user need not know sigma.

Two published ideas combined: keep only weakly textured patches, those whose gradient
energy is what noise alone would give (Liu, Tanaka and Okutomi, 2013), then take the
noise variance as the mean of the largest tail of patch-covariance eigenvalues whose
mean does not exceed its median (Chen, Zhu and Heng, 2015). The first stops texture from
passing for noise; the second avoids the downward bias of the smallest eigenvalue.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

PATCH = 7
SMALLER_PATCHES = (5, 3)
SAMPLES_PER_DIMENSION = 40
ITERATIONS = 3
PATCH_BUDGET = 120_000
CROP = 256
MAX_CROPS = 3
Z_99 = 2.326


def estimate_sigma(image: torch.Tensor, patch: int | None = None) -> float:
    """Noise standard deviation of a CxHxW image (same scale as the pixels), pooled over channels.

    Every plane (each channel of each crop) contributes the scatter of its own weakly textured
    patches to one covariance, so its eigenvalues come from all of them at once: a 1-megapixel
    image is split into 27 planes, and one covariance per plane from its few thousand patches read
    sigma 50 as about 47 (Kodak24 upscaled to 1000x1000). Patches are sampled on a strided grid, at most
    PATCH_BUDGET in all, which bounds the time; sorting each plane's patches by texture once makes
    every pass's covariance a prefix sum (see ``_Plane``). About 0.04 s on a 256x256 colour image
    and 0.08 s at 1024x1024 on 2 CPU cores. Fewer patches on small images lowered estimates at sigma
    50 by a further 0.1-0.2, so they keep the whole budget. benchmarks/estimator_accuracy.py
    measures the error. ``patch`` fixes the patch size; by default it is chosen by ``_patch_size``."""
    if image.ndim != 3:
        raise ValueError("expected a CxHxW image")
    x = image.detach().to("cpu", torch.float32)
    patch = _patch_size(x) if patch is None else patch
    if min(x.shape[-2:]) < patch + 1:
        return 0.0
    planes = [crop[c] for crop in _crops(x) for c in range(x.shape[0])]
    per_plane = max(1, PATCH_BUDGET // len(planes))
    sorted_planes = [_Plane(plane, patch, per_plane) for plane in planes]
    variance = _tail_variance([p.moments() for p in sorted_planes])
    threshold = 2 * _chi2_quantile(2 * patch * (patch - 1))
    previous: list[int] | None = None
    for _ in range(ITERATIONS):
        weak = [p.weak(threshold * variance) for p in sorted_planes]
        if sum(weak) < 4 * patch * patch or weak == previous:
            break
        previous = weak
        variance = _tail_variance([p.moments(k) for p, k in zip(sorted_planes, weak)])
    return math.sqrt(variance)


def _patch_size(x: torch.Tensor) -> int:
    """The largest patch (PATCH, then SMALLER_PATCHES) that leaves at least SAMPLES_PER_DIMENSION
    patches per dimension of the patch covariance: from too few patches its eigenvalues spread, and
    the tail rule then reads the noise low. With 7x7 patches a 16x16 colour thumbnail read sigma 50
    as 42 and a 10x10 one as 0; 3x3 patches read both as about 47 (tests/test_noise_level.py)."""
    h, w = x.shape[-2:]
    for patch in (PATCH, *SMALLER_PATCHES):
        if x.shape[0] * (h - patch + 1) * (w - patch + 1) >= SAMPLES_PER_DIMENSION * patch * patch:
            return patch
    return SMALLER_PATCHES[-1]


class _Plane:
    """One plane's sampled patches sorted by texture, with prefix sums of their moments.

    Weakly textured patches (texture below a threshold) are then a prefix of the sorted order, so
    each pass's covariance costs a prefix lookup and one small block instead of a product over
    every kept patch: those products took half the estimator's time on a 256x256 image. The
    patches are gathered once, straight into sorted order, with no padded or appended copy: inside
    the estimator each fresh 6 MB buffer took about three times as long to fill as in a warm loop."""

    BLOCK = 1024

    def __init__(self, plane: torch.Tensor, patch: int, budget: int) -> None:
        stride = _strides(math.ceil((plane.shape[0] - patch + 1) * (plane.shape[1] - patch + 1) / budget))
        grid = (plane - plane.mean()).unfold(0, patch, stride[0]).unfold(1, patch, stride[1])
        texture = _texture(plane, patch, stride)
        order = torch.from_numpy(np.argsort(texture.numpy()))  # numpy's sort: half the time of torch's here
        self.texture = texture[order]
        self.patches = grid[order // grid.shape[1], order % grid.shape[1]].reshape(len(order), patch * patch)
        whole = len(order) // self.BLOCK * self.BLOCK
        blocks = self.patches[:whole].view(-1, self.BLOCK, patch * patch)
        second = torch.bmm(blocks.transpose(1, 2), blocks).double().cumsum(0)
        self.second = torch.cat([second.new_zeros(1, *second.shape[1:]), second])
        sums = blocks.sum(1).double().cumsum(0)
        self.sums = torch.cat([sums.new_zeros(1, sums.shape[1]), sums])

    def weak(self, limit: float) -> int:
        """How many patches have texture below ``limit``: the length of the weak prefix."""
        return int(torch.searchsorted(self.texture, torch.tensor([limit], dtype=self.texture.dtype))[0])

    def moments(self, count: int | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Second moments, sums and count of the ``count`` least textured patches (all if None)."""
        count = len(self.patches) if count is None else count
        whole = count // self.BLOCK
        rest = self.patches[whole * self.BLOCK : count]
        return self.second[whole] + (rest.T @ rest).double(), self.sums[whole] + rest.sum(0).double(), count


def _crops(x: torch.Tensor) -> list[torch.Tensor]:
    """The whole image if small, else a grid of up to MAX_CROPS x MAX_CROPS crops: bounded memory and time."""
    h, w = x.shape[-2:]
    if h * w <= (MAX_CROPS * CROP) ** 2:
        return [x]
    tops = [round(i * (h - CROP) / max(1, MAX_CROPS - 1)) for i in range(MAX_CROPS)] if h > CROP else [0]
    lefts = [round(j * (w - CROP) / max(1, MAX_CROPS - 1)) for j in range(MAX_CROPS)] if w > CROP else [0]
    return [x[:, t : t + CROP, l : l + CROP] for t in tops for l in lefts]


def _strides(k: int) -> tuple[int, int]:
    """A near-square (rows, columns) grid step that keeps about one patch in ``k``."""
    rows = math.isqrt(max(1, k))
    return rows, math.ceil(k / rows)


def _texture(plane: torch.Tensor, patch: int, stride: tuple[int, int] = (1, 1)) -> torch.Tensor:
    """Gradient energy (sum of squared horizontal and vertical neighbour differences) of every
    patch on a strided grid, in row-major order, from box sums over the image instead of per-patch copies."""
    x = plane[None, None]
    dx = (x[..., :, 1:] - x[..., :, :-1]).square()
    dy = (x[..., 1:, :] - x[..., :-1, :]).square()
    area = patch * (patch - 1)
    box = F.avg_pool2d(dx, (patch, patch - 1), stride=stride) + F.avg_pool2d(dy, (patch - 1, patch), stride=stride)
    return box.flatten() * area


def _chi2_quantile(k: int, z: float = Z_99) -> float:
    """Wilson-Hilferty approximation of the chi-square quantile with k degrees of freedom."""
    return k * (1 - 2 / (9 * k) + z * math.sqrt(2 / (9 * k))) ** 3


def _tail_variance(moments: list[tuple[torch.Tensor, torch.Tensor, int]]) -> float:
    """Mean of the largest tail of covariance eigenvalues whose mean does not exceed its median; the
    covariance pools the chosen patches of every plane, each centred on its own mean."""
    size = moments[0][0].shape[0]
    scatter = torch.zeros(size, size, dtype=torch.float64)
    count = centres = 0
    for second, sums, n in moments:
        if n < 2:
            continue
        scatter += second - torch.outer(sums, sums) / n
        count, centres = count + n, centres + 1
    ascending = torch.linalg.eigvalsh(scatter / max(1, count - centres)).clamp_min(0).tolist()
    for n in range(len(ascending), 0, -1):
        tail = ascending[:n]
        mean = sum(tail) / n
        if mean <= tail[(n - 1) // 2]:
            return mean
    return ascending[0]


def clipped_level(image: torch.Tensor, sigma: float, max_pixels: int = 1 << 20) -> float:
    """The std that noise of ``sigma`` keeps once an image like this one is clamped to [0, 1].

    Noise-map models with ``level="clamped"`` learned the level as the std of the noise
    actually present in their clamped training inputs, which near black and white is below the noise's own sigma; an
    estimate (or a user's ``--sigma``) is the unclamped figure. Measured on this image (a
    deterministic sample of at most ``max_pixels``), since how much clamping removes
    depends on how much of the image lies near the ends of the range.
    """
    if sigma <= 0:
        return 0.0
    x = image.detach().to("cpu", torch.float32).clamp(0, 1).flatten()
    if x.numel() > max_pixels:
        x = x[:: math.ceil(x.numel() / max_pixels)]
    gen = torch.Generator().manual_seed(0)
    return float(((x + torch.randn(x.shape, generator=gen) * sigma).clamp(0, 1) - x).std())


def model_level(image: torch.Tensor, sigma: float | None = None, level: str = "sigma") -> tuple[float, float]:
    """(sigma, input): the noise sigma, given or else estimated, and what a noise-level model whose
    input means ``level`` (see ``UNet``) is fed for it."""
    s = estimate_sigma(image) if sigma is None else sigma
    return s, (clipped_level(image, s) if level == "clamped" else s)

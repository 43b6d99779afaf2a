"""Estimating an image's noise level from the image alone, so a user need not know sigma.

Two published ideas combined: keep only weakly textured patches, those whose gradient
energy is what noise alone would give (Liu, Tanaka and Okutomi, 2013), then take the
noise variance as the mean of the largest tail of patch-covariance eigenvalues whose
mean does not exceed its median (Chen, Zhu and Heng, 2015). The first stops texture from
passing for noise; the second avoids the downward bias of the smallest eigenvalue.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

PATCH = 7
ITERATIONS = 3
PATCH_BUDGET = 120_000
CROP = 256
MAX_CROPS = 3
Z_99 = 2.326


def estimate_sigma(image: torch.Tensor, patch: int = PATCH) -> float:
    """Noise standard deviation of a CxHxW image (same scale as the pixels), pooled over channels.

    Every plane (each channel of each crop) contributes the scatter of its own weakly textured
    patches to one covariance, so its eigenvalues come from all of them at once: a 1-megapixel
    image is split into 27 planes, and one covariance per plane from its few thousand patches read
    sigma 50 as about 47 (Kodak24 upscaled to 1000x1000). Patches are sampled on a strided grid, at most
    PATCH_BUDGET in all, which bounds the time: about 0.1 s on a 1024x1024 colour image on 2 CPU
    cores (1.5 s with one covariance per plane from every patch) and 0.05 s at 256x256. Fewer
    patches on small images lowered estimates at sigma 50 by a further 0.1-0.2, so they keep the
    whole budget. benchmarks/estimator_accuracy.py measures the error."""
    if image.ndim != 3:
        raise ValueError("expected a CxHxW image")
    x = image.detach().to("cpu", torch.float32)
    if min(x.shape[-2:]) < patch + 1:
        return 0.0
    planes = [crop[c] for crop in _crops(x) for c in range(x.shape[0])]
    per_plane = max(1, PATCH_BUDGET // len(planes))
    rows, texture = [], []
    for plane in planes:
        stride = _strides(math.ceil((plane.shape[0] - patch + 1) * (plane.shape[1] - patch + 1) / per_plane))
        grid = (plane - plane.mean()).unfold(0, patch, stride[0]).unfold(1, patch, stride[1])
        row = torch.ones(grid.shape[0] * grid.shape[1], patch * patch + 1)
        row[:, :-1].view(grid.shape).copy_(grid)
        rows.append(row)
        texture.append(_texture(plane, patch, stride))
    variance = _tail_variance(rows, [None] * len(rows))
    threshold = 2 * _chi2_quantile(2 * patch * (patch - 1))
    previous: list[torch.Tensor] | None = None
    for _ in range(ITERATIONS):
        weak = [t < threshold * variance for t in texture]
        if sum(int(w.sum()) for w in weak) < 4 * patch * patch:
            break
        if previous is not None and all(torch.equal(a, b) for a, b in zip(weak, previous)):
            break
        previous = weak
        variance = _tail_variance(rows, weak)
    return math.sqrt(variance)


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


def _tail_variance(rows: list[torch.Tensor], keep: list[torch.Tensor | None]) -> float:
    """Mean of the largest tail of covariance eigenvalues whose mean does not exceed its median; the
    covariance pools the kept patches of every plane, each centred on its own mean.

    Each row is a patch (of a plane less its mean) with a 1 appended, so one product gives the
    patches' second moments, sums and count, and the centring is done on that small matrix."""
    size = rows[0].shape[1] - 1
    scatter = torch.zeros(size, size, dtype=torch.float64)
    count = centres = 0
    for r, k in zip(rows, keep):
        chosen = r if k is None else r.index_select(0, k.nonzero().squeeze(1))
        if chosen.shape[0] < 2:
            continue
        moments = (chosen.T @ chosen).double()
        sums = moments[:size, size]
        scatter += moments[:size, :size] - torch.outer(sums, sums) / chosen.shape[0]
        count, centres = count + chosen.shape[0], centres + 1
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
    return s, (s if level == "sigma" else clipped_level(image, s))

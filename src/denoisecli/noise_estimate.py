"""Estimating an image's noise level from the image alone, so a user need not know sigma.

Two published ideas combined: keep only weakly textured patches, those whose gradient
energy is what noise alone would give (Liu, Tanaka and Okutomi, 2013), then take the
noise variance as the mean of the largest tail of patch-covariance eigenvalues whose
mean does not exceed its median (Chen, Zhu and Heng, 2015). The first stops texture from
passing for noise; the second avoids the downward bias of the smallest eigenvalue.

Beside it, the other statistics `run` reads from a noisy image before denoising it: how the
noise varies with brightness (``level_map``) and how much the channels share their edges
(``channel_coupling``), each with the noise taken out.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

PATCH = 7
SMALLER_PATCHES = (5, 3)
SAMPLES_PER_DIMENSION = 40
ITERATIONS = 3
PATCH_BUDGET = 120_000
SMALL_IMAGE_STEP = 4
SMALL_IMAGE_PATCHES = 40_000
CROP = 256
MAX_CROPS = 3
Z_99 = 2.326
MAP_BINS = 8
MAP_SAMPLES = 1 << 13
MAP_RANGE = (0.25, 4.0)
COUPLING_POOL = 4
CLAMPED_SHARE = 0.005
CENSORED_MEANS = 128
COUNT_LEVELS = 64
COUNT_SLACK = 0.1
COUNT_FLOOR = 2
COUNT_POOL = 5
COUNT_PROBE = 4096


def estimate_sigma(image: torch.Tensor, patch: int | None = None, upper: float | None = None) -> float:
    """Noise standard deviation of a CxHxW image (same scale as the pixels), pooled over channels.

    Every plane (each channel of each crop) contributes the scatter of its own weakly textured
    patches to one covariance, so its eigenvalues come from all of them at once: a 1-megapixel
    image is split into 27 planes, and one covariance per plane from its few thousand patches read
    sigma 50 as about 47 (Kodak24 upscaled to 1000x1000). Patches are sampled on a strided grid
    (see ``_step``), which bounds the time; sorting each plane's patches by texture once makes
    every pass's covariance a prefix sum (see ``_Planes``). About 8 ms on a 256x256 colour image and
    26 ms at 1024x1024 on a 2-core Xeon VM (the network takes 35 and 520 ms); on a slower 2-core
    EPYC VM, 13-16 and 45 ms as `run` calls it, with ``device.keep_freed_memory`` set (23 and 56-77 ms
    without: fresh blocks cost page faults; the network about 70 and 1000 ms).
    benchmarks/estimator_accuracy.py measures the error. ``patch`` fixes the patch size; by default
    it is chosen by ``_patch_size``. ``upper`` leaves out the patches whose mean is above it: a
    reading of the part of the image darker than where its noise was clipped at white (see
    ``stabilise.stabiliser``); 0 where none is left."""
    return math.sqrt(_weak_noise(image, patch, upper=upper)[0])


def _weak_noise(image: torch.Tensor, patch: int | None = None, means: bool = False,
                upper: float | None = None) -> tuple[float, torch.Tensor | None]:
    """``estimate_sigma``'s variance and, with ``means``, the means of the weakly textured patches it was read from."""
    if image.ndim != 3:
        raise ValueError("expected a CxHxW image")
    x = image.detach().to("cpu", torch.float32)
    patch = _patch_size(x) if patch is None else patch
    if min(x.shape[-2:]) < patch + 1:
        return 0.0, None
    planes = torch.cat([crop.reshape(-1, *crop.shape[-2:]) for crop in _crops(x)])
    sorted_planes = _Planes(planes, patch, _step(planes, patch), upper)
    variance = _tail_variance(sorted_planes.moments())
    weak = sorted_planes.live
    threshold = 2 * _chi2_quantile(2 * patch * (patch - 1))
    previous: list[int] | None = None
    for _ in range(ITERATIONS):
        counts = sorted_planes.weak(threshold * variance)
        if sum(counts) < 4 * patch * patch or counts == previous:
            break
        previous = weak = counts
        variance = _tail_variance(sorted_planes.moments(weak))
    if not means:
        return variance, None
    return variance, sorted_planes.means(weak, CENSORED_MEANS)


def unclamped_sigma(image: torch.Tensor, share: float = CLAMPED_SHARE) -> float:
    """The sigma of white noise before it was clamped to [0, 1], for an image of which at least
    ``share`` of the pixels sit exactly at 0 or 1 (a file's noise, clipped at black and white);
    else ``estimate_sigma``. Clamping takes much of the noise away near black and white, and in a
    dark image most weakly textured patches are dark ones, so the estimator reads it low, while a
    model trained on the noise's own sigma wants that (weights/README.md, *In files*, under
    each model).
    Each weak patch's mean fixes, for a trial sigma, the clean level under it (the mean of a
    clamped normal, inverted), and with it the variance clamping leaves there; the sigma whose
    mean left variance is what the estimator read is the answer (``_censored_sigma``)."""
    x = image.detach().to("cpu", torch.float32)
    if float(((x == 0) | (x == 1)).float().mean()) < share:
        return estimate_sigma(x)
    variance, means = _weak_noise(x, means=True)
    if means is None or variance <= 0:
        return math.sqrt(variance)
    return _censored_sigma(means.double(), variance)


def _clamped_moments(mu: torch.Tensor, sigma: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of ``clamp(N(mu, sigma^2), 0, 1)``."""
    a, b = -mu / sigma, (1 - mu) / sigma
    pdf_a, pdf_b = torch.exp(-a * a / 2) / math.sqrt(2 * math.pi), torch.exp(-b * b / 2) / math.sqrt(2 * math.pi)
    cdf_a, cdf_b = 0.5 * (1 + torch.erf(a / math.sqrt(2))), 0.5 * (1 + torch.erf(b / math.sqrt(2)))
    inside, above = cdf_b - cdf_a, 1 - cdf_b
    first = above + mu * inside + sigma * (pdf_a - pdf_b)
    second = above + mu**2 * inside + 2 * mu * sigma * (pdf_a - pdf_b) + sigma**2 * (inside + a * pdf_a - b * pdf_b)
    return first, (second - first**2).clamp_min(0)


def _censored_sigma(means: torch.Tensor, variance: float, grid: int = 257) -> float:
    """The sigma for which clamped white noise under patches of these means leaves, on average,
    ``variance``: tried on a grid from the reading itself to 3 times it (clamping took less than
    that in every benchmark image), each trial inverting every patch's clamped mean to its clean
    level, all at once, by linear interpolation in a table of the clamped mean over ``grid`` clean
    levels (16 steps of bisection took 4.1 ms, this 0.7, and readings moved by at most 0.005 of
    255 on 60 noisy BSD68 and CBSD68 images); linear between the two trial sigmas that bracket it."""
    reading = math.sqrt(variance)
    sigma = reading * torch.linspace(1, 3, 21, dtype=torch.float64)[:, None]
    clean = -5 * sigma + (1 + 10 * sigma) * torch.linspace(0, 1, grid, dtype=torch.float64)
    table = _clamped_moments(clean, sigma)[0]
    targets = means.expand(len(sigma), -1).contiguous()
    upper = torch.searchsorted(table, targets).clamp(1, grid - 1)
    a, b = table.gather(1, upper - 1), table.gather(1, upper)
    t = ((targets - a) / (b - a).clamp_min(1e-30)).clamp(0, 1)
    lo, hi = clean.gather(1, upper - 1), clean.gather(1, upper)
    left = _clamped_moments(lo + t * (hi - lo), sigma)[1].mean(1)
    above = torch.nonzero(left >= variance).flatten()
    if len(above) == 0:
        return float(sigma[-1])
    i = int(above[0])
    if i == 0:
        return reading
    t = (variance - float(left[i - 1])) / max(float(left[i] - left[i - 1]), 1e-30)
    return float(sigma[i - 1] + t * (sigma[i] - sigma[i - 1]))


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


def _step(planes: torch.Tensor, patch: int) -> int:
    """Sample one patch position in this many: enough to keep at most PATCH_BUDGET patches in all,
    and on a small image up to one in SMALL_IMAGE_STEP while SMALL_IMAGE_PATCHES remain.

    The network's time grows with the pixels and the estimator's with the patches, so without the
    second rule a small image paid for the estimate out of proportion: on a 256x256 colour image
    47,000 patches instead of 94,000 took it from 11 to 7 ms, `run` from 49 to 45 ms, at a cost of
    about 0.12 in the mean error at sigma 50 (-1.0 against -0.9 on the tests' smooth image) and
    at most 0.002 dB of PSNR (Kodak24 at sigma 15 and 50, every image sampled like this). Colour
    images from about 350x350 and grey ones from about 600x600 sample as before; BSD68 (grey,
    481x321) takes one patch in 3 instead of 2, and its mean error moved by at most 0.06."""
    positions = len(planes) * (planes.shape[1] - patch + 1) * (planes.shape[2] - patch + 1)
    return max(math.ceil(positions / PATCH_BUDGET), min(SMALL_IMAGE_STEP, positions // SMALL_IMAGE_PATCHES), 1)


class _Planes:
    """Each plane's sampled patches sorted by texture, with prefix sums of their moments.

    Weakly textured patches (texture below a threshold) are then a prefix of the sorted order, so
    each pass's covariance costs a prefix lookup and one small block instead of a product over
    every kept patch: those products took half the estimator's time on a 256x256 image. All planes
    have one shape (the crops of one image), so every step runs on all of them at once. The patches
    are copied out of their windows once and then picked in sorted order, whole rows at a time (twice
    as fast as indexing the strided window view); a zero row pads each plane to whole blocks, so the
    block products are one batched matmul with no further copy. With ``_texture`` from an integral
    image, this took the estimate on a 256x256 colour image from 17 to 11 ms at the same budget.
    A plane of fewer than BLOCK patches is one block of its own size (the blocks of
    ``bright_to_dark_noise`` hold 100 patches each, which padding to BLOCK made 10 times the work).

    A patch that touches a flat spot (``_flat_patches``) sorts last and is never chosen (``live``
    counts the others): a black border, a letterbox or a background clipped to black has no noise,
    and its patches, the least textured of all, took over the tail, so that a 256x256 Set12 image
    at sigma 25 with its left eighth set to 0 read 18.8, and with a quarter 0. Leaving out only the
    wholly flat ones was not enough: those that straddle the border hold a little noise, and on a
    96x131 colour image at sigma 5 in a mid-grey frame they read 1.9 (4.1 unframed; 4.2 so).
    """

    BLOCK = 1024

    def __init__(self, planes: torch.Tensor, patch: int, step: int, upper: float | None = None) -> None:
        stride = _strides(step)
        centred = planes - planes.mean((1, 2), keepdim=True)
        windows = centred.unfold(1, patch, stride[0]).unfold(2, patch, stride[1])
        texture = _texture(planes, patch, stride)
        flat = _flat_patches(planes, patch, stride)
        if upper is not None:
            bright = _patch_means(planes, patch, stride) > upper
            flat = bright if flat is None else flat | bright
        if flat is None:
            self.live = [texture.shape[1]] * len(planes)
        else:
            texture[flat] = math.inf
            self.live = (~flat).sum(1).tolist()
        order = torch.from_numpy(np.argsort(texture.numpy(), axis=1))  # numpy's sort: half the time of torch's here
        self.texture = texture.gather(1, order)
        self.levels = planes.mean((1, 2))
        self.per_plane = order.shape[1]
        # every plane's patches, then one zero row that pads each plane's sorted rows to whole blocks
        rows = torch.empty(len(planes) * self.per_plane + 1, patch * patch)
        rows[:-1].view(windows.shape).copy_(windows)
        rows[-1] = 0
        self.block = min(self.BLOCK, self.per_plane)
        picks = F.pad(order + torch.arange(len(planes))[:, None] * self.per_plane, (0, -self.per_plane % self.block), value=len(rows) - 1)
        self.blocks = rows.index_select(0, picks.flatten()).view(len(planes), -1, self.block, patch * patch)
        flat = self.blocks.flatten(0, 1)
        second = torch.bmm(flat.transpose(1, 2), flat).view(*self.blocks.shape[:2], patch * patch, patch * patch)
        self.second = F.pad(second.double().cumsum(1), (0, 0, 0, 0, 1, 0))
        self.sums = F.pad(flat.sum(1).view(*self.blocks.shape[:2], -1).double().cumsum(1), (0, 0, 1, 0))

    def weak(self, limit: float) -> list[int]:
        """How many patches of each plane have texture below ``limit``: the lengths of the weak prefixes."""
        bound = torch.full((len(self.texture), 1), limit, dtype=self.texture.dtype)
        return torch.searchsorted(self.texture, bound).flatten().tolist()

    def means(self, counts: list[int], most: int) -> torch.Tensor:
        """The means of every k-th of the patches that ``counts`` choose (each plane's least
        textured, in plane order), k the one that leaves ``most`` to twice that: read from the
        sorted rows, only those, where pooling every patch took 5 ms of the 26 that
        ``unclamped_sigma`` took at 256x256 in colour."""
        total = sum(counts)
        picks = torch.arange(0, total, max(1, total // most))
        ends = torch.tensor(counts).cumsum(0)
        plane = torch.searchsorted(ends, picks, right=True)
        rows = self.blocks.flatten(1, 2)[plane, picks - (ends - torch.tensor(counts))[plane]]
        return rows.mean(1) + self.levels[plane]

    def moments(self, counts: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every plane's second moments (PxDxD), sums (PxD) and count (P) of its ``counts[i]`` least
        textured patches (all if None): its whole blocks' prefix sums plus the start of the next
        block, all planes in one batched product (a loop over 32 small planes took 70% of
        ``bright_to_dark_noise``'s time)."""
        n = self.live if counts is None else counts
        whole = [count // self.block for count in n]
        rest = [count - w * self.block for count, w in zip(n, whole)]
        planes = torch.arange(len(n))
        partial = self.blocks[planes, torch.tensor(whole).clamp_max(self.blocks.shape[1] - 1), : max(rest)]
        if min(rest) < max(rest):
            partial = partial * (torch.arange(max(rest)) < torch.tensor(rest)[:, None])[..., None]
        second = self.second[planes, whole] + torch.bmm(partial.transpose(1, 2), partial).double()
        return second, self.sums[planes, whole] + partial.sum(1).double(), torch.tensor(n)


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


def _texture(planes: torch.Tensor, patch: int, stride: tuple[int, int] = (1, 1)) -> torch.Tensor:
    """Gradient energy (sum of squared horizontal and vertical neighbour differences) of every
    patch on a strided grid of each of the PxHxW planes, one row-major row per plane.

    Box sums from one integral image (in float64, so the sums of a large plane keep their low
    digits) cost the same at any stride: on a 256x256 colour image, at one patch position in 2, they
    took 1.1 ms where average pooling took 2.4 to 4.8 ms."""
    height, width = planes.shape[-2:]
    integral = planes.new_zeros(2, len(planes), height + 1, width + 1, dtype=torch.float64)
    integral[0, :, 1:, 1:width] = (planes[..., 1:] - planes[..., :-1]).square()
    integral[1, :, 1:height, 1:] = (planes[:, 1:] - planes[:, :-1]).square()
    integral = integral.cumsum_(2).cumsum_(3)
    grid = _grid(planes, patch, stride)
    across = _box_sums(integral[0], (patch, patch - 1), grid, stride)
    return (across + _box_sums(integral[1], (patch - 1, patch), grid, stride)).flatten(1).float()


def _flat_patches(planes: torch.Tensor, patch: int, stride: tuple[int, int] = (1, 1)) -> torch.Tensor | None:
    """Which patches of ``_texture``'s grid hold a flat spot, the centre of a 5x5 window of one
    value, or None where no plane has one. Noise leaves none, so a flat spot is part of something
    noise-free: a border, a background clipped to black. 3x3 windows also found the plateaus of
    clean 8-bit skies, and leaving out the patches around them raised clean BSD68 images' readings
    by up to 2.3 (0.66 with 5x5; 7x7 ones let more of a frame's straddling patches in). On an
    image without one, which is every noisy image, it costs a few comparisons: 0.56 ms at 256x256
    in colour on the 2-core EPYC VM, where the whole estimate took 19-24 ms before and after."""
    row = planes[..., 1:] == planes[..., :-1]
    row = row[..., 1:] & row[..., :-1]
    column = planes[:, 1:, 1:-1] == planes[:, :-1, 1:-1]
    spots = row[:, :-2] & row[:, 1:-1] & row[:, 2:] & column[:, 1:] & column[:, :-1]  # 3x3 windows
    if not bool(spots.any()):
        return None
    inner = spots[:, 1:-1, 1:-1].clone()
    for dy in range(3):
        for dx in range(3):
            inner &= spots[:, dy : dy + inner.shape[1], dx : dx + inner.shape[2]]  # 5x5: nine flat 3x3 windows
    if not bool(inner.any()):
        return None
    height, width = planes.shape[-2:]
    integral = planes.new_zeros(len(planes), height + 1, width + 1, dtype=torch.float64)
    integral[:, 3 : height - 1, 3 : width - 1] = inner
    integral = integral.cumsum_(1).cumsum_(2)
    return _box_sums(integral, (patch, patch), _grid(planes, patch, stride), stride).flatten(1) > 0


def _patch_means(planes: torch.Tensor, patch: int, stride: tuple[int, int]) -> torch.Tensor:
    """The mean of every patch of ``_texture``'s grid, one row-major row per plane."""
    height, width = planes.shape[-2:]
    integral = planes.new_zeros(len(planes), height + 1, width + 1, dtype=torch.float64)
    integral[:, 1:, 1:] = planes
    integral = integral.cumsum_(1).cumsum_(2)
    return _box_sums(integral, (patch, patch), _grid(planes, patch, stride), stride).flatten(1) / (patch * patch)


def _grid(planes: torch.Tensor, patch: int, stride: tuple[int, int]) -> tuple[int, int]:
    """Rows and columns of the strided grid of patch positions."""
    return (planes.shape[-2] - patch) // stride[0] + 1, (planes.shape[-1] - patch) // stride[1] + 1


def _box_sums(integral: torch.Tensor, box: tuple[int, int], grid: tuple[int, int], stride: tuple[int, int]) -> torch.Tensor:
    """Sums over ``box``-sized windows at the ``grid``'s strided positions, from a PxHxW
    integral image with a leading zero row and column."""
    (high, wide), (rows, cols) = box, grid

    def corner(top: int, left: int) -> torch.Tensor:
        return integral[:, top : top + (rows - 1) * stride[0] + 1 : stride[0], left : left + (cols - 1) * stride[1] + 1 : stride[1]]

    return corner(high, wide) - corner(0, wide) - corner(high, 0) + corner(0, 0)


def _chi2_quantile(k: int, z: float = Z_99) -> float:
    """Wilson-Hilferty approximation of the chi-square quantile with k degrees of freedom."""
    return k * (1 - 2 / (9 * k) + z * math.sqrt(2 / (9 * k))) ** 3


def _tail_variance(moments: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> float:
    """Mean of the largest tail of covariance eigenvalues whose mean does not exceed its median; the
    covariance pools the chosen patches of every plane (``_Planes.moments``), each centred on its
    own mean; a plane of fewer than 2 chosen patches adds nothing."""
    second, sums, counts = moments
    used = counts >= 2
    if not bool(used.all()):
        second, sums, counts = second[used], sums[used], counts[used]
    scatter = (second - sums[:, :, None] * sums[:, None, :] / counts.double()[:, None, None]).sum(0)
    freedom = max(1, int(counts.sum()) - len(counts))
    ascending = torch.linalg.eigvalsh(scatter / freedom).clamp_min(0).tolist()
    for n in range(len(ascending), 0, -1):
        tail = ascending[:n]
        mean = sum(tail) / n
        if mean <= tail[(n - 1) // 2]:
            return mean
    return ascending[0]


def channel_coupling(image: torch.Tensor) -> float:
    """How much a colour image's channels share their edges, from about 0 (independent) to 1.

    The colour model learned photos, whose channels move together, and blurs an edge that only
    one channel has; this tells such images (fluorescence composites, false colour, graphics)
    from photos. It is the mean, over the three channel pairs, of the correlation of their
    gradients at 1/``COUPLING_POOL`` scale (where white noise is that many times weaker), with
    each channel's noise variance taken out of its own. The noise comes from the median absolute
    finest diagonal Haar coefficient (Donoho and Johnstone, 1994), which texture can only raise:
    noise then never makes a photo's channels look independent. Photos read 0.5-1 under white,
    camera, JPEG and shared noise (CBSD68, Kodak24: weights/README.md); an image too small to
    measure reads 1.
    """
    x = image.detach().to("cpu", torch.float32)
    k = COUPLING_POOL
    if x.shape[0] < 2 or min(x.shape[-2:]) < 2 * k:
        return 1.0
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    diag = (x[:, 0:h:4, 0:w:4] - x[:, 0:h:4, 1:w:4] - x[:, 1:h:4, 0:w:4] + x[:, 1:h:4, 1:w:4]) / 2
    noise = diag.flatten(1).abs().median(1).values / 0.6745
    a = F.avg_pool2d(x[None], k)[0]
    g = torch.cat([(a[:, :, 1:] - a[:, :, :-1]).flatten(1), (a[:, 1:] - a[:, :-1]).flatten(1)], 1)
    g = g - g.mean(1, keepdim=True)
    cov = g @ g.T / g.shape[1]
    var = (cov.diagonal() - 2 * noise**2 / k**2).clamp_min(1e-12)
    r = (cov / (var[:, None] * var[None]).sqrt()).clamp(-1, 1)
    pairs = [(i, j) for i in range(len(r)) for j in range(i + 1, len(r))]
    return float(sum(r[i, j] for i, j in pairs) / len(pairs))


def shot_bands(image: torch.Tensor) -> tuple[np.ndarray, np.ndarray] | None:
    """``_bands`` of a CxHxW image as the shot-noise tests read them (clamped to [0, 1], flat
    stretches left out), or None where the image is too small to measure: computed once, for
    ``signal_dependence`` and ``growth_beyond_clamping`` both."""
    if image.ndim != 3 or min(image.shape[-2:]) < 8:
        return None
    return _bands(image.detach().float().cpu().clamp(0, 1).numpy(), skip_flat=True)


def signal_dependence(image: torch.Tensor, bands: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[float, float] | None:
    """(offset, ratio): the noise variance of a CxHxW image taken as proportional to brightness +
    ``offset`` (``_variance_fit``'s line), and how many times larger that makes it at the
    image's bright end than at its dark end (the 90th and 10th percentiles of its bands'
    brightness); None where the line is flat or the image too small to measure. A cheap screen
    (about 1 ms at 256x256): on BSD68 and Set12 (80 images), shot noise at peaks 10 / 30 / 100
    read 2 or more on 46 / 53 / 57 images, white noise at sigma 15 / 25 / 50 / 75 on 0 / 0 / 1
    / 0 (clamping near black makes its variance vary too), but at sigma 5, where texture that
    comes with brightness passes for noise, on 5 (weights/SHOT-NOISE.md). ``bands``:
    ``shot_bands(image)``, if the caller has it already."""
    fit = _variance_fit(bands if bands is not None else shot_bands(image))
    if fit is None or fit[0] <= 0:
        return None
    slope, intercept, bands = fit
    offset = intercept / slope
    low, high = np.percentile(bands, (10, 90))
    return offset, float((high + offset) / max(low + offset, 1e-12))


def bright_to_dark_noise(image: torch.Tensor, block: int = 16, most: int = 32, floor: float = 0.5 / 255) -> float:
    """How many times ``estimate_sigma``'s variance on the brightest third of an image's
    ``block``-square blocks exceeds its variance on the darkest third, that taken as at least
    ``floor`` squared (1.0 for an image of fewer than 3 blocks). Each third is read from at most
    ``most`` of its blocks, evenly spread through it in brightness, which bounds the time: about
    10 ms at any size on the 2-core EPYC VM, where all blocks took 17 ms at 256x256 and 750 ms at
    2048x2048 (30 ms and seconds before ``_Planes.moments`` took every plane in one product).
    Slower than ``signal_dependence``, but not fooled by texture that comes with brightness,
    which the estimator's weakly textured patches leave out (weights/SHOT-NOISE.md).
    The floor stands for rounding error, so a dark third with no noise at all does not make the
    ratio unbounded. A block that holds a flat spot (``_flat_patches``: a black border, a
    background clipped to black) is left out, as ``estimate_sigma`` leaves out such patches: it
    has no noise to compare, and a letterboxed image with white noise read as shot noise."""
    x = image.detach().to("cpu", torch.float32)
    c, h, w = x.shape
    blocks = x[:, : h // block * block, : w // block * block].reshape(c, h // block, block, w // block, block)
    blocks = blocks.permute(0, 1, 3, 2, 4).reshape(c, -1, block, block)
    flat = _flat_patches(x, block, (block, block)) if blocks.shape[1] >= 3 else None
    if flat is not None:
        blocks = blocks[:, ~flat.any(0)]
    third = blocks.shape[1] // 3
    if third < 1:
        return 1.0
    order = blocks.mean((0, 2, 3)).argsort()
    picks = torch.linspace(0, third - 1, min(third, most)).round().long()

    def noise(indices: torch.Tensor) -> float:
        return estimate_sigma(blocks[:, indices[picks]].reshape(-1, block, block))

    return (noise(order[-third:]) / max(noise(order[:third]), floor)) ** 2


def growth_beyond_clamping(image: torch.Tensor, sigma: float, floor: float = 0.05,
                           bands: tuple[np.ndarray, np.ndarray] | None = None) -> float:
    """How the noise variance of a CxHxW image in [0, 1] grows with brightness once clamping is
    taken out of it: the elasticity (slope times mean brightness over mean variance) of
    ``_bands``' variances, each divided by the share of its variance that white noise of
    ``sigma`` (its sigma before clamping, ``unclamped_sigma``) keeps at that band's brightness
    once clamped to [0, 1] (at least ``floor``). Noise whose variance is proportional to
    brightness reads about 1, white noise clamped or not about 0, whatever the image's contrast;
    0.0 where the image is too small to measure. ``signal_dependence``'s ratio spans the image's
    brightness, so a low-contrast image with shot noise reads low there, and a dark one with
    clamped white noise high. On 120 Train400 images (5th to 95th percentile), shot noise at
    peak 30 read 0.54-1.16 here and 1.33-5.2 there, half of it under the screen's 2; white noise
    at sigma 15-75, clamped or not, -0.28 to 0.32 here (weights/SHOT-NOISE.md).
    ``bands``: ``shot_bands(image)``, if the caller has it already."""
    bands = bands if bands is not None else shot_bands(image)
    if bands is None:
        return 0.0
    m, v = bands
    s = max(float(sigma), 1e-4)
    clean = -5 * s + (1 + 10 * s) * torch.linspace(0, 1, 1025, dtype=torch.float64)
    mean, variance = _clamped_moments(clean, s)
    kept = np.maximum(np.interp(m, mean.numpy(), variance.numpy() / s**2), floor)
    v = v / kept
    return _line(m, v)[0] * float(m.mean()) / max(float(v.mean()), 1e-12)


def flattest_offset(image: torch.Tensor, offsets: list[float], upper: float | None = None) -> float | None:
    """Of ``offsets``, the k for which ``2 sqrt(image + k)`` has the noise variance that varies
    least with brightness (the least relative slope of ``_bands``' line). After the right
    transform the noise is close to Gaussian in every band, so the bands' medians read it low by
    one common factor and the line is flat; on the image itself, skewed shot noise of few photons
    reads lower in the shadows than in the highlights, so its own line's offset comes out too large.
    Flat stretches count here, unlike in the decision to stabilise (``signal_dependence``): once shot
    noise is decided on, a stretch where no photon came is part of it, and leaving such stretches
    out chose offsets too large (Kodak24 made grey, Poisson at peak 10: 25.46 dB against 25.57).
    ``upper`` reads only the part of the image no brighter than it (see ``stabilise.stabiliser``).
    None where the image (or that part) is too small to read."""
    x = image.detach().float().cpu().clamp(0, 1).numpy()

    def tilt(k: float) -> float:
        bands = _bands(2 * np.sqrt(x + k), upper=None if upper is None else 2 * math.sqrt(upper + k))
        if bands is None:
            return math.inf
        m, v = bands
        return abs(_line(m, v)[0]) * float(m[-1] - m[0]) / max(float(v.mean()), 1e-12)

    tilts = {k: tilt(k) for k in offsets}
    best = min(tilts, key=tilts.__getitem__)
    return best if math.isfinite(tilts[best]) else None


def count_step(image: torch.Tensor, low: float = 0.0, span: float = 1.0, most: int = COUNT_LEVELS) -> float | None:
    """The value of one photon in an image of whole photon counts, in the file's units (``image *
    span + low``: ``inference.value_range``'s stretch undone), else None. Such an image holds at
    most ``most`` distinct values, each within ``COUNT_SLACK`` of a step of a whole multiple of one
    step (a count times the detector's gain, rounded to the file's levels); the step spans at
    least two of the file's levels (``_file_level``), so it is not the file's own quantisation;
    and the darkest value is at most ``COUNT_FLOOR`` steps, as where count 0 is the file's 0 (a
    black level that happens to fall on the steps would put it elsewhere). There the gain and offset are known exactly, where the fit from the noise is at
    its weakest: at a few photons the transform's variance is not 1 and clipping at white takes
    variance away, and on 120 Train400 images under Poisson noise at peak 5 the fitted gain read
    0.15 to 1.6 of the step (weights/SHOT-NOISE.md). Read noise leaves no such lattice,
    and natural images hold hundreds of values: a strided probe of ``COUNT_PROBE`` pixels turns
    most away before the full count."""
    x = image.detach().flatten()
    if torch.unique(x[:: max(1, x.numel() // COUNT_PROBE)]).numel() > most:
        return None
    v = torch.unique(x).to("cpu", torch.float64) * span + low
    if not 3 <= v.numel() <= most:
        return None
    step = float(torch.diff(v).median())
    if float(v[0]) > (COUNT_FLOOR + 1) * step:
        return None
    for reach in (4, 16, math.inf):  # steps read from the gaps drift over many multiples, so fit from the darkest values up
        near = v[v <= (COUNT_FLOOR + reach) * step]
        k = torch.round(near / step)
        if not bool((k > 0).any()):
            return None
        step = float((k * near).sum() / (k * k).sum())
    k = torch.round(v / step)
    if (step < 2 * _file_level(v) or float(v[0]) > COUNT_FLOOR * step or torch.unique(k).numel() != v.numel()
            or float((v / step - k).abs().max()) > COUNT_SLACK):
        return None
    return step


def equal_count_excess(counts: torch.Tensor) -> float:
    """How much more often than shot noise would, side-by-side pixels of a CxHxW image of whole
    counts hold the same count: the share of equal pairs above what two Poisson draws at the local
    mean count give (``exp(-2 lam) I0(2 lam)``, ``lam`` the mean of the ``COUNT_POOL``-square
    around them), as a fraction of what is left to 1. About 0 for photon counts, whose every pixel
    draws its own count (at most 0.20 on 400 Train400 images under Poisson noise at peaks 3-30),
    and near 1 for a clean image of a few levels, whose pixels hold the level of their
    neighbours (posterised Train400 images: see weights/SHOT-NOISE.md, *Whole photon counts*): the
    two read as counts alike, and this tells them apart."""
    z = counts.detach().to("cpu", torch.float64)[:, None]
    lam = F.avg_pool2d(z, COUNT_POOL, 1, COUNT_POOL // 2, count_include_pad=False)
    chance = torch.special.i0e(2 * lam)
    seen = float((z[..., 1:] == z[..., :-1]).double().mean())
    expected = float(((chance[..., 1:] + chance[..., :-1]) / 2).mean())
    return (seen - expected) / max(1 - expected, 1e-9)


def _file_level(values: torch.Tensor) -> float:
    """The spacing of the file's levels that ``values`` (in [0, 1]) lie on: 1/255 for 8-bit data,
    1/1023, 1/4095 or 1/16383 for a 10-, 12- or 14-bit HEIF or PGM/PPM, 1/65535 for 16-bit, else 0
    (float data)."""
    for top in (255, 1023, 4095, 16383, 65535):
        if float((values * top - torch.round(values * top)).abs().max()) < 0.05:
            return 1 / top
    return 0.0


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


def plain_level(image: torch.Tensor, unclamp: bool) -> Callable[[], float]:
    """The noise sigma `run` reads for an image on its plain route, read at most once however
    often it is asked for: the default decision to stabilise may need it before the level does
    (``stabilise.stabiliser``). ``unclamp`` reads it with ``unclamped_sigma``, as `run` does for
    the shipped models (``inference.Denoiser.unclamp``), else with ``estimate_sigma``."""
    return functools.cache(functools.partial(unclamped_sigma if unclamp else estimate_sigma, image))


def model_level(image: torch.Tensor, sigma: float | None = None, level: str = "sigma",
                strength: float = 1.0) -> tuple[float, float | torch.Tensor]:
    """(sigma, input): the noise sigma, given or else estimated, and what a noise-level model whose
    input means ``level`` (see ``UNet``) is fed for it: a number, or for ``"map"`` a 1xHxW map.
    ``strength`` scales the level fed, not the sigma returned: above 1 the model smooths more, as
    for noise it removes too little of (the same in every channel), below 1 it keeps more grain."""
    s = estimate_sigma(image) if sigma is None else sigma
    fed = s * strength
    if level == "map":
        return s, level_map(image, fed)
    return s, (clipped_level(image, fed) if level == "clamped" else fed)


def level_input(levels: list[float | torch.Tensor], device: torch.device | str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The inputs of ``model_level`` for a batch, as the model takes them: [B] numbers or [B, 1, H, W] maps."""
    if isinstance(levels[0], torch.Tensor):
        return torch.stack(list(levels)).to(device, dtype)
    return torch.tensor(levels, device=device, dtype=dtype)


def level_map(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """A 1xHxW noise-std map whose mean square is about ``sigma`` squared and which follows
    brightness where the noise does.

    Camera noise is mostly shot noise, whose variance grows with the signal, so one level per
    image over-smooths the shadows and leaves noise in the highlights. The shape comes from
    ``_variance_fit``'s line of noise variance against brightness; white noise gives a flat map,
    so a model trained on these maps sees its per-image level there. The map is made on the 2x2
    grid a pixel-unshuffle UNet averages it to anyway (a 10x10 brightness window): it runs in the
    loader on every training patch and in `run` on every image, so it must stay a small share of
    either (1 ms at 256x256 on 2 CPU cores, a seventh of ``estimate_sigma``'s time). The shape is
    clamped to ``MAP_RANGE``; ``sigma`` (given or ``estimate_sigma``'s) sets the scale.
    """
    if image.ndim != 3:
        raise ValueError("expected a CxHxW image")
    h, w = image.shape[-2:]
    flat = torch.full((1, h, w), float(sigma), dtype=torch.float32, device=image.device)
    if sigma <= 0 or min(h, w) < 8:
        return flat
    x = image.detach().float().cpu().numpy()
    fit = _variance_fit(_bands(x))
    if fit is None:
        return flat
    slope, intercept, _ = fit
    luma = x.mean(0)
    if h % 2 or w % 2:
        luma = np.pad(luma, ((0, h % 2), (0, w % 2)), mode="edge")
    blocks = (luma[0::2, 0::2] + luma[1::2, 0::2] + luma[0::2, 1::2] + luma[1::2, 1::2]) / 4.0
    variance = slope * _box_mean(blocks, 2) + intercept
    shape = torch.from_numpy(np.clip(np.sqrt(variance / max(float(variance.mean()), 1e-12)), *MAP_RANGE))
    full = shape[:, None, :, None].expand(-1, 2, -1, 2).reshape(2 * shape.shape[0], 2 * shape.shape[1])[:h, :w]
    return (float(sigma) * full)[None].to(image.device, torch.float32)


def _variance_fit(bands: tuple[np.ndarray, np.ndarray] | None) -> tuple[float, float, np.ndarray] | None:
    """(slope, intercept, band brightnesses): a line fitted to ``_bands``' noise variances against
    their brightness, slope and intercept clamped at 0, or None if the image was too small to measure."""
    if bands is None:
        return None
    m, v = bands
    slope = max(_line(m, v)[0], 0.0)
    return slope, max(float(v.mean()) - slope * float(m.mean()), 0.0), m


def _line(m: np.ndarray, v: np.ndarray) -> tuple[float, float]:
    """Least-squares slope and intercept of v against m."""
    dm = m - m.mean()
    slope = float((dm * (v - v.mean())).sum() / max(float((dm * dm).sum()), 1e-12))
    return slope, float(v.mean()) - slope * float(m.mean())


def _bands(x: np.ndarray, skip_flat: bool = False, upper: float | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """(brightness, noise variance) of ``MAP_BINS`` brightness bands of a CxHxW image, or None
    if it is too small to measure. Each band's variance is read from the
    Laplacian residual (Immerkaer, 1996) of its least textured half (Sobel on the channel mean),
    as its median there: texture and edges do not pass for noise, and a band's own noise does
    not decide which of its pixels count. The median reads a variance low by a factor that
    depends on the noise's distribution, so the line's shape is what it gives, not its scale.
    The statistics are read on every other column and every other (or, past ``MAP_SAMPLES``
    points, every 4th, 6th...) row, with separable filters in numpy: about 1 ms at 256x256.
    ``skip_flat`` leaves out points with neither texture nor residual (flat 3x3 neighbourhoods:
    a black border, a background clipped to black), which have no noise to read: the shot-noise
    screen takes them for noise that vanishes in the dark. The estimator's 5x5 rule
    (``_flat_patches``' spots) was tried here too and lost: it changed the screen's ratio on most
    BSD68 images at peaks 5 and 10, and shot noise at peak 5 (clipped) lost 0.02 dB on BSD68 and
    0.14 on Set12; white noise and peaks 10-100 moved by 0.003 at most. ``level_map`` keeps them,
    as the colour model's training maps did. ``upper`` leaves out points brighter than it."""
    h, w = x.shape[-2:]
    luma = x.mean(0)
    rows, cols = (h - 1) // 2, (w - 1) // 2
    row_step = 2 * max(1, math.ceil(rows * cols / MAP_SAMPLES))
    up, mid, down = (slice(i, i + 2 * rows - 1, row_step) for i in range(3))
    left, centre, right = (slice(i, i + 2 * cols - 1, 2) for i in range(3))
    across = x[:, up] - 2 * x[:, mid] + x[:, down]
    laplacian = across[..., left] - 2 * across[..., centre] + across[..., right]
    residual = np.square(laplacian).mean(0).ravel() / 36.0
    smooth, slope_y, total = luma[up] + 2 * luma[mid] + luma[down], luma[up] - luma[down], luma[up] + luma[mid] + luma[down]
    sobel_x = smooth[:, left] - smooth[:, right]
    sobel_y = slope_y[:, left] + 2 * slope_y[:, centre] + slope_y[:, right]
    texture = (np.abs(sobel_x) + np.abs(sobel_y)).ravel()
    brightness = ((total[:, left] + total[:, centre] + total[:, right]) / 9.0).ravel()
    if skip_flat or upper is not None:
        live = ((texture > 0) | (residual > 0)) if skip_flat else np.ones(brightness.shape, dtype=bool)
        if upper is not None:
            live &= brightness <= upper
        residual, texture, brightness = residual[live], texture[live], brightness[live]
    n = brightness.size // MAP_BINS
    if n < 32:
        return None
    bands = np.argsort(brightness)[: n * MAP_BINS].reshape(MAP_BINS, n)
    calm = np.take_along_axis(bands, np.argpartition(texture[bands], n // 2, axis=1)[:, : n // 2 + 1], 1)
    m = brightness[calm].mean(1, dtype=np.float64)
    v = np.partition(residual[calm], n // 4, axis=1)[:, n // 4].astype(np.float64)
    return m, v


def _box_mean(a: np.ndarray, radius: int) -> np.ndarray:
    """Mean over each (2 radius + 1)-square window, edges replicated: running sums, which numpy
    does faster at these sizes than torch's pooling."""
    k = 2 * radius + 1
    padded = np.pad(a, radius, mode="edge")
    rows = sum(padded[i : i + a.shape[0]] for i in range(k))
    return sum(rows[:, i : i + a.shape[1]] for i in range(k)) / (k * k)

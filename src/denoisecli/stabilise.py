"""Variance stabilisation: letting a denoiser trained on white Gaussian noise clean shot noise.

Shot noise (photon counting: microscopes, telescopes, a camera's raw data) has a variance that
grows with the signal, so one noise level fits no part of the image: the shipped grey model,
given the level the estimator reads, left most of the noise of Poisson images in (Set12 at peak
30: 24.8 dB). The generalised Anscombe transform turns noise whose variance is ``gain * (x +
offset)`` into noise of variance about 1 everywhere; the model denoises that at one level, and
the closed-form exact unbiased inverse of Makitalo and Foi (2011) maps the result back without
the bias a plain algebraic inverse leaves in the shadows (weights/SHOT-NOISE.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from denoisecli.noise_estimate import (Z_99, bright_to_dark_noise, count_step, equal_count_excess, estimate_sigma,
                                      flattest_offset, growth_beyond_clamping, shot_bands, signal_dependence,
                                      unclamped_sigma)

STABILISE_RATIO = 2.0
CONFIRM_RATIO = 2.0
WHITE_CONFIRM = 1.2  # the confirmation asked, at most, where WHITE_SHARE or more of the pixels sit at white
STABILISE_NOISE = 10 / 255
STABILISE_GROWTH = 0.35
WHITE_SHARE = 0.1
CLIPPED_WHITE = 0.01
MIN_NOISE = 2 / 255
RANGE_SLACK = 1e-6  # float rounding of `run`'s stretch, not data outside [0, 1]
OFFSETS = (0.0, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
COUNT_GAIN = 0.9  # of one count's step, the gain `grey.pt` does best with on whole counts
COUNT_OFFSET = 0.5  # photons added to the file's 0 for the offset: the other half of that best point
COUNT_EXCESS = 0.3
COUNT_NOISE = 0.35
_ROOT_3_2 = math.sqrt(1.5)
_A_OF_ZERO = 2 * math.sqrt(3 / 8)


@dataclass(frozen=True)
class Stabiliser:
    """The transform for one image whose noise variance is ``gain * (x + offset)`` ([0, 1] scale).

    In counts ``z = (x + offset) / gain`` the noise is then Poisson-like (variance equal to the
    mean: read noise folded into the offset), which the Anscombe transform ``2 sqrt(z + 3/8)``
    makes of unit variance; ``forward`` rescales that so [0, 1] maps onto [0, 1], where the
    noise std is ``sigma``. Both ways are written as differences from the transform of 0, so
    they keep their precision in float32 however large the counts (a nearly flat variance gives
    an offset in the thousands)."""

    gain: float
    offset: float

    @property
    def _roots(self) -> tuple[float, float]:
        """sqrt(x + offset + 3 gain / 8) at x = 0 and 1: the transform is 2 / sqrt(gain) times that."""
        shifted = self.offset + 3 * self.gain / 8
        return math.sqrt(shifted), math.sqrt(1 + shifted)

    @property
    def sigma(self) -> float:
        """The noise std of ``forward``'s output (the level the model is given)."""
        low, high = self._roots
        return math.sqrt(self.gain) * (high + low) / 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low, high = self._roots
        x = x.clamp_min(-(low**2))
        return x / (torch.sqrt(x + low**2) + low) * (high + low)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """The clean image from a denoised ``forward`` output, which estimates the mean of the
        transformed noisy values: its exact unbiased inverse differs from the algebraic one
        where counts are few (Set12 at peak 5: 24.2 dB against 22.5)."""
        low, high = self._roots
        start = 2 * low / math.sqrt(self.gain)  # the Anscombe transform of x = 0
        step = (y * (2 / math.sqrt(self.gain)) / (high + low)).clamp_min(_A_OF_ZERO - start)
        d = start + step
        tail = _ROOT_3_2 / (4 * d) - 11 / (8 * d**2) + 5 * _ROOT_3_2 / (8 * d**3) - 1 / 8
        return (self.gain * (start * step / 2 + step**2 / 4 + tail + 3 / 8)).clamp_min(-self.offset)

    def noise_std(self, x: float) -> float:
        """The noise std at brightness ``x``, for reports."""
        return math.sqrt(self.gain * max(x + self.offset, 0.0))


def stabiliser(image: torch.Tensor, ratio: float = STABILISE_RATIO, confirm: float = CONFIRM_RATIO,
               least: float = STABILISE_NOISE, growth: float | None = STABILISE_GROWTH,
               sigma: Callable[[], float] | None = None, clipped_white: float | None = CLIPPED_WHITE,
               stretch: tuple[float, float] | None = None) -> Stabiliser | None:
    """The transform for a CxHxW image in [0, 1] whose noise grows with brightness, else None.

    It must pass one of two tests. The first: the noise variance grows by at least ``ratio``
    across the image (``noise_estimate.signal_dependence``: about 1 ms), confirmed by a variance
    at least ``confirm`` times higher in its bright blocks than in its dark ones
    (``noise_estimate.bright_to_dark_noise``: about 10 ms), or at least ``WHITE_CONFIRM`` times
    where ``WHITE_SHARE`` or more of the pixels sit at white, whose clipping takes variance from
    the bright blocks. The second, tried where the first fails and ``growth`` is given: fewer
    than ``WHITE_SHARE`` of the pixels sit at white, and the variance grows with brightness, once
    clamping is taken out of it, with an elasticity of at least ``growth``
    (``noise_estimate.growth_beyond_clamping``, given the noise's sigma before clamping:
    ``sigma()``, else ``unclamped_sigma``, the plain route's own level, so a caller that goes on
    to the plain route can read it once). The first reads the image's brightness span as much as
    its noise, and misses shot noise in low-contrast images; the second is fooled by shot noise
    in images that are mostly black (peak 5, a third of the pixels at 0), which clamping at the
    same sigma would explain, and loses where many pixels were clipped at white, which the
    transform's inverse does not model. Either way the noise at the image's mean
    brightness must be at least ``least`` (never under ``MIN_NOISE``, no grain to speak of: with
    a floor of 0.5 of 255, 8 of the 68 clean BSD68 scans were stabilised for their film grain).

    The defaults are `run`'s rule, chosen on Train400 (training images, 120 of them, under
    white, shot, shot-and-read and camera noise; benchmarks/stabilise_rule.py) for the most gain
    under shot noise while no white-noise setting loses more than 0.02 dB: clamped white noise in
    a dark image also grows with brightness, and once the plain route reads its level right
    (``noise_estimate.unclamped_sigma``) stabilising it costs (weights/SHOT-NOISE.md).
    The confirmation of 2 (1.2 until the thirty-fourth session, which still holds where much is
    white) turns such images away where the screen alone passed them: on Train400 clamped white
    noise at sigma 75 in dark images confirmed at most 1.95 and lost up to 3.8 dB each, while
    the shot noise that only the first test found, images a seventh to a quarter black (shot and
    read noise at peak 5), confirmed at least 2.4; BSD68 `test028.png` (17% white, peak 100)
    confirms 1.98 and gains 3.1 dB.
    The offset is then the one of ``OFFSETS`` (or the first test's own) whose transform leaves
    the flattest noise (``noise_estimate.flattest_offset``), and the gain is the square of what
    ``estimate_sigma`` reads on it: the per-band medians read skewed shot noise low, the
    estimator does not. Where at least ``clipped_white`` of the pixels sit at white (None:
    never), both are read again on the part of the image below where the noise reaches white
    (``_below_clipping``): with fewer, on Train400 (the same 120 images, shot-noise settings,
    benchmarks/clipped_fit.py) reading again lost on average (0.5-1% at white) where from 1% it
    gained: the bands it leaves out weighed less than the brightness span it lost.

    Where ``stretch`` is given, (low, span) of ``inference.value_range`` for the image, and the
    file's values (``image * span + low``) are whole photon counts (``noise_estimate.count_step``;
    None: never looked for, as the fit's own benchmarks need), nothing is fitted: the count's
    step and the file's 0 give the true gain and offset, which no fit from the noise matched at a
    few photons, and the stabiliser is the one `grey.pt` does best with near them,
    ``COUNT_GAIN`` of the gain and ``COUNT_OFFSET`` photons more offset. On 120 Train400 images
    under Poisson noise, route forced, the truth gained 1.20 / 1.51 / 2.20 / 2.37 dB over the plain
    route at peaks 3 / 5 / 10 / 30 and this 2.24 / 1.91 / 2.26 / 2.35, every image gaining; the
    fit, 1.12 at peak 5 and 2.09 at 10 (weights/SHOT-NOISE.md, *Whole photon counts*).
    Counts are shot noise, so they skip the tests, which at peak 5 turned away images whose
    clipping at white flattened the noise's growth: with the margins dropped (``ratio`` and
    ``confirm`` at most 1, as `--stabilise` asks) always, and by default where they look like
    noise (``counts_look_like_noise``), since a clean image of a few levels (a posterised graphic)
    reads as counts too."""
    step = None if stretch is None else count_step(image, *stretch)
    if step is not None and (ratio <= 1 and confirm <= 1 or counts_look_like_noise(image, step, stretch, sigma)):
        gain, offset = COUNT_GAIN * step / stretch[1], (stretch[0] + COUNT_OFFSET * step) / stretch[1]
    else:  # no counts, or levels that are not counts: the tests and the fit decide as for any image
        fitted = _tested_fit(image, ratio, confirm, growth, sigma, clipped_white)
        if fitted is None:
            return None
        gain, offset = fitted
    if gain * (float(image.mean()) + offset) < max(least, MIN_NOISE) ** 2:
        return None
    return Stabiliser(gain, offset)


def counts_look_like_noise(image: torch.Tensor, step: float, stretch: tuple[float, float],
                           sigma: Callable[[], float] | None) -> bool:
    """Whether an image of whole counts (``step`` one count in the file's units, ``stretch`` as for
    ``stabiliser``) looks like photon counts rather than a clean image of a few levels: its
    neighbouring pixels hold equal counts hardly more often than shot noise would
    (``noise_estimate.equal_count_excess`` under ``COUNT_EXCESS``), and the noise the estimator
    reads (``sigma()``, else ``unclamped_sigma``) is at least ``COUNT_NOISE`` of what counts of
    that step give at the image's mean brightness. On Train400 (400 images) counts under Poisson
    noise at peaks 3-30 passed both and images posterised to 2-32 levels failed one or the other
    (weights/SHOT-NOISE.md, *Whole photon counts*)."""
    low, span = stretch
    if equal_count_excess(torch.round((image.double() * span + low) / step)) >= COUNT_EXCESS:
        return False
    read = sigma() if sigma is not None else unclamped_sigma(image)
    return read >= COUNT_NOISE * math.sqrt(step / span * (float(image.mean()) + low / span))


def _tested_fit(image: torch.Tensor, ratio: float, confirm: float, growth: float | None,
                sigma: Callable[[], float] | None, clipped_white: float | None) -> tuple[float, float] | None:
    """``stabiliser``'s two tests, then (gain, offset) read from the noise: the offset of
    ``OFFSETS`` and the line's own whose transform leaves the flattest noise, and the gain on it,
    read again below where the noise reaches white from ``clipped_white`` of the pixels there;
    None where the image fails the tests or is too small to read."""
    bands = shot_bands(image)
    fit = signal_dependence(image, bands)
    if fit is None:
        return None
    white = float((image >= 1).float().mean())
    if (fit[1] < ratio or bright_to_dark_noise(image) < confirmation_asked(confirm, white)) and not _grows_beyond_clamping(image, bands, white, growth, sigma):
        return None
    offset = flattest_offset(image, sorted({*OFFSETS, fit[0]}))
    if offset is None:
        return None
    gain = _gain(image, offset)
    return _below_clipping(image, gain, offset) if clipped_white is not None and white >= clipped_white else (gain, offset)


def confirmation_asked(confirm: float, white: float) -> float:
    """The confirmation the first test asks of an image with a share ``white`` of its pixels at
    white: ``confirm``, but at most ``WHITE_CONFIRM`` from ``WHITE_SHARE`` on, where clipping
    takes variance from the bright blocks (``stabiliser``). One place, so the rule's benchmark
    scores the rule `run` applies."""
    return confirm if white < WHITE_SHARE else min(confirm, WHITE_CONFIRM)


def _gain(image: torch.Tensor, offset: float, upper: float | None = None) -> float:
    """The gain that makes the noise of ``2 sqrt(image + offset)`` of unit variance, read on the
    patches no brighter than ``upper`` (in the image's units) if given."""
    transformed = 2 * torch.sqrt(image.detach().to("cpu", torch.float32).clamp_min(0) + offset)
    return estimate_sigma(transformed, upper=None if upper is None else 2 * math.sqrt(upper + offset)) ** 2


def clip_free_level(gain: float, offset: float) -> float:
    """The brightest level whose noise (of variance ``gain * (x + offset)``) reaches white less
    than one time in a hundred."""
    q = Z_99 * math.sqrt(gain)
    root = (math.sqrt(q * q + 4 * (1 + offset)) - q) / 2
    return root * root - offset


def _below_clipping(image: torch.Tensor, gain: float, offset: float) -> tuple[float, float]:
    """(gain, offset) read again on the part of the image darker than ``clip_free_level``, for an
    image whose noise was clipped at white. Clipping takes away the variance of the bright bands,
    so the flattest transform is one whose offset is too large and whose gain is too small: on
    120 Train400 images at peak 10 the gain read 0.41 of the truth where more than a tenth of the
    pixels were white (0.82 where under 5%), and with the route forced the fit read once gained
    1.63 dB on average at peak 10, read again 2.09, the true gain and offset 2.21
    (benchmarks/clipped_fit.py; weights/SHOT-NOISE.md). The level comes
    from the first fit, whose gain is too small, so it is a little too high; one pass is enough
    (a second chose offsets too large again on some images at peaks 5 and 10, and lost up to
    9.8 dB on one). The first fit stands where too little of the image lies below the level."""
    upper = clip_free_level(gain, offset)
    refit = flattest_offset(image, list(OFFSETS), upper=upper) if upper > 0 else None
    if refit is None:
        return gain, offset
    refit_gain = _gain(image, refit, upper)
    return (refit_gain, refit) if refit_gain > 0 else (gain, offset)


def _grows_beyond_clamping(image: torch.Tensor, bands: tuple[np.ndarray, np.ndarray] | None, white: float,
                           growth: float | None, sigma: Callable[[], float] | None) -> bool:
    """``stabiliser``'s second test, on the bands the first one read (``white``: the share of pixels at white)."""
    if growth is None or white >= WHITE_SHARE:
        return False
    return growth_beyond_clamping(image, sigma() if sigma is not None else unclamped_sigma(image), bands=bands) >= growth


def default_stabiliser(image: torch.Tensor, sigma: Callable[[], float] | None = None,
                       stretch: tuple[float, float] | None = None) -> Stabiliser | None:
    """`run`'s default for one grey model input (stretched to its range): ``stabiliser``'s rule on
    it clamped to [0, 1] (``sigma`` as there), or None where any value lies outside [0, 1]. Such
    values are additive noise that was never clipped, which no photon count makes and which the
    clamp would throw away: on Train400 at sigma 75, stabilising a dark image so cost up to 7.1 dB.
    ``stretch``: as for ``stabiliser``."""
    if bool((image < -RANGE_SLACK).any() or (image > 1 + RANGE_SLACK).any()):
        return None
    return stabiliser(image.clamp(0, 1), sigma=sigma, stretch=stretch)

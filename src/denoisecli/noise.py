"""Noise layers: the one place noise is made, for training and for `add-noise`.

The clamped normal layer is the project's reference noise; the others (shot, sensor,
impulse, speckle, JPEG) share its interface: active in training mode only, levels given
per call as floats or [B] tensors, and an optional ``torch.Generator``.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import math

import numpy as np
import torch
from PIL import Image
from torch import nn

from denoisecli.errors import DenoiseError

PHOTO_SHARED = 0.75  # the share of each colour channel of ``noisy_photo`` that all channels have


class ClampedNormalNoise(nn.Module):
    """Add ``N(mean, std) * scale`` to an image in [0, 1] and clamp the result to [0, 1].

    Active in training mode only, so a model wrapped with it sees clean inputs at
    evaluation time. ``std`` may be overridden per call with a float or a tensor of
    shape [B] (one noise level per sample), and a ``torch.Generator`` makes the
    noise reproducible. The noise is drawn on the input's device and in its dtype.
    ``correlation`` (0 to 1, also per call or per sample) shares part of the noise
    between channels: at 0 each channel's is independent, at 1 all channels get the
    same, as luminance-only noise or an editor's "monochromatic" noise does. Each
    channel's noise keeps its std either way.
    """

    levels = ("std",)

    def __init__(self, scale: float = 1.0, mean: float = 0.0, std: float = 0.2, correlation: float = 0.0) -> None:
        super().__init__()
        if not 0 <= correlation <= 1:
            raise ValueError(f"correlation must be between 0 and 1, got {correlation}")
        self.scale = float(scale)
        self.mean = float(mean)
        self.std = float(std)
        self.correlation = float(correlation)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, mean={self.mean}, std={self.std}, correlation={self.correlation}"

    def sigma(self, std: float | torch.Tensor | None = None, correlation: float | torch.Tensor | None = None) -> float | torch.Tensor:
        """The sigma of the white noise this level adds before clamping: the level a noise-level
        model learns, since it is what the estimator measures on any image (each channel's, so
        ``correlation`` does not change it)."""
        return (self.std if std is None else std) * abs(self.scale)

    def forward(
        self,
        x: torch.Tensor,
        std: float | torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        correlation: float | torch.Tensor | None = None,
    ) -> torch.Tensor:
        if not self.training:
            return x
        sigma = _per_sample(self.std if std is None else std, x)
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        rho = self.correlation if correlation is None else correlation
        if x.ndim >= 3 and (isinstance(rho, torch.Tensor) or rho != 0):
            # the shared part is drawn only when asked for, so independent noise stays what it always was
            shared = torch.randn((*x.shape[:-3], 1, *x.shape[-2:]), generator=generator, device=x.device, dtype=x.dtype)
            rho = _per_sample(rho, x)
            if isinstance(rho, torch.Tensor):
                noise = noise * (1 - rho).sqrt() + shared * rho.sqrt()
            elif 0 <= rho <= 1:
                noise = noise * math.sqrt(1 - rho) + shared * math.sqrt(rho)
            else:
                raise ValueError(f"correlation must be between 0 and 1, got {rho}")
        return (x + (noise * sigma + self.mean) * self.scale).clamp_(0.0, 1.0)


class SharedNormalNoise(ClampedNormalNoise):
    """The clamped normal layer with noise shared between channels (all of it by default).

    Its own kind, with ``correlation`` a level drawn per sample, so a training mix can hold it
    beside independent noise: `color.pt` learned independent noise only, and removes little of
    noise that is the same in every channel (weights/README.md)."""

    levels = ("std", "correlation")

    def __init__(self, scale: float = 1.0, mean: float = 0.0, std: float = 0.2, correlation: float = 1.0) -> None:
        super().__init__(scale, mean, std, correlation)


class PoissonNoise(nn.Module):
    """Shot noise: ``Poisson(x * peak) / peak``; ``peak`` is the photon count at white (lower is noisier)."""

    levels = ("peak",)

    def __init__(self, peak: float = 30.0) -> None:
        super().__init__()
        self.peak = float(peak)

    def forward(self, x: torch.Tensor, peak: float | torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        if not self.training:
            return x
        return _shot(x, self.peak if peak is None else peak, generator).clamp_(0.0, 1.0)


def _shot(x: torch.Tensor, peak: float | torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """``Poisson(x * peak) / peak``, unclamped, in x's dtype (drawn in float32)."""
    p = _per_sample(peak, x)
    return (torch.poisson((x.float() * p).clamp_min(0), generator=generator) / p).to(x.dtype)


class PoissonGaussianNoise(nn.Module):
    """A camera sensor's noise: shot noise (``peak``) plus signal-independent read noise (``std``)."""

    levels = ("peak", "std")

    def __init__(self, peak: float = 30.0, std: float = 0.02) -> None:
        super().__init__()
        self.peak = float(peak)
        self.read = ClampedNormalNoise(std=std)

    def forward(
        self,
        x: torch.Tensor,
        peak: float | torch.Tensor | None = None,
        std: float | torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        if not self.training:
            return x
        return self.read(_shot(x, self.peak if peak is None else peak, generator), std=std, generator=generator)


class SaltPepperNoise(nn.Module):
    """Impulse noise: a fraction ``amount`` of pixels set to black or white (half each)."""

    levels = ("amount",)

    def __init__(self, amount: float = 0.05) -> None:
        super().__init__()
        self.amount = float(amount)

    def forward(self, x: torch.Tensor, amount: float | torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        if not self.training:
            return x
        a = _per_sample(self.amount if amount is None else amount, x)
        u = torch.rand(x.shape[0], 1, *x.shape[2:], generator=generator, device=x.device, dtype=torch.float32).expand_as(x)
        salt = torch.rand(u.shape[0], 1, *u.shape[2:], generator=generator, device=x.device).expand_as(x) < 0.5
        hit = u < a
        return torch.where(hit, salt.to(x.dtype), x)


class SpeckleNoise(nn.Module):
    """Multiplicative noise ``x + x * N(0, std)`` (ultrasound, radar, coherent light), clamped."""

    levels = ("std",)

    def __init__(self, std: float = 0.1) -> None:
        super().__init__()
        self.std = float(std)

    def forward(self, x: torch.Tensor, std: float | torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        if not self.training:
            return x
        s = _per_sample(self.std if std is None else std, x)
        n = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return (x + x * n * s).clamp_(0.0, 1.0)


class JpegNoise(nn.Module):
    """JPEG compression artefacts at ``quality`` (1-100; lower is worse), one quality per sample."""

    levels = ("quality",)

    def __init__(self, quality: float = 50.0) -> None:
        super().__init__()
        self.quality = float(quality)

    def forward(self, x: torch.Tensor, quality: float | torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        if not self.training:
            return x
        q = quality if quality is not None else self.quality
        qs = q.flatten().tolist() if isinstance(q, torch.Tensor) and q.ndim else [float(q)] * x.shape[0]
        u8 = (x.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().permute(0, 2, 3, 1).numpy()
        out = [_jpeg_roundtrip(img, int(min(100, max(1, round(qual))))) for img, qual in zip(u8, qs)]
        return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).to(device=x.device, dtype=x.dtype) / 255.0


class CameraNoise(nn.Module):
    """A camera's JPEG: sensor noise (shot ``peak`` + read ``std``), then compression at ``quality``.

    Compressing the noisy image is what makes real photos' noise spatially correlated and
    blotchy, which white noise alone never teaches a model.
    """

    levels = ("peak", "std", "quality")

    def __init__(self, peak: float = 30.0, std: float = 0.01, quality: float = 85.0) -> None:
        super().__init__()
        self.sensor = PoissonGaussianNoise(peak=peak, std=std)
        self.jpeg = JpegNoise(quality=quality)

    def forward(
        self,
        x: torch.Tensor,
        peak: float | torch.Tensor | None = None,
        std: float | torch.Tensor | None = None,
        quality: float | torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        if not self.training:
            return x
        return self.jpeg(self.sensor(x, peak=peak, std=std, generator=generator), quality=quality)


def _jpeg_roundtrip(img: np.ndarray, quality: int) -> np.ndarray:
    """Encode and decode one HxWxC uint8 image with Pillow's libjpeg, 4:2:0 like a camera."""
    buf = io.BytesIO()
    Image.fromarray(img[:, :, 0] if img.shape[2] == 1 else img).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as im:
        arr = np.asarray(im)
    return arr[:, :, None] if arr.ndim == 2 else arr


NOISE_MODELS: dict[str, type[nn.Module]] = {
    "gaussian": ClampedNormalNoise,
    "gaussian-shared": SharedNormalNoise,
    "poisson": PoissonNoise,
    "poisson-gaussian": PoissonGaussianNoise,
    "salt-pepper": SaltPepperNoise,
    "speckle": SpeckleNoise,
    "jpeg": JpegNoise,
    "camera": CameraNoise,
}

Range = tuple[float, float]

DEFAULT_LEVELS: dict[str, dict[str, Range]] = {
    "gaussian": {"std": (0.0, 55 / 255)},
    "gaussian-shared": {"std": (0.0, 55 / 255), "correlation": (0.0, 1.0)},
    "poisson": {"peak": (5.0, 100.0)},
    "poisson-gaussian": {"peak": (5.0, 100.0), "std": (0.0, 25 / 255)},
    "salt-pepper": {"amount": (0.0, 0.1)},
    "speckle": {"std": (0.0, 0.3)},
    "jpeg": {"quality": (10.0, 90.0)},
    "camera": {"peak": (10.0, 200.0), "std": (0.0, 10 / 255), "quality": (60.0, 95.0)},
}


def is_normal(kind: str) -> bool:
    """Whether ``kind`` is one of the clamped normal noises (gaussian, gaussian-shared): the
    kinds whose level is a sigma, and whose layer takes mean and scale."""
    return kind in NOISE_MODELS and issubclass(NOISE_MODELS[kind], ClampedNormalNoise)


def fixed_levels(kind: str) -> dict[str, Range]:
    """Each level of a noise model at its layer's own default, as a one-point range: what one
    noisy copy gets unless told otherwise (the constructor stays the one place for defaults)."""
    params = inspect.signature(NOISE_MODELS[kind].__init__).parameters
    return {name: (float(params[name].default), float(params[name].default)) for name in NOISE_MODELS[kind].levels}


def user_levels(kind: str, sigma: Range | None = None, peak: Range | None = None, amount: Range | None = None,
                quality: Range | None = None, correlation: Range | None = None) -> dict[str, Range] | None:
    """Map the CLI's user-facing options to a noise model's levels; only what was given.

    ``sigma`` is on the 0-255 scale and sets ``std = sigma/255`` (for speckle, the std
    relative to the intensity, so at white it equals the additive sigma).
    """
    given = {"std": (sigma[0] / 255, sigma[1] / 255) if sigma else None, "peak": peak, "amount": amount, "quality": quality,
             "correlation": correlation}
    names = NOISE_MODELS[kind].levels
    picked = {k: v for k, v in given.items() if k in names and v is not None}
    unused = [k for k, v in given.items() if v is not None and k not in names]
    if unused:
        flag = {"std": "--sigma"}.get(unused[0], f"--{unused[0]}")
        raise DenoiseError(f"{flag} does not apply to --noise {kind}")
    limits = {"peak": (1e-3, 1e9), "amount": (0.0, 1.0), "quality": (1.0, 100.0), "std": (0.0, 1e9), "correlation": (0.0, 1.0)}
    for name, (lo, hi) in picked.items():
        if not limits[name][0] <= lo <= hi <= limits[name][1]:
            raise DenoiseError(f"{name} range {lo:g}-{hi:g} is out of bounds {limits[name][0]:g}-{limits[name][1]:g}")
    if kind == "poisson-gaussian" and picked and len(picked) < 2:
        picked = {**DEFAULT_LEVELS[kind], **picked}
    return picked or None


class NoiseSampler:
    """A noise model plus a range per level: draws one level per sample, so one batch mixes levels.

    ``mix`` maps other noise models to the fraction of samples they take (with their
    default ranges), so one blind model learns e.g. camera noise beside white noise.
    """

    def __init__(self, kind: str, ranges: dict[str, Range], mix: dict[str, float] | None = None, **init: float) -> None:
        for name in [kind, *(mix or {})]:
            if name not in NOISE_MODELS:
                raise ValueError(f"unknown noise {name!r} (known: {', '.join(NOISE_MODELS)})")
        self.kind = kind
        self.layer = NOISE_MODELS[kind](**init).train()
        missing = set(self.layer.levels) - set(ranges)
        if missing:
            raise ValueError(f"noise {kind!r} needs a range for {', '.join(sorted(missing))}")
        self.ranges = {k: (float(ranges[k][0]), float(ranges[k][1])) for k in self.layer.levels}
        self.mix = {k: float(v) for k, v in (mix or {}).items() if v > 0}
        if any(v < 0 for v in (mix or {}).values()) or sum(self.mix.values()) > 1:
            raise ValueError(f"mixed-in fractions must be >= 0 and sum to at most 1, got {mix}")
        self.parts = [(self.layer, self.ranges)] + [
            (NOISE_MODELS[k]().train(), DEFAULT_LEVELS[k]) for k in self.mix
        ]

    def __call__(self, x: torch.Tensor, generator: torch.Generator, device_generator: torch.Generator | None = None) -> torch.Tensor:
        """Levels and each sample's model come from ``generator`` (CPU), the noise from ``device_generator``."""
        return self.draw(x, generator, device_generator)[0]

    def draw(self, x: torch.Tensor, generator: torch.Generator,
             device_generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The noisy batch and each sample's white-noise sigma: NaN where its noise has none
        (shot, JPEG, camera noise), for the caller to measure instead."""
        if not self.mix:
            return self._apply(self.layer, self.ranges, x, generator, device_generator)[:2]
        pick = torch.rand(x.shape[0], generator=generator, dtype=torch.float64)
        edges = torch.tensor([0.0, *self.mix.values()], dtype=torch.float64).cumsum(0)
        which = torch.where(pick < edges[-1], torch.searchsorted(edges, pick, right=True), 0)
        out = torch.empty_like(x)
        sigma = torch.full((x.shape[0],), float("nan"), dtype=torch.float64, device=x.device)
        for i, (layer, ranges) in enumerate(self.parts):
            idx = (which == i).nonzero().flatten().to(x.device)
            if idx.numel():
                out[idx], sigma[idx], _ = self._apply(layer, ranges, x[idx], generator, device_generator)
        return out, sigma

    def drawn(self, x: torch.Tensor, generator: torch.Generator,
              device_generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The noisy batch of the main noise model (as ``draw`` makes it without a mix), and the
        levels drawn for each sample by name, so `add-noise` can say which level each file got."""
        out, _, levels = self._apply(self.layer, self.ranges, x, generator, device_generator)
        return out, levels

    @staticmethod
    def _apply(layer: nn.Module, ranges: dict[str, Range], x: torch.Tensor, generator: torch.Generator,
               device_generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        levels = {}
        for name, (lo, hi) in ranges.items():
            levels[name] = (lo + (hi - lo) * torch.rand(x.shape[0], generator=generator, dtype=torch.float64)).to(x.device)
        sigma = layer.sigma(**levels) if hasattr(layer, "sigma") else torch.full_like(levels[next(iter(levels))], float("nan"))
        return layer(x, generator=device_generator, **levels), sigma, levels


def _per_sample(std: float | torch.Tensor, x: torch.Tensor) -> float | torch.Tensor:
    """Broadcast a [B] tensor of levels over the sample's other dimensions."""
    if not isinstance(std, torch.Tensor):
        return float(std)
    std = std.to(device=x.device, dtype=x.dtype)
    if std.ndim == 0:
        return std
    if std.ndim != 1 or std.shape[0] != x.shape[0]:
        raise ValueError(f"per-sample std must have shape [{x.shape[0]}], got {list(std.shape)}")
    return std.view(-1, *([1] * (x.ndim - 1)))


def seeded_generator(seed: int, key: str = "", device: torch.device | str = "cpu") -> torch.Generator:
    """A generator whose stream depends only on (seed, key): per-file noise independent of order."""
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    gen = torch.Generator(device=device)
    gen.manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
    return gen


def noisy_photo(channels: int, size: int, std: float, seed: int = 0) -> torch.Tensor:
    """A [1, C, size, size] test image without a file: smooth random shapes with white noise of
    ``std`` (0-1 scale) from the training noise layer. The noise estimator's work depends on the
    content, and on uniform random pixels (all texture, no structure) it is not what it is on a
    photo; `bench` times on it and `int8.quantize` checks its int8 network on it. As in a photo,
    the colour channels share most of their shapes (``PHOTO_SHARED`` of each is one brightness
    field), so `run` would denoise it whole, as `bench` times it, not one channel at a time."""
    gen = torch.Generator().manual_seed(seed)
    shared = torch.rand(1, 1, 9, 9, generator=gen)
    coarse = PHOTO_SHARED * shared + (1 - PHOTO_SHARED) * torch.rand(1, channels, 9, 9, generator=gen)
    clean = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True).clamp(0, 1)
    return ClampedNormalNoise(std=std)(clean, generator=gen)

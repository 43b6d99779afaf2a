"""The clamped normal-noise layer: the one place noise is made, for training and for `add-noise`."""

from __future__ import annotations

import hashlib

import torch
from torch import nn


class ClampedNormalNoise(nn.Module):
    """Add ``N(mean, std) * scale`` to an image in [0, 1] and clamp the result to [0, 1].

    Active in training mode only, so a model wrapped with it sees clean inputs at
    evaluation time. ``std`` may be overridden per call with a float or a tensor of
    shape [B] (one noise level per sample), and a ``torch.Generator`` makes the
    noise reproducible. The noise is drawn on the input's device and in its dtype.
    """

    def __init__(self, scale: float = 1.0, mean: float = 0.0, std: float = 0.2) -> None:
        super().__init__()
        self.scale = float(scale)
        self.mean = float(mean)
        self.std = float(std)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, mean={self.mean}, std={self.std}"

    def forward(
        self,
        x: torch.Tensor,
        std: float | torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        if not self.training:
            return x
        sigma = _per_sample(self.std if std is None else std, x)
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return (x + (noise * sigma + self.mean) * self.scale).clamp_(0.0, 1.0)


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

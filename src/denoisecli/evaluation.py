"""Quality on a benchmark folder under the standard synthetic protocol of the literature."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from denoisecli.errors import DenoiseError
from denoisecli.image_io import list_images, read_image
from denoisecli.inference import Denoiser
from denoisecli.metrics import psnr, quantize8
from denoisecli.noise import seeded_generator


@dataclass
class ImageScore:
    name: str
    sigma: float
    psnr: float
    noisy_psnr: float


def evaluate(
    clean_dir: Path,
    sigmas: list[float],
    weights: Path | None = None,
    device: str = "auto",
    seed: int = 0,
    on_image: Callable[[ImageScore], None] | None = None,
) -> list[ImageScore]:
    """PSNR per image: y = x + N(0, sigma/255) neither clipped nor quantised, output clipped and
    rounded to 8 bits, PSNR on the 8-bit images; each image's noise seeded by (seed, name, sigma).
    """
    paths = list_images(Path(clean_dir))
    if not paths:
        raise DenoiseError(f"{clean_dir}: no images found")
    denoiser = Denoiser(weights, device)
    scores = []
    for sigma in sigmas:
        for p in paths:
            clean = quantize8(read_image(p).pixels)
            g = seeded_generator(seed, f"{p.name}\x00{sigma}")
            noisy = clean + torch.randn(clean.shape, generator=g) * (sigma / 255.0)
            out = quantize8(denoiser(noisy, name=str(p)))
            score = ImageScore(p.name, sigma, psnr(out, clean), psnr(quantize8(noisy), clean))
            scores.append(score)
            if on_image:
                on_image(score)
    return scores

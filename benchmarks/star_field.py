"""A star field: a dark 8-bit photo with a few white pixels, as stars (or a camera's hot pixels)
are, through `Denoiser`. Before 2026-11-29 the white pixels set the image's range, so the dark
rest was not stretched to fill it (inference.value_range); now they are kept as read and the rest
is stretched without them. PSNR over all pixels, stars included, and over the sky alone.

    python benchmarks/star_field.py ../shared/data/test/Kodak24 --count 8
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from denoisecli.formats import list_images
from denoisecli.image_io import read_image
from denoisecli.inference import Denoiser


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--count", type=int, default=8)
    ap.add_argument("--brightness", type=float, default=0.2, help="the photo scaled to this share of the range")
    ap.add_argument("--stars", type=float, default=5e-4, help="share of pixels set to white")
    ap.add_argument("--sigma", type=float, default=10.0)
    args = ap.parse_args()
    denoiser = Denoiser()
    every, sky = [], []
    for i, path in enumerate(list_images(args.folder)[: args.count]):
        clean = read_image(path).pixels * args.brightness
        g = torch.Generator().manual_seed(i)
        stars = torch.rand(clean.shape[1:], generator=g) < args.stars
        clean[:, stars] = 1.0
        noisy = ((clean + torch.randn(clean.shape, generator=g) * args.sigma / 255).clamp(0, 1) * 255).round() / 255
        out = (denoiser(noisy).clamp(0, 1) * 255).round() / 255
        every.append(-10 * math.log10(float(((out - clean) ** 2).mean())))
        sky.append(-10 * math.log10(float(((out - clean)[:, ~stars] ** 2).mean())))
    print(f"{args.folder.name}, first {len(every)} images at {args.brightness:g} brightness, {args.stars:g} of the pixels stars, "
          f"sigma {args.sigma:g}: PSNR {sum(every) / len(every):.2f} dB over all pixels, {sum(sky) / len(sky):.2f} over the sky")


if __name__ == "__main__":
    main()

"""Noisy images in a noise-free frame (a letterbox, a black border, a background clipped to black):
what `run`'s default route reads and makes of them, against the same images unframed.

Each image gets clipped 8-bit Gaussian noise (seed = its index); then its left ``--border``
share of columns and as many rows at the bottom are set to ``--value`` (no noise there). The
default `Denoiser` (shipped models, estimated level, shot-noise rule) denoises it, and PSNR is
scored on the part that stayed noisy, against the clean image (both rounded to 8 bits). Columns:
the mean level `run` reports, how many images it stabilised, the mean PSNR.

    python benchmarks/noise_free_border.py ../shared/data/test/Set12 --border 0,0.125,0.25,0.5
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from denoisecli.formats import list_images
from denoisecli.image_io import read_image
from denoisecli.inference import Denoiser
from denoisecli.metrics import psnr, quantize8


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--count", type=int, default=12)
    ap.add_argument("--sigma", default="15,25,50")
    ap.add_argument("--border", default="0,0.125,0.25,0.5", help="shares of the width (and as many rows) made noise-free")
    ap.add_argument("--value", type=float, default=0.0, help="the frame's value, 0-1")
    args = ap.parse_args()
    paths = list_images(args.folder)[: args.count]
    borders = [float(b) for b in args.border.split(",")]
    denoiser = Denoiser(device="cpu")
    print(f"{args.folder.name}, first {len(paths)} images, frame value {args.value:g}: per border share, "
          "level read (0-255) / images stabilised / PSNR (dB) on the noisy part")
    for sigma in (float(s) for s in args.sigma.split(",")):
        cells = []
        for share in borders:
            level = stabilised = score = 0.0
            for i, p in enumerate(paths):
                clean = quantize8(read_image(p).pixels)
                noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(i)) * sigma / 255
                noisy = quantize8((clean + noise).clamp(0, 1))
                w = int(clean.shape[-1] * share)
                noisy[..., :w] = args.value
                if w:
                    noisy[..., -w:, :] = args.value
                kept = (..., slice(0, clean.shape[-2] - w), slice(w, None))
                levels = denoiser.levels([noisy])  # one per channel for an image split into channels
                level += sum(lv.sigma for lv in levels) / len(levels) * 255
                stabilised += any(lv.stabiliser is not None for lv in levels)
                score += psnr(quantize8(denoiser.batch([noisy], levels=levels)[0])[kept], clean[kept])
            n = len(paths)
            cells.append(f"{share:g}: {level / n:5.1f} / {int(stabilised)} / {score / n:.2f}")
        print(f"sigma {sigma:g}: " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()

"""Noise estimator accuracy on a benchmark folder: error of the estimated sigma per level.

    python benchmarks/estimator_accuracy.py ../shared/data/test/CBSD68 --sigma 5,10,15,25,35,50
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from denoisecli.image_io import list_images, read_image
from denoisecli.noise_estimate import estimate_sigma


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--sigma", default="5,10,15,25,35,50")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    paths = list_images(args.folder)
    images = [read_image(p).pixels.double() for p in paths]
    start = time.perf_counter()
    print(f"{args.folder}: {len(images)} images, unclipped gaussian noise, seed {args.seed}")
    print("sigma  mean error  max |error|  within 2")
    for sigma in (float(s) for s in args.sigma.split(",")):
        errors = []
        for i, x in enumerate(images):
            g = torch.Generator().manual_seed(args.seed * 100_003 + i)
            noisy = x + torch.randn(x.shape, generator=g, dtype=torch.float64) * sigma / 255
            errors.append(estimate_sigma(noisy) * 255 - sigma)
        inside = sum(abs(e) < 2 for e in errors)
        print(f"{sigma:5g}  {sum(errors) / len(errors):+10.2f}  {max(abs(e) for e in errors):11.2f}  {inside}/{len(errors)}")
    print(f"{time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()

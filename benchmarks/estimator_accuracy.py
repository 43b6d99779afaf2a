"""Noise estimator accuracy on a benchmark folder: error of the estimated sigma per level.

    python benchmarks/estimator_accuracy.py ../shared/data/test/CBSD68 --sigma 5,10,15,25,35,50

A "clean" test image can carry noise of its own (film grain, sensor noise): CBSD68's 101085 and
175032 read about 6 before any noise is added. So besides the error against the added sigma, each
level counts the estimates within 2 of the noise the image then holds (the added sigma and the clean
image's own reading, in quadrature), and names the images that miss with their own reading.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

from denoisecli.formats import list_images
from denoisecli.image_io import read_image
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
    own = [estimate_sigma(x) * 255 for x in images]
    print("sigma  mean error  max |error|  within 2  within 2 of the noise held  misses (error; the clean image's own reading)")
    for sigma in (float(s) for s in args.sigma.split(",")):
        estimates = []
        for i, x in enumerate(images):
            g = torch.Generator().manual_seed(args.seed * 100_003 + i)
            noisy = x + torch.randn(x.shape, generator=g, dtype=torch.float64) * sigma / 255
            estimates.append(estimate_sigma(noisy) * 255)
        errors = [e - sigma for e in estimates]
        inside = sum(abs(e) < 2 for e in errors)
        held = sum(abs(e - math.hypot(sigma, o)) < 2 for e, o in zip(estimates, own))
        misses = ", ".join(f"{p.stem} {e:+.2f}; {o:.2f}" for p, e, o in zip(paths, errors, own) if abs(e) >= 2)
        print(f"{sigma:5g}  {sum(errors) / len(errors):+10.2f}  {max(abs(e) for e in errors):11.2f}  {inside:>4d}/{len(errors)}"
              f"  {held:>22d}/{len(errors)}  {misses}")
    print(f"{time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()

"""How well `noise_estimate.level_map` follows the noise actually present, pixel by pixel.

    python benchmarks/level_map_accuracy.py ../shared/data/test/CBSD68 [--every 4]

For each noise setting (the noise of `denoise eval`: Gaussian under the standard protocol,
camera noise under the clipped one, seed 0), the true local noise std is the RMS of (noisy -
clean) over a 15x15 window. Both it and the map are divided by their own means (the scale is
the estimator's business, `estimator_accuracy.py`), and the table gives the mean absolute
difference of the two shapes, next to that of a flat map (one level per image, what a
`level: "estimate"` model gets), the map's max/min ratio (median and largest over the images)
and its time per image.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from denoisecli.evaluation import _noisy_input, _points
from denoisecli.formats import list_images
from denoisecli.image_io import read_image
from denoisecli.metrics import quantize8
from denoisecli.noise_estimate import estimate_sigma, level_map


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--sigmas", default="5,15,50")
    ap.add_argument("--peaks", default="10,30,100")
    ap.add_argument("--every", type=int, default=4)
    args = ap.parse_args()
    paths = list_images(args.folder)[:: args.every]
    cleans = [quantize8(read_image(p).pixels) for p in paths]
    settings = [("gaussian", "standard", pt) for pt in _points("gaussian", [float(s) for s in args.sigmas.split(",")], None)]
    settings += [("camera", "clipped", pt) for pt in _points("camera", None, [float(p) for p in args.peaks.split(",")])]
    print(f"{args.folder}, {len(paths)} images, seed 0")
    print("noise | shape error, map | shape error, flat | map max/min, median / max | ms per image")
    for noise, protocol, (label, level) in settings:
        err_map, err_flat, spread, seconds = [], [], [], 0.0
        for path, clean in zip(paths, cleans):
            noisy = _noisy_input(path, clean, label, level, protocol, noise, 0).float().clamp(0, 1)
            sigma = estimate_sigma(noisy)
            start = time.perf_counter()
            shape = level_map(noisy, sigma)
            seconds += time.perf_counter() - start
            power = (noisy - clean).square().mean(0, keepdim=True)[None]
            true = F.avg_pool2d(F.pad(power, (7, 7, 7, 7), mode="reflect"), 15, 1)[0].sqrt()
            true, shape = true / true.mean(), shape / shape.mean()
            err_map.append(float((shape - true).abs().mean()))
            err_flat.append(float((1 - true).abs().mean()))
            spread.append(float(shape.max() / shape.min()))
        print(f"{noise} {label} | {statistics.fmean(err_map):.3f} | {statistics.fmean(err_flat):.3f} | "
              f"{statistics.median(spread):.2f} / {max(spread):.2f} | {seconds / len(paths) * 1000:.1f}", flush=True)


if __name__ == "__main__":
    main()

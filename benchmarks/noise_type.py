"""Can `run` tell white Gaussian noise from camera noise? Two cheap statistics, measured.

    python benchmarks/noise_type.py ../shared/data/test/CBSD68 --every 2

Phase 21 (weights/HISTORY.md) found one width-32 network trading Gaussian PSNR against camera
detail; an input telling it which noise it faces might let it keep both. Such an input must be
read from the noisy image alone, as the level is. Two candidates, from the noise estimator:

- whiteness: 2 x estimate(2x2 average) / estimate(image). Averaging 2x2 pixels halves the std of
  white noise, less of noise correlated between neighbours: 1 for white noise, above 1 if correlated.
- signal dependence: the estimated noise variance of the brightest third of 64x64 tiles over
  that of the darkest third (median of each). 1 for Gaussian noise, above 1 for shot noise.

The evaluation's own noise goes on every ``--every``-th image (Gaussian: standard protocol, as
`denoise eval --sigma`; camera: clipped protocol, as `denoise eval --noise camera --level PEAK`),
and each statistic's spread is printed per setting.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F

from denoisecli.evaluation import _noisy_input, _points
from denoisecli.formats import list_images
from denoisecli.image_io import read_image
from denoisecli.metrics import quantize8
from denoisecli.noise_estimate import estimate_sigma

TILE = 64


def whiteness(noisy: torch.Tensor) -> float:
    """2 x the estimated noise std of the 2x2-averaged image over that of the image (1 for white noise)."""
    full = estimate_sigma(noisy)
    return 2 * estimate_sigma(F.avg_pool2d(noisy[None], 2)[0]) / full if full > 0 else float("nan")


def tile_levels(noisy: torch.Tensor) -> list[tuple[float, float]]:
    """(mean brightness, estimated noise variance) of each whole TILE x TILE tile: how the noise varies with the signal."""
    _, height, width = noisy.shape
    return [(float(t.mean()), estimate_sigma(t) ** 2)
            for t in (noisy[:, i : i + TILE, j : j + TILE] for i in range(0, height - TILE + 1, TILE) for j in range(0, width - TILE + 1, TILE))]


def signal_dependence(noisy: torch.Tensor) -> float:
    """Estimated noise variance in the brightest third of TILE x TILE tiles over that in the darkest third (1 for Gaussian noise)."""
    tiles = sorted(tile_levels(noisy))
    third = max(1, len(tiles) // 3)
    dark, bright = (statistics.median(v for _, v in part) for part in (tiles[:third], tiles[-third:]))
    return (bright + 1e-8) / (dark + 1e-8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--sigmas", default="5,15,25,50")
    ap.add_argument("--peaks", default="10,30,100,200")
    ap.add_argument("--every", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    paths = list_images(args.folder)[:: args.every]
    cleans = [quantize8(read_image(p).pixels) for p in paths]
    settings = [("gaussian", "standard", pt) for pt in _points("gaussian", [float(s) for s in args.sigmas.split(",")], None)]
    settings += [("camera", "clipped", pt) for pt in _points("camera", None, [float(p) for p in args.peaks.split(",")])]
    print(f"{args.folder}, {len(paths)} images, seed {args.seed}; each statistic: min / 5% / median / 95% / max")
    print("noise | whiteness | signal dependence")
    for noise, protocol, (label, level) in settings:
        noisy = [_noisy_input(p, c, label, level, protocol, noise, args.seed) for p, c in zip(paths, cleans)]
        cells = []
        for stat in (whiteness, signal_dependence):
            values = [stat(x) for x in noisy]
            q = statistics.quantiles(values, n=20, method="inclusive")
            cells.append(" / ".join(f"{v:.2f}" for v in (min(values), q[0], statistics.median(values), q[-1], max(values))))
        print(f"{label} | {cells[0]} | {cells[1]}", flush=True)


if __name__ == "__main__":
    main()

"""Camera noise with a per-pixel level map instead of one level per image, at test time only.

    python benchmarks/level_map.py weights/color.pt runs/color21/model.pt [--every 1]

Camera noise grows with brightness, and the noise-level input can take a map ([B, 1, H, W], as
FFDNet allows). With no retraining, does a map that follows brightness help a model trained on
one level per patch? The map comes from a fitted noise model: the estimator's variance on each
64x64 tile against the tile's mean, fitted as a * brightness + b (least squares, a >= 0), then read
at each pixel's local (9x9) mean brightness, floored at a quarter of the image's estimate.
"constant": the image's estimate everywhere, what `run` does; "fitted": the map itself;
"rescaled": the map scaled to the estimate on average (its shape only). The noise is that of
`denoise eval --protocol clipped --noise camera --level PEAK` (seed 0), on every ``--every``-th image.
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
from denoisecli.metrics import psnr, quantize8, ssim, texture_ratio
from denoisecli.noise_estimate import estimate_sigma
from denoisecli.weights import load_model
from noise_type import tile_levels  # beside this script


def fitted_map(noisy: torch.Tensor, estimate: float) -> torch.Tensor:
    """A 1xHxW noise-std map from a linear fit of tile variance against tile brightness."""
    means, variances = torch.tensor(tile_levels(noisy), dtype=torch.float64).T
    a, b = torch.linalg.lstsq(torch.stack([means, torch.ones_like(means)], 1), variances[:, None]).solution.flatten().tolist()
    local = F.avg_pool2d(F.pad(noisy.mean(0, keepdim=True)[None], (4, 4, 4, 4), mode="reflect"), 9, 1)[0]
    return (max(a, 0.0) * local + b).clamp_min((0.25 * estimate) ** 2).sqrt().float()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights", nargs="+", type=Path)
    ap.add_argument("--folder", type=Path, default=Path("../shared/data/test/CBSD68"))
    ap.add_argument("--peak", type=float, default=30.0)
    ap.add_argument("--every", type=int, default=1)
    args = ap.parse_args()
    (label, level), = _points("camera", None, [args.peak])
    data = []
    for path in list_images(args.folder)[:: args.every]:
        clean = quantize8(read_image(path).pixels)
        noisy = _noisy_input(path, clean, label, level, "clipped", "camera", 0).float().clamp(0, 1)
        estimate = estimate_sigma(noisy)
        fitted = fitted_map(noisy, estimate)
        maps = {"constant": torch.full_like(fitted, estimate), "fitted": fitted, "rescaled": fitted * estimate / fitted.mean()}
        data.append((clean, noisy, maps))
    print(f"{args.folder}, {len(data)} images, camera {label}; PSNR / SSIM / texture")
    for weights in args.weights:
        model, _ = load_model(weights)
        for name in ("constant", "fitted", "rescaled"):
            scores = []
            with torch.no_grad():
                for clean, noisy, maps in data:
                    out = quantize8(model(noisy[None], maps[name][None])[0].clamp(0, 1))
                    scores.append((psnr(out, clean), ssim(out, clean), texture_ratio(out, clean)))
            p, s, t = (statistics.fmean(float(v[i]) for v in scores) for i in range(3))
            print(f"{weights} | {name} | {p:.2f} / {s:.4f} / {t:.3f}", flush=True)


if __name__ == "__main__":
    main()

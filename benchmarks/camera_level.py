"""Camera noise against the noise-level input: what the estimator reads, and what each level gives.

    python benchmarks/camera_level.py ../shared/data/test/CBSD68 --peak 30 --every 3 \
        --weights weights/color.pt runs/color14/model.pt

Camera noise (shot, read noise, JPEG) has no single sigma. The same noise `denoise eval --noise
camera --level PEAK` makes (clipped protocol, seed 0) is put on every ``--every``-th image; then
the estimator's reading is compared with the std of the noise present, and each model denoises
with three levels: the estimate (what `run` feeds), the measured std (what `level: "sigma"`
models were trained with), and 1.25 times the estimate.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from denoisecli.evaluation import _noisy_input, _points
from denoisecli.formats import list_images
from denoisecli.image_io import read_image
from denoisecli.inference import Denoiser, Level
from denoisecli.metrics import psnr, quantize8, ssim, texture_ratio
from denoisecli.noise_estimate import estimate_sigma

LEVELS = {"estimate": lambda est, meas: est, "measured std": lambda est, meas: meas, "1.25 x estimate": lambda est, meas: 1.25 * est}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--peak", type=float, default=30.0)
    ap.add_argument("--every", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--weights", nargs="+", type=Path, default=[Path("weights/color.pt")])
    args = ap.parse_args()
    (label, level), = _points("camera", None, [args.peak])
    data = []
    for path in list_images(args.folder)[:: args.every]:
        clean = quantize8(read_image(path).pixels)
        noisy = _noisy_input(path, clean, label, level, "clipped", "camera", args.seed)
        data.append((clean, noisy, estimate_sigma(noisy), float((noisy - clean).std())))
    ratios = [est / meas for _, _, est, meas in data]
    print(f"{args.folder}, {len(data)} images, camera {level}, seed {args.seed}")
    print(f"estimate / std of the noise present: median {statistics.median(ratios):.3f}, "
          f"range {min(ratios):.2f}-{max(ratios):.2f}; mean estimate {statistics.fmean(d[2] for d in data) * 255:.1f}, "
          f"mean std {statistics.fmean(d[3] for d in data) * 255:.1f} (0-255)")
    print("weights | level fed | PSNR | SSIM | texture")
    for weights in args.weights:
        den = Denoiser(weights, "cpu")
        for name, pick in LEVELS.items():
            ps, ss, ts = [], [], []
            for clean, noisy, est, meas in data:
                s = pick(est, meas)
                out = quantize8(den.batch([noisy], levels=[Level(s, s)])[0])
                ps.append(psnr(out, clean))
                ss.append(ssim(out, clean))
                ts.append(texture_ratio(out, clean))
            print(f"{weights} | {name} | {statistics.fmean(ps):.2f} | {statistics.fmean(ss):.4f} | {statistics.fmean(ts):.3f}", flush=True)


if __name__ == "__main__":
    main()

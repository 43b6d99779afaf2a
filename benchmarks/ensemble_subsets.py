"""How much of `--ensemble`'s gain do fewer flips and rotations keep, at what cost?

usage: python benchmarks/ensemble_subsets.py DIR [--sigma 15] [--weights FILE]

Scores the standard protocol (`denoise eval DIR --sigma S --ensemble`, same noise) with the
self-ensemble restricted to subsets of its 8 flips and rotations, by narrowing
`denoisecli.inference.DIHEDRAL` for each run: one pass, then 2, 4 and all 8 transforms. The work
grows with the number of transforms; the seconds printed are this machine's for the whole set.
A measurement for choosing a cheaper ensemble, not a feature: `--ensemble` always uses all 8.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import denoisecli.inference as inference
from denoisecli.evaluation import evaluate

SUBSETS: dict[str, list[tuple[int, bool]]] = {
    "one pass": [(0, False)],
    "identity + horizontal flip": [(0, False), (0, True)],
    "identity + rotation by 180": [(0, False), (2, False)],
    "identity + rotation by 90": [(0, False), (1, False)],
    "4 rotations": [(k, False) for k in range(4)],
    "identity, 180, and both flipped": [(0, False), (2, False), (0, True), (2, True)],
    "all 8 (--ensemble)": list(inference.DIHEDRAL),
}


def score_subsets(clean_dir: Path, sigma: float, weights: Path | None = None) -> dict[str, tuple[float, float, float]]:
    """{subset: (mean PSNR, mean SSIM, seconds)}; `--ensemble`'s 8 transforms are restored after."""
    full, level, out = list(inference.DIHEDRAL), f"sigma {sigma:g}", {}
    try:
        for name, subset in SUBSETS.items():
            inference.DIHEDRAL[:] = subset
            start = time.perf_counter()
            report, _ = evaluate(clean_dir, [sigma], weights=weights, device="cpu", ensemble=True)
            out[name] = (report.mean("denoise", level), report.mean("denoise", level, "ssim"), time.perf_counter() - start)
    finally:
        inference.DIHEDRAL[:] = full
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clean_dir", type=Path)
    parser.add_argument("--sigma", type=float, default=15.0)
    parser.add_argument("--weights", type=Path, default=None)
    args = parser.parse_args()
    for name, (psnr, ssim, seconds) in score_subsets(args.clean_dir, args.sigma, args.weights).items():
        print(f"{name:34s} {len(SUBSETS[name])} transforms  PSNR {psnr:.4f}  SSIM {ssim:.4f}  {seconds:.0f} s")


if __name__ == "__main__":
    main()

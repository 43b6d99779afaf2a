"""Training on dim 16-bit data: a model trained on a microscope's 12-bit counts in 16-bit files,
then `run` on test images made the same way.

Training images (the first ``--count`` of a training set, grey) are written as 16-bit PNGs
holding SPAN counts above an offset of 100; a small blind model trains on them at one noise
level (sigma on the 0-255 scale of what it sees); the test set is made the same way with
Gaussian noise of that sigma on its own span, denoised by `run` (denoise_files) with the model,
and scored as PSNR on the span. Until 2026-11-29 `train` quantised such files to 8 bits over the
file's whole range (17 levels of 256 for 12-bit counts); it now stretches them to their range
as `run` does. Run it from a worktree of an older commit to measure the code there.

    python benchmarks/dim_training.py ../shared/data/train/Train400 ../shared/data/test/Set12
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from denoisecli.formats import list_images
from denoisecli.inference import RunOptions, denoise_files
from denoisecli.training import TrainOptions, train


def counts(path: Path, span: int) -> np.ndarray:
    grey = np.asarray(Image.open(path).convert("L"), np.float64) / 255
    return grey * span + 100


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("train_folder", type=Path)
    ap.add_argument("test_folder", type=Path)
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--span", type=int, default=4000)
    ap.add_argument("--sigma", type=float, default=25.0)
    ap.add_argument("--steps", type=int, default=400)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for sub in ("train", "clean", "noisy"):
            (root / sub).mkdir()
        for path in list_images(args.train_folder)[: args.count]:
            Image.fromarray(counts(path, args.span).round().astype(np.uint16)).save(root / "train" / f"{path.stem}.png")
        clean = {}
        for path in list_images(args.test_folder):
            clean[path.stem] = counts(path, args.span)
            noisy = clean[path.stem] + rng.normal(0, args.sigma / 255 * args.span, clean[path.stem].shape)
            Image.fromarray(noisy.round().clip(0, 65535).astype(np.uint16)).save(root / "noisy" / f"{path.stem}.png")
        train(TrainOptions(data=str(root / "train"), out=str(root / "model"), model={"width": 16, "depth": 3},
                           steps=args.steps, batch=16, patch=64, levels={"std": (args.sigma / 255,) * 2}, seed=1,
                           device="cpu"))
        denoise_files(root / "noisy", root / "out", RunOptions(weights=root / "model" / "model.pt", device="cpu"))

        def score(folder: Path) -> float:
            return float(np.mean([10 * math.log10(args.span**2 / np.mean((np.asarray(Image.open(folder / f"{k}.png"),
                                  np.float64) - v) ** 2)) for k, v in clean.items()]))

        print(f"{args.test_folder.name}, {args.span} counts, sigma {args.sigma:g} of the span; a model of width 16, "
              f"depth 3, {args.steps} steps on {args.count} images of {args.train_folder.name} made so")
        print(f"noisy {score(root / 'noisy'):.2f} dB, denoised {score(root / 'out'):.2f} dB")


if __name__ == "__main__":
    main()

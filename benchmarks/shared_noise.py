"""Noise shared between colour channels: how much of it a colour model removes.

Each image gets the `gaussian-shared` training noise (the clamped normal layer with a
correlation between channels; 0 is the benchmarks' independent noise, 1 the same noise in every
channel), seeded by file name, sigma and correlation, and is rounded to 8 bits, as a user's file
would be. The model denoises it as `run` does (level estimated). PSNR against the clean image,
rounded to 8 bits, mean over the images.

    python benchmarks/shared_noise.py ../shared/data/test/CBSD68 --count 10
    python benchmarks/shared_noise.py ../shared/data/test/CBSD68 --count 10 --weights runs/color47/model.pt
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from denoisecli.image_io import list_images, read_image
from denoisecli.inference import Denoiser
from denoisecli.metrics import psnr, quantize8
from denoisecli.noise import NOISE_MODELS, seeded_generator
from denoisecli.weights import shipped_weights


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--count", type=int, default=10)
    ap.add_argument("--sigma", default="15,25")
    ap.add_argument("--correlation", default="0,0.5,1")
    ap.add_argument("--weights", type=Path, default=None, help="model file (default: the shipped colour model)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    paths = list_images(args.folder)[: args.count]
    weights = args.weights or shipped_weights(3)
    denoiser = Denoiser(weights)
    layer = NOISE_MODELS["gaussian-shared"]().train()
    rows = []
    print(f"{args.folder.name}, first {len(paths)} images, {weights}: PSNR (dB) noisy -> denoised")
    for sigma in (float(s) for s in args.sigma.split(",")):
        for rho in (float(r) for r in args.correlation.split(",")):
            noisy_sum = out_sum = 0.0
            for p in paths:
                clean = quantize8(read_image(p).pixels)
                gen = seeded_generator(0, f"{p.name}\x00{sigma:g}\x00{rho:g}")
                with torch.no_grad():
                    noisy = quantize8(layer(clean[None], std=sigma / 255, correlation=rho, generator=gen)[0])
                noisy_sum += psnr(noisy, clean)
                out_sum += psnr(quantize8(denoiser(noisy)), clean)
            row = {"sigma": sigma, "correlation": rho, "noisy": noisy_sum / len(paths), "denoised": out_sum / len(paths)}
            rows.append(row)
            print(f"sigma {sigma:g}, correlation {rho:g}: {row['noisy']:.2f} -> {row['denoised']:.2f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"weights": str(weights), "images": len(paths), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

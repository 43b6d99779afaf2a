"""Black-and-white photos saved as RGB: the colour model on three equal channels against the grey
model, which `Denoiser` now picks for them (inference.Denoiser.grey_copy).

Each grey image gets Gaussian noise (seed = its index), is rounded to 8 bits, and is denoised
once as grey and once copied into three channels through the colour model (the output's channel
mean is scored). PSNR against the clean image, rounded to 8 bits.

    python benchmarks/grey_as_rgb.py ../shared/data/test/BSD68 --count 20
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from denoisecli.formats import list_images
from denoisecli.image_io import read_image
from denoisecli.inference import Denoiser
from denoisecli.metrics import psnr, quantize8
from denoisecli.weights import shipped_weights


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--count", type=int, default=20)
    ap.add_argument("--sigma", default="15,25,50")
    args = ap.parse_args()
    paths = list_images(args.folder)[: args.count]
    grey, colour = Denoiser(shipped_weights(1)), Denoiser(shipped_weights(3))
    print(f"{args.folder.name}, first {len(paths)} images: PSNR (dB) noisy | grey model | colour model on three equal channels")
    for sigma in (float(s) for s in args.sigma.split(",")):
        sums = [0.0, 0.0, 0.0]
        for i, p in enumerate(paths):
            clean = quantize8(read_image(p).pixels)
            if clean.shape[0] != 1:
                raise SystemExit(f"{p}: expected a grey image")
            noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(i)) * sigma / 255
            noisy = quantize8((clean + noise).clamp(0, 1))
            outs = [noisy, grey(noisy), colour(noisy.expand(3, -1, -1).contiguous()).mean(0, keepdim=True)]
            for k, out in enumerate(outs):
                sums[k] += psnr(quantize8(out), clean)
        print(f"sigma {sigma:g}: " + " | ".join(f"{v / len(paths):.2f}" for v in sums), flush=True)


if __name__ == "__main__":
    main()

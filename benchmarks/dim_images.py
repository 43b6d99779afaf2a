"""Dim images: denoising data that fills only part of its file's range, as a microscope's
12-bit counts in a 16-bit file do, with and without `Denoiser` stretching each image to its
own range (inference.value_range).

Each clean grey image is scaled to SPAN counts above an offset of 100, given Gaussian noise of
sigma (0-255 scale of its own span), rounded to integers as a 16-bit file holds them, and read
as `run` reads a 16-bit file (counts / 65535). With ``--hot N``, N pixels of each image (seeded)
are set to full scale, as a camera's hot pixels are. PSNR is measured on the image's own span,
over the pixels that are not hot (which `run` writes back as read: see inference.value_range).
With ``--peak P``, the noise is shot noise instead: P photons at the top of the span, each
photon span/P counts (so `run` reads how it grows and stabilises it, see inference.Denoiser).

    python benchmarks/dim_images.py ../shared/data/test/BSD68 --count 10 --spans 2047,4095,16383 --hot 20
    python benchmarks/dim_images.py ../shared/data/test/Set12 --count 12 --spans 1200 --peak 30 --hot 1
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

import denoisecli.inference as inference
from denoisecli.formats import list_images
from denoisecli.image_io import read_image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--count", type=int, default=10)
    ap.add_argument("--spans", default="2047,4095,8191,16383,65435")
    ap.add_argument("--sigma", default="15,25,50")
    ap.add_argument("--hot", type=int, default=0, help="pixels per image set to full scale")
    ap.add_argument("--peak", default=None, help="shot noise at these photon counts at the top of the span, not --sigma")
    args = ap.parse_args()
    paths = list_images(args.folder)[: args.count]
    cleans = [read_image(p).pixels.double() for p in paths]
    denoiser = inference.Denoiser()
    stretch = inference.value_range
    print(f"{args.folder.name}, first {len(paths)} images, {args.hot} hot pixels each; PSNR (dB) on each image's own span: "
          "noisy | as read | stretched")
    for span in (float(s) for s in args.spans.split(",")):
        for level in (float(s) for s in (args.peak or args.sigma).split(",")):
            sums = [0.0, 0.0, 0.0]
            for i, clean in enumerate(cleans):
                g = torch.Generator().manual_seed(i)
                if args.peak:
                    counts = (torch.poisson(clean * level, generator=g) * (span / level) + 100).round().clamp(0, 65535)
                else:
                    noise = torch.randn(clean.shape, generator=g, dtype=torch.float64) * level / 255
                    counts = ((clean + noise) * span + 100).round().clamp(0, 65535)
                hot = torch.zeros(counts.numel(), dtype=torch.bool)
                hot[torch.randperm(counts.numel(), generator=g)[: args.hot]] = True
                counts.view(-1)[hot] = 65535
                noisy, ref = (counts / 65535).float(), (clean * span + 100) / 65535
                outs = [noisy]
                for use in (lambda im: (0.0, 1.0), stretch):
                    inference.value_range = use
                    outs.append(denoiser(noisy))
                inference.value_range = stretch
                keep = ~hot.view(ref.shape)
                for k, out in enumerate(outs):
                    mse = float(((out.double() - ref) ** 2)[keep].mean())
                    sums[k] += 10 * math.log10((span / 65535) ** 2 / mse)
            print(f"span {span:.0f} counts, {'peak' if args.peak else 'sigma'} {level:g}: " + " | ".join(f"{v / len(cleans):.2f}" for v in sums), flush=True)


if __name__ == "__main__":
    main()

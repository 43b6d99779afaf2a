"""Photon-counting data as a microscope's or telescope's camera writes it: a 16-bit file of ADU
counts = offset + gain * Poisson(clean * peak) + read noise, denoised as `run` reads such a file
(counts / 65535), with the default route, --no-stabilise and --stabilise.

Each clean grey image spans 0-``peak`` photons; PSNR is measured on the image's own span (gain *
peak counts), so the figures compare with 8-bit ones. The value-range stretch (a dim file) and
the variance-stabilising transform act together here: in the stretched image the noise variance
is still a line in brightness, with an offset from the camera's.

    python benchmarks/photon_counts.py ../shared/data/test/Set12 --peaks 10,30,100
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from denoisecli.formats import list_images
from denoisecli.image_io import read_image
from denoisecli.inference import Denoiser


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--count", type=int, default=12)
    ap.add_argument("--peaks", default="10,30,100", help="photons at white")
    ap.add_argument("--gain", type=float, default=20.0, help="ADU per photon")
    ap.add_argument("--offset", type=float, default=100.0, help="ADU of a dark pixel")
    ap.add_argument("--read", type=float, default=0.0, help="read noise std in ADU")
    args = ap.parse_args()
    paths = list_images(args.folder)[: args.count]
    cleans = [read_image(p).pixels.double().mean(0, keepdim=True) for p in paths]
    routes = {"default": Denoiser(), "--no-stabilise": Denoiser(stabilise=False), "--stabilise": Denoiser(stabilise=True)}
    print(f"{args.folder.name}, first {len(paths)} images as grey, {args.gain:g} ADU per photon, offset {args.offset:g}, "
          f"read noise {args.read:g} ADU; PSNR (dB) on each image's span: noisy | " + " | ".join(routes))
    for peak in (float(p) for p in args.peaks.split(",")):
        span = args.gain * peak
        sums = [0.0] * (1 + len(routes))
        for i, clean in enumerate(cleans):
            g = torch.Generator().manual_seed(i)
            photons = torch.poisson(clean * peak, generator=g)
            counts = args.offset + args.gain * photons + torch.randn(clean.shape, generator=g, dtype=torch.float64) * args.read
            noisy = (counts.round().clamp(0, 65535) / 65535).float()
            ref = (args.offset + span * clean) / 65535
            for k, out in enumerate([noisy, *(den(noisy) for den in routes.values())]):
                mse = float(((out.double() - ref) ** 2).mean())
                sums[k] += 10 * math.log10((span / 65535) ** 2 / mse)
        print(f"peak {peak:g} photons ({span:.0f} counts): " + " | ".join(f"{v / len(cleans):.2f}" for v in sums), flush=True)


if __name__ == "__main__":
    main()

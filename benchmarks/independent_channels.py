"""Colour images whose channels are independent: the colour model against the grey one per channel.

`color.pt` learned natural photos, whose channels move together, so chroma changes slowly. In a
fluorescence composite, a false-colour map or flat-coloured graphics, each channel has edges of
its own. This measures that case on dead-leaves images (overlapping discs, each of one random RGB
colour, drawn at 2x and averaged down so edges are anti-aliased; seeded), with white noise from
the clamped normal layer and rounded to 8 bits, and compares:

- `color.pt` (or ``--model``) on the whole image, level estimated (`run --no-per-channel`);
- `grey.pt` on each channel alone, its own estimate per channel (`run --per-channel`);
- `run`'s default, which picks one of the two by the image's channel coupling;
- CBM3D (`bm3d` package, `pip install '.[baselines]'`), given the true sigma, when installed.

With ``--natural DIR`` the same comparison runs on the first ``--count`` images of DIR too, where
the colour model should win. PSNR against the clean image, mean over the images.

    python benchmarks/independent_channels.py --count 4 --natural ../shared/data/test/CBSD68
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from denoisecli.formats import list_images
from denoisecli.image_io import read_image
from denoisecli.inference import Denoiser
from denoisecli.metrics import psnr, quantize8
from denoisecli.noise import ClampedNormalNoise, seeded_generator


def dead_leaves(size: int, seed: int, discs: int = 150, radius: tuple[float, float] = (8, 64)) -> torch.Tensor:
    """A 3xSxS dead-leaves image in [0, 1], rounded to 8 bits."""
    rng = np.random.default_rng(seed)
    big = 2 * size
    img = np.zeros((big, big, 3), np.float32)
    yy, xx = np.mgrid[:big, :big]
    for _ in range(discs):
        r = rng.uniform(*radius) * 2
        cy, cx = rng.uniform(0, big, 2)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0.1, 0.9, 3)
    return quantize8(F.avg_pool2d(torch.from_numpy(img).permute(2, 0, 1)[None], 2)[0])


def cbm3d(noisy: torch.Tensor, sigma: float) -> torch.Tensor | None:
    try:
        import bm3d
    except ImportError:
        return None
    out = bm3d.bm3d_rgb(noisy.permute(1, 2, 0).numpy(), sigma)
    return torch.from_numpy(np.asarray(out, np.float32)).permute(2, 0, 1).clamp(0, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=4)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--sigma", default="15,25,50")
    ap.add_argument("--natural", type=Path, default=None, help="also a folder of natural colour images")
    ap.add_argument("--model", type=Path, default=None, help="a colour model.pt in place of color.pt (a training run's)")
    ap.add_argument("--no-cbm3d", action="store_true", help="leave CBM3D out (minutes per set)")
    args = ap.parse_args()
    colour, per_channel, default = Denoiser(args.model, per_channel=False), Denoiser(per_channel=True), Denoiser()
    layer = ClampedNormalNoise().train()
    sets = {"dead leaves": [(f"leaves{i}", dead_leaves(args.size, i)) for i in range(args.count)]}
    if args.natural:
        sets[args.natural.name] = [(p.name, quantize8(read_image(p).pixels)) for p in list_images(args.natural)[: args.count]]
    print(f"PSNR (dB), mean over {args.count} images: noisy / color.pt / grey.pt per channel / run's default (images split) / CBM3D (true sigma)")
    for name, images in sets.items():
        for sigma in (float(s) for s in args.sigma.split(",")):
            sums = {"noisy": 0.0, "color.pt": 0.0, "grey.pt per channel": 0.0, "default": 0.0, "CBM3D": 0.0}
            split = 0
            for key, clean in images:
                with torch.no_grad():
                    noisy = quantize8(layer(clean[None], std=sigma / 255, generator=seeded_generator(0, f"{key}\x00{sigma:g}"))[0])
                outputs = {"noisy": noisy, "color.pt": colour(noisy), "grey.pt per channel": per_channel(noisy), "default": default(noisy)}
                split += default.split(noisy)
                classical = None if args.no_cbm3d else cbm3d(noisy, sigma / 255)
                if classical is not None:
                    outputs["CBM3D"] = classical
                for method, out in outputs.items():
                    sums[method] += psnr(quantize8(out), clean)
            row = " / ".join(f"{v / len(images):.2f}" + (f" ({split})" if k == "default" else "") if v else "-" for k, v in sums.items())
            print(f"{name}, sigma {sigma:g}: {row}", flush=True)


if __name__ == "__main__":
    main()

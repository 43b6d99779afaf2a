"""Where `run` splits a colour image into channels: `channel_coupling` on photos and on images whose
channels are independent, under many noises.

`run` (with the shipped models) sends a colour image channel by channel through the grey model
when its coupling is under ``COUPLING_SPLIT`` (0.35), since `color.pt` blurs edges that only one
channel has. This prints, per set and noise, the lowest, median and highest coupling and how many images
would be split, so the line can be checked against every benchmark photo:

- photos: every image of each folder under ``--data`` that holds colour images (CBSD68, Kodak24),
  clean; under white noise as the standard protocol makes it (unclipped) at sigma 15, 25, 50 and
  as the clamped layer makes it at 75; under noise shared by the channels; camera noise at peaks
  30 and 5; JPEG at quality 20;
- independent channels: ``--count`` dead-leaves images (discs of random RGB colours, as in
  `independent_channels.py`) and as many "composites", three unrelated dead-leaves greys as R, G, B.

    python benchmarks/channel_coupling.py --data ../shared/data/test
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from independent_channels import dead_leaves  # noqa: E402

from denoisecli.formats import list_images  # noqa: E402
from denoisecli.image_io import read_image  # noqa: E402
from denoisecli.inference import COUPLING_SPLIT  # noqa: E402
from denoisecli.metrics import quantize8  # noqa: E402
from denoisecli.noise import CameraNoise, ClampedNormalNoise, JpegNoise, SharedNormalNoise, seeded_generator  # noqa: E402
from denoisecli.noise_estimate import channel_coupling  # noqa: E402


def _standard(sigma: float):
    return lambda x, g: x + torch.randn(x.shape, generator=g) * sigma / 255


NOISES = {
    "clean": lambda x, g: x,
    "sigma 15": _standard(15),
    "sigma 25": _standard(25),
    "sigma 50": _standard(50),
    "sigma 75, clamped": lambda x, g: quantize8(ClampedNormalNoise().train()(x[None], std=75 / 255, generator=g)[0]),
    "shared sigma 25": lambda x, g: quantize8(SharedNormalNoise().train()(x[None], std=25 / 255, generator=g)[0]),
    "camera peak 30": lambda x, g: quantize8(CameraNoise().train()(x[None], peak=30, std=5 / 255, quality=77.5, generator=g)[0]),
    "camera peak 5": lambda x, g: quantize8(CameraNoise().train()(x[None], peak=5, std=10 / 255, quality=60, generator=g)[0]),
    "jpeg 20": lambda x, g: quantize8(JpegNoise().train()(x[None], quality=20)[0]),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="a folder of benchmark folders (../shared/data/test)")
    ap.add_argument("--count", type=int, default=12)
    args = ap.parse_args()
    sets = {}
    for folder in sorted(p for p in args.data.iterdir() if p.is_dir()):
        images = [(p.name, quantize8(read_image(p).pixels)) for p in list_images(folder)]
        if images and images[0][1].shape[0] == 3:
            sets[folder.name] = images
    sets["dead leaves"] = [(f"leaves{i}", dead_leaves(256, i)) for i in range(args.count)]
    sets["composites"] = [(f"composite{i}", torch.stack([dead_leaves(256, 100 + 3 * i + c)[0] for c in range(3)]))
                          for i in range(args.count)]
    print(f"channel coupling; `run` splits an image under {COUPLING_SPLIT}")
    for name, images in sets.items():
        for noise, make in NOISES.items():
            values = torch.tensor([channel_coupling(make(im, seeded_generator(0, f"{key}\x00{noise}"))) for key, im in images])
            low = int(values.argmin())
            split = int((values < COUPLING_SPLIT).sum())
            high = int(values.argmax())
            print(f"{name}, {noise}: lowest {values[low]:.3f} ({images[low][0]}), median {values.median():.3f}, "
                  f"highest {values[high]:.3f} ({images[high][0]}), split {split} of {len(images)}", flush=True)


if __name__ == "__main__":
    main()

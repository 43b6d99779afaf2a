"""Reading the stabiliser's fit again below where the noise was clipped at white, measured on a folder of clean images.

Each image gets shot noise (peaks 5-100), shot and read noise (peaks 10-100) and camera noise
(peaks 30, 100), clipped and 8-bit as files hold it, and is denoised by the shipped grey model
through the variance-stabilising route, forced (as `--stabilise` does), with the fit read once on
the whole image and read again below clipping from a share of pixels at white; under Poisson noise
also with the true gain and offset, and as shipped, which reads whole photon counts from the
file where it holds them (``denoisecli.noise_estimate.count_step``: Poisson to peak 30-50 in 8-bit
files) and fits nothing there; and by the plain route. It prints each setting's mean gain over
the plain route, then, per share of pixels at white, what reading again changed: the evidence
for ``denoisecli.stabilise.CLIPPED_WHITE``, chosen so on training images:

    python benchmarks/clipped_fit.py ../shared/data/train/Train400 --count 120
"""

from __future__ import annotations

import argparse
import collections
import itertools
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from stabilise_rule import noisy  # noqa: E402

from denoisecli.device import keep_freed_memory  # noqa: E402
from denoisecli.formats import list_images  # noqa: E402
from denoisecli.image_io import read_image  # noqa: E402
from denoisecli.inference import Denoiser, value_range  # noqa: E402
from denoisecli.metrics import psnr, quantize8  # noqa: E402
from denoisecli.stabilise import CLIPPED_WHITE, MIN_NOISE, Stabiliser, stabiliser  # noqa: E402

SETTINGS = [("poisson", p) for p in (5, 10, 30, 100)] + [("poisson-gaussian", p) for p in (10, 30, 100)] + \
    [("camera", p) for p in (30, 100)]
FIRST_FIT, READ_AGAIN = 1.01, 0.005  # a share no image reaches (never read again), and the lowest share scored
BINS = (0.005, 0.01, 0.02, 0.05, 0.1, 1.01)


def forced(make) -> Denoiser:
    """A Denoiser that stabilises every input with the stabiliser ``make(image)`` gives."""
    d = Denoiser(stabilise=True)
    d.stabiliser = lambda image, sigma=None, stretch=None: make(image.clamp(0, 1))
    return d


def measure(folder: Path, count: int, first: int = 0) -> list[dict]:
    plain = Denoiser(stabilise=False)
    fits = {share: forced(lambda image, share=share: stabiliser(image, ratio=1.0, confirm=1.0, least=MIN_NOISE, growth=None,
                                                                  clipped_white=share))
            for share in (FIRST_FIT, READ_AGAIN)}
    true: dict[str, Stabiliser] = {}
    truth = forced(lambda image: true["stabiliser"])
    shipped = Denoiser(stabilise=True)
    rows = []
    for (noise, peak), path in itertools.product(SETTINGS, list_images(folder)[first : first + count]):
        clean = quantize8(read_image(path).pixels.float())
        clean = clean.mean(0, keepdim=True) if clean.shape[0] == 3 else clean
        x = noisy(clean, path.name, "clipped", noise, peak)  # the rule's benchmark's inputs, image for image
        lo, span = value_range(x)
        base = psnr(quantize8(plain(x)), clean)
        row = {"setting": (noise, peak), "white": float((x >= 1).float().mean()),
               "first": psnr(quantize8(fits[FIRST_FIT](x)), clean) - base, "again": psnr(quantize8(fits[READ_AGAIN](x)), clean) - base,
               "shipped": psnr(quantize8(shipped(x)), clean) - base}
        if noise == "poisson":  # variance x / peak in the file, so gain 1 / (peak span) and offset lo / span once stretched
            true["stabiliser"] = Stabiliser(1 / (peak * span), lo / span)
            row["truth"] = psnr(quantize8(truth(x)), clean) - base
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--count", type=int, default=120)
    ap.add_argument("--first", type=int, default=0, help="skip this many files (by name)")
    args = ap.parse_args()
    keep_freed_memory()
    torch.set_grad_enabled(False)
    rows = measure(args.folder, args.count, args.first)
    by = collections.defaultdict(list)
    for r in rows:  # reading again depends on the share at white alone, so the shipped threshold's figure is one of the two
        r["fit"] = r["again"] if r["white"] >= CLIPPED_WHITE else r["first"]
        by[r["setting"]].append(r)
    print(f"{len(rows)} inputs from {args.folder}; route forced, mean gain over the plain route (dB) [worst image]: "
          f"fit read once | read again from {CLIPPED_WHITE:.1%} at white (the fit's default) | as shipped (whole counts "
          "where found) | true gain and offset (Poisson)")
    for (noise, peak), rs in by.items():
        cells = [[r[key] for r in rs] for key in ("first", "fit", "shipped", "truth") if key in rs[0]]
        print(f"  {noise} {peak}: " + " | ".join(f"{statistics.mean(c):+.3f} [{min(c):+.2f}]" for c in cells))
    print("what reading again changed, by share of pixels at white (inputs, mean dB, worst, best):")
    for low, high in zip(BINS, BINS[1:]):
        d = [r["again"] - r["first"] for r in rows if low <= r["white"] < high]
        if d:
            print(f"  {low:.1%}-{min(high, 1):.1%}: {len(d)}, {statistics.mean(d):+.3f}, {min(d):+.2f}, {max(d):+.2f}")


if __name__ == "__main__":
    main()

"""Which stabiliser `grey.pt` does best with on whole photon counts, measured on a folder of clean images.

Each image gets Poisson noise at the given peaks, clipped and 8-bit as files hold it (the rule's
benchmark's inputs, image for image), and is denoised by the shipped grey model through the
variance-stabilising route, forced, with stabilisers around the true one (a factor on the true
gain, photons added to the true offset), and by the plain route. It prints each pair's mean gain
over the plain route and its worst image: the evidence for ``denoisecli.stabilise.COUNT_GAIN`` and
``COUNT_OFFSET``, chosen so on training images (weights/SHOT-NOISE.md, *Whole photon counts*):

    python benchmarks/count_stabiliser.py ../shared/data/train/Train400 --count 120 --peaks 3,5,7,10,15,30

and checked on the other 280 with the truth and the chosen pair alone:

    python benchmarks/count_stabiliser.py ../shared/data/train/Train400 --first 120 --count 280 --peaks 3,5,10,30,50 --pairs 1:0,0.9:0.5
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from clipped_fit import forced  # noqa: E402
from stabilise_rule import noisy  # noqa: E402

from denoisecli.device import keep_freed_memory  # noqa: E402
from denoisecli.formats import list_images  # noqa: E402
from denoisecli.image_io import read_image  # noqa: E402
from denoisecli.inference import Denoiser, value_range  # noqa: E402
from denoisecli.metrics import psnr, quantize8  # noqa: E402
from denoisecli.stabilise import Stabiliser  # noqa: E402

GRID = [f"{g}:{p}" for g, p in itertools.product((0.8, 0.85, 0.9, 1.0), (0.0, 0.25, 0.5, 0.75))]


def measure(folder: Path, count: int, first: int, peaks: list[float], pairs: list[tuple[float, float]]) -> dict:
    """{(peak, gain factor, photons added): [gain over the plain route per image]}."""
    current: dict[str, Stabiliser] = {}
    route, plain = forced(lambda image: current["stabiliser"]), Denoiser(stabilise=False)
    out: dict[tuple[float, float, float], list[float]] = {}
    for peak, path in itertools.product(peaks, list_images(folder)[first : first + count]):
        clean = quantize8(read_image(path).pixels.float())
        clean = clean.mean(0, keepdim=True) if clean.shape[0] == 3 else clean
        x = noisy(clean, path.name, "clipped", "poisson", peak)
        lo, span = value_range(x)
        base = psnr(quantize8(plain(x)), clean)
        gain = 1 / (peak * span)  # variance x / peak in the file, count 0 at its 0: in the stretched units
        for factor, photons in pairs:
            current["stabiliser"] = Stabiliser(factor * gain, lo / span + photons * gain)
            out.setdefault((peak, factor, photons), []).append(psnr(quantize8(route(x)), clean) - base)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--count", type=int, default=120)
    ap.add_argument("--first", type=int, default=0, help="skip this many files (by name)")
    ap.add_argument("--peaks", default="3,5,7,10,15,30")
    ap.add_argument("--pairs", default=",".join(GRID), help="gain factor:photons added, comma-separated")
    args = ap.parse_args()
    keep_freed_memory()
    torch.set_grad_enabled(False)
    peaks = [float(p) for p in args.peaks.split(",")]
    pairs = [(float(g), float(p)) for g, p in (pair.split(":") for pair in args.pairs.split(","))]
    out = measure(args.folder, args.count, args.first, peaks, pairs)
    print(f"Poisson noise on {args.count} images from {args.folder} (from file {args.first + 1}); route forced; "
          "mean gain over the plain route (dB) [worst image], per gain factor / photons added to the true offset")
    for peak in peaks:
        print(f"  peak {peak:g}: " + " | ".join(f"{g:g}/{p:g} {statistics.mean(v):+.2f} [{min(v):+.2f}]"
                                                for (pk, g, p), v in out.items() if pk == peak))


if __name__ == "__main__":
    main()

"""How `run` tells photon counts from a clean image of a few levels, measured on a folder of clean images.

Both sit on the multiples of one step and read as whole counts (``noise_estimate.count_step``);
only counts may skip the stabilising rule's tests (``stabilise.counts_look_like_noise``). Each
image gets Poisson noise at peaks 3-30 (clipped and 8-bit, the rule's benchmark's inputs) and, clean,
is posterised to 2-32 levels; for every one read as counts it records the two statistics the
decision reads (``noise_estimate.equal_count_excess``, and the estimated noise over what counts of
that step give at the image's mean) and prints their range and how many skip the tests: the
evidence for ``COUNT_EXCESS`` and ``COUNT_NOISE`` (weights/SHOT-NOISE.md, *Whole photon counts*):

    python benchmarks/count_guard.py ../shared/data/train/Train400 --count 400
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from stabilise_rule import noisy  # noqa: E402

from denoisecli.formats import list_images  # noqa: E402
from denoisecli.image_io import read_image  # noqa: E402
from denoisecli.inference import _stretched, value_range  # noqa: E402
from denoisecli.metrics import quantize8  # noqa: E402
from denoisecli.noise_estimate import count_step, equal_count_excess, unclamped_sigma  # noqa: E402
from denoisecli.stabilise import COUNT_EXCESS, COUNT_NOISE, counts_look_like_noise  # noqa: E402

PEAKS = (3, 5, 10, 30)
LEVELS = (2, 4, 8, 16, 32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--count", type=int, default=400)
    ap.add_argument("--first", type=int, default=0, help="skip this many files (by name)")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    rows: dict[str, list[tuple[float, float, bool] | None]] = {}
    for path in list_images(args.folder)[args.first : args.first + args.count]:
        clean = quantize8(read_image(path).pixels.float())
        clean = clean.mean(0, keepdim=True) if clean.shape[0] == 3 else clean
        cases = {f"Poisson, peak {p}": noisy(clean, path.name, "clipped", "poisson", p) for p in PEAKS}
        cases.update({f"clean, {n} levels": quantize8(torch.round(clean * n) / n) for n in LEVELS})
        for name, x in cases.items():
            stretch = value_range(x)
            inside = _stretched(x, *stretch).clamp(0, 1)
            step = count_step(inside, *stretch)
            if step is None:
                rows.setdefault(name, []).append(None)
                continue
            low, span = stretch
            excess = equal_count_excess(torch.round((inside.double() * span + low) / step))
            share = unclamped_sigma(inside) / math.sqrt(step / span * (float(inside.mean()) + low / span))
            rows.setdefault(name, []).append((excess, share, counts_look_like_noise(inside, step, stretch, None)))
    print(f"{args.count} images from {args.folder}; of those read as counts: equal-neighbour excess (threshold "
          f"{COUNT_EXCESS}), noise over the counts' (threshold {COUNT_NOISE}), how many skip the tests")
    for name, v in rows.items():
        found = [r for r in v if r is not None]
        if not found:
            print(f"  {name}: none read as counts")
            continue
        low_excess = [s for e, s, _ in found if e < COUNT_EXCESS]
        print(f"  {name}: {len(found)} of {len(v)} read as counts; excess {min(e for e, _, _ in found):.3f}-{max(e for e, _, _ in found):.3f}, "
              f"noise share {min(s for _, s, _ in found):.2f}-{max(s for _, s, _ in found):.2f}; under the excess threshold "
              f"{len(low_excess)}" + (f" (noise share at most {max(low_excess):.2f})" if low_excess else "")
              + f"; skip the tests {sum(k for _, _, k in found)}")


if __name__ == "__main__":
    main()

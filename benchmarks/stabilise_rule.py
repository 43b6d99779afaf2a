"""How `run`'s default decides when to stabilise grey images, measured on a folder of clean images.

Each image gets white noise (standard protocol, sigma 15-75; clipped and 8-bit, sigma 5-75), shot
noise (peaks 5-100), shot and read noise (peaks 5-100) and camera noise (peaks 30, 100), and is
denoised by the shipped grey model with the route forced (`--stabilise`) and without it. Per image
it records the statistics the rule reads (``signal_dependence``'s ratio, the
``bright_to_dark_noise`` confirmation, ``growth_beyond_clamping``, the share of pixels at white,
the fitted noise at mean brightness, whether any value lies outside [0, 1], whether it holds whole
photon counts that look like noise) and what forcing gained; then it scores rules: the mean gain
over the shot-noise settings, the worst mean over the white-noise settings, and the worst single
image. The thresholds in ``denoisecli.stabilise`` were chosen so on training images, never on the
benchmark sets:

    python benchmarks/stabilise_rule.py ../shared/data/train/Train400 --count 120

and checked on the other 280, which played no part in choosing them:

    python benchmarks/stabilise_rule.py ../shared/data/train/Train400 --first 120 --count 280
"""

from __future__ import annotations

import argparse
import collections
import itertools
from pathlib import Path

import torch

from denoisecli.device import keep_freed_memory
from denoisecli.formats import list_images
from denoisecli.image_io import read_image
from denoisecli.inference import Denoiser, _stretched, value_range
from denoisecli.metrics import psnr, quantize8
from denoisecli.noise import NOISE_MODELS, seeded_generator
from denoisecli.noise_estimate import bright_to_dark_noise, count_step, growth_beyond_clamping, signal_dependence, unclamped_sigma
from denoisecli.stabilise import (CONFIRM_RATIO, MIN_NOISE, STABILISE_GROWTH, STABILISE_NOISE, STABILISE_RATIO, WHITE_SHARE,
                                  confirmation_asked, counts_look_like_noise, stabiliser)

SETTINGS = [("standard", "gaussian", s) for s in (15, 25, 50, 75)] + \
    [("clipped", "gaussian", s) for s in (5, 15, 25, 50, 75)] + \
    [("clipped", "poisson", p) for p in (5, 10, 30, 100)] + \
    [("clipped", "poisson-gaussian", p) for p in (5, 10, 30, 100)] + \
    [("clipped", "camera", p) for p in (30, 100)]
LOSS = 0.5


def noisy(clean: torch.Tensor, name: str, protocol: str, noise: str, level: float) -> torch.Tensor:
    g = seeded_generator(0, f"{name}\x00{noise}{level}")
    if protocol == "standard":
        return clean + torch.randn(clean.shape, generator=g) * level / 255
    key, value = ("std", level / 255) if noise == "gaussian" else ("peak", level)
    layer = NOISE_MODELS[noise]().train()
    return quantize8(layer(clean[None], generator=g, **{key: torch.tensor([value], dtype=torch.float64)})[0])


def measure(folder: Path, count: int, first: int = 0) -> list[dict]:
    forced, plain = Denoiser(stabilise=True), Denoiser(stabilise=False)
    rows = []
    files = list_images(folder)[first : first + count]
    for (protocol, noise, level), path in itertools.product(SETTINGS, files):
        clean = quantize8(read_image(path).pixels.float())
        clean = clean.mean(0, keepdim=True) if clean.shape[0] == 3 else clean
        x = noisy(clean, path.name, protocol, noise, level)
        stretch = value_range(x)
        inside = _stretched(x, *stretch).clamp(0, 1)
        fit = signal_dependence(inside)
        st = stabiliser(inside, ratio=1.0, confirm=1.0, least=MIN_NOISE, growth=None, stretch=stretch)  # as `--stabilise`
        step = count_step(inside, *stretch)
        base = psnr(quantize8(plain(x)), clean)
        rows.append({
            "setting": (protocol, noise, level), "ratio": fit[1] if fit else 1.0, "confirm": bright_to_dark_noise(inside),
            "growth": growth_beyond_clamping(inside, unclamped_sigma(inside)), "white": float((inside >= 1).float().mean()),
            "noise": st.noise_std(float(inside.mean())) if st else 0.0, "outside": bool(((x < 0) | (x > 1)).any()),
            "forced": st is not None, "gain": psnr(quantize8(forced(x)), clean) - base if st else 0.0,
            "counted": step is not None and counts_look_like_noise(inside, step, stretch, None),
        })
    return rows


def score(rows: list[dict], ratio: float, confirm: float, least: float, growth: float | None,
          white: float = WHITE_SHARE) -> tuple[float, float, float, float, int]:
    """(worst white-noise setting's mean gain, shot-noise settings' mean gain, share of shot-noise
    images stabilised, worst image's gain, inputs that lose more than ``LOSS`` dB) for a rule as
    ``denoisecli.stabilise.stabiliser`` applies it: whole counts that look like noise, the first
    test (its confirmation as ``confirmation_asked`` gives it) or, with ``growth``, the second."""
    by = collections.defaultdict(list)
    for r in rows:
        first = r["ratio"] >= ratio and r["confirm"] >= confirmation_asked(confirm, r["white"])
        second = growth is not None and r["white"] < white and r["growth"] >= growth
        applies = not r["outside"] and (r["counted"] or first or second) and r["noise"] >= least and r["forced"]
        by[r["setting"]].append((r["gain"] if applies else 0.0, applies))
    white_means = [sum(g for g, _ in v) / len(v) for k, v in by.items() if k[1] == "gaussian"]
    shot = [v for k, v in by.items() if k[1] != "gaussian"]
    return (min(white_means), sum(sum(g for g, _ in v) / len(v) for v in shot) / len(shot),
            sum(a for v in shot for _, a in v) / sum(map(len, shot)), min(g for v in by.values() for g, _ in v),
            sum(g < -LOSS for v in by.values() for g, _ in v))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--count", type=int, default=120)
    ap.add_argument("--first", type=int, default=0, help="skip this many files (by name): 120 checks a rule on images it was not chosen on")
    ap.add_argument("--white-loss", type=float, default=0.025, help="the most a white-noise setting's mean may lose (dB)")
    args = ap.parse_args()
    keep_freed_memory()
    torch.set_grad_enabled(False)
    rows = measure(args.folder, args.count, args.first)
    print(f"{len(rows)} denoised pairs from {args.folder} (files {args.first + 1}-{args.first + len(rows) // len(SETTINGS)}); rule: ratio, confirm, noise at mean (of 255), growth -> "
          f"worst white-noise setting (dB), shot-noise gain (dB), shot-noise images stabilised, worst image (dB), inputs losing over {LOSS} dB")
    print("  every input in [0, 1] whose noise grows at all: {:+.3f}, {:+.3f}, {:.2f}, {:+.2f}, {}".format(*score(rows, 1.0, 1.0, 0.0, None)))
    oracle = [dict(r, forced=r["forced"] and r["gain"] > 0) for r in rows]
    print("  where it gains (an oracle): {:+.3f}, {:+.3f}, {:.2f}, {:+.2f}, {}".format(*score(oracle, 1.0, 1.0, 0.0, None)))
    grid = [(r, c, n, g) for r in (1.0, 1.2, 1.4, 1.6, 2.0) for c in (1.0, 1.2, 1.4, 2.0, 2.5) for n in (2, 6, 10)
            for g in (None, 0.25, 0.35, 0.5)]
    default = (STABILISE_RATIO, CONFIRM_RATIO, STABILISE_NOISE, STABILISE_GROWTH)
    kept = [t for t in grid if score(rows, t[0], t[1], t[2] / 255, t[3])[0] >= -args.white_loss]
    print(f"  the 25 that gain most on shot noise of the {len(kept)} of {len(grid)} whose white-noise settings lose at most {args.white_loss} dB:")
    for r, c, n, g in sorted(kept, key=lambda t: -score(rows, t[0], t[1], t[2] / 255, t[3])[1])[:25]:
        mark = "  <- the default" if (r, c, n / 255, g) == default else ""
        worst, gain, share, image, losers = score(rows, r, c, n / 255, g)
        print(f"  {r:.1f}, {c:.1f}, {n:2d}, {g if g is not None else '-'}: {worst:+.3f}, {gain:+.3f}, {share:.2f}, {image:+.2f}, {losers}{mark}")
    line = "{:+.3f}, {:+.3f}, {:.2f}, {:+.2f}, {}"
    print(f"  the default: {line}; with the confirmation of 1.2 it had until the thirty-fourth session: {line}; without its second test: {line}".format(
        *score(rows, *default), *score(rows, default[0], 1.2, *default[2:]), *score(rows, *default[:3], None)))

if __name__ == "__main__":
    main()

"""Noisy copies of image files, made by the same noise layers that training uses."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from denoisecli.atomic import out_of_space, remove_stale_partials, stopped_for_space
from denoisecli.device import provenance
from denoisecli.errors import DenoiseError
from denoisecli.files import BatchReport, FileResult, plan_copies
from denoisecli.formats import format_of, unread_files
from denoisecli.image_io import DEFAULT_MAX_PIXELS, read_image, write_image
from denoisecli.noise import NOISE_MODELS, NoiseSampler, Range, fixed_levels, is_normal, seeded_generator

def add_noise(
    src: Path,
    dst: Path,
    noise: str = "gaussian",
    levels: dict[str, Range] | None = None,
    mean: float = 0.0,
    scale: float = 1.0,
    seed: int = 0,
    overwrite: bool = False,
    on_file: Callable[[FileResult], None] | None = None,
    on_plan: Callable[[int], None] | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> BatchReport:
    """Write a lossless noisy copy of each image, mirroring the input tree: PNG, or TIFF for a
    TIFF (the one that holds float data, and keeps its compression and resolution; a TIFF stack
    stays the same stack, each plane a sample of its own, drawing its own level from a range), and
    PGM/PPM for those (lossless too, and a dataset of them stays one).

    Each file's noise (and its level, when a range is given) comes from a generator keyed
    by (seed, path relative to the input), so a file gets the same noise whatever order
    or subset it is processed in. ``levels`` default to the layer's own defaults. ``on_plan``
    hears the number of files once they are found, for a progress bar. ``max_pixels`` refuses
    larger images (a stack: all its planes, which are held at once; `run` bounds a stack's planes each).
    """
    if noise not in NOISE_MODELS:
        raise DenoiseError(f"--noise {noise}: unknown (choose {', '.join(NOISE_MODELS)})")
    init = {"mean": mean, "scale": scale} if is_normal(noise) else {}
    sampler = NoiseSampler(noise, {**fixed_levels(noise), **(levels or {})}, **init)
    pairs = plan_copies(src, dst)
    remove_stale_partials([out for _, out in pairs])
    if on_plan:
        on_plan(len(pairs))
    root = Path(src) if Path(src).is_dir() else Path(src).parent
    results: list[FileResult] = []
    stopped = ""
    for path, out in pairs:
        if stopped:
            result = FileResult(path, out, "skipped", "not written: the disk is full")
        elif out.exists() and not overwrite:
            result = FileResult(path, out, "skipped", "exists (use --overwrite)")
        else:
            try:
                img = read_image(path, max_pixels, stacks=True)
                key = path.relative_to(root).as_posix()
                stack = img.pixels.ndim == 4
                with torch.no_grad():
                    noisy, drawn = sampler.drawn(img.pixels if stack else img.pixels[None], seeded_generator(seed, "level:" + key),
                                                 seeded_generator(seed, key))
                img.pixels = noisy if stack else noisy[0]
                img.format = format_of(out) or "PNG"  # lossless: PNG, or the same for TIFF, PGM and PPM (``plan_copies``)
                write_image(img, out)
                result = FileResult(path, out, "written", megapixels=img.megapixels, info=_levels_record(sampler, drawn, stack))
            except DenoiseError as exc:
                result = FileResult(path, out, "failed", str(exc))
                if out_of_space(exc):
                    stopped = stopped_for_space(out.parent, sum(r.status == "written" for r in results))
        results.append(result)
        if on_file:
            on_file(result)
    meta = {**provenance(torch.device("cpu")), "noise": noise, "ranges": {k: list(v) for k, v in sampler.ranges.items()}, "seed": seed, **init}
    return BatchReport(results, unread_files(Path(src), exclude=Path(dst)), meta, stopped)


def _levels_record(sampler: NoiseSampler, drawn: dict[str, torch.Tensor], stack: bool) -> dict[str, Any]:
    """The levels a file's noise was drawn with, by name (a stack's per plane), and its sigma on the
    0-255 scale where the noise has one: the truth a noise estimate or a level-aware model is tested on."""
    record: dict[str, Any] = {"levels": {k: v.tolist() if stack else float(v[0]) for k, v in drawn.items()}}
    if hasattr(sampler.layer, "sigma"):
        sigma = (sampler.layer.sigma(**drawn) * 255).tolist()
        record["sigma"] = sigma if stack else sigma[0]
    return record

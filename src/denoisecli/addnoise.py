"""Noisy copies of image files, made by the same noise layer that training uses."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from denoisecli.errors import DenoiseError
from denoisecli.files import BatchReport, FileResult, plan
from denoisecli.image_io import read_image, write_image
from denoisecli.noise import ClampedNormalNoise, seeded_generator


def add_noise(
    src: Path,
    dst: Path,
    std: float = 0.2,
    mean: float = 0.0,
    scale: float = 1.0,
    seed: int = 0,
    overwrite: bool = False,
    on_file: Callable[[FileResult], None] | None = None,
) -> BatchReport:
    """Write a lossless PNG noisy copy of each image, mirroring the input tree.

    Each file's noise comes from a generator keyed by (seed, its path relative to the
    input), so a file gets the same noise whatever order or subset it is run in.
    """
    if std < 0:
        raise DenoiseError(f"noise std {std} must not be negative")
    pairs = plan(Path(src), Path(dst), suffix=".png")
    root = Path(src) if Path(src).is_dir() else Path(src).parent
    layer = ClampedNormalNoise(scale=scale, mean=mean, std=std).train()
    results = []
    for path, out in pairs:
        if out.exists() and not overwrite:
            result = FileResult(path, out, "skipped", "exists (use --overwrite)")
        else:
            try:
                img = read_image(path)
                key = path.relative_to(root).as_posix()
                with torch.no_grad():
                    img.pixels = layer(img.pixels[None], generator=seeded_generator(seed, key))[0]
                img.format = "PNG"
                write_image(img, out)
                result = FileResult(path, out, "written", megapixels=img.megapixels)
            except DenoiseError as exc:
                result = FileResult(path, out, "failed", str(exc))
        results.append(result)
        if on_file:
            on_file(result)
    return BatchReport(results)

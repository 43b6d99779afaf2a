"""A side-by-side comparison sheet of crops, because people judge denoising by eye."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from denoisecli.atomic import atomic_write
from denoisecli.evaluation import EvalReport, Sample

LABEL = 16


def _crop(t, size: int) -> Image.Image:
    c, h, w = t.shape
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    arr = (t[:, top : top + size, left : left + size].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    return Image.fromarray(np.repeat(arr, 3, axis=2) if c == 1 else arr)


def make_sheet(samples: list[Sample], report: EvalReport, out: Path, crop: int = 160) -> None:
    """One row per image: clean, then each method's output, each labelled with its whole-image PSNR."""
    if not samples:
        return
    methods = list(samples[0].outputs)
    cols = ["clean", *methods]
    sheet = Image.new("RGB", (len(cols) * (crop + 4), len(samples) * (crop + LABEL + 4)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, s in enumerate(samples):
        y = r * (crop + LABEL + 4)
        for c, name in enumerate(cols):
            x = c * (crop + 4)
            tile = _crop(s.clean if name == "clean" else s.outputs[name], crop)
            sheet.paste(tile, (x, y + LABEL))
            text = f"{s.image} clean" if name == "clean" else f"{name} {_score(report, s, name):.2f} dB"
            draw.text((x + 2, y + 2), text, fill="black")
    atomic_write(Path(out), lambda f: sheet.save(f, format="PNG"))


def _score(report: EvalReport, s: Sample, method: str) -> float:
    for sc in report.scores:
        if sc.method == method and sc.level == s.level and sc.image.endswith(s.image):
            return sc.psnr
    return float("nan")

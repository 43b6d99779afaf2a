"""A small PNG plot of the training curves, drawn with Pillow so no plotting library is needed."""

from __future__ import annotations

import json
import math
from pathlib import Path

from PIL import Image, ImageDraw

from denoisecli.atomic import atomic_write

W, H, PAD = 420, 300, 44


def _panel(draw: ImageDraw.ImageDraw, x0: int, title: str, points: list[tuple[float, float]], color: str, log: bool) -> None:
    draw.rectangle([x0 + PAD, PAD, x0 + W - 12, H - PAD], outline="black")
    draw.text((x0 + PAD, 14), title, fill="black")
    if not points:
        draw.text((x0 + PAD + 10, H // 2), "no data yet", fill="gray")
        return
    xs = [p[0] for p in points]
    ys = [math.log10(max(p[1], 1e-12)) if log else p[1] for p in points]
    xmin, xmax = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    ymin, ymax = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1

    def to_px(x: float, y: float) -> tuple[float, float]:
        return (x0 + PAD + (x - xmin) / (xmax - xmin) * (W - PAD - 12), H - PAD - (y - ymin) / (ymax - ymin) * (H - 2 * PAD))

    draw.line([to_px(x, y) for x, y in zip(xs, ys)] if len(xs) > 1 else [to_px(xs[0], ys[0])] * 2, fill=color, width=2)
    fmt = (lambda v: f"{10 ** v:.3g}") if log else (lambda v: f"{v:.2f}")
    draw.text((x0 + 2, PAD - 6), fmt(ymax), fill="black")
    draw.text((x0 + 2, H - PAD - 6), fmt(ymin), fill="black")
    draw.text((x0 + PAD, H - PAD + 6), f"step {xmin:g}", fill="black")
    draw.text((x0 + W - 90, H - PAD + 6), f"{xmax:g}", fill="black")


def plot_curves(metrics: Path, out: Path) -> None:
    """Training L1 loss (log scale) and validation PSNR against step, from ``metrics.jsonl``."""
    train, val = [], []
    for line in Path(metrics).read_text().splitlines():
        rec = json.loads(line)
        if rec.get("event") == "train":
            train.append((rec["step"], rec["l1"]))
        elif rec.get("event") == "val" and "val_psnr" in rec:
            val.append((rec["step"], rec["val_psnr"]))
    img = Image.new("RGB", (2 * W, H), "white")
    draw = ImageDraw.Draw(img)
    _panel(draw, 0, "training L1 loss (log)", train, "#1f77b4", log=True)
    _panel(draw, W, "validation PSNR (dB)", val, "#d62728", log=False)
    atomic_write(out, lambda f: img.save(f, format="PNG"))

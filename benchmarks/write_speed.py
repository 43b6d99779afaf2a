"""How fast `run` writes lossless outputs, and how big they are: the encoder settings
write_image uses (image_io.PNG_STRATEGY, WEBP_LOSSLESS_EFFORT) against the libraries' defaults;
with pillow-heif installed, HEIC at quality 95 too (image_io.HEIF_PRESET against libheif's
default preset), and AVIF at quality 95 (image_io.AVIF_SPEED against Pillow's default speed 6),
with the PSNR of what they decode to, as both are lossy.

The images are what `run` writes: our colour model's outputs for a set's images with Gaussian
noise (seed 0), plus three synthetic graphics (flat background with discs, a checkerboard, a
repeated glyph) where run-length coding is at its worst. Each encode runs `--repeats` times;
the median is reported in ms per megapixel, with the size in MB per megapixel.

    python benchmarks/write_speed.py --data ../shared/data/test/Kodak24 --count 8
"""

from __future__ import annotations

import argparse
import io
import platform
import statistics
import time
from datetime import date
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from denoisecli.formats import list_images
from denoisecli.image_io import AVIF_SPEED, HEIF_PRESET, PNG_STRATEGY, WEBP_LOSSLESS_EFFORT, _heif, _pixels_as, read_image, to_pil
from denoisecli.errors import DenoiseError
from denoisecli.inference import Denoiser


def _pillow(fmt: str, **kwargs: Any) -> Callable[[Any], int]:
    def encode(item: Any) -> int:
        buf = io.BytesIO()
        item[0].save(buf, format=fmt, **kwargs)
        return buf.tell()
    return encode


def _libpng16(**kwargs: Any) -> Callable[[Any], int]:
    import imagecodecs

    return lambda item: len(imagecodecs.png_encode(item[1], **kwargs))


SETTINGS: dict[str, Callable[[Any], int]] = {
    "PNG 8-bit, zlib level 6 (Pillow's default)": _pillow("PNG"),
    "PNG 8-bit, zlib level 1": _pillow("PNG", compress_level=1),
    "PNG 8-bit, run-length (ours)": _pillow("PNG", compress_type=PNG_STRATEGY),
    "PNG 16-bit, libpng's default": _libpng16(),
    "PNG 16-bit, run-length (ours)": _libpng16(strategy=PNG_STRATEGY),
    "WebP lossless, effort 100": _pillow("WEBP", lossless=True, quality=100, exact=True),
    f"WebP lossless, effort {WEBP_LOSSLESS_EFFORT} (ours)": _pillow("WEBP", lossless=True, quality=WEBP_LOSSLESS_EFFORT, exact=True),
}


def denoised(folder: Path, count: int, sigma: float) -> list[tuple[Image.Image, np.ndarray]]:
    """Our outputs for the first ``count`` images of ``folder``: as a PIL image and as 16-bit pixels."""
    denoiser = Denoiser()
    gen = torch.Generator().manual_seed(0)
    out = []
    for path in list_images(folder)[:count]:
        img = read_image(path)
        noisy = (img.pixels + torch.randn(img.pixels.shape, generator=gen) * sigma / 255).clamp(0, 1)
        img.pixels = denoiser(noisy)
        out.append((to_pil(img), _pixels_as(img, 16)))
    return out


def graphics() -> list[tuple[Image.Image, np.ndarray]]:
    """Synthetic 512x512 colour graphics with long repeats: run-length coding's worst case."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:512, :512]
    discs = np.full((512, 512), 20, np.uint8)
    for _ in range(30):
        cy, cx, r = *rng.integers(0, 512, 2), rng.integers(5, 30)
        discs[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.integers(100, 255)
    checker = ((xx // 8 + yy // 8) % 2 * 200 + 30).astype(np.uint8)
    glyphs = np.full((512, 512), 255, np.uint8)
    glyph = rng.integers(0, 2, (12, 7)).astype(bool)
    for r in range(0, 500, 16):
        for c in range(0, 500, 9):
            glyphs[r : r + 12, c : c + 7][glyph] = 0
    out = []
    for plane in (discs, checker, glyphs):
        rgb = np.stack([plane, np.roll(plane, 3, 1), 255 - plane], -1)
        out.append((Image.fromarray(rgb), rgb.astype(np.uint16) * 257))
    return out


def heic_available() -> bool:
    try:
        _heif(Path("x.heic"))
    except DenoiseError:
        return False
    return True


HEIC_SETTINGS = [("HEIC q95, libheif's default preset", {"format": "HEIF", "chroma": 420}),
                 (f"HEIC q95, {HEIF_PRESET} (ours)", {"format": "HEIF", "chroma": 420, "enc_params": {"preset": HEIF_PRESET}}),
                 ("HEIC q95, ultrafast", {"format": "HEIF", "chroma": 420, "enc_params": {"preset": "ultrafast"}})]
AVIF_SETTINGS = [(f"AVIF q95, speed {s}" + (" (ours)" if s == AVIF_SPEED else " (Pillow's default)" if s == 6 else ""),
                  {"format": "AVIF", "subsampling": "4:2:0", "speed": s}) for s in sorted({4, 6, AVIF_SPEED, 10})]


def lossy(items: list[tuple[Image.Image, np.ndarray]], repeats: int, settings: list[tuple[str, dict[str, Any]]]
          ) -> list[tuple[str, float, float, float]]:
    """(setting, ms per megapixel, MB per megapixel, PSNR in dB) of each Pillow save setting at quality 95,
    4:2:0 as phones and the web write it."""
    mp = sum(im.size[0] * im.size[1] for im, _ in items) / 1e6
    rows = []
    for name, params in settings:
        times, size, err, n = [], 0, 0.0, 0
        for _ in range(repeats):
            start, blobs = time.perf_counter(), []
            for im, _ in items:
                buf = io.BytesIO()
                im.save(buf, quality=95, **params)
                blobs.append(buf)
            times.append(time.perf_counter() - start)
        for (im, _), buf in zip(items, blobs):
            size += buf.tell()
            buf.seek(0)
            diff = np.asarray(Image.open(buf).convert(im.mode), np.float64) - np.asarray(im, np.float64)
            err, n = err + float((diff**2).sum()), n + diff.size
        rows.append((name, statistics.median(times) / mp * 1e3, size / mp / 1e6, 10 * np.log10(255**2 / (err / n))))
    return rows


def measure(items: list[tuple[Image.Image, np.ndarray]], repeats: int) -> list[tuple[str, float, float]]:
    """(setting, ms per megapixel, MB per megapixel) for each of SETTINGS on ``items``."""
    mp = sum(im.size[0] * im.size[1] for im, _ in items) / 1e6
    rows = []
    for name, encode in SETTINGS.items():
        times, size = [], 0
        for _ in range(repeats):
            start = time.perf_counter()
            size = sum(encode(item) for item in items)
            times.append(time.perf_counter() - start)
        rows.append((name, statistics.median(times) / mp * 1e3, size / mp / 1e6))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a folder of clean images")
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--sigma", type=float, default=25.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(f"{date.today().isoformat()}, {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads; "
          f"encoding runs on one thread")
    photos = denoised(args.data, args.count, args.sigma)
    for title, items in ((f"{args.data.name}, {args.count} images denoised at sigma {args.sigma:g}", photos),
                         ("synthetic graphics (3 images, 512x512)", graphics())):
        print(f"\n{title}\n| setting | ms/MP | MB/MP |\n| --- | --- | --- |")
        for name, ms, mb in measure(items, args.repeats):
            print(f"| {name} | {ms:.0f} | {mb:.3f} |")
        if items is not photos:
            continue  # HEIC and AVIF are for photos; 4:2:0 chroma wrecks the graphics' 1-px colour edges
        print("\n| setting (x265 and libavif run their own threads) | ms/MP | MB/MP | PSNR dB |\n| --- | --- | --- | --- |")
        for name, ms, mb, db in lossy(items, args.repeats, (HEIC_SETTINGS if heic_available() else []) + AVIF_SETTINGS):
            print(f"| {name} | {ms:.0f} | {mb:.3f} | {db:.2f} |")


if __name__ == "__main__":
    main()

"""Random files through `denoise run`, as a device or an editor might write them, each read back:
TIFFs of 1-2 images (series) in grey, RGB, RGBA, MINISWHITE, ImageJ, grey channels as samples or
float with NaN, tiled or not, compressed or not; and PNG, JPEG, WebP, HEIC, AVIF, BMP and PPM in
grey, RGB, RGBA, LA or palette, with EXIF orientation and ICC, written as their own format or
another. A file counts as bad where `run` fails it, or its output loses a series, a shape, a dtype,
NaN, alpha its format holds, or the way up it is shown. The shipped models denoise each.

    python benchmarks/io_sweep.py --count 100 --seed 1

On 2026-11-29 it found two faults in multi-image TIFFs (a stack's same-size overview taken for a
preview; two single images of one shape merged on reading) and one in WebP (its EXIF went into a
JPEG where no reader finds it), all fixed: seeds 1 and 7, 120 files each, 0 bad.
"""

from __future__ import annotations

import argparse
import logging
import random
import tempfile
import traceback
import warnings
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, ImageCms, ImageOps

from denoisecli.inference import RunOptions, denoise_files

EXT = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "HEIF": "heic", "AVIF": "avif", "BMP": "bmp", "TIFF": "tif", "PPM": "ppm"}
HOLDS_ALPHA = {"PNG", "WEBP", "HEIF", "AVIF", "TIFF"}


def tiff_case(rng: random.Random, g: np.random.Generator, path: Path) -> str:
    """A random TIFF at ``path``; returns its kind."""
    kind = rng.choice(["grey", "rgb", "rgba", "white", "imagej", "samples", "float_nan"])
    dtype = np.float32 if kind == "float_nan" else rng.choice([np.uint8, np.uint16])
    layout: dict = {}
    if rng.random() < 0.3 and kind != "imagej":
        layout["tile"] = (32, 32)
    if rng.random() < 0.5:
        layout["compression"] = rng.choice(["zlib", "lzw"])
    with tifffile.TiffWriter(path, imagej=kind == "imagej") as tw:
        for _ in range(1 if kind == "imagej" else rng.choice([1, 1, 2])):
            planes, h, w = rng.choice([1, 5]), rng.choice([40, 57]), rng.choice([48, 61])
            lead = (planes,) if planes > 1 else ()
            extra: dict = {}
            if kind == "samples":
                arr, photometric, axes = g.random((*lead, 2, h, w)), "minisblack", "Z" * len(lead) + "CYX"
                extra = {"planarconfig": "separate", "extrasamples": ["unspecified"]}
            elif kind in ("rgb", "rgba"):
                lead = () if kind == "rgba" else lead
                arr, photometric, axes = g.random((*lead, h, w, 4 if kind == "rgba" else 3)), "rgb", "Z" * len(lead) + "YXS"
                extra = {"extrasamples": ["unassalpha"]} if kind == "rgba" else {}
            else:
                arr, photometric, axes = g.random((*lead, h, w)), "miniswhite" if kind == "white" else "minisblack", "Z" * len(lead) + "YX"
            arr = (arr * 200).astype(dtype)
            if kind == "rgba":
                arr[: h // 4, :, 3] = 0
            if kind == "float_nan":
                arr[..., :5, :5] = np.nan
            tw.write(arr, photometric=photometric, metadata={"axes": axes}, **layout, **extra)
    return kind


def tiff_bad(src: Path, out: Path) -> str:
    with tifffile.TiffFile(src) as a, tifffile.TiffFile(out) as b:
        want, got = [(s.shape, s.dtype) for s in a.series], [(s.shape, s.dtype) for s in b.series]
        if want != got:
            return f"series {got} against {want}"
        for sa, sb in zip(a.series, b.series):
            if sa.dtype.kind == "f" and not np.array_equal(np.isnan(sa.asarray()), np.isnan(sb.asarray())):
                return "NaN moved"
    return ""


def other_case(rng: random.Random, g: np.random.Generator, folder: Path, icc: bytes) -> tuple[Path, str | None] | None:
    """A random non-TIFF image in ``folder`` and the format to write it as (None: its own)."""
    fmt = rng.choice(["PNG", "JPEG", "WEBP", "HEIF", "AVIF", "BMP", "PPM"])
    mode = rng.choice(["RGB", "L", "RGBA", "LA", "P"])
    mode = "RGB" if fmt in ("JPEG", "PPM") and mode in ("RGBA", "LA", "P") else "RGBA" if fmt in ("HEIF", "AVIF") and mode in ("LA", "P") else mode
    mode = "L" if fmt == "BMP" and mode == "LA" else mode
    h, w = rng.choice([37, 64, 101]), rng.choice([31, 80, 129])
    im = Image.fromarray(np.clip(np.linspace(0, 255, w)[None, :, None] + g.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8))
    if mode in ("L", "LA"):
        im = im.convert("L")
    if mode in ("RGBA", "LA"):
        alpha = np.full((h, w), 255, np.uint8)
        alpha[: h // 3] = 0
        im = Image.fromarray(np.dstack([np.asarray(im), alpha]), mode)
    im = im.convert("P") if mode == "P" else im
    kw: dict = {"quality": 90} if fmt in ("JPEG", "WEBP", "HEIF", "AVIF") else {}
    if fmt not in ("BMP", "PPM") and rng.random() < 0.6:
        exif = Image.Exif()
        exif[274] = rng.choice([1, 3, 6, 8])
        kw["exif"] = exif.tobytes()
    if fmt not in ("BMP", "PPM") and im.mode in ("RGB", "RGBA") and rng.random() < 0.5:
        kw["icc_profile"] = icc
    src = folder / f"x.{EXT[fmt]}"
    try:
        im.save(src, format=fmt, **kw)
    except Exception:  # a combination this Pillow does not write
        return None
    return src, rng.choice([None, None, "png", "jpeg", "tiff", "webp", "bmp", "heic", "avif"])


def _shown(path: Path) -> tuple[int, int]:
    """(width, height) as a viewer shows the file, its EXIF or TIFF orientation applied. A TIFF's is
    read with tifffile: Pillow turns some TIFFs as it opens them, and others only as it loads them."""
    with open(path, "rb") as f:
        tiff = f.read(4) in (b"II*\x00", b"MM\x00*")
    if not tiff:
        return ImageOps.exif_transpose(Image.open(path)).size
    with tifffile.TiffFile(path) as tf:
        page = tf.pages[0]
        turned = 274 in page.tags and int(page.tags[274].value) in (5, 6, 7, 8)
        return (page.imagelength, page.imagewidth) if turned else (page.imagewidth, page.imagelength)


def other_bad(src: Path, out: Path) -> str:
    a, b = Image.open(src), Image.open(out)
    b.load()
    if _shown(out) != _shown(src):
        return f"shown {_shown(out)} against {_shown(src)}"
    if ("A" in a.mode or "transparency" in a.info) and b.format in HOLDS_ALPHA and "A" not in b.mode:
        return f"alpha lost ({b.mode})"
    return ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=100, help="files of each family (TIFF, the others)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    logging.getLogger("tifffile").setLevel(logging.ERROR)
    rng = random.Random(args.seed)
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    import pillow_heif

    pillow_heif.register_heif_opener()
    bad = runs = 0
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(2 * args.count):
            folder = Path(tmp) / str(i)
            folder.mkdir()
            g = np.random.default_rng(args.seed * 100_000 + i)
            try:
                if i < args.count:
                    what, to = tiff_case(rng, g, folder / "x.tif"), None
                    src = folder / "x.tif"
                else:
                    case = other_case(rng, g, folder, icc)
                    if case is None:
                        continue
                    src, to = case
                    what = src.suffix
            except Exception:  # a combination this tifffile does not write
                continue
            runs += 1
            try:
                result = denoise_files(src, folder / "out", RunOptions(format=to)).results[0]
                problem = (result.reason if result.status != "denoised" else
                           tiff_bad(src, result.dst) if i < args.count and to is None else other_bad(src, result.dst) if i >= args.count else "")
            except Exception:
                problem = traceback.format_exc(limit=2)
            if problem:
                bad += 1
                print(f"  {what} -> {to or 'its own format'}: {problem}")
    print(f"{runs} files, {bad} bad (seed {args.seed})")


if __name__ == "__main__":
    main()

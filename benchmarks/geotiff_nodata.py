"""A terrain model with a no-data border, through `denoise run`'s reading, denoising and writing:
BSD68's images as heights (100 to 355 m, 1 m per level), white noise of `--sigma` metres, and a
corner of GDAL's no-data value -9999, as a float32 GeoTIFF. Written with its no-data tag (42113),
the corner is set aside (since 2026-11-29); written without it, the file is read as before, the
-9999 setting the range it is denoised on. RMS error over the data, the largest error within 8
pixels of the corner, and whether the corner came back as no-data.

    python benchmarks/geotiff_nodata.py ../shared/data/test/BSD68 --count 8
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import tifffile
import torch

from denoisecli.formats import list_images
from denoisecli.image_io import read_image, write_image
from denoisecli.inference import Denoiser

NODATA = -9999.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--count", type=int, default=8)
    ap.add_argument("--sigma", type=float, default=3.0, help="noise in metres")
    args = ap.parse_args()
    denoiser = Denoiser()
    rows: dict[str, list] = {"tagged": [], "untagged": []}
    noisy_rms = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, path in enumerate(list_images(args.folder)[: args.count]):
            clean = read_image(path).pixels[0].numpy().astype(np.float64) * 255 + 100
            h, w = clean.shape
            y, x = np.mgrid[0:h, 0:w]
            corner = x + y < (h + w) // 4
            near = ~corner & (x + y < (h + w) // 4 + 8)
            noisy = clean + np.random.default_rng(i).normal(0, args.sigma, clean.shape)
            noisy_rms.append(np.sqrt(((noisy.astype(np.float32) - clean)[~corner] ** 2).mean()))
            noisy[corner] = NODATA
            for kind, tags in (("tagged", [(42113, "s", 0, f"{NODATA:g}", True)]), ("untagged", [])):
                src, dst = Path(tmp) / f"{kind}{i}.tif", Path(tmp) / f"{kind}{i}-out.tif"
                tifffile.imwrite(src, noisy.astype(np.float32), extratags=tags)
                img = read_image(src)
                with torch.inference_mode():
                    img.pixels = denoiser(img.pixels)
                write_image(img, dst)
                out = tifffile.imread(dst).astype(np.float64)
                err = out - clean
                rows[kind].append((np.sqrt((err[~corner] ** 2).mean()), np.abs(err[near]).max(), bool((out[corner] == NODATA).all())))
    print(f"{args.folder.name}, first {args.count} images as heights, noise {args.sigma:g} m "
          f"(RMS error as read {np.mean(noisy_rms):.2f} m), corner at -9999")
    for kind, r in rows.items():
        rms, edge, kept = zip(*r)
        print(f"  {kind:9s} RMS error {np.mean(rms):6.2f} m, largest near the corner {np.mean(edge):7.1f} m (mean over images), "
              f"no-data kept in {sum(kept)} of {len(kept)}")


if __name__ == "__main__":
    main()

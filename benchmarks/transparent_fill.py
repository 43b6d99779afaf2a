"""A cut-out photo (a product shot, a logo) through `denoise run`'s reading, denoising and writing:
Kodak24's photos with white noise of `--sigma`, seen through an ellipse of full alpha, the rest
transparent, saved as RGBA PNG with the transparent pixels black, white (what editors store there)
or still holding the noisy photo. Read as `run` reads it (since 2026-11-29 a black or white fill is
filled from the picture around it until the file is written), and as before (the fill went in as
read). PSNR over the visible pixels only, against the same pixels denoised in the opaque photo.

    python benchmarks/transparent_fill.py ../shared/data/test/Kodak24 --count 4
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from denoisecli import image_io
from denoisecli.formats import list_images
from denoisecli.image_io import read_image, write_image
from denoisecli.inference import Denoiser


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--count", type=int, default=4)
    ap.add_argument("--sigma", type=float, default=25.0)
    args = ap.parse_args()
    denoiser = Denoiser()
    psnr: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, path in enumerate(list_images(args.folder)[: args.count]):
            clean = np.asarray(Image.open(path).convert("RGB")).astype(np.float64)
            h, w, _ = clean.shape
            noisy = np.clip(np.round(clean + np.random.default_rng(i).normal(0, args.sigma, clean.shape)), 0, 255).astype(np.uint8)
            y, x = np.mgrid[0:h, 0:w]
            seen = ((y - h / 2) / (h * 0.38)) ** 2 + ((x - w / 2) / (w * 0.38)) ** 2 <= 1
            for fill in ("opaque", "black", "white", "photo"):
                rgb = noisy.copy()
                if fill in ("black", "white"):
                    rgb[~seen] = 0 if fill == "black" else 255
                alpha = np.where(seen | (fill == "opaque"), 255, 0).astype(np.uint8)
                src = Path(tmp) / f"{fill}{i}.png"
                Image.fromarray(np.dstack([rgb, alpha])).save(src)
                for how, read in (("now", read_image), ("before", lambda p: image_io._read(p, None, False))):
                    if fill == "opaque" and how == "before":
                        continue
                    img = read(src)
                    with torch.inference_mode():
                        img.pixels = denoiser(img.pixels)
                    dst = Path(tmp) / f"{fill}{i}-{how}.png"
                    write_image(img, dst)
                    out = np.asarray(Image.open(dst).convert("RGBA")).astype(np.float64)
                    assert (out[..., 3] == alpha).all() and (fill not in ("black", "white") or how == "before" or (out[~seen][:, :3] == rgb[~seen]).all())
                    err = ((out[..., :3] - clean)[seen] ** 2).mean()
                    psnr.setdefault(fill if fill == "opaque" else f"{fill}, {how}", []).append(10 * np.log10(255**2 / err))
    print(f"{args.folder.name}, first {args.count} images, sigma {args.sigma:g}, PSNR (dB) over the visible ellipse:")
    for name, values in psnr.items():
        print(f"  {name:14s} {np.mean(values):6.3f}   ({', '.join(f'{v:.2f}' for v in values)})")


if __name__ == "__main__":
    main()

"""A 360-degree panorama's seam through `denoise run`'s reading and denoising: each of Kodak24's
photos turned half its width round (its two halves swapped), so the picture runs on across the
left and right edges as a 360 camera's does, with white noise of `--sigma`, saved as PNG with Google's photo sphere XMP (since
2026-11-29 `run` denoises its edges as one) and without it (as before). The error of the step
across the seam and of the steps between the columns inside, and the RMSE of the 16 columns on each
side of the seam against all of them.

    python benchmarks/panorama_seam.py ../shared/data/test/Kodak24 --count 8
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, PngImagePlugin

from denoisecli.formats import list_images
from denoisecli.image_io import read_image
from denoisecli.inference import Denoiser, _estimated

GPANO = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
         '<rdf:Description xmlns:GPano="http://ns.google.com/photos/1.0/panorama/" GPano:ProjectionType="equirectangular"/>'
         '</rdf:RDF></x:xmpmeta>')


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--count", type=int, default=8)
    ap.add_argument("--sigma", type=float, default=25.0)
    args = ap.parse_args()
    denoiser = Denoiser()
    rows: dict[str, list[tuple[float, float, float, float]]] = {"joined (XMP)": [], "as before": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i, path in enumerate(list_images(args.folder)[: args.count]):
            photo = np.asarray(Image.open(path).convert("RGB")).astype(np.float64)
            clean = np.roll(photo, photo.shape[1] // 2, axis=1)  # the photo's own edges meet in the middle
            middle = slice(photo.shape[1] // 2 - 8, photo.shape[1] // 2 + 8)
            noisy = np.clip(np.round(clean + np.random.default_rng(i).normal(0, args.sigma, clean.shape)), 0, 255).astype(np.uint8)
            for kind, xmp in (("joined (XMP)", GPANO), ("as before", None)):
                src = Path(tmp) / f"{i}.png"
                info = PngImagePlugin.PngInfo()
                if xmp:
                    info.add_itxt("XML:com.adobe.xmp", xmp)
                Image.fromarray(noisy).save(src, pnginfo=info)
                img, levels, splits = _estimated(denoiser, src, read_image(src))
                with torch.inference_mode():
                    out = denoiser.batch([img.pixels], levels=levels[0], splits=splits)[0]
                out = np.round(out.permute(1, 2, 0).numpy() * 255)
                err = out - clean
                steps = np.abs(np.diff(err, axis=1, append=err[:, :1])).mean(axis=(0, 2))  # the last: across the seam
                inside = np.ones(len(steps), bool)
                inside[:16], inside[-16:], inside[middle] = False, False, False
                band = np.concatenate([err[:, :16], err[:, -16:]], axis=1)
                rows[kind].append((steps[-1], steps[inside].mean(), np.sqrt((band**2).mean()), np.sqrt((err**2).mean())))
    print(f"{args.folder.name}, first {args.count} images turned half round, sigma {args.sigma:g}:")
    for kind, r in rows.items():
        seam, inner, band, whole = np.mean(r, axis=0)
        print(f"  {kind:13s} step error across the seam {seam:5.2f}, between columns inside {inner:5.2f}; "
              f"RMSE by the seam {band:5.2f}, overall {whole:5.2f}")


if __name__ == "__main__":
    main()

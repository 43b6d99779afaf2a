"""A camera's 10-bit HEIF through `run`: read on its own levels against the 8 bits that
pillow-heif's Pillow plugin hands out (how `run` read it until 2026-11-29).

The first ``--count`` images of a set get white noise of each sigma (0-255 scale) and are
written as lossless 10-bit HEIF, as a camera's .HIF holds them. Each is denoised by `run`
(denoise_files, shipped weights) twice: from the 10-bit file, and from the same file read as 8
bits by the plugin (saved as an 8-bit PNG); each output as HEIC (quality 95: 10-bit from the
10-bit input, 8-bit from the 8-bit one) and as PNG (16-bit, 8-bit). PSNR against the clean image,
averaged; HEIC sizes summed. Needs pillow-heif (`pip install '.[heif]'`).

    python benchmarks/heif_depth.py ../shared/data/test/Kodak24 --count 6
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pillow_heif
from PIL import Image

from denoisecli.formats import list_images
from denoisecli.image_io import read_image
from denoisecli.inference import RunOptions, denoise_files


def psnr(out: Path, clean: np.ndarray) -> float:
    arr = np.moveaxis(read_image(out).pixels.numpy().astype(np.float64), 0, -1)
    return float(10 * np.log10(1 / ((arr - clean) ** 2).mean()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--count", type=int, default=6)
    ap.add_argument("--sigmas", default="1,2,5,15")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    pillow_heif.register_heif_opener()
    paths = list_images(args.folder)[: args.count]
    cleans = {p.stem: np.asarray(Image.open(p).convert("RGB"), np.float64) / 255 for p in paths}
    rng = np.random.default_rng(args.seed)
    routes = [("10-bit", "in10", "heic"), ("8-bit", "in8", "heic"), ("10-bit", "in10", "png"), ("8-bit", "in8", "png")]
    print(f"{len(paths)} images of {args.folder}, white noise, shipped weights, PSNR dB (HEIC: quality 95)")
    print("sigma | " + " | ".join(f"{depth} in, {fmt} out" for depth, _, fmt in routes) + " | HEIC KB 10-bit / 8-bit")
    with tempfile.TemporaryDirectory() as tmp:
        for sigma in (float(s) for s in args.sigmas.split(",")):
            root = Path(tmp) / f"s{sigma:g}"
            (root / "in10").mkdir(parents=True)
            (root / "in8").mkdir()
            for stem, clean in cleans.items():
                noisy = np.round(np.clip(clean + rng.normal(0, sigma / 255, clean.shape), 0, 1) * 1023).astype(np.uint16)
                hif = root / "in10" / f"{stem}.hif"
                pillow_heif.from_bytes(mode="RGB;10", size=(noisy.shape[1], noisy.shape[0]),
                                       data=noisy.tobytes()).save(hif, quality=-1, chroma=444)
                with Image.open(hif) as im:
                    im.convert("RGB").save(root / "in8" / f"{stem}.png")
            scores, sizes = [], {}
            for _, sub, fmt in routes:
                out = root / f"{sub}_{fmt}"
                denoise_files(root / sub, out, RunOptions(format=fmt))
                scores.append(np.mean([psnr(out / f"{stem}.{fmt}", clean) for stem, clean in cleans.items()]))
                if fmt == "heic":
                    sizes[sub] = sum(f.stat().st_size for f in out.iterdir()) / 1e3
            print(f"{sigma:g} | " + " | ".join(f"{s:.2f}" for s in scores) + f" | {sizes['in10']:.0f} / {sizes['in8']:.0f}",
                  flush=True)


if __name__ == "__main__":
    main()

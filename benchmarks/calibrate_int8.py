"""Store the int8 activation ranges in a model file, so `run` on a CPU runs its deep levels in int8.

    python benchmarks/calibrate_int8.py weights/color.pt --data ../shared/data/train/CBSD432
    python benchmarks/calibrate_int8.py weights/grey.pt --data ../shared/data/train/Train400

Reads ``--images`` training images (evenly spaced through the sorted folder; never test images),
gives each the white noise of one level from 0 to 75 (`int8.calibration_entry`, as `train` does for
its model.pt) and writes
the file back atomically with the ranges under ``"int8"``; its weights are not touched.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from denoisecli.data import to_channels
from denoisecli.formats import require_images
from denoisecli.image_io import read_image
from denoisecli.int8 import MIN_WIDTH, calibration_entry
from denoisecli.weights import atomic_save, load_checkpoint, load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--data", type=Path, required=True, help="a folder of training images")
    ap.add_argument("--images", type=int, default=24)
    args = ap.parse_args()
    ckpt = load_checkpoint(args.model)
    model, _ = load_model(args.model)
    paths = require_images(args.data)
    step = max(1, len(paths) // args.images)
    images = [to_channels((read_image(p).pixels * 255).round().to(torch.uint8), model.channels) for p in paths[::step][: args.images]]
    entry = calibration_entry(model, images, count=args.images)
    if not entry:
        raise SystemExit(f"{args.model}: no residual blocks of {MIN_WIDTH} channels or more to run in int8")
    ckpt.update(entry)
    ckpt["int8"]["images"] = f"{len(images)} of {args.data.name}"
    atomic_save(ckpt, args.model)
    print(f"{args.model}: int8 ranges for {len(ckpt['int8']['blocks'])} residual blocks, from {ckpt['int8']['images']}")


if __name__ == "__main__":
    main()

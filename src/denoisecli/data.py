"""Training data: images cached in memory, cut into augmented patches that depend only on (seed, index)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torchvision.transforms.v2 import functional as TF

from denoisecli.errors import DenoiseError
from denoisecli.image_io import list_images, read_image
from denoisecli.noise import seeded_generator


def load_training_images(
    root: Path, channels: int | None = None, min_size: int = 1, on_skip: Callable[[str], None] | None = None
) -> list[torch.Tensor]:
    """Decode every image under ``root`` once into uint8 tensors (CBSD432 is ~200 MB).

    ``channels`` of None picks grey when every image is grey, else colour. Unreadable
    files and images smaller than ``min_size`` are reported through ``on_skip`` and
    left out; no usable image at all is an error.
    """
    paths = list_images(Path(root))
    if not paths:
        raise DenoiseError(f"{root}: no images found (looked for .png, .jpg, .tif, .webp, .bmp)")
    images: list[torch.Tensor] = []
    for p in paths:
        try:
            img = read_image(p)
        except DenoiseError as exc:
            if on_skip:
                on_skip(str(exc))
            continue
        h, w = img.pixels.shape[-2:]
        if min(h, w) < min_size:
            if on_skip:
                on_skip(f"{p}: {w}x{h} is smaller than the {min_size}px patch, skipped")
            continue
        images.append((img.pixels * 255.0).round().to(torch.uint8))
    if not images:
        raise DenoiseError(f"{root}: no usable training image (all unreadable or smaller than {min_size}px)")
    if channels is None:
        channels = 1 if all(im.shape[0] == 1 for im in images) else 3
    return [_to_channels(im, channels) for im in images]


def _to_channels(im: torch.Tensor, channels: int) -> torch.Tensor:
    if im.shape[0] == channels:
        return im
    if channels == 3:
        return im.expand(3, -1, -1).contiguous()
    return (0.299 * im[0].float() + 0.587 * im[1].float() + 0.114 * im[2].float()).round().to(torch.uint8)[None]


class PatchSampler:
    """Random patches with flips and 90-degree rotations, reproducible from (seed, sample index).

    Because every patch is a pure function of its index, a resumed run draws exactly
    the patches an uninterrupted one would, and sharding across processes is a slice.
    """

    def __init__(self, images: list[torch.Tensor], patch: int, seed: int = 0) -> None:
        self.images, self.patch, self.seed = images, patch, seed
        weights = torch.tensor([im.shape[-1] * im.shape[-2] for im in images], dtype=torch.float64)
        self.weights = weights / weights.sum()

    @property
    def channels(self) -> int:
        return int(self.images[0].shape[0])

    def sample(self, index: int) -> torch.Tensor:
        g = seeded_generator(self.seed, f"patch{index}")
        im = self.images[int(torch.multinomial(self.weights, 1, generator=g))]
        h, w = im.shape[-2:]
        top = int(torch.randint(0, h - self.patch + 1, (1,), generator=g))
        left = int(torch.randint(0, w - self.patch + 1, (1,), generator=g))
        flips, rot = torch.randint(0, 2, (2,), generator=g), int(torch.randint(0, 4, (1,), generator=g))
        x = TF.crop(im, top, left, self.patch, self.patch)
        if flips[0]:
            x = TF.horizontal_flip(x)
        if flips[1]:
            x = TF.vertical_flip(x)
        return torch.rot90(x, rot, dims=(-2, -1))

    def batch(self, step: int, size: int) -> torch.Tensor:
        """The clean float batch for a training step."""
        return torch.stack([self.sample(step * size + i) for i in range(size)]).float().div_(255.0)

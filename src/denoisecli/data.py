"""Training data: images cached in memory, cut into augmented patches that depend only on (seed, index)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torchvision.transforms.v2 import functional as TF

from denoisecli.device import format_bytes, free_memory
from denoisecli.errors import DenoiseError
from denoisecli.files import pair_files, pair_key, pair_role
from denoisecli.formats import require_images
from denoisecli.image_io import DEFAULT_MAX_PIXELS, LoadedImage, header_size, read_image
from denoisecli.noise import seeded_generator

if TYPE_CHECKING:
    from denoisecli.training import TrainOptions

VAL_CROP = 256
MAX_HELD_OUT = 4
MEMORY_SHARE = 0.6  # of the memory free, the most the decoded training images may take: the rest runs the model


@dataclass
class TrainingSet:
    """Clean (and, for real pairs, noisy) uint8 training images, and float validation pairs."""

    clean: list[torch.Tensor]
    noisy: list[torch.Tensor] | None = None
    val: list[tuple[torch.Tensor, torch.Tensor | None]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what a user should hear of the data, though nothing failed


def _read_u8(path: Path, max_pixels: int | None) -> tuple[list[torch.Tensor], list[tuple[float, float]]]:
    """A file's images (a TIFF stack's planes) as uint8, and the (low, span) each was stretched by (``_u8``)."""
    return _u8(read_image(path, max_pixels, stacks=True))


def _u8(image: LoadedImage, ranges: list[tuple[float, float]] | None = None,
        scale_of: LoadedImage | None = None) -> tuple[list[torch.Tensor], list[tuple[float, float]]]:
    """An image's planes as uint8, and the (low, span) each was stretched by.

    16-bit and float data is stretched to its own range first (or by ``ranges``, if given, one
    per plane, on ``scale_of``'s scale if given: see ``LoadedImage.on_scale_of``), as `run`
    stretches what it denoises (``inference.value_range``): a microscope's 12-bit counts in a
    16-bit file are otherwise 17 levels of 256, a nearly black image with nothing to learn.
    8-bit images are kept as they are, so the shipped models' recipes read their data as before."""
    from denoisecli.inference import value_range

    planes = (image if scale_of is None else image.on_scale_of(scale_of)).planes
    if ranges is None:
        ranges = [(0.0, 1.0) if image.bits == 8 else value_range(p) for p in planes]
    return [((p - lo) / span * 255.0).round().clamp(0, 255).to(torch.uint8) for p, (lo, span) in zip(planes, ranges)], ranges


def _load_folder(
    root: Path, channels: int | None, min_size: int, on_skip: Callable[[str], None] | None,
    most_pixels: int | None = None, on_read: Callable[[int, int], None] | None = None, pairs: list[Path] | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> list[tuple[Path, torch.Tensor, tuple[float, float]]]:
    """Decode every image under ``root`` once into uint8 tensors (CBSD432 is ~200 MB), a TIFF
    stack's planes each as an image (``_read_u8``), in order, each with the (low, span) it was
    stretched by; an image over ``most_pixels`` is scaled down to it (``_fit``).

    ``channels`` of None picks grey when every image is grey, else colour. Unreadable
    files and images smaller than ``min_size`` are reported through ``on_skip`` and left
    out; no usable image at all is an error, and so is a folder whose images would not fit in
    memory, said before any is decoded. ``on_read``
    hears (files read so far, files), for a progress bar: 500 large photos take minutes.
    ``pairs``, if given, are the clean files of real pairs, read instead of all of ``root``'s: their
    noisy images count in memory too, and a large one is cut to its middle rather than scaled.
    ``max_pixels``: the read guard (``read_image``), before any scaling.
    """
    if not root.is_dir():
        raise DenoiseError(f"{root}: not a folder")
    paths = pairs if pairs is not None else require_images(root)
    _check_memory(root, paths, channels, most_pixels, 2 if pairs is not None else 1)
    found: list[tuple[Path, torch.Tensor, tuple[float, float]]] = []
    skips: list[str] = []
    for i, p in enumerate(paths):
        if on_read:
            on_read(i, len(paths))
        try:
            planes, ranges = _read_u8(p, max_pixels)
        except DenoiseError as exc:
            skips.append(str(exc))
            if on_skip:
                on_skip(skips[-1])
            continue
        planes = [_fit(im, most_pixels, crop=pairs is not None) for im in planes]
        h, w = planes[0].shape[-2:]
        if min(h, w) < min_size:
            skips.append(f"{p}: {w}x{h} is smaller than the {min_size}px patch, skipped")
            if on_skip:
                on_skip(skips[-1])
            continue
        found += [(p, im, r) for im, r in zip(planes, ranges)]
    if on_read:
        on_read(len(paths), len(paths))
    if not found:  # why, in the first file's words: a size guard or a patch too large reads as "unreadable" otherwise
        more = f" (and {len(skips) - 1} more)" if len(skips) > 1 else ""
        raise DenoiseError(f"{root}: no usable training image; {skips[0]}{more}" if skips else f"{root}: no usable training image")
    if channels is None:
        channels = 1 if all(im.shape[0] == 1 for _, im, _ in found) else 3
    return [(p, to_channels(im, channels), r) for p, im, r in found]


def _fit(im: torch.Tensor, most: int | None, crop: bool = False) -> torch.Tensor:
    """An image scaled down (area-like, antialiased) to at most ``most`` pixels, or with ``crop``
    its middle of that size (a real pair's noise, which scaling would average away), or as it is."""
    h, w = im.shape[-2:]
    if most is None or h * w <= most:
        return im
    s = math.sqrt(most / (h * w))
    size = [max(1, int(h * s)), max(1, int(w * s))]
    return TF.center_crop(im, size) if crop else TF.resize(im, size, antialias=True)


def _check_memory(root: Path, paths: Sequence[Path], channels: int | None, most: int | None, copies: int) -> None:
    """Refuse, before decoding anything, a folder whose images would take more memory than the
    machine can spare: 500 photos of 24 megapixels are 36 GB as uint8, and the kernel would end
    the run without a word. The message gives a ``--max-megapixels`` that fits."""
    free = free_memory()
    if free is None:
        return
    sizes = [s for s in map(header_size, paths) if s is not None]
    if not sizes:
        return
    depth = channels or (1 if all(c == 1 for *_, c in sizes) else 3)

    def need(cap: int | None) -> int:
        return copies * depth * sum(min(px, cap or px) * planes for px, planes, _ in sizes)

    if need(most) <= MEMORY_SHARE * free:
        return
    lo, hi = 0, max(px for px, _, _ in sizes) // 10_000  # the largest cap, in hundredths of a megapixel, that fits in half of it
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if need(mid * 10_000) <= free // 2 else (lo, mid - 1)
    size = f"{format_bytes(need(most))} as training data, more than this machine can spare ({format_bytes(free)} free)"
    fix = (f"read each at most {lo / 100:g} megapixels with --max-megapixels {lo / 100:g} ({format_bytes(need(lo * 10_000))}), or "
           if lo else "")
    raise DenoiseError(f"{root}: its {len(paths)} images take {size}; {fix}train on fewer images")


def to_channels(im: torch.Tensor, channels: int) -> torch.Tensor:
    """Grey to colour by repetition, colour to grey by luma (ITU-R 601)."""
    if im.shape[0] == channels:
        return im
    if channels == 3:
        return im.expand(3, -1, -1).contiguous()
    luma = 0.299 * im[0].float() + 0.587 * im[1].float() + 0.114 * im[2].float()
    return luma.round().to(torch.uint8)[None]


def _center_crop(im: torch.Tensor, size: int = VAL_CROP) -> torch.Tensor:
    return TF.center_crop(im, [min(size, im.shape[-2]), min(size, im.shape[-1])])


def load_training_set(opts: TrainOptions, hold_out: bool, on_read: Callable[[int, int], None] | None = None) -> TrainingSet:
    """Training images (or pairs) plus validation images: ``--val``, else a few held out of the data.
    ``on_read`` hears (files read, files) as the training folder is read."""
    skipped: list[str] = []
    most = round(opts.max_megapixels * 1e6) if opts.max_megapixels else None
    pairs = pair_files(Path(opts.data), Path(opts.noisy)) if opts.noisy is not None else None
    loaded = _load_folder(Path(opts.data), opts.channels, opts.patch, skipped.append, most, on_read,
                          pairs=pairs[0] if pairs else None, max_pixels=opts.max_pixels)
    channels = loaded[0][1].shape[0]
    noisy = None
    if pairs is not None:
        clean, noisy = _match_pairs(Path(opts.data), loaded, Path(str(opts.noisy)), pairs[1], channels, most, opts.max_pixels)
    else:
        clean = [(p, im) for p, im, _ in loaded]
    val: list[tuple[torch.Tensor, torch.Tensor | None]] = []
    if opts.val is not None:
        val = [(_center_crop(im).float() / 255, None) for _, im, _ in _load_folder(Path(opts.val), channels, 1, skipped.append,
                                                                                     max_pixels=opts.max_pixels)]
    elif hold_out or noisy is not None:
        n = min(MAX_HELD_OUT, len(clean) // 10)
        if n:
            order = torch.randperm(len(clean), generator=seeded_generator(opts.seed, "holdout")).tolist()
            held = set(order[:n])
            for i in sorted(held):
                pair = noisy[i] if noisy is not None else None
                val.append((_center_crop(clean[i][1]).float() / 255, _center_crop(pair).float() / 255 if pair is not None else None))
            clean = [c for i, c in enumerate(clean) if i not in held]
            noisy = [p for i, p in enumerate(noisy) if i not in held] if noisy is not None else None
    return TrainingSet([im for _, im in clean], noisy, val, skipped, _pair_notes(Path(opts.data), [p for p, *_ in loaded]) if pairs is None else [])


def _pair_notes(root: Path, paths: list[Path]) -> list[str]:
    """A folder of real pairs (SIDD's GT_ and NOISY_ files side by side) trained on without
    --noisy takes its noisy files for clean targets: said, not refused, as a name may mislead."""
    roles = [pair_role(p) for p in dict.fromkeys(paths)]
    noisy, clean = roles.count("noisy"), roles.count("clean")
    if not (noisy and clean):
        return []
    return [f"{root}: {noisy} files are named as noisy (noisy, noise, real) beside {clean} named as clean (GT, clean, mean), and all "
            f"are trained on as clean images; if they are real pairs, train on them with --noisy {root}"]


def _match_pairs(root: Path, clean: list[tuple[Path, torch.Tensor, tuple[float, float]]], noisy_root: Path,
                 by_key: dict[str, Path], channels: int, most: int | None = None,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[list[tuple[Path, torch.Tensor]], list[torch.Tensor]]:
    """The noisy image for each clean one, from ``by_key`` (``files.pair_files``: matched by
    relative path without extension or role word; a stack plane by plane); all must exist and align. Where either was stretched to its range (16-bit
    or float data, see ``_u8``) and not by the same one, the clean file is read again on the noisy
    one's scale and stretched by the noisy one's range (none for 8 bits), so the target is what
    `run`, stretching the noisy image, should give: the clean images are returned with the noisy
    ones. Both are cut to their middle ``most`` pixels where larger (``_fit``)."""
    missing = [p.relative_to(root).as_posix() for p, _, _ in clean if pair_key(p, root) not in by_key]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise DenoiseError(f"{noisy_root}: no noisy image for {', '.join(missing[:3])}{more} (pairs are matched by file name)")
    targets: list[tuple[Path, torch.Tensor]] = []
    pairs: list[torch.Tensor] = []
    for p, group in itertools.groupby(clean, key=lambda item: item[0]):
        ims, clean_ranges = zip(*[(im, r) for _, im, r in group])
        q = by_key[pair_key(p, root)]
        noisy_image = read_image(q, max_pixels, stacks=True)
        noisy, ranges = _u8(noisy_image)
        noisy = [_fit(n, most, crop=True) for n in noisy]
        if len(noisy) != len(ims):
            raise DenoiseError(f"{q}: {len(noisy)} planes do not match its clean image {p} ({len(ims)})")
        if noisy_image.bits != 8 or list(clean_ranges) != ranges:
            ims = [to_channels(_fit(im, most, crop=True), channels) for im in _u8(read_image(p, max_pixels, stacks=True), ranges, scale_of=noisy_image)[0]]
        for im, nim in zip(ims, noisy):
            nim = to_channels(nim, channels)
            if nim.shape != im.shape:
                raise DenoiseError(f"{q}: {nim.shape[-1]}x{nim.shape[-2]} does not match its clean image {p} ({im.shape[-1]}x{im.shape[-2]})")
            targets.append((p, im))
            pairs.append(nim)
    return targets, pairs


class PatchSampler:
    """Random patches with flips and 90-degree rotations, reproducible from (seed, sample index).

    Because every patch is a pure function of its index, a resumed run draws exactly the
    patches an uninterrupted one would, and a torchrun rank takes a slice of the same
    global batch. With ``noisy`` images, the same crop and transform apply to both.

    A ``downscale`` fraction of patches is cut at twice the size and averaged 2x2 down: JPEG
    training images (CBSD432 is 4:2:0 JPEG) then also give targets with full-resolution
    colour and no block artefacts, finer than the originals' own.

    An ``independent`` fraction of colour patches takes each channel from its own random patch:
    photos' channels share their edges, so a colour model trained on photos alone learns to
    blur an edge that only one channel has (fluorescence composites, false colour, graphics).
    """

    def __init__(self, images: list[torch.Tensor], patch: int, seed: int = 0, noisy: list[torch.Tensor] | None = None,
                 downscale: float = 0.0, independent: float = 0.0) -> None:
        if noisy is not None and downscale:
            raise DenoiseError("--downscale would change the real noise of --noisy pairs; use it with synthetic noise")
        if noisy is not None and independent:
            raise DenoiseError("--independent-channels would split the real noise of --noisy pairs from its image; use it with synthetic noise")
        if independent and images[0].shape[0] != 3:
            raise DenoiseError("--independent-channels needs colour patches; these are grey (pass --channels 3 to stack grey images)")
        self.images, self.noisy, self.patch, self.seed, self.downscale, self.independent = images, noisy, patch, seed, downscale, independent
        weights = torch.tensor([im.shape[-1] * im.shape[-2] for im in images], dtype=torch.float64)
        self.weights = weights / weights.sum()

    @property
    def channels(self) -> int:
        return int(self.images[0].shape[0])

    def sample(self, index: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.independent and float(torch.rand((), generator=seeded_generator(self.seed, f"independent{index}"))) < self.independent:
            parts = [self._cut(f"{index}/c{c}")[0] for c in range(3)]
            return torch.stack([part[c] for c, part in enumerate(parts)]), None
        return self._cut(str(index))

    def _cut(self, key: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        g = seeded_generator(self.seed, f"patch{key}")
        k = int(torch.multinomial(self.weights, 1, generator=g))
        h, w = self.images[k].shape[-2:]
        size = self.patch
        if self.downscale and 2 * size <= min(h, w):
            if float(torch.rand((), generator=seeded_generator(self.seed, f"scale{key}"))) < self.downscale:
                size = 2 * size
        top = int(torch.randint(0, h - size + 1, (1,), generator=g))
        left = int(torch.randint(0, w - size + 1, (1,), generator=g))
        hflip, vflip = torch.randint(0, 2, (2,), generator=g).tolist()
        rot = int(torch.randint(0, 4, (1,), generator=g))

        def cut(im: torch.Tensor) -> torch.Tensor:
            x = TF.crop(im, top, left, size, size)
            if size != self.patch:
                x = F.avg_pool2d(x[None].float(), 2)[0].round_().to(im.dtype)
            x = TF.horizontal_flip(x) if hflip else x
            x = TF.vertical_flip(x) if vflip else x
            return torch.rot90(x, rot, dims=(-2, -1))

        return cut(self.images[k]), cut(self.noisy[k]) if self.noisy is not None else None

    def batch(self, step: int, size: int, shard: tuple[int, int] = (0, 1)) -> tuple[torch.Tensor, torch.Tensor | None]:
        """This rank's slice of the step's global batch, as float (clean, noisy or None)."""
        rank, world = shard
        per = size // world
        samples = [self.sample(step * size + i) for i in range(rank * per, (rank + 1) * per)]
        clean = torch.stack([c for c, _ in samples]).float().div_(255.0)
        if self.noisy is None:
            return clean, None
        return clean, torch.stack([n for _, n in samples]).float().div_(255.0)


class _StepBatches(IterableDataset):
    """Batches for steps ``start..total-1``; worker k of W makes every W-th, so they arrive in order.

    With ``noise`` (a callable of the step and the clean batch), each batch comes with its noisy
    version and the samples' sigmas, made in the worker: slow noise (JPEG through Pillow) then
    runs beside the model's step instead of before it.
    """

    def __init__(self, sampler: PatchSampler, start: int, total: int, batch: int, shard: tuple[int, int],
                 noise: Callable[[int, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None) -> None:
        self.sampler, self.start, self.total, self.batch, self.shard, self.noise = sampler, start, total, batch, shard, noise

    def __iter__(self):
        info = get_worker_info()
        k, w = (info.id, info.num_workers) if info is not None else (0, 1)
        for step in range(self.start + k, self.total, w):
            clean, noisy = self.sampler.batch(step, self.batch, self.shard)
            if noisy is not None:
                yield clean, noisy
            elif self.noise is not None:
                yield (clean, *self.noise(step, clean))
            else:
                yield (clean,)


def batch_loader(
    sampler: PatchSampler, start: int, total: int, batch: int, shard: tuple[int, int], workers: int, pin: bool,
    noise: Callable[[int, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> DataLoader:
    """Step-ordered batches, made in ``workers`` background processes when that helps (a GPU waiting on data);
    with ``noise``, as (clean, noisy, sigma) (see ``_StepBatches``), else (clean,) or a real pair (clean, noisy)."""
    return DataLoader(
        _StepBatches(sampler, start, total, batch, shard, noise), batch_size=None, num_workers=workers,
        pin_memory=pin, persistent_workers=False, prefetch_factor=4 if workers else None,
    )

"""Denoising tensors and files with a trained model, whole or in blended tiles."""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path
from threading import Lock
from typing import NamedTuple, TypeVar

import torch
from torch import nn

from denoisecli.atomic import out_of_space, remove_stale_partials, stopped_for_space
from denoisecli.device import place_model, provenance, resolve_device
from denoisecli.errors import DenoiseError, first_line
from denoisecli.files import BatchReport, FileResult, plan_run
from denoisecli.formats import format_of, normalize_format
from denoisecli.image_io import DEFAULT_MAX_PIXELS, LoadedImage, TiffStack, left_out, open_stack, read_image, write_image, write_stacks
from denoisecli.int8 import quantize
from denoisecli.stabilise import MIN_NOISE, Stabiliser, default_stabiliser, stabiliser
from denoisecli.weights import load_model, shipped_weights

T = TypeVar("T")
Estimated = tuple[LoadedImage, list[list["Level"] | None], list[bool]]  # an image, its planes' levels, whether each is split

AUTO_TILE_PIXELS = 2048 * 2048
AUTO_TILE = 1024
MIN_TILE = 128
BATCH_MAX_MP = 1.0
SLAB_PIXELS = 16_000_000  # at most this many of a streamed stack's pixels a slab (or one plane): 192 MB as float colour
MIN_SPAN = 1 / 65535
HOT_SHARE = 1e-3  # at most this share of an image's pixels are taken for hot pixels, above its range (``value_range``)
CONTEXT = 48
BLEND = 32
COUPLING_SPLIT = 0.35
DIHEDRAL = [(k, flip) for flip in (False, True) for k in range(4)]


class Level(NamedTuple):
    """What one model input is given: the noise sigma `run` reports (0-1 scale of the file; for
    stabilised noise, at the image's mean brightness), the level the model is fed, the
    variance-stabilising transform around the model, if any (see ``Denoiser.stabiliser``), the
    (low, span) the input is stretched by and its hot pixels, above that range and written back
    as read (``value_range``): the model's pass takes both from here rather than find them again
    (0.25 s for a 12 MP photo on this 2-core VM)."""

    sigma: float
    fed: float | torch.Tensor
    stabiliser: Stabiliser | None = None
    stretch: tuple[float, float] | None = None
    hot_mask: torch.Tensor | None = None
    wraps: bool = False  # a 360-degree panorama, whose left and right edges meet (``image_io.wraps``)

    @property
    def hot(self) -> int:
        """How many pixels are hot, in any channel."""
        return 0 if self.hot_mask is None else int(self.hot_mask.any(0).sum())


def value_range(image: torch.Tensor) -> tuple[float, float]:
    """(low, span) of an image's values within [0, 1], which `Denoiser` stretches to fill [0, 1].

    The models learned from photos that fill the range, and their strength does not scale with
    the data: a microscope's 12-bit counts in a 16-bit file fill a sixteenth of it, and BSD68 made
    so, with sigma-15 noise of its own range, came out 29.0 dB as read and 31.5 stretched (at a
    thirty-second, 24.6 from 24.6 noisy: no denoising at all; benchmarks/dim_images.py). Stretching
    by the extremes is exact to undo, clips nothing, and leaves an image that already fills the
    range untouched; a flat image is left unstretched.

    A camera's hot pixels do not set the top: single pixels (or pairs) far above the rest (each
    with at most one such neighbour, at most ``HOT_SHARE`` of the image in the upper half of the
    span they would set, all else in the lower). One at full scale left such an image
    unstretched, 28.9 dB where 31.4 without it (BSD68 in 12 bits, sigma 15). They go to the model
    at its top and come out as they were (``_hot``). A bright patch (a lamp, a window, a bead) is
    no hot pixel: it sets the top, as it did, and is denoised with the rest.
    """
    x = image.detach().clamp(0, 1)
    lo, hi = torch.aminmax(x)
    lo, hi = float(lo), float(hi)
    upper = x > lo + (hi - lo) / 2
    if hi - lo > MIN_SPAN and int(upper.sum()) <= x.numel() * HOT_SHARE:
        hot = upper & (_neighbours(upper) <= 1)
        if bool(hot.any()):
            hi = float(x[~hot].max())
    return (lo, hi - lo) if hi - lo > MIN_SPAN else (0.0, 1.0)


def _neighbours(mask: torch.Tensor) -> torch.Tensor:
    """How many of each element's 8 neighbours in its plane of a ...xHxW mask are set."""
    planes = mask.reshape(-1, 1, *mask.shape[-2:]).float()
    ring = torch.ones(1, 1, 3, 3, device=mask.device)
    ring[0, 0, 1, 1] = 0
    return torch.nn.functional.conv2d(planes, ring, padding=1).reshape(mask.shape)


def _hot(image: torch.Tensor, lo: float, span: float) -> torch.Tensor | None:
    """The hot pixels ``value_range`` left above the top it found, or None: values within [0, 1]
    above it (values above 1 are unclipped noise, not hot pixels, and an image's own top is at it)."""
    hot = (image > lo + span + MIN_SPAN) & (image <= 1)
    return hot if bool(hot.any()) else None


def _stretched(image: torch.Tensor, lo: float, span: float) -> torch.Tensor:
    """``image`` mapped from (lo, lo + span) onto [0, 1]; the image itself (no copy) when it fills the range."""
    return image if (lo, span) == (0.0, 1.0) else (image - lo) / span


def _unstretched(image: torch.Tensor, lo: float, span: float) -> torch.Tensor:
    """The inverse of ``_stretched``."""
    return image if (lo, span) == (0.0, 1.0) else image * span + lo


def _axis_weights(start: int, length: int, size: int, context: int, blend: int) -> torch.Tensor:
    """Weights along one axis of a window: zero over the ``context`` pixels of an inner edge
    (they only feed the model), a linear ramp over ``blend`` pixels, then one. Edges on the
    image border keep full weight, so every pixel is covered."""
    pos = torch.arange(length, dtype=torch.float32)
    w = torch.ones(length)
    ramp = ((pos - context + 1) / (blend + 1)).clamp(0, 1)
    if start > 0:
        w = torch.minimum(w, ramp)
    if start + length < size:
        w = torch.minimum(w, ramp.flip(0))
    return w


def dihedral(x: torch.Tensor, k: int, flip: bool, inverse: bool = False) -> torch.Tensor:
    """One of the 8 flips and rotations of a [..., H, W] tensor (or its inverse): a
    convolutional denoiser's errors differ between them while the image does not."""
    if inverse:
        x = torch.rot90(x, -k, (-2, -1))
        return x.flip(-1) if flip else x
    return torch.rot90(x.flip(-1) if flip else x, k, (-2, -1))


def _windows(size: int, tile: int, overlap: int, align: int) -> list[tuple[int, int]]:
    """(start, length) of the fewest windows of at most ``tile`` pixels that cover ``size``, spread
    evenly, neighbours overlapping by ``overlap``. Windows of the full tile length with the last one
    pushed back to the image's end overlapped far more than needed: a 4000x3000 photo in
    1024-pixel tiles went through the network as 21 megapixels, and now as 15.3. Starts are
    multiples of the model's stride, since a strided network is shift-equivariant only by whole
    strides."""
    if size <= tile:
        return [(0, size)]
    widest = (tile - overlap) // align * align  # the largest step between starts
    if widest < 1:
        raise ValueError(f"a {tile}-pixel window cannot overlap by {overlap} pixels on a {align}-pixel grid")
    for count in range(math.ceil((size - tile) / widest) + 1, size + 1):
        starts = [round(i * (size - overlap) / count / align) * align for i in range(count)]
        ends = [s + overlap for s in starts[1:]] + [size]
        if all(0 < e - s <= tile for s, e in zip(starts, ends)):
            return [(s, e - s) for s, e in zip(starts, ends)]
    raise AssertionError("unreachable: windows one step apart always fit")


@torch.inference_mode()
def denoise_tensor(
    model: nn.Module,
    x: torch.Tensor,
    tile: int | None = None,
    context: int = CONTEXT,
    blend: int = BLEND,
    sigma: torch.Tensor | None = None,
    on_window: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Denoise a [B, C, H, W] batch whole, or in overlapping windows of ``tile`` pixels;
    ``on_window`` hears (windows done, windows in all) after each.

    Neighbouring windows overlap by ``2 * context + blend``: each window's outer
    ``context`` pixels on inner edges only give the model context and are dropped,
    and the ``blend`` band between is cross-faded, so tiles leave no seam and the
    result matches the whole-image output.
    """
    h, w = x.shape[-2:]
    per_pixel = sigma is not None and sigma.ndim == 4

    def run(rows: slice, cols: slice) -> torch.Tensor:
        if sigma is None:
            return model(x[..., rows, cols])
        return model(x[..., rows, cols], sigma[..., rows, cols] if per_pixel else sigma)

    if tile is None or (h <= tile and w <= tile):
        return run(slice(None), slice(None)).clamp_(0, 1)
    overlap = 2 * context + blend
    align = int(getattr(model, "stride", 1))
    if tile <= overlap + align:
        raise DenoiseError(f"--tile {tile} is too small: it must exceed the {overlap}-pixel overlap between tiles "
                           f"plus the model's {align}-pixel stride")
    out = torch.zeros_like(x)
    weight = torch.zeros((1, 1, h, w), device=x.device, dtype=x.dtype)
    rows, cols = _windows(h, tile, overlap, align), _windows(w, tile, overlap, align)
    for i, (top, th) in enumerate(rows):
        wy = _axis_weights(top, th, h, context, blend)
        for j, (left, tw) in enumerate(cols):
            wx = _axis_weights(left, tw, w, context, blend)
            win = (wy[:, None] * wx[None, :]).to(device=x.device, dtype=x.dtype)
            out[..., top : top + th, left : left + tw] += run(slice(top, top + th), slice(left, left + tw)) * win
            weight[..., top : top + th, left : left + tw] += win
            if on_window is not None:
                on_window(i * len(cols) + j + 1, len(rows) * len(cols))
    return (out / weight).clamp_(0, 1)


class Denoiser:
    """Loads models lazily by channel count and denoises images on one device.

    Models with a noise-level input get ``sigma`` (0-255 scale) when given, else the level
    estimated from each image. Inputs are clamped to [0, 1], the range the training noise
    layer produces: an image file never leaves it, and under the literature's protocol
    (unclipped noisy input) this keeps the model on the data it was trained on. An image that
    fills only part of the range (dim 16-bit data) is stretched to fill it and back
    (``value_range``), and a grey image in three equal channels goes through the grey model
    (``grey_copy``). Large images go through tiles automatically; on a CUDA out-of-memory error
    the image is retried with tiles half the size, down to ``MIN_TILE``.
    ``int8`` runs the network's deep levels in int8 on a CPU where the model file carries the
    ranges for it (`int8.quantize`: about 1.25x as fast; the output differs from float32's by a
    few levels of 255 at most, 60-70 dB apart on photos); ``int8_used`` lists the model files that run so.
    ``ensemble`` averages the outputs for the 8 flips and rotations of each image
    (self-ensemble): 8 times the work for a slightly better result. ``strength`` scales the level
    a noise-level model is fed (see ``noise_estimate.model_level``); ``per_channel`` denoises each
    channel of a colour image alone with the grey model: True for every image, False for none,
    None (the default) for those whose channels look independent (see ``split``). ``stabilise``
    puts a variance-stabilising transform around the model for noise that grows with brightness:
    True wherever it does, False nowhere, None (the default) where the shipped grey model is used
    and the default rule finds it grows (see ``stabiliser``).
    """

    def __init__(self, weights: Path | None = None, device: str = "auto", tile: int | None = None, sigma: float | None = None,
                 ensemble: bool = False, int8: bool = True, strength: float = 1.0, per_channel: bool | None = None,
                 stabilise: bool | None = None) -> None:
        if not strength >= 0:
            raise DenoiseError(f"--strength {strength:g}: must be 0 or more")
        if stabilise and sigma is not None:
            raise DenoiseError("--stabilise reads the noise's growth with brightness from each image; --sigma gives one level for all of it: choose one")
        self.per_channel = per_channel
        self.stabilise = stabilise
        self.device = resolve_device(device)
        self.weights = Path(weights) if weights is not None else None
        self.tile = tile
        self.sigma = sigma
        self.strength = strength
        self.ensemble = ensemble
        self.int8 = int8
        self.int8_used: set[Path] = set()
        # hears the share of a call of ``batch`` done, window by window where the image is tiled: a
        # progress bar that moves through one large photo, where it sat still for a minute
        self.on_share: Callable[[float], None] | None = None
        self._models: dict[Path, nn.Module] = {}
        self._loading = Lock()
        if self.weights is not None:
            model = self._model(self.weights)
            if per_channel and model.channels != 1:
                raise DenoiseError(f"{self.weights}: --per-channel needs a grey model; this one is for {_kind(model.channels)} images")
            if not getattr(model, "noise_map", False) and self._level_options():
                raise DenoiseError(f"{self.weights}: {self._level_options()} needs a model with a noise-level input; this one is blind")

    def _level_options(self) -> str:
        """The options given that only a noise-level model can follow, as the user typed them ('' if none)."""
        given = (("--sigma", self.sigma is not None), ("--strength", self.strength != 1), ("--stabilise", self.stabilise is True))
        return " and ".join(name for name, chosen in given if chosen)

    def _model(self, path: Path) -> nn.Module:
        with self._loading:  # read-ahead threads ask for models too (see ``levels``)
            if path not in self._models:
                model, ckpt = load_model(path)
                model = place_model(model, self.device)
                if self.int8 and quantize(model, ckpt.get("int8")):
                    self.int8_used.add(path)
                self._models[path] = model
            return self._models[path]

    def model_for(self, channels: int) -> nn.Module:
        return self._model(self.weights if self.weights is not None else shipped_weights(channels))

    def grey_copy(self, image: torch.Tensor) -> bool:
        """Whether a colour image is a grey one in three equal channels (a black-and-white photo
        saved as RGB), which then goes through the shipped grey model. The colour model learned
        noise drawn in each channel apart and removes little of noise that is the same in every
        channel: on 20 BSD68 images made so, 28.65 / 24.33 / 19.73 dB at sigma 15 / 25 / 50
        against the grey model's 31.43 / 28.74 / 24.47. Only exactly equal channels count, so no
        colour is ever dropped; a model file the user chose is used for every image."""
        return (self.weights is None and self.per_channel is not True and image.shape[0] == 3
                and torch.equal(image[0], image[1]) and torch.equal(image[1], image[2]))

    def split(self, image: torch.Tensor) -> bool:
        """Whether a colour image goes through the grey model one channel at a time. `color.pt`
        blurs edges that only one channel has (fluorescence composites, false colour, graphics:
        4.3-6.1 dB under the grey model per channel on such images at sigma 25, while on photos the
        grey model per channel is 1.2-3.1 dB worse; model card). So by default the shipped models
        split an image whose ``channel_coupling`` is under ``COUPLING_SPLIT``, which no benchmark
        photo comes near under any noise; ``per_channel`` True or False decides for every image."""
        if image.shape[0] == 1:
            return False
        if self.per_channel is not None:
            return self.per_channel
        from denoisecli.noise_estimate import channel_coupling

        return self.weights is None and not self.grey_copy(image) and channel_coupling(image) < COUPLING_SPLIT

    def stabiliser(self, image: torch.Tensor, sigma: Callable[[], float] | None = None,
                   stretch: tuple[float, float] | None = None) -> Stabiliser | None:
        """The variance-stabilising transform for one model input (stretched to its range; read
        clamped to [0, 1], as the model gets it), or None. By default only where the shipped grey
        model denoises it (a grey image, a grey copy, a split image's channel), where no value lies
        outside [0, 1], and where ``stabilise.stabiliser``'s rule finds noise that grows with
        brightness (``stabilise.default_stabiliser``): `grey.pt` never saw shot noise and gains
        2-4 dB on it so on BSD68 and Set12 (weights/SHOT-NOISE.md). `color.pt` learned
        camera noise and loses on it when stabilised, hence only with ``stabilise`` True, which
        also drops the rule's margins (every input whose noise grows at all). ``sigma``, if given,
        reads the plain route's level, and ``stretch`` is ``value_range``'s (low, span) for the
        image, which finds photon counts in the file's values (see ``stabilise.stabiliser``)."""
        if self.stabilise is False or (self.stabilise is None and (self.weights is not None or image.shape[0] != 1)):
            return None
        if self.stabilise:
            return stabiliser(image.clamp(0, 1), ratio=1.0, confirm=1.0, least=MIN_NOISE, growth=None, stretch=stretch)
        return default_stabiliser(image, sigma, stretch)

    def unclamp(self) -> bool:
        """Whether the level is read as the noise's sigma before clamping
        (``noise_estimate.unclamped_sigma``): for the shipped models. The estimator reads noise
        clamped at black or white low, and in files with heavy noise the models then left much of it
        in: BSD68 (grey), clipped protocol, sigma 50, 24.63 dB so, 26.03 now, 26.13 given the true
        sigma; CBSD68 (colour) 26.68 so, 27.76 now, 27.84 given it (weights/README.md, *In
        files*). `color.pt` learned camera noise at the estimator's plain reading, but camera noise
        read so lost nothing (CBSD68, peak 30: 29.2094 -> 29.2189 dB, SSIM 0.8363 -> 0.8366). A
        model file the user chose keeps the plain reading, the one `train` feeds."""
        return self.weights is None

    def _routes(self, images: list[torch.Tensor], splits: list[bool] | None) -> list[str]:
        """Each image's route; ``splits``, if given, are ``split``'s answers for these images, so
        a caller that asked already (`denoise_files`, in its reading threads) need not ask again."""
        splits = [self.split(im) for im in images] if splits is None else splits
        return ["split" if s else "grey" if self.grey_copy(im) else "image" for im, s in zip(images, splits)]

    @staticmethod
    def _parts(image: torch.Tensor, route: str) -> list[torch.Tensor]:
        if route == "split":
            return [image[c : c + 1] for c in range(image.shape[0])]
        return [image[:1]] if route == "grey" else [image]

    def inputs(self, images: list[torch.Tensor], splits: list[bool] | None = None) -> list[torch.Tensor]:
        """What the model is given for these images, in order: each channel alone as a grey image
        for a split image (see ``split``), the grey channel of a grey copy, else the image itself."""
        return [part for im, r in zip(images, self._routes(images, splits)) for part in self._parts(im, r)]

    def levels(self, images: list[torch.Tensor], sigma: float | None = None,
               splits: list[bool] | None = None) -> list[Level] | None:
        """Per model input (see ``inputs``: one per image, or one per channel), the noise sigma (0-1
        scale of the file; ``sigma`` if given, else the Denoiser's own, else estimated) and the level
        its model gets for it, times the Denoiser's ``strength``, once the image is stretched to its
        range (see ``value_range``) and, without a sigma, stabilised if ``stabiliser`` says so; or
        None for a blind model. Safe to call from other threads: `denoise_files` estimates while
        the model works on earlier images."""
        given = sigma if sigma is not None else None if self.sigma is None else self.sigma / 255.0
        from denoisecli.noise_estimate import model_level, plain_level

        out = []
        for im in self.inputs(images, splits):
            model = self.model_for(im.shape[0])
            if not getattr(model, "noise_map", False):
                if given is not None or self.strength != 1:
                    raise DenoiseError(f"{self._level_options() or '--sigma'} needs a model with a noise-level input; this one is blind")
                return None
            lo, span = value_range(im)
            x = _stretched(im, lo, span)
            hot = _hot(im, lo, span)
            x = x if hot is None else x.masked_fill(hot, 1.0)  # hot pixels as the model gets them
            read = plain_level(x, self.unclamp())
            stab = self.stabiliser(x, read, (lo, span)) if given is None else None
            if stab is None:
                s, level = model_level(x, read() if given is None else given / span, model.level, self.strength)
                out.append(Level(s * span, level, None, (lo, span), hot))
            else:
                inside = x.clamp(0, 1)  # what the model is given (see ``_batch``)
                level = model_level(stab.forward(inside), stab.sigma, model.level, self.strength)[1]
                out.append(Level(stab.noise_std(float(inside.mean())) * span, level, stab, (lo, span), hot))
        return out

    def __call__(self, pixels: torch.Tensor, name: str = "image") -> torch.Tensor:
        """Denoise a CxHxW image in [0, 1]; grey through a colour model goes as three equal channels."""
        return self.batch([pixels], name)[0]

    def batch(self, images: list[torch.Tensor], name: str = "image", levels: list[Level] | None = None,
              splits: list[bool] | None = None) -> list[torch.Tensor]:
        """Denoise same-shape CxHxW images in one forward pass (several small files at once); split
        images and grey copies (see ``split``, ``grey_copy``) go through the grey model in passes of
        their own. ``levels``, if given, are ``levels``' for these images: one per model input, and
        ``splits`` ``split``'s answers."""
        routes = self._routes(images, splits)
        parts = [self._parts(im, r) for im, r in zip(images, routes)]
        first = list(itertools.accumulate((len(p) for p in parts), initial=0))
        out: list[torch.Tensor] = list(images)
        for route in dict.fromkeys(routes):
            picked = [i for i, r in enumerate(routes) if r == route]
            given = None if levels is None else [levels[j] for i in picked for j in range(first[i], first[i + 1])]
            done = iter(self._batch([p for i in picked for p in parts[i]], name, given))
            for i in picked:
                ys = [next(done) for _ in parts[i]]
                y = ys[0] if len(ys) == 1 else torch.cat(ys)
                out[i] = y.expand(3, -1, -1).clone() if route == "grey" else y
        return out

    def _batch(self, images: list[torch.Tensor], name: str, levels: list[Level] | None) -> list[torch.Tensor]:
        c = images[0].shape[0]
        model = self.model_for(c)
        mc = model.channels
        if c != mc and not (c == 1 and mc == 3):
            raise DenoiseError(f"{name}: the model is for {_kind(mc)} images, this image is {_kind(c)}")
        if levels is None:
            levels = self.levels(images, splits=[False] * len(images))  # already routed by ``batch``
        known = levels is not None and all(lv.stretch is not None for lv in levels)
        ranges = [lv.stretch for lv in levels] if known else [value_range(im) for im in images]
        stabs = [lv.stabiliser for lv in levels] if levels is not None else [None] * len(images)
        inputs = [_stretched(im, lo, span).clamp(0, 1) for im, (lo, span) in zip(images, ranges)]
        x = torch.stack([x if st is None else st.forward(x) for x, st in zip(inputs, stabs)]).to(self.device, torch.float32)
        if c != mc:
            x = x.expand(-1, mc, -1, -1)
        tile = self.tile
        if tile is None and x.shape[-1] * x.shape[-2] > AUTO_TILE_PIXELS:
            tile = AUTO_TILE
        from denoisecli.noise_estimate import level_input

        sigma = level_input([lv.fed for lv in levels], self.device) if levels is not None else None
        # a 360-degree panorama goes in with each edge's neighbours across the seam beside it, so the
        # seam is denoised as the rest is: the error of the step across it was 7.31 levels, against
        # 4.87 between columns inside, and is 5.06 so (benchmarks/panorama_seam.py, Kodak24, sigma 25)
        pad = min(CONTEXT, x.shape[-1]) if levels is not None and any(lv.wraps for lv in levels) else 0
        if pad:
            x = torch.cat([x[..., -pad:], x, x[..., :pad]], dim=-1)
            sigma = torch.cat([sigma[..., -pad:], sigma, sigma[..., :pad]], dim=-1) if sigma is not None and sigma.ndim == 4 else sigma
        passes = len(DIHEDRAL) if self.ensemble else 1
        hear = self.on_share

        def heard(index: int) -> Callable[[int, int], None] | None:
            return None if hear is None else lambda done, total: hear((index + done / total) / passes)

        if self.ensemble:
            turned = (lambda k, f: dihedral(sigma, k, f)) if sigma is not None and sigma.ndim == 4 else (lambda k, f: sigma)
            y = sum(dihedral(self._run(model, dihedral(x, k, f), tile, name, turned(k, f), heard(i)), k, f, inverse=True)
                    for i, (k, f) in enumerate(DIHEDRAL))
            y = y / len(DIHEDRAL)
        else:
            y = self._run(model, x, tile, name, sigma, heard(0))
        y = y[..., pad : y.shape[-1] - pad]
        if c != mc:
            y = y.mean(dim=1, keepdim=True)
        outs = [_unstretched(out if st is None else st.inverse(out), lo, span) for out, (lo, span), st in zip(y.cpu(), ranges, stabs)]
        hots = [lv.hot_mask for lv in levels] if known else [_hot(im, lo, span) for im, (lo, span) in zip(images, ranges)]
        return [out if hot is None else torch.where(hot.cpu(), im.cpu(), out) for out, im, hot in zip(outs, images, hots)]

    def _run(self, model: nn.Module, x: torch.Tensor, tile: int | None, name: str, sigma: torch.Tensor | None,
             on_window: Callable[[int, int], None] | None = None) -> torch.Tensor:
        while True:
            try:
                return denoise_tensor(model, x, tile=tile, context=min(CONTEXT, (tile or 0) // 6),
                                      blend=min(BLEND, (tile or 0) // 8), sigma=sigma, on_window=on_window)
            except torch.OutOfMemoryError as exc:
                if x.device.type == "cuda":
                    torch.cuda.empty_cache()
                smaller = (tile or max(x.shape[-2:])) // 2
                if smaller < MIN_TILE:
                    raise DenoiseError(f"{name}: out of memory on {x.device} even with {MIN_TILE}px tiles") from exc
                tile = smaller


def _kind(channels: int) -> str:
    return {1: "grey", 3: "colour"}.get(channels, f"{channels}-channel")


@dataclass
class RunOptions:
    """How `denoise run` treats a folder; the defaults are what a user wants without thinking."""

    weights: Path | None = None
    device: str = "auto"
    tile: int | None = None
    overwrite: bool = False
    format: str | None = None
    jpeg_quality: int = 95
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    batch: int = 8
    threads: int = 2
    sigma: float | None = None
    ensemble: bool = False
    int8: bool = True
    strength: float = 1.0
    per_channel: bool | None = None
    stabilise: bool | None = None
    dry_run: bool = False  # read each file's levels and routes, as `run -v` gives them; denoise and write nothing


def denoise_files(
    src: Path | Sequence[Path],
    dst: Path | None = None,
    options: RunOptions | None = None,
    on_file: Callable[[FileResult], None] | None = None,
    on_plan: Callable[[int], None] | None = None,
    on_share: Callable[[float], None] | None = None,
) -> BatchReport:
    """Denoise a file or a folder into ``dst`` (default: a new sibling folder), keeping names and
    formats; or several files and folders (a shell's glob) into ``dst`` as a folder, or each beside
    itself (``files.plan_inputs``).

    Existing outputs are skipped unless ``overwrite``, so a rerun finishes a stopped batch.
    Files are read, their noise estimated, and written in background threads while the model
    works (on a GPU the estimate takes longer than the network), small images of one size go
    through the model together, and a bad file is recorded as failed
    while the batch goes on. A TIFF stack is streamed slab by slab (``_stream``); ``on_share``
    hears the share of it done after each slab, so a progress bar moves through a long stack.
    With ``dry_run`` each file is only read and its noise estimated ("estimated", with the levels
    and routes a real run would use), whether its output exists or not; nothing is written.
    """
    opts = options or RunOptions()
    asked = normalize_format(opts.format)
    srcs = [Path(src)] if isinstance(src, (str, Path)) else [Path(s) for s in src]
    named = Path(dst) if dst is not None and len(srcs) == 1 and srcs[0].is_file() and not Path(dst).is_dir() else None
    # `run photo.png -o clean.jpg` writes a JPEG, not PNG bytes under that name; --format still renames
    fmt = asked or (format_of(named) if named is not None else None)
    planned = plan_run(srcs, Path(dst) if dst is not None else None, opts.format)
    pairs = planned.pairs
    if not opts.dry_run:
        remove_stale_partials([out for _, out in pairs])
    if on_plan:
        on_plan(len(pairs))
    denoiser = Denoiser(opts.weights, opts.device, opts.tile, opts.sigma, opts.ensemble, opts.int8, opts.strength,
                        opts.per_channel, opts.stabilise)
    results: list[FileResult] = []

    def record(result: FileResult) -> None:
        results.append(result)
        if on_file:
            on_file(result)

    todo = []
    for path, out in pairs:
        if out.exists() and not opts.overwrite and not opts.dry_run:
            record(FileResult(path, out, "skipped", "exists (use --overwrite)"))
        else:
            todo.append((path, out))
    with ThreadPoolExecutor(max_workers=max(1, opts.threads)) as pool:
        def read(path: Path) -> list[TiffStack] | Estimated:
            stacks = open_stack(path, opts.max_pixels)
            if stacks is not None and fmt not in (None, "TIFF"):
                _close(stacks)
                raise DenoiseError(f"{path}: a TIFF stack can only be written as TIFF, not {fmt}")
            return stacks if stacks is not None else _estimated(denoiser, path, read_image(path, opts.max_pixels, stacks=True))

        writes: list[tuple[Path, Path, float, str, dict, Future]] = []
        pending: list[tuple[Path, Path, LoadedImage, list[list[Level] | None], list[bool]]] = []
        full: Path | None = None  # the output whose write met a full disk: the batch stops, and the files left are skipped

        def flush() -> None:
            nonlocal full
            if not pending or full:
                return
            first = str(pending[0][0])
            grey_copies = [denoiser.grey_copy(img.planes[0]) for _, _, img, _, _ in pending]  # of the input, read before it is overwritten
            planes = [(p, lv, s) for _, _, img, lvs, ss in pending for p, lv, s in zip(img.planes, lvs, ss)]
            denoiser.on_share = on_share if len(planes) == 1 else None  # one image: the bar moves through its windows
            try:
                _denoise_in_place(denoiser, planes, opts.batch, first)
            except Exception as exc:  # anything unforeseen ends these files, not the batch
                for path, out, *_ in pending:
                    record(FileResult(path, out, "failed", _pass_failure(exc, first, path)))
                pending.clear()
                return
            finally:
                denoiser.on_share = None
            for (path, out, img, lvs, splits), grey_copy in zip(pending, grey_copies):
                detail, info = _described(_notes(img, fmt), lvs, splits, grey_copy, opts)
                writes.append((path, out, img.megapixels, detail, info, pool.submit(write_image, img, out, fmt, opts.jpeg_quality)))
            pending.clear()
            met = _drain(writes, record, block=False)
            full = full or met

        feed = _prefetch(pool, todo, read, ahead=max(2, opts.batch))
        for (path, out), loaded in feed:
            out = None if opts.dry_run else out
            if full:
                if isinstance(loaded, list):
                    _close(loaded)
                break
            if isinstance(loaded, DenoiseError):
                record(FileResult(path, out, "failed", str(loaded)))
            elif isinstance(loaded, list):  # a TIFF stack, or the images a TIFF holds
                flush()
                met = _drain(writes, record, block=True)  # the files before it are reported before it
                full = full or met
                try:
                    if not full:
                        record(_stream(loaded, out, denoiser, opts, pool, on_share))
                except DenoiseError as exc:  # its write met a full disk
                    record(FileResult(path, out, "failed", str(exc)))
                    full = out
                finally:
                    _close(loaded)
            elif opts.dry_run:
                img, lvs, splits = loaded
                detail, info = _described(_notes(img, fmt), lvs, splits, denoiser.grey_copy(img.planes[0]), opts)
                record(FileResult(path, None, "estimated", megapixels=img.megapixels, detail=detail, info=info))
            else:
                if pending and (len(pending) >= opts.batch or not _batchable(pending[0][2], loaded[0], opts.tile)):
                    flush()
                pending.append((path, out, *loaded))
        feed.close()
        flush()
        met = _drain(writes, record, block=True)
        full = full or met
    stopped = ""
    if full:
        done = {r.src for r in results}
        stopped = stopped_for_space(full.parent, sum(r.status == "denoised" for r in results))
        for path, out in todo:
            if path not in done:
                record(FileResult(path, out, "skipped", "not written: the disk is full"))
    order = {src: i for i, (src, _) in enumerate(pairs)}
    results.sort(key=lambda r: order.get(r.src, len(order)))  # the report in the inputs' order, not the order they finished
    options = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items() if k != "weights"}
    meta = {**provenance(denoiser.device), "weights": str(opts.weights) if opts.weights else "shipped", "options": options}
    return BatchReport(results, planned.unread(), meta, stopped)


def _estimated(denoiser: Denoiser, path: Path, image: LoadedImage) -> Estimated:
    """An image with its planes' levels and routes, read ahead of the network; any unforeseen
    error in reading them fails this file alone, in one line naming it."""
    try:
        splits = [denoiser.split(p) for p in image.planes]
        levels = [denoiser.levels([p], splits=[s]) for p, s in zip(image.planes, splits)]
        if image.info.get("wraps"):
            levels = [None if lvs is None else [lv._replace(wraps=True) for lv in lvs] for lvs in levels]
        return image, levels, splits
    except DenoiseError as exc:
        raise DenoiseError(f"{path}: {exc}") from exc
    except Exception as exc:  # one file's unforeseen data ends that file, not the batch
        raise DenoiseError(f"{path}: its noise level could not be read ({first_line(exc)})") from exc


def _stream(stacks: list[TiffStack], out: Path | None, denoiser: Denoiser, opts: RunOptions, pool: ThreadPoolExecutor,
            on_share: Callable[[float], None] | None) -> FileResult:
    """A TIFF stack, slab by slab: each slab of at most ``batch`` planes (and ``SLAB_PIXELS``, where
    planes are large) is read and its levels estimated in the background while the one before goes
    through the network and into the output, so a stack of any length takes two slabs of memory (until 2026-11-29 `run` held it whole, and
    one larger than the memory free was refused). The images of a TIFF that holds several (its
    series) go one after another into one output. ``on_share`` hears the share done after each
    slab. With ``dry_run`` only the levels are read, and ``out`` is None."""
    path = stacks[0].path
    spans = []
    for stack in stacks:
        step = max(1, min(opts.batch // stack.samples, SLAB_PIXELS // (math.prod(stack.size) * stack.samples)))
        spans.append([(i, min(i + step, stack.pages)) for i in range(0, stack.pages, step)])
    total, done = sum(len(s) for s in spans), [0]
    levels: list[list[Level] | None] = []
    splits: list[bool] = []
    grey: list[bool] = []

    def slabs(stack: TiffStack, spans: list[tuple[int, int]]) -> Iterator[LoadedImage]:
        ahead = pool.submit(lambda: _estimated(denoiser, path, stack.read(*spans[0])))
        try:
            for k in range(len(spans)):
                img, lvs, ss = ahead.result()
                if k + 1 < len(spans):
                    ahead = pool.submit(lambda span=spans[k + 1]: _estimated(denoiser, path, stack.read(*span)))
                if not grey:
                    grey.append(denoiser.grey_copy(img.planes[0]))
                levels.extend(lvs)
                splits.extend(ss)
                try:
                    _denoise_in_place(denoiser, [] if opts.dry_run else list(zip(img.planes, lvs, ss)), opts.batch, str(path))
                except Exception as exc:  # anything unforeseen ends this file, not the batch
                    raise DenoiseError(_pass_failure(exc, str(path), path)) from exc
                yield img
                done[0] += 1
                if on_share is not None:
                    on_share(done[0] / total)
        finally:
            wait([ahead])

    streams = [slabs(stack, s) for stack, s in zip(stacks, spans)]
    try:
        if out is None:
            for stream in streams:
                for _ in stream:
                    pass
        else:
            write_stacks(out, stacks, streams)
    except DenoiseError as exc:
        if out_of_space(exc):
            raise  # the batch stops
        return FileResult(path, out, "failed", str(exc))
    finally:
        for stream in streams:
            stream.close()  # where the writer failed: no read of the stack left running once it is closed
    notes = [f"{len(stacks)} images (series)"] if len(stacks) > 1 else []
    detail, info = _described(notes + [n for stack in stacks for n in stack.notes], levels, splits, grey[0], opts)
    return FileResult(path, out, "estimated" if out is None else "denoised", megapixels=sum(s.megapixels for s in stacks),
                      detail=detail, info=info)


def _pass_failure(exc: Exception, first: str, path: Path) -> str:
    """One file's line for a pass of the network that failed: a DenoiseError names the pass's
    first file, so each file's line names its own; any other error is given in its first line."""
    if isinstance(exc, DenoiseError):
        return str(exc).replace(first, str(path), 1)
    return f"{path}: the network failed on it ({first_line(exc)})"


def _notes(img: LoadedImage, fmt: str | None) -> list[str]:
    """What reading ``img`` left out or worked around, and what writing it as ``fmt`` leaves out."""
    return [*img.info.get("notes", []), *left_out(img, fmt)]


def _described(notes: list[str], lvs: list[list[Level] | None], splits: list[bool], grey_copy: bool,
               opts: RunOptions) -> tuple[str, dict]:
    """What `run -v` says of one file (``_detail``), and what `run --json` records of it; ``notes``:
    what reading it left out or worked around."""
    used = [lv for plane in lvs if plane is not None for lv in plane]
    detail = _detail(used, opts, any(splits), grey_copy, len(splits), notes)
    info = {"planes": len(splits), "sigma": [round(lv.sigma * 255, 3) for lv in used], "estimated": opts.sigma is None,
            "stabilised": sum(lv.stabiliser is not None for lv in used), "hot_pixels": sum(lv.hot for lv in used), "per_channel": any(splits),
            "grey_model_for_grey_in_rgb": grey_copy, "notes": notes}
    return detail, info


def _detail(levels: list[Level], opts: RunOptions, split: bool, grey_copy: bool, planes: int, read: list[str]) -> str:
    """What `run -v` says of one file: what reading it noted (damage worked around, previews left
    out), the levels used (a stack's as a range), and the routes taken."""
    notes = list(read)
    notes += [f"{planes} planes"] if planes > 1 else []
    if levels:
        sigmas = [lv.sigma * 255 for lv in levels]
        low, high = f"{min(sigmas):.1f}", f"{max(sigmas):.1f}"
        notes.append("sigma " + (" / ".join(f"{s:.1f}" for s in sigmas) if planes == 1 else low if low == high else f"{low}-{high}"))
        notes += ["estimated"] if opts.sigma is None else []
        notes += [f"strength {opts.strength:g}"] if opts.strength != 1 else []
    notes += ["per channel"] if split else []
    stabilised = sum(lv.stabiliser is not None for lv in levels)
    if stabilised:
        notes.append("stabilised: the noise grows with brightness" + (f" ({stabilised} of {len(levels)})" if planes > 1 else ""))
    notes += ["grey in RGB: grey model"] if grey_copy else []
    notes += ["360-degree panorama: its edges denoised as one"] if any(lv.wraps for lv in levels) else []
    hot = sum(lv.hot for lv in levels)
    notes += [f"{hot} hot pixel{'s' if hot > 1 else ''} kept as read"] if hot else []
    return ", ".join(notes)


def _batchable(a: LoadedImage, b: LoadedImage, tile: int | None) -> bool:
    """Small images of one shape share a forward pass; large ones go alone (and maybe tiled), as
    does a 360-degree panorama, whose edges go in joined."""
    return (tile is None and a.pixels.shape == b.pixels.shape and a.megapixels <= BATCH_MAX_MP
            and not a.info.get("wraps") and not b.info.get("wraps"))


def _denoise_in_place(denoiser: Denoiser, planes: list[tuple[torch.Tensor, list[Level] | None, bool]], batch: int, name: str) -> None:
    """Planes (with their levels and routes) through the network in passes of at most ``batch``,
    each output into its own input's place, so no second copy of them is held."""
    for chunk in _chunks(planes, batch) if planes else []:
        ys = denoiser.batch([p for p, _, _ in chunk], name=name, splits=[s for *_, s in chunk],
                            levels=None if chunk[0][1] is None else [lv for _, lvs, _ in chunk for lv in lvs])
        for (p, _, _), y in zip(chunk, ys):
            p.copy_(y)


def _chunks(planes: list[tuple[torch.Tensor, T, bool]], batch: int) -> list[list[tuple[torch.Tensor, T, bool]]]:
    """(plane, levels, split) in passes of at most ``batch`` planes, one at a time where a plane is
    large, as for single files."""
    size = 1 if planes[0][0].shape[-1] * planes[0][0].shape[-2] > BATCH_MAX_MP * 1e6 else max(1, batch)
    return [planes[i : i + size] for i in range(0, len(planes), size)]


def _prefetch(pool: ThreadPoolExecutor, items: list[tuple[Path, Path]], read: Callable[[Path], T], ahead: int):
    """Yield ((path, out), what ``read`` gave or its DenoiseError) in order, reading up to ``ahead`` files in the background."""
    queue: deque[tuple[tuple[Path, Path], Future]] = deque()
    it = iter(items)
    for item in it:
        queue.append((item, pool.submit(read, item[0])))
        if len(queue) >= ahead:
            break
    try:
        while queue:
            item, fut = queue.popleft()
            nxt = next(it, None)
            if nxt is not None:
                queue.append((nxt, pool.submit(read, nxt[0])))
            try:
                yield item, fut.result()
            except DenoiseError as exc:
                yield item, exc
    finally:  # stopped early (a full disk): reads not begun are dropped, files read ahead closed
        for _, fut in queue:
            if not fut.cancel():
                fut.add_done_callback(_close_result)


def _close_result(fut: Future) -> None:
    if not fut.cancelled() and fut.exception() is None and isinstance(fut.result(), list):
        _close(fut.result())


def _close(stacks: list[TiffStack]) -> None:
    for stack in stacks:
        stack.close()


def _drain(writes: list[tuple[Path, Path, float, str, dict, Future]], record: Callable[[FileResult], None], block: bool) -> Path | None:
    """Record finished writes in order; with ``block``, wait for all of them. The output whose
    write met a full disk, if one did."""
    full = None
    while writes and (block or writes[0][5].done()):
        path, out, mp, detail, info, fut = writes.pop(0)
        try:
            fut.result()
            record(FileResult(path, out, "denoised", megapixels=mp, detail=detail, info=info))
        except DenoiseError as exc:
            record(FileResult(path, out, "failed", str(exc)))
            full = full or (out if out_of_space(exc) else None)
    return full

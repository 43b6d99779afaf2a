"""Denoising tensors and files with a trained model, whole or in blended tiles."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from denoisecli.device import resolve_device
from denoisecli.errors import DenoiseError
from denoisecli.files import BatchReport, FileResult, default_output, plan
from denoisecli.image_io import read_image, write_image
from denoisecli.weights import load_model, shipped_weights

AUTO_TILE_PIXELS = 2048 * 2048
AUTO_TILE = 1024
CONTEXT = 48
BLEND = 32


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


def _windows(size: int, tile: int, step: int, align: int) -> list[tuple[int, int]]:
    """(start, length) of windows covering ``size``; starts are multiples of the model's stride,
    since a strided network is shift-equivariant only by whole strides."""
    if size <= tile:
        return [(0, size)]
    step = max(align, step // align * align)
    last = (size - tile + align - 1) // align * align
    starts = list(range(0, last, step)) + [last]
    return [(s, min(tile, size - s)) for s in starts]


@torch.inference_mode()
def denoise_tensor(
    model: nn.Module, x: torch.Tensor, tile: int | None = None, context: int = CONTEXT, blend: int = BLEND
) -> torch.Tensor:
    """Denoise a [B, C, H, W] batch whole, or in overlapping windows of ``tile`` pixels.

    Neighbouring windows overlap by ``2 * context + blend``: each window's outer
    ``context`` pixels on inner edges only give the model context and are dropped,
    and the ``blend`` band between is cross-faded, so tiles leave no seam and the
    result matches the whole-image output.
    """
    h, w = x.shape[-2:]
    if tile is None or (h <= tile and w <= tile):
        return model(x).clamp_(0, 1)
    overlap = 2 * context + blend
    if tile <= overlap:
        raise DenoiseError(f"--tile {tile} is too small: it must exceed the {overlap}-pixel overlap between tiles")
    align = int(getattr(model, "stride", 1))
    out = torch.zeros_like(x)
    weight = torch.zeros((1, 1, h, w), device=x.device, dtype=x.dtype)
    for top, th in _windows(h, tile, tile - overlap, align):
        wy = _axis_weights(top, th, h, context, blend)
        for left, tw in _windows(w, tile, tile - overlap, align):
            wx = _axis_weights(left, tw, w, context, blend)
            win = (wy[:, None] * wx[None, :]).to(device=x.device, dtype=x.dtype)
            out[..., top : top + th, left : left + tw] += model(x[..., top : top + th, left : left + tw]) * win
            weight[..., top : top + th, left : left + tw] += win
    return (out / weight).clamp_(0, 1)


class Denoiser:
    """Loads models lazily by channel count and denoises single images on one device."""

    def __init__(self, weights: Path | None = None, device: str = "auto", tile: int | None = None) -> None:
        self.device = resolve_device(device)
        self.weights = Path(weights) if weights is not None else None
        self.tile = tile
        self._models: dict[Path, nn.Module] = {}
        if self.weights is not None:
            self._model(self.weights)

    def _model(self, path: Path) -> nn.Module:
        if path not in self._models:
            model, _ = load_model(path)
            self._models[path] = model.to(self.device)
        return self._models[path]

    def model_for(self, channels: int) -> nn.Module:
        return self._model(self.weights if self.weights is not None else shipped_weights(channels))

    def __call__(self, pixels: torch.Tensor, name: str = "image") -> torch.Tensor:
        """Denoise a CxHxW image in [0, 1]; grey through a colour model goes as three equal channels."""
        c = pixels.shape[0]
        model = self.model_for(c)
        mc = model.channels
        x = pixels.to(self.device, torch.float32)[None]
        if c == mc:
            pass
        elif c == 1 and mc == 3:
            x = x.expand(-1, 3, -1, -1)
        else:
            raise DenoiseError(f"{name}: the model is for {_kind(mc)} images, this image is {_kind(c)}")
        tile = self.tile
        if tile is None and x.shape[-1] * x.shape[-2] > AUTO_TILE_PIXELS:
            tile = AUTO_TILE
        y = denoise_tensor(model, x, tile=tile, context=min(CONTEXT, (tile or 0) // 6), blend=min(BLEND, (tile or 0) // 8))
        if c != mc:
            y = y.mean(dim=1, keepdim=True)
        return y[0].cpu()


def _kind(channels: int) -> str:
    return {1: "grey", 3: "colour"}.get(channels, f"{channels}-channel")


def denoise_files(
    src: Path,
    dst: Path | None = None,
    weights: Path | None = None,
    device: str = "auto",
    tile: int | None = None,
    overwrite: bool = False,
    on_file: Callable[[FileResult], None] | None = None,
    on_plan: Callable[[int], None] | None = None,
) -> BatchReport:
    """Denoise a file or a folder into ``dst`` (default: a new sibling folder), keeping names and formats.

    Existing outputs are skipped unless ``overwrite``; a bad file is recorded as failed
    and the batch goes on.
    """
    src = Path(src)
    pairs = plan(src, Path(dst) if dst is not None else default_output(src, "denoised"))
    if on_plan:
        on_plan(len(pairs))
    denoiser = Denoiser(weights, device, tile)
    results = []
    for path, out in pairs:
        if out.exists() and not overwrite:
            result = FileResult(path, out, "skipped", "exists (use --overwrite)")
        else:
            try:
                img = read_image(path)
                img.pixels = denoiser(img.pixels, name=str(path))
                write_image(img, out)
                result = FileResult(path, out, "denoised", megapixels=img.megapixels)
            except DenoiseError as exc:
                result = FileResult(path, out, "failed", str(exc))
        results.append(result)
        if on_file:
            on_file(result)
    return BatchReport(results)

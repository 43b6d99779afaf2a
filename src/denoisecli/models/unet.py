"""A residual UNet denoiser: encoder-decoder with additive skips that predicts the noise to remove."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from denoisecli.models.config import from_config

DEFAULTS: dict[str, Any] = {"channels": 3, "width": 32, "depth": 4, "blocks": 2, "unshuffle": 2, "noise_map": False, "level": "estimate"}

LEVELS = ("estimate", "map", "sigma", "clamped")


class ResBlock(nn.Module):
    """conv-ReLU-conv with an identity skip; no normalisation, so outputs scale with the input noise.

    The second convolution starts at zero, so every block starts as the identity: without
    normalisation this keeps early training from blowing up at a high learning rate.
    """

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x), inplace=True))


def _stage(ch: int, blocks: int) -> nn.Sequential:
    return nn.Sequential(*(ResBlock(ch) for _ in range(blocks)))


class UNet(nn.Module):
    """Encoder-decoder on ``depth`` resolutions, optionally after a pixel-unshuffle.

    A pixel-unshuffle by ``unshuffle`` moves the whole network to a lower resolution
    (as FFDNet does), which buys speed on a CPU for little loss of quality. Any input
    size works: the input is reflect-padded to a multiple of the network's stride and
    the output cropped back. The output is ``x - noise``, so an untrained network is
    the identity and the network only has to learn the correction. With ``noise_map``
    the network also takes the noise level (a std per image, as FFDNet and DRUNet do),
    which lets a user set the strength. ``level`` says what that input means: ``"estimate"``,
    the sigma of white noise and, for noise that has none (camera, JPEG, real pairs), what the
    noise estimator reads on the noisy image, so training feeds what `run` will; ``"map"``, that level
    spread over the image as a per-pixel map that follows brightness where the noise does
    (``noise_estimate.level_map``: camera noise grows with the signal); ``"sigma"``, the
    same but the std of the noise present where there is no sigma (models trained before
    2026-11-26: the estimator reads camera noise 15-20% lower, so they under-denoise it); or
    ``"clamped"``, the std the noise keeps after clamping to [0, 1], which depends on how
    dark or bright the image is (models trained before the distinction was made).
    """

    def __init__(
        self, channels: int = 3, width: int = 32, depth: int = 4, blocks: int = 2, unshuffle: int = 2,
        noise_map: bool = False, level: str = "estimate",
    ) -> None:
        super().__init__()
        if channels < 1 or width < 1 or depth < 1 or blocks < 0 or unshuffle < 1:
            raise ValueError("channels, width, depth and unshuffle must be positive, blocks non-negative")
        if level not in LEVELS:
            raise ValueError(f"level must be one of {', '.join(LEVELS)}, got {level!r}")
        self.channels, self.depth, self.unshuffle, self.noise_map, self.level = channels, depth, unshuffle, noise_map, level
        self.stride = unshuffle * 2 ** (depth - 1)
        io_ch = channels * unshuffle * unshuffle
        widths = [width * 2**i for i in range(depth)]
        self.head = nn.Conv2d(io_ch + int(noise_map), widths[0], 3, padding=1)
        self.encoders = nn.ModuleList(_stage(w, blocks) for w in widths[:-1])
        self.downs = nn.ModuleList(nn.Conv2d(w, w * 2, 2, stride=2) for w in widths[:-1])
        self.bottleneck = _stage(widths[-1], blocks)
        self.ups = nn.ModuleList(nn.ConvTranspose2d(w * 2, w, 2, stride=2) for w in reversed(widths[:-1]))
        self.decoders = nn.ModuleList(_stage(w, blocks) for w in reversed(widths[:-1]))
        self.tail = nn.Conv2d(widths[0], io_ch, 3, padding=1)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float | None = None) -> torch.Tensor:
        """``sigma``: the noise std (0-1 scale), for noise-map models only: per image ([B] or a float),
        or per pixel ([B, 1, H, W], as FFDNet allows for noise that varies across the image)."""
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.stride, (-w) % self.stride
        y = _pad(x, ph, pw)
        if self.unshuffle > 1:
            y = F.pixel_unshuffle(y, self.unshuffle)
        if self.noise_map:
            if sigma is None:
                raise ValueError("this model takes the noise level: pass sigma")
            level = torch.as_tensor(sigma, dtype=y.dtype, device=y.device)
            if level.ndim == 4:
                if level.shape[1] != 1 or level.shape[-2:] != x.shape[-2:]:
                    raise ValueError(f"a per-pixel noise level must be [B, 1, {h}, {w}], got {list(level.shape)}")
                level = F.avg_pool2d(_pad(level, ph, pw), self.unshuffle) if self.unshuffle > 1 else _pad(level, ph, pw)
            else:
                level = level.reshape(-1, 1, 1, 1)
            y = torch.cat([y, level.expand(y.shape[0], 1, *y.shape[-2:])], dim=1)
        elif sigma is not None:
            raise ValueError("this model has no noise-level input")
        y = self.head(y)
        skips = []
        for enc, down in zip(self.encoders, self.downs):
            y = enc(y)
            skips.append(y)
            y = down(y)
        y = self.bottleneck(y)
        for up, dec, skip in zip(self.ups, self.decoders, reversed(skips)):
            y = dec(up(y) + skip)
        y = self.tail(y)
        if self.unshuffle > 1:
            y = F.pixel_shuffle(y, self.unshuffle)
        return x - y[..., :h, :w]


def _pad(x: torch.Tensor, ph: int, pw: int) -> torch.Tensor:
    """Reflect-pad bottom/right; fall back to replicate where the image is smaller than the pad."""
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < x.shape[-2] and pw < x.shape[-1] else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def narrowed(model: UNet, width: int) -> UNet:
    """A copy of ``model`` at a smaller ``width`` that keeps its strongest channels, so a faster
    network starts from what a wider one learned instead of from scratch (then fine-tune it).

    Each resolution level's residual stream (head, blocks, skips, down and up convolutions, tail)
    is one set of channels that must be kept or dropped together; each block's inner channels are
    chosen on their own. A channel's strength is the norm of the weights that write it times the
    norm of those that read it, each relative to its layer's mean, so layers of different scale
    weigh alike.
    """
    base = model.head.out_channels
    if not 1 <= width <= base:
        raise ValueError(f"can only narrow a width-{base} UNet to a width from 1 to {base}, not {width}")
    depth, levels = model.depth, _levels(model)
    keep = [width * 2**i for i in range(depth)]
    writers: list[list[torch.Tensor]] = [[model.head.weight]] + [[] for _ in range(depth - 1)]
    readers: list[list[torch.Tensor]] = [[model.tail.weight.transpose(0, 1)]] + [[] for _ in range(depth - 1)]
    for i, (blocks, down, up) in enumerate(levels):
        writers[i] += [b.conv2.weight for b in blocks]
        readers[i] += [b.conv1.weight.transpose(0, 1) for b in blocks]
        if down is not None and up is not None:
            readers[i].append(down.weight.transpose(0, 1))
            writers[i + 1].append(down.weight)
            writers[i].append(up.weight.transpose(0, 1))
            readers[i + 1].append(up.weight)
    stream = [_strongest(_strength(writers[i]) * _strength(readers[i]), keep[i]) for i in range(depth)]
    small = UNet(model.channels, width, depth, len(model.bottleneck), model.unshuffle, model.noise_map, model.level)
    with torch.no_grad():
        _copy(small.head, model.head, stream[0], None)
        _copy(small.tail, model.tail, None, stream[0])
        for i, ((blocks, down, up), (new_blocks, new_down, new_up)) in enumerate(zip(levels, _levels(small))):
            if down is not None and up is not None:
                _copy(new_down, down, stream[i + 1], stream[i])
                _copy(new_up, up, stream[i], stream[i + 1], transposed=True)
            for new, old in zip(new_blocks, blocks):
                inner = _strongest(_strength([old.conv1.weight]) * _strength([old.conv2.weight.transpose(0, 1)]), keep[i])
                _copy(new.conv1, old.conv1, inner, stream[i])
                _copy(new.conv2, old.conv2, stream[i], inner)
    return small


def _levels(model: UNet) -> list[tuple[list[ResBlock], nn.Module | None, nn.Module | None]]:
    """Per resolution level, top first: its residual blocks (encoder and decoder), the convolution
    down from it and the one back up to it (None at the bottom)."""
    decoders, ups = list(model.decoders)[::-1], list(model.ups)[::-1]
    upper = [([*model.encoders[i], *decoders[i]], model.downs[i], ups[i]) for i in range(model.depth - 1)]
    return upper + [(list(model.bottleneck), None, None)]


def _strength(weights: list[torch.Tensor]) -> torch.Tensor:
    """Per output channel (dim 0): the root of the summed squared weights, each layer relative to its mean."""
    total = torch.zeros(weights[0].shape[0])
    for w in weights:
        norm = w.detach().flatten(1).norm(dim=1)
        total += (norm / norm.mean().clamp_min(1e-12)) ** 2
    return total.sqrt()


def _strongest(score: torch.Tensor, k: int) -> torch.Tensor:
    return score.topk(k).indices.sort().values


def _copy(new: nn.Module, old: nn.Module, out: torch.Tensor | None, inp: torch.Tensor | None, transposed: bool = False) -> None:
    """Copy the ``out`` x ``inp`` slice of a (transposed) convolution's weights (None: all channels)."""
    w = old.weight.transpose(0, 1) if transposed else old.weight
    if out is not None:
        w = w[out]
    if inp is not None:
        w = w[:, inp]
    new.weight.copy_(w.transpose(0, 1) if transposed else w)
    new.bias.copy_(old.bias if out is None else old.bias[out])


def build(config: dict[str, Any]) -> UNet:
    """Build from a config dict; unknown keys are refused so a typo never trains the wrong model."""
    return from_config(UNet, DEFAULTS, config, "unet")

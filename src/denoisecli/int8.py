"""Int8 inference on a CPU for the UNet's deep levels: about 1.25x the speed for under 0.01 dB.

On a 2-core CPU the network is compute-bound: oneDNN's float convolutions already run at the
rate of a matrix product (`benchmarks/roofline.py`). Its int8 convolutions do twice the
multiply-adds per instruction, so a residual block of 64 to 256 channels ran 1.4-1.8x as fast
in int8 on a 2-core AMD EPYC (AVX2, no VNNI), and the shipped network 1.23-1.32x. Only those deep
levels are quantised: they carry coarse structure and tolerate 8 bits (the benchmarks moved by
0.0001-0.007 dB; from 128 channels on, 0.0002 dB on Kodak24 at sigma 15, but the network was only 1.15-1.22x as fast),
while quantising the 32-channel level, head and tail as well cost 0.08-0.17 dB (simulated), and
gained nothing more once the 32-channel level's extra quantising passes were paid.

Weights are quantised per output channel when a model is loaded. Activations need a range
known in advance (working it out per image cost most of the gain), so each block's input range
and the range after its first convolution are measured once on training images (`calibrate`)
and stored in the model file under ``"int8"``. A model file without them runs in float32.

The convolutions are oneDNN's operators in torch (`torch.ops.onednn.qconv2d_pointwise`, which
torch.compile's x86 int8 path emits) on plain uint8 and int8 tensors, not the quantized tensor
types that torch 2.14 deprecates. They are internal to torch, so `quantize` checks the int8 network
against the float one on a probe image and keeps float32 if they disagree or the operators fail.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from denoisecli.models.unet import ResBlock, UNet
from denoisecli.noise import ClampedNormalNoise, noisy_photo
from denoisecli.noise_estimate import level_input, model_level

VERSION = 1
MIN_WIDTH = 64
QUANTILE = 0.9999
PROBE_DB = 40.0  # the shipped models read 48.8 (colour) and 69.4 dB (grey) on the 128-pixel probe (2-core AMD EPYC, AVX2)
PROBE_SIZE = 128


def int8_supported() -> bool:
    """Whether this torch has oneDNN's int8 convolutions (PyTorch's x86 builds do; `quantize`'s probe
    then decides whether they can be trusted on this CPU)."""
    onednn = getattr(torch.ops, "onednn", None)
    try:
        return bool(torch.backends.mkldnn.is_available() and onednn is not None
                    and hasattr(onednn, "qconv_prepack") and hasattr(onednn, "qconv2d_pointwise"))
    except (AttributeError, RuntimeError):
        return False


def _blocks(model: nn.Module) -> dict[str, ResBlock]:
    return {name: m for name, m in model.named_modules() if isinstance(m, ResBlock) and m.conv1.in_channels >= MIN_WIDTH}


def _range(t: torch.Tensor, generator: torch.Generator) -> tuple[float, float]:
    """The QUANTILE range of a sample of ``t``: the rare outliers are clipped, not resolved."""
    flat = t.detach().float().flatten()
    if flat.numel() > 1_000_000:
        flat = flat[torch.randint(0, flat.numel(), (1_000_000,), generator=generator)]
    lo, hi = torch.quantile(flat, torch.tensor([1 - QUANTILE, QUANTILE])).tolist()
    return lo, hi


def calibrate(model: UNet, batches: Iterable[tuple[torch.Tensor, torch.Tensor | None]]) -> dict[str, Any]:
    """Activation ranges of the deep residual blocks on ``batches`` of (noisy images, the level the
    model gets), widened to the extremes met over all of them; stored in a model file as ``"int8"``."""
    blocks = _blocks(model)
    seen = {name: [0.0, 0.0, 0.0] for name in blocks}  # input low, input high, high after conv1 + ReLU
    gen = torch.Generator().manual_seed(0)

    def on_input(name: str, x: torch.Tensor) -> None:
        lo, hi = _range(x, gen)
        seen[name][0], seen[name][1] = min(seen[name][0], lo), max(seen[name][1], hi)

    def on_hidden(name: str, h: torch.Tensor) -> None:
        seen[name][2] = max(seen[name][2], _range(F.relu(h), gen)[1])

    hooks = []
    for name, block in blocks.items():
        hooks.append(block.register_forward_pre_hook(lambda m, a, n=name: on_input(n, a[0])))
        hooks.append(block.conv1.register_forward_hook(lambda m, a, o, n=name: on_hidden(n, o)))
    try:
        with torch.no_grad():
            for x, level in batches:
                model(x) if level is None else model(x, level)
    finally:
        for h in hooks:
            h.remove()
    if blocks and not any(r[1] > r[0] for r in seen.values()):
        raise ValueError("calibrate needs at least one batch")
    return {"version": VERSION, "min_width": MIN_WIDTH, "quantile": QUANTILE, "blocks": seen}


CALIBRATION_SIGMAS = (15, 50, 0, 75, 25, 5)


def calibrate_on_images(model: UNet, images: list[torch.Tensor], crop: int = 256) -> dict[str, Any]:
    """``calibrate`` on clean CxHxW images in [0, 1] (training images: test images never tune a
    model), each cropped and given white noise from the training noise layer at the next level of
    CALIBRATION_SIGMAS (0-75, so every strength a user asks for is covered), its level read as
    `run` reads it."""
    gen = torch.Generator().manual_seed(0)

    def batches() -> Iterable[tuple[torch.Tensor, torch.Tensor | None]]:
        for i, im in enumerate(images):
            clean = im[:, :crop, :crop][None].float()
            noisy = ClampedNormalNoise(std=CALIBRATION_SIGMAS[i % len(CALIBRATION_SIGMAS)] / 255)(clean, generator=gen)
            level = level_input([model_level(noisy[0], None, model.level)[1]], "cpu") if model.noise_map else None
            yield noisy, level

    return calibrate(model, batches())


def calibration_entry(model: nn.Module, images: list[torch.Tensor], count: int = 24) -> dict[str, Any]:
    """``{"int8": ranges}`` for a model file, from ``count`` of its uint8 training ``images`` (evenly
    spaced), so a model `train` writes runs in int8 on a CPU as the shipped ones do; ``{}`` for a
    model with no deep levels to quantise. Works on a CPU copy, whatever device trained it."""
    if not isinstance(model, UNet) or not _blocks(model) or not images:
        return {}
    cpu = copy.deepcopy(model).float().cpu().eval()
    step = max(1, len(images) // count)
    picked = [im.float() / 255 for im in images[::step][:count]]
    return {"int8": {**calibrate_on_images(cpu, picked), "images": len(picked)}}


def _pack(weight: torch.Tensor, x_scale: float, x_zero: int) -> tuple[torch.Tensor, torch.Tensor]:
    w = weight.detach().float()
    scales = w.abs().amax(dim=(1, 2, 3)).clamp_min(1e-12) / 127
    q = torch.round(w / scales[:, None, None, None]).clamp(-128, 127).to(torch.int8)
    return torch.ops.onednn.qconv_prepack(q, scales, x_scale, x_zero, [1, 1], [1, 1], [1, 1], 1, None), scales


class Int8ResBlock(nn.Module):
    """A ResBlock as two oneDNN int8 convolutions: the first with its ReLU fused and an 8-bit
    output, the second adding its float32 result into the block's input in place (the residual
    skip, fused), so the block costs one extra pass, the quantising of its input. The input
    tensor is consumed: the output is written into its memory, which the UNet never reads again."""

    def __init__(self, block: ResBlock, lo: float, hi: float, h_max: float) -> None:
        super().__init__()
        lo, hi = min(lo, 0.0), max(hi, 1e-6)
        self.x_scale = (hi - lo) / 255
        self.x_zero = int(round(-lo / self.x_scale))
        self.h_scale = max(h_max, 1e-6) / 255
        self.w1, self.s1 = _pack(block.conv1.weight, self.x_scale, self.x_zero)
        self.w2, self.s2 = _pack(block.conv2.weight, self.h_scale, 0)
        self.b1, self.b2 = block.conv1.bias.detach().float(), block.conv2.bias.detach().float()
        self.zeros = torch.zeros(len(self.s1), dtype=torch.int64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        q = torch.clamp(torch.round(x / self.x_scale) + self.x_zero, 0, 255).to(torch.uint8)
        h = torch.ops.onednn.qconv2d_pointwise(q, self.x_scale, self.x_zero, self.w1, self.s1, self.zeros, self.b1,
                                               [1, 1], [1, 1], [1, 1], 1, self.h_scale, 0, torch.uint8, "relu", [], None)
        return torch.ops.onednn.qconv2d_pointwise.binary(
            h, self.h_scale, 0, self.w2, self.s2, self.zeros, x, self.b2, [1, 1], [1, 1], [1, 1], 1,
            1.0, 0, torch.float32, 1.0, 0, "sum", 1.0, "none", [], None)


def _swap(model: nn.Module, new: dict[str, nn.Module]) -> dict[str, nn.Module]:
    """Put ``new`` modules at their dotted names; returns the ones they replaced."""
    old = {}
    for name, module in new.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        old[name] = parent.get_submodule(child)
        parent.register_module(child, module)
    return old


def _probe(model: UNet) -> tuple[torch.Tensor, torch.Tensor | None]:
    x = noisy_photo(model.channels, PROBE_SIZE, 0.1).contiguous(memory_format=torch.channels_last)
    return x, (torch.tensor([0.1]) if model.noise_map else None)


def quantize(model: nn.Module, calibration: dict[str, Any] | None) -> bool:
    """Run ``model``'s deep residual blocks in int8 where this CPU and the model file allow it.

    Returns whether it did. It does not when torch lacks oneDNN's int8 convolutions, the model
    is not a UNet on a CPU, the file holds no calibration (or one for other blocks), or the
    int8 network does not reproduce the float one on a small probe image to PROBE_DB dB (a guard
    against a CPU whose int8 kernels misbehave; a small image is the hardest case, as its few
    deepest pixels reach past the calibrated ranges most); the model is then left as it was.
    """
    if (not isinstance(model, UNet) or not calibration or calibration.get("version") != VERSION
            or next(model.parameters()).device.type != "cpu" or not int8_supported()):
        return False
    blocks, ranges = _blocks(model), calibration.get("blocks", {})
    if not blocks or set(blocks) != set(ranges):
        return False
    x, level = _probe(model)
    with torch.no_grad():
        try:
            ref = model(x, level)
            old = _swap(model, {name: Int8ResBlock(b, *ranges[name]) for name, b in blocks.items()})
        except RuntimeError:
            return False
        try:
            out = model(x.clone(), level)
            err = float(torch.mean((out - ref) ** 2))
            ok = err == 0 or -10 * torch.log10(torch.tensor(err)).item() >= PROBE_DB
        except RuntimeError:
            ok = False
    if not ok:
        _swap(model, old)
    return ok

"""Is the network's speed on this CPU the software's limit or the hardware's?

usage: python benchmarks/roofline.py [--size 1024] [--weights FILE] [--winograd]

Times every distinct convolution of the model (as it runs at --size, channels-last, as `run` places
it) on its own, a float32 matrix product in the same process (the rate MKL reaches on these cores:
the practical ceiling), and the whole network at a fixed noise level. A convolution near the matrix
product's rate cannot be made much faster by software; only fewer multiply-adds per pixel can.

Winograd's algorithm is the one way around that: it computes a 3x3 convolution with 2-5x fewer
multiplications, at the cost of transforming its input and output. oneDNN uses it only on AVX-512;
torch also carries NNPACK, whose Winograd kernels need only AVX2. --winograd times each 3x3 stride-1
convolution through NNPACK as well (alone, as above), then the whole network with NNPACK in every
convolution where it was the faster alone: the answer to whether it would pay inside `run`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from denoisecli.device import machine_name
from denoisecli.device import place_model
from denoisecli.weights import load_model, shipped_weights


@dataclass(frozen=True)
class ConvShape:
    transposed: bool
    in_ch: int
    out_ch: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    height: int
    width: int

    def macs(self) -> int:
        """Multiply-adds of one call: each output (input, for a transposed convolution) pixel
        meets every weight of its position once."""
        kh, kw = self.kernel
        if self.transposed:
            return self.height * self.width * self.in_ch * self.out_ch * kh * kw
        oh = (self.height + 2 * self.padding[0] - kh) // self.stride[0] + 1
        ow = (self.width + 2 * self.padding[1] - kw) // self.stride[1] + 1
        return oh * ow * self.out_ch * self.in_ch * kh * kw


def conv_calls(model: nn.Module, x: torch.Tensor, *args: object) -> list[tuple[nn.Module, ConvShape]]:
    """Each convolution call of one forward pass of ``model(x, *args)``, in order, with its shape."""
    calls: list[tuple[nn.Module, ConvShape]] = []

    def record(module: nn.Module, inputs: tuple[torch.Tensor, ...], _: torch.Tensor) -> None:
        if module.groups != 1:
            raise ValueError("grouped convolutions are not timed here")
        h, w = inputs[0].shape[-2:]
        calls.append((module, ConvShape(isinstance(module, nn.ConvTranspose2d), module.in_channels, module.out_channels,
                                        module.kernel_size, module.stride, module.padding, h, w)))  # type: ignore[arg-type]

    hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    try:
        with torch.inference_mode():
            model(x, *args)
    finally:
        for h in hooks:
            h.remove()
    return calls


def conv_inventory(model: nn.Module, x: torch.Tensor, *args: object) -> dict[ConvShape, int]:
    """{shape: calls} of the convolutions one forward pass of ``model(x, *args)`` runs."""
    return dict(Counter(shape for _, shape in conv_calls(model, x, *args)))


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def conv_seconds(shape: ConvShape, repeats: int = 5) -> float:
    """Median time of one call of this convolution alone, on random data in channels-last."""
    cl = torch.channels_last
    x = torch.rand(1, shape.in_ch, shape.height, shape.width).contiguous(memory_format=cl)
    w_shape = (shape.in_ch, shape.out_ch) if shape.transposed else (shape.out_ch, shape.in_ch)
    w = torch.rand(*w_shape, *shape.kernel).contiguous(memory_format=cl)
    b = torch.rand(shape.out_ch)
    conv = F.conv_transpose2d if shape.transposed else F.conv2d
    with torch.inference_mode():
        return _median_seconds(lambda: conv(x, w, b, stride=shape.stride, padding=shape.padding), repeats)


def nnpack_seconds(shape: ConvShape, repeats: int = 5) -> float | None:
    """Median time of one call of this convolution through NNPACK (contiguous layout, the only one
    it takes), or None where NNPACK is missing or does not take it (only 3x3, stride 1, padding 1
    is tried: the shapes whose Winograd kernels could pay)."""
    if shape.transposed or shape.kernel != (3, 3) or shape.stride != (1, 1) or shape.padding != (1, 1):
        return None
    if not torch.backends.nnpack.is_available():  # the call also initialises NNPACK: without it every call fails
        return None
    x = torch.rand(1, shape.in_ch, shape.height, shape.width)
    w, b = torch.rand(shape.out_ch, shape.in_ch, 3, 3), torch.rand(shape.out_ch)
    with torch.inference_mode():
        return _median_seconds(lambda: torch._nnpack_spatial_convolution(x, w, b, [1, 1]), repeats)


class _NNPACKConv(nn.Module):
    """A 3x3 stride-1 convolution run through NNPACK, in the network's place of ``conv``."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.weight, self.bias = conv.weight.contiguous(), conv.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch._nnpack_spatial_convolution(x.contiguous(), self.weight, self.bias, [1, 1])


def with_nnpack(model: nn.Module, x: torch.Tensor, chosen: set[ConvShape], *args: object) -> int:
    """Swap, in place, each convolution of ``model`` whose shape (in a pass on ``x``) is in ``chosen``
    for NNPACK; returns how many were swapped."""
    shapes = dict(conv_calls(model, x, *args))
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Conv2d and shapes.get(child) in chosen:
                setattr(parent, name, _NNPACKConv(child))  # type: ignore[arg-type]
                swapped += 1
    return swapped


def matmul_gmacs(n: int = 2048, repeats: int = 5) -> float:
    """Multiply-adds per second (billions) of an n x n float32 matrix product: these cores' practical peak."""
    a, b = torch.rand(n, n), torch.rand(n, n)
    with torch.inference_mode():
        return n**3 / _median_seconds(lambda: a @ b, repeats) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--winograd", action="store_true", help="also time NNPACK's Winograd convolutions")
    args = parser.parse_args()
    model, _ = load_model(args.weights or shipped_weights(3))
    model = place_model(model, torch.device("cpu")).eval()
    x = torch.rand(1, model.channels, args.size, args.size).contiguous(memory_format=torch.channels_last)
    level = (torch.tensor([25 / 255]),) if getattr(model, "noise_map", False) else ()
    shapes = conv_inventory(model, x, *level)
    pixels = args.size * args.size
    total_macs = sum(s.macs() * n for s, n in shapes.items())
    peak = matmul_gmacs(repeats=args.repeats)
    with torch.inference_mode():
        network = _median_seconds(lambda: model(x, *level), args.repeats)
    print(f"{machine_name(torch.device('cpu'))}; {args.size} px; torch {torch.__version__}")
    print(f"float32 matrix product 2048: {peak:.1f} GMAC/s")
    print(f"{'convolution':44s} {'calls':>5s} {'MACs':>6s} {'GMAC/s':>7s} {'x matmul':>8s} {'time':>6s}"
          + (f" {'NNPACK':>7s}" if args.winograd else ""))
    conv_total = 0.0
    faster: set[ConvShape] = set()
    for shape, calls in sorted(shapes.items(), key=lambda kv: -kv[0].macs() * kv[1]):
        seconds = conv_seconds(shape, args.repeats)
        conv_total += seconds * calls
        rate = shape.macs() / seconds / 1e9
        kind = "convT" if shape.transposed else "conv"
        label = f"{kind} {shape.in_ch}->{shape.out_ch} {shape.kernel[0]}x{shape.kernel[1]}/{shape.stride[0]} at {shape.height}x{shape.width}"
        line = f"{label:44s} {calls:5d} {shape.macs() * calls / total_macs:6.1%} {rate:7.1f} {rate / peak:8.2f} {seconds * calls / network:6.1%}"
        winograd = nnpack_seconds(shape, args.repeats) if args.winograd else None
        if winograd is not None:
            line += f" {seconds / winograd:6.2f}x"
            if winograd < seconds:
                faster.add(shape)
        print(line)
    rate = total_macs / network / 1e9
    print(f"network: {total_macs / pixels / 1e3:.1f} k MACs/px, {network * 1e3:.0f} ms, {pixels / network / 1e6:.2f} MP/s, "
          f"{rate:.1f} GMAC/s ({rate / peak:.2f} x matmul); the convolutions alone {conv_total / network:.0%} of its time")
    print(f"MACs/px at which this network's rate gives 1 MP/s here: {rate:.1f} k")
    if faster:
        swapped = with_nnpack(model, x, faster, *level)
        with torch.inference_mode():
            mixed = _median_seconds(lambda: model(x, *level), args.repeats)
        print(f"network with NNPACK in the {swapped} convolutions where it was the faster alone: {mixed * 1e3:.0f} ms, "
              f"{pixels / mixed / 1e6:.2f} MP/s ({network / mixed:.2f} x as fast)")
    elif args.winograd:
        print("NNPACK was the faster alone for none of these convolutions (or this torch has no NNPACK)")


if __name__ == "__main__":
    main()

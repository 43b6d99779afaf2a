"""Image quality metrics, computed the way the denoising literature reports them."""

from __future__ import annotations

import torch


def quantize8(x: torch.Tensor) -> torch.Tensor:
    """Clip to [0, 1] and round to 8-bit levels, as a saved 8-bit file would be."""
    return (x.clamp(0, 1) * 255.0).round() / 255.0


def psnr(x: torch.Tensor, ref: torch.Tensor, peak: float = 1.0) -> float:
    """PSNR in dB over the whole image (all channels and pixels); inf for identical images."""
    mse = torch.mean((x.double() - ref.double()) ** 2).item()
    if mse == 0:
        return float("inf")
    return 10.0 * torch.log10(torch.tensor(peak**2 / mse, dtype=torch.float64)).item()

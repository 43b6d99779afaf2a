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


SSIM_WINDOW = 11


def _gaussian_kernel(size: int = SSIM_WINDOW, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    k = torch.exp(-(x**2) / (2 * sigma**2))
    return k / k.sum()


def ssim(x: torch.Tensor, ref: torch.Tensor, data_range: float = 1.0) -> float:
    """SSIM of Wang et al. (2004): 11x11 Gaussian window of sigma 1.5, K1=0.01, K2=0.03.

    Computed per channel over the valid (unpadded) window positions and averaged over
    channels, which is what scikit-image's ``structural_similarity(..., gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, channel_axis=0)`` reports.
    """
    if min(x.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, not {x.shape[-1]}x{x.shape[-2]}")
    a = x.double().reshape(-1, 1, *x.shape[-2:])
    b = ref.double().reshape(-1, 1, *ref.shape[-2:])
    k = _gaussian_kernel().to(a.device)
    kh, kw = k.view(1, 1, -1, 1), k.view(1, 1, 1, -1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(torch.nn.functional.conv2d(t, kh), kw)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.mean(dim=(1, 2, 3)).mean().item()


def high_frequency_energy(x: torch.Tensor) -> float:
    """Mean energy of what a 3x3 box blur removes: fine texture and noise."""
    t = x.double().reshape(-1, 1, *x.shape[-2:])
    blurred = torch.nn.functional.avg_pool2d(t, 3, stride=1, padding=1, count_include_pad=False)
    return torch.mean((t - blurred) ** 2).item()


def texture_ratio(x: torch.Tensor, ref: torch.Tensor) -> float:
    """High-frequency energy of ``x`` over that of the clean ``ref``: below 1 is over-smoothed,
    above 1 is noisier or sharper than the reference; a faithful output is close to 1."""
    ref_energy = high_frequency_energy(ref)
    return high_frequency_energy(x) / ref_energy if ref_energy > 0 else float("nan")

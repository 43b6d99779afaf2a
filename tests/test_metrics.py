import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from denoisecli.metrics import psnr, quantize8, ssim

from conftest import smooth_image


def test_psnr_hand_computed():
    a = torch.zeros(1, 4, 4)
    b = torch.full((1, 4, 4), 0.1)
    assert psnr(b, a) == pytest.approx(20.0)
    assert psnr(a, a) == math.inf


@pytest.mark.parametrize("channels", [1, 3])
def test_psnr_and_ssim_match_scikit_image(channels):
    rng = np.random.default_rng(0)
    clean = smooth_image(45, 37, channels=channels).astype(np.float64) / 255
    if channels == 1:
        clean = clean[:, :, None]
    noisy = np.clip(clean + rng.normal(0, 0.1, clean.shape), 0, 1)
    ref_ssim = structural_similarity(noisy, clean, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                     data_range=1.0, channel_axis=-1)
    ours = ssim(torch.from_numpy(noisy).permute(2, 0, 1), torch.from_numpy(clean).permute(2, 0, 1))
    assert ours == pytest.approx(ref_ssim, abs=1e-3)
    ref_psnr = peak_signal_noise_ratio(clean, noisy, data_range=1.0)
    assert psnr(torch.from_numpy(noisy), torch.from_numpy(clean)) == pytest.approx(ref_psnr, abs=1e-6)


def test_ssim_of_identical_images_is_one_and_drops_with_noise():
    x = torch.from_numpy(smooth_image(40, 40)).permute(2, 0, 1).float() / 255
    assert ssim(x, x) == pytest.approx(1.0)
    assert ssim((x + 0.2 * torch.rand_like(x)).clamp(0, 1), x) < 0.9


def test_quantize8_clips_and_rounds():
    q = quantize8(torch.tensor([-0.2, 0.5, 1.3, 0.0021]))
    assert q.tolist() == pytest.approx([0.0, 128 / 255, 1.0, 1 / 255])


def test_texture_ratio_is_one_for_the_reference_below_for_blur_above_for_noise():
    from denoisecli.metrics import texture_ratio

    x = torch.from_numpy(smooth_image(48, 40)).permute(2, 0, 1).float() / 255
    x = (x + 0.03 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    blurred = torch.nn.functional.avg_pool2d(x[None], 3, 1, 1, count_include_pad=False)[0]
    assert texture_ratio(x, x) == pytest.approx(1.0)
    assert texture_ratio(blurred, x) < 0.5
    assert texture_ratio((x + 0.1 * torch.rand_like(x)), x) > 1.5


def test_ssim_refuses_images_smaller_than_its_window():
    from denoisecli.metrics import ssim

    with pytest.raises(ValueError, match="SSIM needs at least 11x11 pixels, not 12x10"):
        ssim(torch.zeros(3, 10, 12), torch.zeros(3, 10, 12))

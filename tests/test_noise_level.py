"""Noise-level input (noise-map UNet) and the noise estimator."""

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from denoisecli.cli import app
from denoisecli.metrics import quantize8
from denoisecli.models import build_model
from denoisecli.noise import SharedNormalNoise, seeded_generator
from denoisecli.noise_estimate import (
    PATCH,
    PATCH_BUDGET,
    SMALL_IMAGE_PATCHES,
    _patch_size,
    _Planes,
    _step,
    _strides,
    _tail_variance,
    _censored_sigma,
    _clamped_moments,
    _flat_patches,
    _texture,
    channel_coupling,
    clipped_level,
    estimate_sigma,
    level_map,
    model_level,
    unclamped_sigma,
)

from conftest import TINY_MODEL, smooth_image

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "test" / "CBSD68"
runner = CliRunner()


def _noisy(clean, sigma, seed=0):
    return clean + torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed)) * sigma / 255


def test_noise_map_unet_takes_a_level_per_image():
    model = build_model({"arch": "unet", "channels": 3, **TINY_MODEL, "noise_map": True})
    torch.nn.init.normal_(model.tail.weight, std=0.1)
    x = torch.rand(2, 3, 37, 31)
    a = model(x, torch.tensor([0.05, 0.2]))
    assert a.shape == x.shape and torch.isfinite(a).all()
    b = model(x, torch.tensor([0.05, 0.05]))
    assert torch.equal(a[0], b[0]) and not torch.equal(a[1], b[1])
    with pytest.raises(ValueError, match="pass sigma"):
        model(x)
    blind = build_model({"arch": "unet", "channels": 3, **TINY_MODEL})
    with pytest.raises(ValueError, match="no noise-level input"):
        blind(x, 0.1)


@pytest.mark.parametrize("sigma", [5, 15, 25, 50])
def test_estimator_on_a_smooth_image(sigma):
    clean = torch.from_numpy(smooth_image(180, 200)).permute(2, 0, 1).double() / 255
    est = estimate_sigma(_noisy(clean, sigma)) * 255
    assert est == pytest.approx(sigma, abs=1.0)


@pytest.mark.parametrize("stride", [(1, 1), (2, 3)])
def test_patch_texture_from_box_sums_matches_the_patches_themselves(stride):
    plane = torch.rand(23, 17, generator=torch.Generator().manual_seed(0))
    grid = torch.nn.functional.unfold(plane[None, None], 7, stride=stride).squeeze(0).T.reshape(-1, 7, 7)
    direct = (grid[:, :, 1:] - grid[:, :, :-1]).pow(2).sum((1, 2)) + (grid[:, 1:, :] - grid[:, :-1, :]).pow(2).sum((1, 2))
    rows, cols = (23 - 7) // stride[0] + 1, (17 - 7) // stride[1] + 1
    assert _texture(plane[None], 7, stride).shape == (1, rows * cols) and direct.shape == (rows * cols,)
    assert torch.allclose(_texture(plane[None], 7, stride)[0], direct, rtol=1e-5, atol=1e-6)
    # planes of one batch are each their own: the same numbers as alone, in their own row
    both = _texture(torch.stack([plane.flip(0), plane]), 7, stride)
    assert torch.allclose(both[1], direct, rtol=1e-5, atol=1e-6) and torch.allclose(both[0], _texture(plane.flip(0)[None], 7, stride)[0])


@pytest.mark.parametrize("step", [1, 3])
def test_weak_patch_moments_from_prefix_sums_match_a_direct_sum(step):
    """All 2,916 patches of each of two 60x60 planes (more than one block: a prefix lookup, a partial
    block and the zero padding of the last block all count), then a sample of 972 (less than one
    block). Each plane's moments are its own, centred on its own mean."""
    planes = torch.rand(2, 60, 60, generator=torch.Generator().manual_seed(1))
    planes[1] = planes[1] * 0.3 + 0.6
    sorted_patches = _Planes(planes, 7, step)
    stride = _strides(step)
    texture = _texture(planes, 7, stride)
    patches = [
        torch.nn.functional.unfold((plane - plane.mean())[None, None], 7, stride=stride).squeeze(0).T.double()
        for plane in planes
    ]

    def close(moments, chosen):
        second, sums, count = moments
        assert count == len(chosen)
        return torch.allclose(second, chosen.T @ chosen, rtol=1e-5, atol=1e-4) and torch.allclose(sums, chosen.sum(0), atol=1e-4)

    assert all(close(m, p) for m, p in zip(zip(*sorted_patches.moments()), patches))
    for limit in texture.quantile(torch.tensor([0.0, 0.1, 0.37, 0.5, 1.0])).tolist() + [texture.max().item() + 1]:
        weak = texture < limit
        counts = sorted_patches.weak(limit)
        assert counts == weak.sum(1).tolist()
        assert all(close(m, p[w]) for m, p, w in zip(zip(*sorted_patches.moments(counts)), patches, weak))
    # planes take different counts in one batched call: none, one, exactly whole blocks, a partial block
    order = texture.argsort(1)
    for counts in ([0, len(order[0])], [1, 1024], [2048, 5], [3, 3]):
        counts = [min(c, len(order[0])) for c in counts]
        chosen = [p[o[:c]] for p, o, c in zip(patches, order, counts)]
        assert all(close(m, c) for m, c in zip(zip(*sorted_patches.moments(counts)), chosen))
    # a plane of fewer than 2 chosen patches adds nothing to the pooled covariance
    alone = _Planes(planes[1:], 7, step)
    for few in (0, 1):
        assert _tail_variance(sorted_patches.moments([few, 900])) == pytest.approx(_tail_variance(alone.moments([900])), rel=1e-9)


@pytest.mark.parametrize("counts", [[900, 5], [0, 2916], [2916, 2916]])
def test_weak_patch_means_are_an_even_sample_of_the_chosen_patches(counts):
    planes = torch.rand(2, 60, 60, generator=torch.Generator().manual_seed(1))
    planes[1] = planes[1] * 0.3 + 0.6
    order = _texture(planes, 7).argsort(1)
    pooled = F.avg_pool2d(planes[:, None], 7, stride=1).flatten(1)
    chosen = torch.cat([pooled[i, order[i, :n]] for i, n in enumerate(counts)])
    means = _Planes(planes, 7, 1).means(counts, 128)
    assert 128 <= len(means) < 256 and torch.allclose(means, chosen[:: len(chosen) // 128], atol=1e-6)


def test_patch_sampling_grid_keeps_about_one_patch_in_k():
    for k in range(1, 200):
        rows, cols = _strides(k)
        assert k <= rows * cols < 1.5 * k + 1 and rows <= cols


@pytest.mark.parametrize(
    ("planes", "side", "step"),
    [
        (3, 64, 1),  # a thumbnail keeps every patch
        (3, 128, 1),  # 44,652 positions: sparser would leave under SMALL_IMAGE_PATCHES
        (3, 256, 4),  # small: one in 4, 47,000 patches instead of 94,000
        (1, 327, 2),  # grey, 103,041 positions: one in 2 keeps over SMALL_IMAGE_PATCHES
        (3, 327, 4),  # colour of that size, 309,123 positions: one in 4 where the budget alone gives 3
        (3, 400, 4),  # 465,708 positions: the budget alone gives 4 too, so nothing changes from here up
        (27, 256, 15),  # 9 crops of a 1024x1024 colour image: the budget alone
    ],
)
def test_sampling_step_spends_less_on_small_images_and_stays_in_budget(planes, side, step):
    """Small images sample more sparsely (their network pass is short), never below
    SMALL_IMAGE_PATCHES; large ones stay within PATCH_BUDGET."""
    x = torch.zeros(planes, side, side)
    positions = planes * (side - PATCH + 1) ** 2
    assert _step(x, PATCH) == step
    assert positions / step <= PATCH_BUDGET
    assert step == 1 or positions / step >= SMALL_IMAGE_PATCHES


def test_estimate_does_not_depend_on_the_input_dtype():
    clean = torch.from_numpy(smooth_image(61, 47)).permute(2, 0, 1).double() / 255
    noisy = _noisy(clean, 20)
    assert estimate_sigma(noisy) == estimate_sigma(noisy.float())


@pytest.mark.parametrize("shape", [(3, 10, 10), (3, 16, 16), (1, 24, 24)])
@pytest.mark.parametrize("sigma", [15, 25, 50])
def test_estimator_on_thumbnails(shape, sigma):
    """Too few 7x7 patches for a 49x49 covariance read the noise low (0 at 10x10): small images
    take smaller patches. The mean over 10 noise draws is within 15% of sigma."""
    c, h, w = shape
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    clean = torch.stack([0.3 + 0.4 * xx, 0.5 + 0.2 * yy, 0.4 + 0.1 * xx * yy])[:c]
    estimates = [estimate_sigma(_noisy(clean, sigma, seed)) * 255 for seed in range(10)]
    assert sum(estimates) / 10 == pytest.approx(sigma, rel=0.15)
    assert _patch_size(clean) < PATCH
    assert _patch_size(torch.zeros(1, 64, 64)) == _patch_size(torch.zeros(3, 32, 32)) == PATCH


def test_estimator_on_a_clean_flat_image_is_zero():
    assert estimate_sigma(torch.full((1, 40, 40), 0.5)) == pytest.approx(0.0, abs=1e-6)
    assert estimate_sigma(torch.zeros(3, 37, 31)) == unclamped_sigma(torch.zeros(3, 37, 31)) == 0.0


@pytest.mark.parametrize("sigma", [5, 25, 50])
@pytest.mark.parametrize("channels", [1, 3])
def test_estimator_ignores_a_noise_free_border(sigma, channels):
    """A black frame, a letterbox or a background clipped to black has no noise, and its patches,
    the least textured of all, took over the tail: a quarter of the width set to 0 read 0 at every
    sigma. Flat patches are left out, so the reading is that of the noisy part, in 8 bits too."""
    clean = torch.from_numpy(smooth_image(96, 131, channels=channels)).float().reshape(96, 131, channels).permute(2, 0, 1) / 255
    noisy = quantize8(_noisy(clean, sigma))
    plain = estimate_sigma(noisy) * 255
    for value, share in ((0.0, 0.25), (0.0, 0.5), (1.0, 0.25), (0.5, 0.25)):
        framed = noisy.clone()
        framed[..., : int(131 * share)] = value
        framed[..., -6:, :] = value
        assert estimate_sigma(framed) * 255 == pytest.approx(plain, abs=max(1.0, 0.06 * sigma)), (value, share)
    framed[...] = 0.5
    assert estimate_sigma(framed) == 0.0, "nothing but flat patches: nothing to read"


def test_estimator_with_an_upper_bound_reads_only_the_darker_patches():
    """``upper`` leaves out every patch whose mean is above it, as the stabiliser does to read its
    gain below where the noise was clipped at white, which made the bright part quieter: here the
    left half, at 0.3 with noise of 40 of 255, and the right half, at 0.7 with 10. The estimator
    reads the quieter half of the whole image; bounded at 0.5, what it reads on the darker half
    alone. Nothing below the bound reads 0."""
    g = torch.Generator().manual_seed(0)
    image = torch.cat([0.3 + torch.randn(1, 96, 64, generator=g) * 40 / 255, 0.7 + torch.randn(1, 96, 64, generator=g) * 10 / 255], 2)
    assert estimate_sigma(image) * 255 == pytest.approx(10, abs=1)
    assert estimate_sigma(image, upper=0.5) == pytest.approx(estimate_sigma(image[..., :64]), rel=0.05)
    assert estimate_sigma(image, upper=0.1) == 0.0


@pytest.mark.parametrize("stride", [(1, 1), (2, 3)])
def test_patches_that_touch_a_flat_spot_are_never_chosen(stride):
    """A flat spot is the centre of a 5x5 window of one value; a patch holding one, wholly flat or
    straddling the edge of a flat region, is left out of every pass. A flat 3x3 window is not
    enough (the plateaus of a clean 8-bit sky)."""
    planes = torch.rand(2, 40, 50, generator=torch.Generator().manual_seed(0))
    planes[0, :, :20] = 0.25
    planes[1, 10:15, 30:35] = 0.5  # a single flat spot, at (12, 32)
    planes[1, 30:33, 5:8] = 0.5  # a flat 3x3 window, no spot
    grid = torch.nn.functional.unfold(planes[:, None], 7, stride=stride)  # (P, 49, positions)
    wholly = (grid == grid[:, :1]).all(1)
    top, left = torch.meshgrid(torch.arange(0, 34, stride[0]), torch.arange(0, 44, stride[1]), indexing="ij")
    holds_spot = ((top <= 12) & (12 <= top + 6) & (left <= 32) & (32 <= left + 6)).flatten()
    flat = _flat_patches(planes, 7, stride)
    assert flat.shape == wholly.shape and bool(flat[0][wholly[0]].all()) and not bool(wholly[1].any())
    assert flat[0].sum() > wholly[0].sum(), "straddling patches too"
    assert torch.equal(flat[1], holds_spot)
    step = stride[0] * stride[1]
    patches = _Planes(planes, 7, step)
    live = (~_flat_patches(planes, 7, _strides(step))).sum(1).tolist()
    assert patches.live == live and patches.moments()[2].tolist() == live and patches.weak(1e9) == live
    assert _flat_patches(torch.rand(3, 37, 31), 7) is None, "noise leaves no flat spot"


@pytest.mark.skipif(not DATA.is_dir(), reason="needs ../shared/data")
def test_estimator_on_cbsd68_images():
    """Within 2 of the true sigma from 5 to 50 on every fifth CBSD68 image, the first included: that is,
    of the added sigma wherever the clean image reads under 3 before any noise is added, and for every
    image of the noise it then holds (the added sigma and its own reading, in quadrature). 101085 and
    175032 carry grain of their own (they read about 6 clean) and read 3 high at sigma 5; over the whole
    set the same holds for all 68 images at 6 levels (benchmarks/estimator_accuracy.py)."""
    from denoisecli.image_io import read_image

    images = [read_image(p).pixels.double() for p in sorted(DATA.glob("*.png"))[::5]]
    own = [estimate_sigma(x) * 255 for x in images]
    assert max(own) > 5  # the sample holds grainy images, so the quadrature check is not idle
    for sigma in (5, 10, 15, 25, 35, 50):
        estimates = [estimate_sigma(_noisy(x, sigma, i)) * 255 for i, x in enumerate(images)]
        errors = [e - sigma for e in estimates]
        assert all(abs(e) < 2 for e, o in zip(errors, own) if o < 3), (sigma, errors)
        assert all(abs(e - math.hypot(sigma, o)) < 2 for e, o in zip(estimates, own)), (sigma, estimates, own)
        assert abs(sum(errors) / len(errors)) < 1.0, (sigma, errors)


def test_clipped_level_is_what_clamping_leaves_of_the_noise():
    mid = torch.full((3, 64, 64), 0.5)
    assert clipped_level(mid, 0.1) == pytest.approx(0.1, rel=0.03)
    dark = torch.zeros(3, 64, 64)
    assert clipped_level(dark, 0.1) < 0.07
    assert clipped_level(mid, 0.0) == 0.0
    assert clipped_level(dark, 0.1) == clipped_level(dark, 0.1)


def _dark(seed: int = 0) -> torch.Tensor:
    """A grey 1x97x83 image, mostly dark (a smooth image squared, 0.02-0.9)."""
    c = torch.from_numpy(smooth_image(97, 83, channels=1, seed=seed)).float()[None] / 255
    return 0.02 + 0.88 * ((c - c.min()) / (c.max() - c.min())) ** 2


@pytest.mark.parametrize("sigma", [25, 50, 75])
def test_unclamped_sigma_reads_noise_clamped_at_black_closer_to_its_own_sigma(sigma):
    """Clamped at black, a dark image's noise reads low (0.7-0.9 of its sigma when this test was
    written); read as the noise before clamping, 0.4-0.7 of that shortfall is made up, with no
    overshoot. Noise that was not clamped reads exactly as before, and no noise as none."""
    for seed in range(2):
        clean = _dark(seed)
        noise = torch.randn(clean.shape, generator=seeded_generator(seed)) * sigma / 255
        clamped = quantize8(clean + noise)
        plain, unclamped = estimate_sigma(clamped), unclamped_sigma(clamped)
        assert plain < 0.92 * sigma / 255
        assert plain + 0.3 * (sigma / 255 - plain) < unclamped < 1.05 * sigma / 255
        assert unclamped_sigma(clean + noise) == estimate_sigma(clean + noise)
    assert unclamped_sigma(torch.full((1, 64, 64), 0.5)) == 0.0


@pytest.mark.parametrize("sigma", [10, 30, 60])
def test_censored_fit_recovers_the_sigma_of_exact_clamped_moments(sigma):
    """Patches whose clean levels crowd black and white: from their clamped means and the mean
    variance clamping leaves them, the fit finds the sigma back, to within its table's precision."""
    clean = torch.cat([torch.linspace(0.0, 0.15, 100), torch.linspace(0.3, 0.7, 28), torch.linspace(0.9, 1.0, 50)]).double()
    mean, variance = _clamped_moments(clean, sigma / 255)
    assert float(variance.mean()) < (sigma / 255) ** 2 * 0.9, "clamping took a good part of it"
    assert _censored_sigma(mean, float(variance.mean())) * 255 == pytest.approx(sigma, rel=0.01)


@pytest.mark.parametrize("channels", [1, 3])
def test_the_shipped_models_are_fed_the_unclamped_level_and_gain(channels):
    """`run` reads the shipped models' level with ``unclamped_sigma``: on a dark image with clamped
    sigma-50 noise, closer to the clean image than at the plain estimate (grey 3.1 dB, colour
    1.4 dB when this test was written; BSD68 and CBSD68, clipped: weights/README.md). A model
    file the user chose keeps the plain estimate."""
    from denoisecli.inference import Denoiser
    from denoisecli.metrics import psnr
    from denoisecli.weights import shipped_weights

    clean = _dark(0) if channels == 1 else torch.cat([_dark(0), _dark(0) * 0.9 + 0.02, _dark(0) ** 1.2])
    noisy = quantize8(clean + torch.randn(clean.shape, generator=seeded_generator(0)) * 50 / 255)
    auto = Denoiser(device="cpu", stabilise=False, per_channel=False)
    [level] = auto.levels([noisy])
    assert level.sigma == pytest.approx(unclamped_sigma(noisy)) and level.sigma > 1.1 * estimate_sigma(noisy)
    plain = Denoiser(device="cpu", stabilise=False, per_channel=False, sigma=estimate_sigma(noisy) * 255)
    assert psnr(quantize8(auto(noisy)), clean) > psnr(quantize8(plain(noisy)), clean) + 0.5
    chosen = Denoiser(shipped_weights(channels), device="cpu", stabilise=False, per_channel=False)
    assert auto.unclamp() and not chosen.unclamp()
    assert chosen.levels([noisy])[0].sigma == pytest.approx(estimate_sigma(noisy))


def _level_model(tmp_path, level):
    from denoisecli.weights import atomic_save, model_payload

    config = {"arch": "unet", "channels": 3, **TINY_MODEL, "noise_map": True, "level": level}
    path = tmp_path / f"{level}.pt"
    atomic_save(model_payload(build_model(config), config), path)
    return path


@pytest.mark.parametrize("level", ["estimate", "sigma", "clamped"])
def test_noise_map_level_given_to_the_model_matches_training(tmp_path, level):
    """`run` feeds a given sigma the way the model was trained: as is ("estimate", "sigma"), or as the std
    the noise keeps after clamping ("clamped", which half-white images lower)."""
    from denoisecli.inference import Denoiser
    from denoisecli.noise import NoiseSampler, seeded_generator
    from denoisecli.training import _noise_level

    clean = torch.from_numpy(smooth_image(90, 70)).permute(2, 0, 1).float() / 255
    clean[:, :30] = 1.0
    noisy, nominal = NoiseSampler("gaussian", {"std": (40 / 255, 40 / 255)}).draw(clean[None], seeded_generator(3))
    trained = float(_noise_level(noisy, clean[None], nominal, level)[0])
    sigma, given, *_ = Denoiser(_level_model(tmp_path, level), sigma=40).levels([noisy[0]])[0]
    assert sigma == pytest.approx(40 / 255)
    assert given == pytest.approx(trained, rel=0.05)
    assert (given == pytest.approx(sigma)) if level != "clamped" else (given < 0.95 * sigma)


@pytest.mark.parametrize("given", [None, 30.0])
def test_a_dim_image_gets_the_level_of_its_stretched_self_and_reports_its_own(tmp_path, given):
    """`run` stretches an image that fills part of the range (see value_range): the model gets the
    level of the stretched image, while the sigma reported (and a --sigma given) stays in the file's units."""
    from denoisecli.inference import Denoiser

    clean = torch.from_numpy(smooth_image(64, 60)).permute(2, 0, 1).float() / 255
    noisy = (clean + torch.randn(clean.shape, generator=torch.Generator().manual_seed(0)) * 30 / 255).clamp(0, 1)
    noisy[0, 0, :2] = torch.tensor([0.0, 1.0])
    dim = noisy / 8
    denoiser = Denoiser(_level_model(tmp_path, "sigma"), sigma=given)
    (full_sigma, full_level, *_), = denoiser.levels([noisy])
    (dim_sigma, dim_level, *_), = Denoiser(_level_model(tmp_path, "sigma"), sigma=None if given is None else given / 8).levels([dim])
    assert dim_level == pytest.approx(full_level, rel=1e-4)
    assert dim_sigma == pytest.approx(full_sigma / 8, rel=1e-4)
    if given is not None:
        assert full_sigma == pytest.approx(given / 255)


def test_hot_pixels_do_not_set_a_dim_images_range_and_come_out_as_they_were():
    """A camera's hot pixel at full scale kept a dim image (a microscope's 12-bit counts in a 16-bit
    file) from being stretched, so it was hardly denoised: 28.9 dB where 31.4 without it on BSD68 at
    sigma 15 (benchmarks/dim_images.py --hot 1). Single pixels (or pairs) far above the rest, up to
    HOT_SHARE of them, no longer set the range; the others are denoised about as well as without them (the level read
    moves a little), and they are kept as read."""
    from denoisecli.inference import HOT_SHARE, Denoiser, value_range

    clean = torch.from_numpy(smooth_image(64, 60, channels=1)).float()[None] / 255
    noisy = (clean + torch.randn(clean.shape, generator=torch.Generator().manual_seed(0)) * 25 / 255).clamp(0, 1)
    dim = (noisy * 4095 + 100).round() / 65535
    hot = dim.clone()
    spots = [(3, 4), (40, 17), (63, 59)]
    for y, x in spots:
        hot[0, y, x] = 1.0
    assert value_range(hot) == pytest.approx(value_range(dim))
    assert value_range(clean) == pytest.approx((float(clean.min()), float(clean.max() - clean.min())))
    many = dim.clone()
    many.view(-1)[torch.randperm(many.numel(), generator=torch.Generator().manual_seed(1))[: int(many.numel() * HOT_SHARE) + 1]] = 1.0
    assert sum(value_range(many)) == pytest.approx(1.0), "more than a few: they are the image's own top"
    patch = dim.clone()
    patch[0, 20:23, 30:32] = 1.0  # a bright patch (a bead, a lamp) is no hot pixel: it sets the top, as it did
    assert sum(value_range(patch)) == pytest.approx(1.0)
    pair = dim.clone()
    pair[0, 40, 17:19] = 1.0  # a pair of hot pixels side by side still counts
    assert value_range(pair)[1] < 0.07
    denoiser = Denoiser()
    out, out_dim = denoiser(hot), denoiser(dim)
    for y, x in spots:
        assert out[0, y, x] == 1.0
    far = torch.ones_like(dim, dtype=torch.bool)
    for y, x in spots:
        far[0, max(0, y - 8) : y + 9, max(0, x - 8) : x + 9] = False
    truth = (clean * 4095 + 100) / 65535

    def rms(x: torch.Tensor) -> float:
        return float(((x - truth)[far] ** 2).mean()) ** 0.5

    # as denoised without them (unstretched, as before, it came out at 0.6 of the noise's error)
    assert rms(out) < 1.05 * rms(out_dim) and rms(out) < 0.3 * rms(dim)


def test_training_level_is_measured_where_the_noise_has_no_sigma():
    from denoisecli.training import _noise_level

    clean = torch.full((2, 3, 32, 32), 0.5)
    noisy = clean + torch.randn(clean.shape, generator=torch.Generator().manual_seed(0)) * 0.1
    levels = _noise_level(noisy, clean, torch.tensor([0.3, float("nan")], dtype=torch.float64))
    assert levels[0] == pytest.approx(0.3) and levels[1] == pytest.approx(0.1, rel=0.05)
    assert torch.allclose(_noise_level(noisy, clean, torch.tensor([0.3, 0.3]), "clamped"), _noise_level(noisy, clean))


def test_estimate_level_is_what_run_would_estimate_where_the_noise_has_no_sigma(tmp_path):
    """Camera noise has no sigma: an "estimate" model trains on the estimator's reading of each noisy
    patch, the level `run` gives it, in the loader and in validation alike; white noise keeps its sigma.
    (`run` stretches an image to its own range first, and gives the level training would give the
    stretched image: the model's input and its level agree either way.)"""
    from denoisecli.inference import Denoiser, value_range
    from denoisecli.noise import NoiseSampler
    from denoisecli.training import _noise_level, _Noiser

    clean = torch.from_numpy(np.stack([smooth_image(45, 37, seed=s) for s in range(6)])).permute(0, 3, 1, 2).float() / 255
    sampler = NoiseSampler("gaussian", {"std": (20 / 255, 20 / 255)}, mix={"camera": 0.5})
    noisy, nominal, _ = _Noiser(sampler, seed=4, rank=0, level="estimate")(0, clean)
    raw = _Noiser(sampler, seed=4, rank=0)(0, clean)[1]
    camera = torch.isnan(raw)
    assert 0 < int(camera.sum()) < len(clean) and not torch.isnan(nominal).any()
    assert torch.equal(nominal[~camera], raw[~camera])
    model = Denoiser(_level_model(tmp_path, "estimate"))
    for i in camera.nonzero().flatten().tolist():
        lo, span = value_range(noisy[i])
        seen = (noisy[i : i + 1] - lo) / span
        assert model.levels([noisy[i]])[0][1] == pytest.approx(float(_noise_level(seen, seen, None, "estimate")[0]), rel=1e-6)
        measured = float((noisy[i] - clean[i]).std())
        assert float(_noise_level(noisy[i : i + 1], clean[i : i + 1], None, "estimate")[0]) == pytest.approx(float(nominal[i]), rel=1e-6)
        assert float(_noise_level(noisy[i : i + 1], clean[i : i + 1], None, "sigma")[0]) == pytest.approx(measured, rel=1e-5)


def test_a_folder_run_estimates_in_the_read_ahead_threads(tmp_path, monkeypatch):
    """Each file's level is estimated off the main thread, while the model works on earlier files
    (on a GPU the estimate takes longer than the network), and is the level of that file alone."""
    import threading

    from conftest import save
    from denoisecli import noise_estimate
    from denoisecli.image_io import read_image
    from denoisecli.inference import RunOptions, denoise_files

    for i, sigma in enumerate((5, 20, 40)):
        clean = smooth_image(40, 36, seed=i).astype(np.float64)
        save(tmp_path / "in" / f"{i}.png", np.clip(clean + np.random.default_rng(i).normal(0, sigma, clean.shape), 0, 255).round().astype(np.uint8))
    threads, real = [], noise_estimate.model_level
    monkeypatch.setattr(noise_estimate, "model_level", lambda *a, **k: threads.append(threading.current_thread()) or real(*a, **k))
    weights = _level_model(tmp_path, "estimate")
    report = denoise_files(tmp_path / "in", tmp_path / "out", RunOptions(weights=weights, batch=1))
    assert len(threads) == 3 and threading.main_thread() not in threads
    for result in report.results:
        alone = real(read_image(result.src).pixels)[0] * 255
        assert result.detail == f"sigma {alone:.1f}, estimated"


def test_unet_refuses_an_unknown_level_meaning():
    with pytest.raises(ValueError, match="level must be one of"):
        build_model({"arch": "unet", **TINY_MODEL, "noise_map": True, "level": "std"})


def test_noise_map_training_and_run_with_sigma(clean_dir, tmp_path):
    args = ["train", str(clean_dir), "--out", str(tmp_path / "r"), "--steps", "3", "--batch", "2", "--patch", "24",
            "--width", "8", "--depth", "2", "--blocks", "1", "--device", "cpu", "--noise-map"]
    assert runner.invoke(app, args).exit_code == 0
    weights = str(tmp_path / "r" / "model.pt")
    fixed = runner.invoke(app, ["run", str(clean_dir), "-o", str(tmp_path / "a"), "--weights", weights, "--sigma", "30", "-v"])
    assert fixed.exit_code == 0, fixed.output
    assert "sigma 30.0" in fixed.output and "estimated" not in fixed.output
    auto = runner.invoke(app, ["run", str(clean_dir), "-o", str(tmp_path / "b"), "--weights", weights, "-v"])
    assert auto.exit_code == 0 and ", estimated)" in auto.output
    stronger = runner.invoke(app, ["run", str(clean_dir), "-o", str(tmp_path / "c"), "--weights", weights, "--strength", "2", "-v"])
    assert stronger.exit_code == 0 and ", estimated, strength 2)" in stronger.output, stronger.output
    refused = runner.invoke(app, ["run", str(clean_dir), "-o", str(tmp_path / "d"), "--weights", weights, "--per-channel"])
    assert refused.exit_code == 1 and "--per-channel needs a grey model" in refused.output


def test_run_per_channel_reports_a_level_per_channel(clean_dir, tmp_path):
    args = ["train", str(clean_dir), "--out", str(tmp_path / "g"), "--steps", "2", "--batch", "2", "--patch", "24", "--channels", "1",
            "--width", "8", "--depth", "2", "--blocks", "1", "--device", "cpu", "--noise-map"]
    assert runner.invoke(app, args).exit_code == 0
    result = runner.invoke(app, ["run", str(clean_dir), "-o", str(tmp_path / "o"), "--weights", str(tmp_path / "g" / "model.pt"),
                                 "--per-channel", "-v"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("denoised:")]
    colour = [line for line in lines if "grey.png" not in line]
    assert len(colour) == 4 and all(re.search(r"sigma [\d.]+ / [\d.]+ / [\d.]+, estimated, per channel\)", line) for line in colour), lines
    assert re.search(r"grey.png \(sigma [\d.]+, estimated\)", "\n".join(lines)), lines
    from denoisecli.image_io import read_image

    assert read_image(tmp_path / "o" / "a.png").pixels.shape[0] == 3 and read_image(tmp_path / "o" / "grey.png").pixels.shape[0] == 1


def test_model_level_strength_scales_what_is_fed_not_the_sigma_found():
    clean = torch.from_numpy(smooth_image(40, 37)).permute(2, 0, 1).float() / 255
    noisy = _noisy(clean, 20)
    sigma, fed = model_level(noisy, level="estimate")
    assert model_level(noisy, level="estimate", strength=2) == (sigma, pytest.approx(2 * sigma))
    assert model_level(noisy, 0.1, level="sigma", strength=0.5) == (0.1, pytest.approx(0.05))
    _, plain_map = model_level(noisy, level="map")
    _, strong_map = model_level(noisy, level="map", strength=2)
    assert torch.allclose(strong_map, level_map(noisy, 2 * sigma))
    assert float(strong_map.square().mean().sqrt()) == pytest.approx(2 * float(plain_map.square().mean().sqrt()), rel=0.05)


@pytest.mark.parametrize("option", [["--sigma", "20"], ["--strength", "2"]])
def test_level_options_with_a_blind_model_are_a_clear_error(clean_dir, tiny_model_file, option):
    result = runner.invoke(app, ["run", str(clean_dir), "--weights", str(tiny_model_file), *option])
    assert result.exit_code == 1 and f"{option[0]} needs a model with a noise-level input" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("sigma", [5, 50])
def test_estimator_on_a_large_image_pools_its_crops(sigma):
    """9 crops x 3 channels, a few thousand patches each, pooled into one covariance (one per plane
    from so few patches read sigma 50 as about 47 on Kodak24 upscaled to 1000x1000)."""
    clean = torch.from_numpy(smooth_image(1100, 1000)).permute(2, 0, 1).float() / 255
    est = estimate_sigma(_noisy(clean, sigma)) * 255
    assert est == pytest.approx(sigma, abs=1.0)


def test_files_saved_before_the_level_was_recorded_load_as_clamped(tmp_path):
    from denoisecli.weights import atomic_save, load_model, model_payload

    config = {"arch": "unet", "channels": 3, **TINY_MODEL, "noise_map": True}
    atomic_save(model_payload(build_model(config), config), tmp_path / "old.pt")
    assert load_model(tmp_path / "old.pt")[0].level == "clamped"
    assert build_model(config).level == "estimate"


def _signal_dependent(clean, peak, read=2 / 255, seed=0):
    """Shot noise (variance clean / peak) plus read noise: camera noise without its JPEG."""
    gen = torch.Generator().manual_seed(seed)
    return clean + torch.randn(clean.shape, generator=gen) * (clean / peak + read**2).sqrt()


def _halves(image):
    """A smooth image, dark on the left, bright on the right."""
    clean = torch.from_numpy(smooth_image(*image)).permute(2, 0, 1).float() / 255
    clean[..., : image[1] // 2] *= 0.2
    return clean


@pytest.mark.parametrize("size", [(67, 53), (128, 128), (201, 300)])
def test_level_map_is_flat_for_white_noise_and_keeps_its_scale(size):
    from denoisecli.noise_estimate import level_map

    noisy = _noisy(_halves(size), 20)
    m = level_map(noisy, 20 / 255)
    assert m.shape == (1, *size) and m.dtype == torch.float32 and torch.isfinite(m).all()
    assert float(m.square().mean().sqrt()) == pytest.approx(20 / 255, rel=0.03)
    assert float(m.max() / m.min()) < 1.5


@pytest.mark.parametrize("size", [(67, 53), (201, 300)])
def test_level_map_follows_brightness_for_shot_noise(size):
    """Shot noise is stronger where the image is brighter: the map says so, by about the true ratio."""
    from denoisecli.noise_estimate import level_map

    clean = _halves(size)
    noisy = _signal_dependent(clean, peak=30)
    m = level_map(noisy, estimate_sigma(noisy))[0]
    true = (clean.mean(0) / 30 + (2 / 255) ** 2).sqrt()
    half = size[1] // 2
    measured = float(m[:, half + 4 :].mean() / m[:, : half - 4].mean())
    expected = float(true[:, half + 4 :].mean() / true[:, : half - 4].mean())
    assert measured > 1.5 and measured == pytest.approx(expected, rel=0.15)


def test_level_map_box_mean_matches_a_replicate_padded_pool():
    """The map's local brightness uses numpy running sums for speed; they must be the pool they replace."""
    from denoisecli.noise_estimate import _box_mean

    a = torch.rand(37, 31)
    expected = F.avg_pool2d(F.pad(a[None, None], (2, 2, 2, 2), mode="replicate"), 5, 1)[0, 0]
    assert torch.allclose(torch.from_numpy(_box_mean(a.numpy(), 2)), expected, atol=1e-6)


def test_level_map_takes_any_float_dtype_and_gives_float32():
    from denoisecli.noise_estimate import level_map

    noisy = _signal_dependent(_halves((37, 31)), peak=30).clamp(0, 1)
    m64 = level_map(noisy.double(), 0.05)
    assert m64.dtype == torch.float32 and m64.shape == (1, 37, 31)
    assert torch.allclose(m64, level_map(noisy, 0.05), rtol=1e-4)


def test_level_map_of_a_tiny_or_noiseless_image_is_flat():
    from denoisecli.noise_estimate import level_map

    assert torch.equal(level_map(torch.rand(3, 5, 9), 0.1), torch.full((1, 5, 9), 0.1))
    assert torch.equal(level_map(torch.rand(1, 40, 30), 0.0), torch.zeros(1, 40, 30))
    with pytest.raises(ValueError, match="CxHxW"):
        level_map(torch.rand(40, 30), 0.1)


def test_map_models_get_a_per_pixel_level_in_training_and_in_run(tmp_path):
    """A "map" model is fed ``level_map`` of each noisy image, scaled by the estimate where the noise
    has no sigma and by the sigma where it has one, in training as in `run` (given --sigma too)."""
    from denoisecli.inference import Denoiser
    from denoisecli.noise_estimate import level_input, level_map, model_level
    from denoisecli.training import _noise_level

    clean = torch.stack([_halves((40, 36)), torch.from_numpy(smooth_image(40, 36, seed=3)).permute(2, 0, 1).float() / 255])
    noisy = _signal_dependent(clean, peak=30)
    levels = _noise_level(noisy, clean, torch.tensor([float("nan"), 0.1], dtype=torch.float64), "map")
    assert levels.shape == (2, 1, 40, 36)
    assert torch.allclose(levels[0], level_map(noisy[0], estimate_sigma(noisy[0])))
    assert torch.allclose(levels[1], level_map(noisy[1], 0.1))
    from denoisecli.noise import NoiseSampler
    from denoisecli.training import _Noiser

    sampler = NoiseSampler("gaussian", {"std": (20 / 255, 20 / 255)}, mix={"camera": 0.5})
    loaded, spread, _ = _Noiser(sampler, seed=4, rank=0, level="map")(0, clean)
    _, estimated_level, _ = _Noiser(sampler, seed=4, rank=0, level="estimate")(0, clean)
    assert spread.shape == (2, 1, 40, 36) and torch.equal(_noise_level(loaded, clean, spread, "map"), spread)
    for i in range(2):
        assert torch.allclose(spread[i], level_map(loaded[i], float(estimated_level[i])))
    given = Denoiser(_level_model(tmp_path, "map"), sigma=25.5).levels([noisy[1]])[0]
    assert given[0] == pytest.approx(0.1) and torch.allclose(given[1], levels[1])
    estimated = model_level(noisy[0], level="map")
    assert torch.allclose(level_input([estimated[1], estimated[1]], "cpu"), levels[0].expand(2, 1, 40, 36))
    assert level_input([0.1, 0.2], "cpu").shape == (2,)


@pytest.mark.parametrize("ensemble", [False, True])
def test_a_map_model_runs_tiled_and_ensembled_like_whole(tmp_path, ensemble):
    """Tiles cut the level map with the image, and the 8 flips and rotations turn it with the image."""
    from denoisecli.inference import Denoiser
    from denoisecli.weights import atomic_save, model_payload

    config = {"arch": "unet", "channels": 3, **TINY_MODEL, "noise_map": True, "level": "map"}
    torch.manual_seed(0)
    model = build_model(config)
    torch.nn.init.normal_(model.tail.weight, std=0.05)
    path = tmp_path / "map.pt"
    atomic_save(model_payload(model, config), path)
    noisy = _signal_dependent(_halves((97, 83)), peak=30).clamp(0, 1)
    whole = Denoiser(path, ensemble=ensemble)(noisy)
    tiled = Denoiser(path, tile=64, ensemble=ensemble)(noisy)
    assert whole.shape == noisy.shape and (whole - tiled).abs().max() < 1 / 255
    config["level"] = "estimate"
    atomic_save(model_payload(model, config), tmp_path / "estimate.pt")
    flat = Denoiser(tmp_path / "estimate.pt", ensemble=ensemble)(noisy)
    assert not torch.allclose(whole, flat, atol=1e-4)


def test_level_map_training_end_to_end_and_its_refusal(clean_dir, tmp_path):
    args = ["train", str(clean_dir), "--out", str(tmp_path / "r"), "--steps", "3", "--batch", "2", "--patch", "24",
            "--width", "8", "--depth", "2", "--blocks", "1", "--device", "cpu", "--mix", "camera:0.5", "--val-every", "3"]
    assert runner.invoke(app, [*args, "--noise-map", "--level-map"]).exit_code == 0
    from denoisecli.weights import load_model

    assert load_model(tmp_path / "r" / "model.pt")[0].level == "map"
    result = runner.invoke(app, ["run", str(clean_dir), "-o", str(tmp_path / "o"), "--weights", str(tmp_path / "r" / "model.pt"), "-v"])
    assert result.exit_code == 0 and result.output.count("estimated") == 5, result.output
    refused = runner.invoke(app, [*args[:3], str(tmp_path / "r2"), *args[4:], "--level-map"])
    assert refused.exit_code == 1 and "--level-map needs a model with a noise-level input" in refused.output
    assert not (tmp_path / "r2").exists()


def _independent(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Three unrelated grey patterns as R, G and B, as in a fluorescence composite."""
    return torch.stack([torch.from_numpy(smooth_image(h, w, channels=1, seed=seed + c)).float() / 255 for c in range(3)])


@pytest.mark.parametrize("sigma", [0, 15, 50])
def test_channel_coupling_tells_photo_like_channels_from_independent_ones(sigma):
    """Channels that share their structure read near 1 and unrelated ones near 0, and white noise,
    whose variance is taken out, moves neither across the line `run` splits at (0.35)."""
    photo = torch.from_numpy(smooth_image(67, 59, seed=3)).permute(2, 0, 1).float() / 255
    for clean, lo, hi in ((photo, 0.6, 1.0), (_independent(67, 59), -0.3, 0.2)):
        noisy = _noisy(clean, sigma) if sigma else clean
        assert lo < channel_coupling(noisy) <= hi, (sigma, channel_coupling(noisy))
    shared = SharedNormalNoise(std=50 / 255).train()(photo[None], generator=seeded_generator(1))[0]
    assert channel_coupling(shared.clamp(0, 1)) > channel_coupling(photo) - 0.05, "noise shared by the channels only adds coupling"


def test_channel_coupling_of_what_it_cannot_measure_is_full():
    assert channel_coupling(torch.rand(1, 40, 40)) == 1.0, "one channel"
    assert channel_coupling(torch.rand(3, 7, 30)) == 1.0, "too small to pool"
    flat = torch.full((3, 32, 32), 0.5)
    assert -1 <= channel_coupling(flat) <= 1 and not math.isnan(channel_coupling(flat))

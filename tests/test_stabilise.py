"""Variance stabilisation: the transform, its unbiased inverse, when it applies, and what it buys."""

import math

import numpy as np
import pytest
import torch

from denoisecli.errors import DenoiseError
from denoisecli.inference import Denoiser, _stretched, value_range
from denoisecli.metrics import psnr, quantize8
from denoisecli.noise import ClampedNormalNoise, PoissonGaussianNoise, PoissonNoise, seeded_generator
from denoisecli import noise_estimate
from denoisecli.noise_estimate import bright_to_dark_noise, flattest_offset, growth_beyond_clamping, signal_dependence, unclamped_sigma
from denoisecli import stabilise
from denoisecli.stabilise import CONFIRM_RATIO, COUNT_GAIN, COUNT_OFFSET, OFFSETS, STABILISE_GROWTH, STABILISE_RATIO, WHITE_CONFIRM, WHITE_SHARE, Stabiliser, clip_free_level, stabiliser

from conftest import save, smooth_image


def _photons(h: int = 67, w: int = 45, seed: int = 0) -> torch.Tensor:
    """A grey 1xHxW image like a fluorescence micrograph's: a dark background (0.01) under
    brighter structure (up to 0.95)."""
    c = torch.from_numpy(smooth_image(h, w, channels=1, seed=seed)).float()[None] / 255
    return 0.01 + 0.94 * ((c - c.min()) / (c.max() - c.min())) ** 2


def _poisson(clean: torch.Tensor, peak: float, seed: int) -> torch.Tensor:
    return quantize8(PoissonNoise(peak).train()(clean[None], generator=seeded_generator(seed))[0])


@pytest.mark.parametrize("gain,offset", [(1 / 30, 0.0), (1 / 5, 0.01), (1e-6, 8437.0), (1e-9, 0.0)])
def test_forward_maps_the_range_onto_itself_and_inverts_with_precision(gain, offset):
    """[0, 1] maps onto [0, 1] monotonically; a nearly flat variance (a huge offset) or a tiny gain
    (huge counts) keeps float32 precision; values outside [0, 1] stay finite."""
    st = Stabiliser(gain, offset)
    x = torch.linspace(0, 1, 256)
    y = st.forward(x)
    assert y.dtype == torch.float32 and float(y[0]) == pytest.approx(0, abs=1e-6) and float(y[-1]) == pytest.approx(1, abs=1e-6)
    assert bool((y[1:] > y[:-1]).all())
    assert torch.isfinite(st.forward(torch.tensor([-5.0, 2.0]))).all() and torch.isfinite(st.inverse(torch.tensor([-5.0, 2.0]))).all()
    back = st.inverse(y)
    # the inverse undoes the transform's bias on noisy data, so on clean data it is exact only where counts are many
    assert float((back - x).abs().max()) < (0.06 if gain >= 1 / 30 else 1e-5)
    assert st.sigma > 0 and st.noise_std(0.5) == pytest.approx(math.sqrt(gain * (0.5 + offset)))


@pytest.mark.parametrize("level", [0.02, 0.1, 0.4])
def test_inverse_is_unbiased_where_counts_are_few(level):
    """The mean of the transformed noisy values maps back to the true brightness, where the
    algebraic inverse of the transform is biased (below 1 photon at 0.02 and peak 20)."""
    peak, st = 20.0, Stabiliser(1 / 20, 0.0)
    noisy = torch.poisson(torch.full((400_000,), level * peak), generator=torch.Generator().manual_seed(1)) / peak
    mean = st.forward(noisy).mean()
    assert float(st.inverse(mean)) == pytest.approx(level, rel=0.02)
    low, high = 2 * math.sqrt(3 / 8), 2 * math.sqrt(peak + 3 / 8)
    algebraic = ((float(mean) * (high - low) + low) ** 2 / 4 - 3 / 8) / peak
    if level <= 0.1:
        assert abs(algebraic - level) > 5 * abs(float(st.inverse(mean)) - level)


def test_transform_makes_shot_noise_the_same_everywhere():
    """Shot noise is twice as strong at the bright end of a ramp as at its dark end;
    transformed, both ends' noise std is within a fifth of ``sigma``."""
    clean = torch.linspace(0.03, 0.8, 200).expand(1, 300, 200).contiguous()
    noisy = PoissonNoise(50.0).train()(clean[None], generator=seeded_generator(2))[0]
    st = Stabiliser(1 / 50, 0.0)
    raw, flat = noisy - clean, st.forward(noisy) - st.forward(clean)
    assert float(raw[..., 150:].std()) > 2 * float(raw[..., :50].std())
    for part in (flat[..., :50], flat[..., 150:]):
        assert float(part.std()) == pytest.approx(st.sigma, rel=0.2)


@pytest.mark.parametrize("size", [(67, 45), (97, 83)])
def test_signal_dependence_tells_shot_noise_from_white_noise(size):
    """Eight seeds of each read 3.7-12 with shot noise and at most 1.7 with white noise when this
    test was written."""
    for seed in range(3):
        clean = _photons(*size, seed=seed)
        shot = signal_dependence(_poisson(clean, 30, seed))
        assert shot is not None and shot[1] >= STABILISE_RATIO, shot
        white = signal_dependence(quantize8(ClampedNormalNoise(std=20 / 255).train()(clean[None], generator=seeded_generator(seed))[0]))
        assert white is None or white[1] < 2, white
    assert signal_dependence(torch.rand(1, 7, 40)) is None, "too small to measure"


def _ramp_noise(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A ramp with shot noise (peak 50), with shot plus read noise (variance 1/50 (x + 0.3)), and with white noise."""
    ramp = torch.linspace(0.02, 0.9, 160).expand(1, 120, 160).contiguous()
    g = seeded_generator(seed)
    shot = quantize8(torch.poisson(ramp * 50, generator=g) / 50)
    read = quantize8((torch.poisson(ramp * 50, generator=g) / 50 + torch.randn(ramp.shape, generator=g) * (0.3 / 50) ** 0.5).clamp(0, 1))
    white = quantize8(ClampedNormalNoise(std=20 / 255).train()(ramp[None], generator=g)[0])
    return shot, read, white


@pytest.mark.parametrize("seed", [0, 1])
def test_flattest_offset_finds_the_read_noise(seed):
    """Pure shot noise needs (almost) no offset; read noise of 0.3 times the gain needs about 0.3."""
    shot, read, _ = _ramp_noise(seed)
    assert flattest_offset(shot, list(OFFSETS)) <= 0.03
    assert flattest_offset(read, list(OFFSETS)) >= 0.1


@pytest.mark.parametrize("seed", [0, 1])
def test_bright_to_dark_noise_confirms_shot_noise_only(seed):
    shot, _, white = _ramp_noise(seed)
    assert bright_to_dark_noise(shot) > 5 and bright_to_dark_noise(white) < 1.5
    assert bright_to_dark_noise(torch.rand(1, 20, 30)) == 1.0, "fewer than three blocks"


def test_stabiliser_reads_the_gain_from_the_image():
    """Shot noise at peak 30 has gain 1/30; the estimate lands within a factor of two, and not
    where the noise is white (never clamped: the image kept clear of black and white) or absent."""
    for seed in range(3):
        st = stabiliser(_poisson(_photons(seed=seed), 30, seed))
        assert st is not None and 0.5 / 30 < st.gain < 2 / 30 and st.offset >= 0
        mid = 0.25 + 0.5 * _photons(seed=seed)
        white = quantize8(ClampedNormalNoise(std=20 / 255).train()(mid[None], generator=seeded_generator(seed))[0])
        assert stabiliser(white) is None
    assert stabiliser(_photons()) is None, "no noise, nothing to stabilise"
    weak = _poisson(_photons(), 30 * 255 / 4, 0)
    assert stabiliser(weak, least=2 / 255) is not None and stabiliser(weak) is None, "noise too weak to be worth it"


def test_clip_free_level_is_where_the_noise_reaches_white_one_time_in_a_hundred():
    for gain, offset in ((1 / 5, 0.0), (1 / 30, 0.3), (1e-4, 0.01)):
        level = clip_free_level(gain, offset)
        reach = 0.5 * math.erfc((1 - level) / math.sqrt(2 * gain * (level + offset)))
        assert 0 < level < 1 and reach == pytest.approx(0.01, rel=0.01)


def test_flattest_offset_below_a_level_reads_only_that_part():
    """Bounded halfway up the noisy ramp it still finds pure shot noise; bounded at its darkest
    points, there is too little to read."""
    shot, _, _ = _ramp_noise(0)
    assert flattest_offset(shot, list(OFFSETS), upper=0.5) <= 0.03
    assert flattest_offset(shot, list(OFFSETS), upper=0.01) is None


def _bright_shot(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(clean, noisy): shot noise at peak 30 on a 96x80 image mostly in its upper half of
    brightness, 6-11% of it clipped at white."""
    c = torch.from_numpy(smooth_image(96, 80, channels=1, seed=seed)).float()[None] / 255
    clean = 0.05 + 0.95 * ((c - c.min()) / (c.max() - c.min())) ** 0.6
    return clean, _poisson(clean, 30, seed)


def test_the_gain_is_read_below_where_the_noise_was_clipped_at_white():
    """Clipping at white takes the variance out of the bright bands, so the flattest transform of
    the whole image has too large an offset and too small a gain: on these six images the gain
    read 0.09-0.54 of the truth (median 0.31), and read again below ``clip_free_level`` 0.58-0.96
    (median 0.84) when this test was written. The decision is not the refit's (the route is forced)."""
    def ratios(clipped_white: float | None) -> list[float]:
        return sorted(stabiliser(_bright_shot(seed)[1], ratio=1.0, confirm=1.0, least=0.0, growth=None,
                                 clipped_white=clipped_white).gain * 30 for seed in range(6))

    refit, first = ratios(stabilise.CLIPPED_WHITE), ratios(None)
    assert 0.75 < (refit[2] + refit[3]) / 2 < 1.25 and (first[2] + first[3]) / 2 < 0.6
    assert all(float((_bright_shot(seed)[1] >= 1).float().mean()) > 0.05 for seed in range(6))


def test_reading_below_clipping_makes_the_shipped_grey_model_better(monkeypatch):
    """On the six images above, `grey.pt` through the route gained 0.16-1.78 dB (0.72 on average)
    from the refit when this test was written, and none lost. They hold whole photon counts, which
    `run` reads instead of fitting, so they are scored with the fit alone."""
    monkeypatch.setattr(stabilise, "count_step", lambda *args: None)
    forced = Denoiser(stabilise=True)
    pairs = [_bright_shot(seed) for seed in range(6)]
    refit = [psnr(quantize8(forced(noisy)), clean) for clean, noisy in pairs]
    monkeypatch.setattr(stabilise, "_below_clipping", lambda image, gain, offset: (gain, offset))
    gains = [r - psnr(quantize8(forced(noisy)), clean) for r, (clean, noisy) in zip(refit, pairs)]
    assert sum(gains) / len(gains) > 0.3 and min(gains) > -0.1, gains


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_growth_beyond_clamping_reads_shot_noise_and_not_clamping(seed):
    """Shot noise (variance proportional to brightness) reads about 1. White noise clamped at
    black or at white reads about 0 once what clamping takes away is divided out (-0.21 to 0.16
    on ten seeds when this test was written), though the raw bands of a ramp from black grow by
    clamping alone (0.33-0.37 more than that)."""
    shot, _, _ = _ramp_noise(seed)
    assert growth_beyond_clamping(shot, unclamped_sigma(shot)) > 0.6
    for lo, hi in ((0.0, 0.6), (0.3, 1.0)):
        ramp = torch.linspace(lo, hi, 160).expand(1, 120, 160)
        clamped = quantize8(ramp + torch.randn(ramp.shape, generator=seeded_generator(seed)) * 0.15)
        growth = growth_beyond_clamping(clamped, unclamped_sigma(clamped))
        assert abs(growth) < 0.25, (lo, growth)
        if lo == 0:
            assert growth_beyond_clamping(clamped, 0.0) > growth + 0.25, "the correction is what takes clamping out"
    assert growth_beyond_clamping(torch.rand(1, 7, 40), 0.1) == 0.0, "too small to measure"


def _low_contrast_shot(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(clean, noisy): shot noise at peak 30 on a 160x160 image spanning 0.3-0.6 in brightness."""
    c = torch.from_numpy(smooth_image(160, 160, channels=1, seed=seed)).float()[None] / 255
    clean = 0.3 + 0.3 * (c - c.min()) / (c.max() - c.min())
    return clean, _poisson(clean, 30, seed)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_shot_noise_in_a_low_contrast_image_is_found_by_the_second_test(seed):
    """Across a narrow span of brightness shot noise grows too little for the first test's ratio
    (1.31-1.47 on eight seeds when this test was written, against 2), but its growth per
    brightness is that of shot noise (0.68-1.42, against 0.35), so the second test finds it and
    the gain is read within a factor of two. With a tenth of the pixels at white the second test
    stands aside: the transform's inverse does not model clipping, and on Train400 such images
    lost, or gained little against the worst single losses (weights/SHOT-NOISE.md)."""
    _, noisy = _low_contrast_shot(seed)
    assert signal_dependence(noisy)[1] < STABILISE_RATIO and stabiliser(noisy, growth=None) is None
    assert growth_beyond_clamping(noisy, unclamped_sigma(noisy)) >= STABILISE_GROWTH
    st = stabiliser(noisy)
    assert st is not None and 0.5 / 30 < st.gain < 2 / 30
    blown = noisy.clone()
    blown[:, :, : round(160 * 1.5 * WHITE_SHARE)] = 1.0
    assert float((blown >= 1).float().mean()) >= WHITE_SHARE and stabiliser(blown) is None


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_clamped_white_noise_in_a_dark_image_is_not_confirmed_as_shot_noise(seed):
    """Heavy white noise clamped at black in a dark image grows across its brightness as shot noise
    would: the first test's ratio passes, and its confirmation (1.56-1.81 on these seeds when this
    test was written) passed the 1.2 the rule asked until the thirty-fourth session, while the
    second test's growth (-0.08 to 0.28) finds no more than clamping explains. On Train400 such
    passes (clipped sigma 75) lost up to 3.8 dB each, and none of them read 2
    (weights/SHOT-NOISE.md). Forced, the route loses here too (1.6-3.2 dB when this test was
    written)."""
    clean = 0.01 + 0.4 / 0.94 * (_photons(97, 83, seed) - 0.01)
    noisy = quantize8(clean + torch.randn(clean.shape, generator=seeded_generator(seed)) * 75 / 255)
    assert float((noisy >= 1).float().mean()) < WHITE_SHARE and signal_dependence(noisy)[1] >= STABILISE_RATIO
    assert 1.2 <= bright_to_dark_noise(noisy) < CONFIRM_RATIO
    assert growth_beyond_clamping(noisy, unclamped_sigma(noisy)) < STABILISE_GROWTH
    assert stabiliser(noisy, confirm=1.2) is not None and stabiliser(noisy) is None
    auto, forced = Denoiser(device="cpu"), Denoiser(device="cpu", stabilise=True)
    assert auto.levels([noisy])[0].stabiliser is None
    assert psnr(quantize8(forced(noisy)), clean) < psnr(quantize8(auto(noisy)), clean) - 1.0


@pytest.mark.parametrize("seed", [0, 2, 3])
def test_mostly_black_shot_noise_is_confirmed_by_the_first_test(seed):
    """A 16-bit photon-counting file with a black level (100 ADU, 20 ADU a photon, peak 3, no read
    noise) is half black, so clamping explains its growth as well as shot noise does (the second
    test's growth: -0.08 to 0.25 on these seeds), and its count 0 is not the file's 0, so it is
    not read as whole counts. Its dark blocks hold little noise beside its bright ones, so the
    first test's confirmation reads well above 2 (2.4-8.5), where clamped white noise stays
    under it (the test above): `run` stabilises it, 3-7 dB better than the plain route when this
    test was written."""
    clean = _photons(97, 83, seed)
    noisy = ((100 + 20 * torch.poisson(clean.double() * 3, generator=seeded_generator(seed))) / 65535).float()
    stretch = value_range(noisy)
    inside = _stretched(noisy, *stretch).clamp(0, 1)
    assert noise_estimate.count_step(inside, *stretch) is None
    assert growth_beyond_clamping(inside, unclamped_sigma(inside)) < STABILISE_GROWTH
    assert bright_to_dark_noise(inside) >= CONFIRM_RATIO
    auto, plain = Denoiser(device="cpu"), Denoiser(device="cpu", stabilise=False)
    assert auto.levels([noisy])[0].stabiliser is not None

    def on_span(out: torch.Tensor) -> float:
        return psnr((out.double() * 65535 - 100) / 60, clean)

    assert on_span(auto(noisy)) > on_span(plain(noisy)) + 2.0


@pytest.mark.parametrize("base,seed", [(0.5, 0), (0.55, 2)])
def test_shot_noise_clipped_at_white_is_confirmed_as_before(base, seed):
    """Where a tenth or more of the pixels sit at white, clipping takes variance from the bright
    blocks, so shot noise confirms less (BSD68 `test028.png`, snow under a dark forest, shot and
    read noise at peak 100: 1.98), and the second test stands aside: there the first test asks a
    confirmation of at most ``WHITE_CONFIRM``, as it did everywhere before the thirty-fourth
    session. Asked 2 there too, `test028.png` went unstabilised and lost 3.1 dB; stabilised, these
    gain 3.5-4.6 dB (when this test was written)."""
    p = torch.from_numpy(smooth_image(97, 83, channels=1, seed=seed)).float()[None] / 255
    p = (p - p.min()) / (p.max() - p.min())
    clean = torch.where(torch.arange(83) < 40, 0.03 + 0.1 * p, (base + 0.8 * p).clamp(0, 1))
    noisy = quantize8(PoissonGaussianNoise(100.0, 12.5 / 255).train()(clean[None], generator=seeded_generator(seed))[0])
    assert float((noisy >= 1).float().mean()) >= WHITE_SHARE and signal_dependence(noisy)[1] >= STABILISE_RATIO
    assert WHITE_CONFIRM <= bright_to_dark_noise(noisy) < CONFIRM_RATIO
    auto, plain = Denoiser(device="cpu"), Denoiser(device="cpu", stabilise=False)
    assert auto.levels([noisy])[0].stabiliser is not None
    assert psnr(quantize8(auto(noisy)), clean) > psnr(quantize8(plain(noisy)), clean) + 1.0


def test_the_plain_level_is_read_once_where_the_second_test_needs_it(monkeypatch):
    """The second test reads the noise's sigma before clamping, which the plain route reads too:
    `run` reads it once per image whichever route it takes, and the level is the same as with
    the route off."""
    calls = []
    reading = noise_estimate.unclamped_sigma

    def counted(image: torch.Tensor, *args, **kwargs) -> float:
        calls.append(image.shape)
        return reading(image, *args, **kwargs)

    monkeypatch.setattr(noise_estimate, "unclamped_sigma", counted)
    clean = 0.25 + 0.5 * _photons(97, 83)
    white = quantize8(clean + torch.randn(clean.shape, generator=seeded_generator(5)) * 25 / 255)
    for noisy, stabilised in ((white, False), (_low_contrast_shot(0)[1], True)):
        calls.clear()
        [level] = Denoiser(device="cpu").levels([noisy])
        assert len(calls) == 1 and (level.stabiliser is not None) == stabilised
        if not stabilised:
            assert level.sigma == Denoiser(device="cpu", stabilise=False).levels([noisy])[0].sigma


def test_white_noise_clamped_at_black_may_be_stabilised_unclamped_never():
    """White noise clamped at black grows with brightness near it, and the route gained on such
    images (Train400, clipped sigma 50-75: weights/SHOT-NOISE.md); noise that went past
    0 or 1 unclamped (the standard protocol) is additive by its values alone and is left to the
    model, which would lose it all to the route's clamp. The gain is a mean over many images
    (``benchmarks/stabilise_rule.py``), not a promise for each: on one of these small images the
    screen's ratio sits near its line (2.14 against 2.0), and this test, which asked for a gain,
    passed for sessions and then failed at the same commit on another 2-core EPYC VM, where the
    route is taken and lost 0.21 dB (machines can differ in float32 library maths). So a clamped
    image taken through the route must not lose more than half a dB."""
    auto, off = Denoiser(device="cpu"), Denoiser(device="cpu", stabilise=False)
    for seed in range(2):
        clean = _photons(seed=seed)
        noise = torch.randn(clean.shape, generator=seeded_generator(seed)) * 40 / 255
        unclamped, clamped = clean + noise, quantize8(clean + noise)
        assert auto.levels([unclamped])[0].stabiliser is None
        assert auto(unclamped).equal(off(unclamped))
        if auto.levels([clamped])[0].stabiliser is not None:
            assert psnr(quantize8(auto(clamped)), clean) > psnr(quantize8(off(clamped)), clean) - 0.5


def test_a_noise_free_border_is_not_taken_for_shot_noise():
    """A letterboxed or framed image with white noise has no noise in its black border, as shot
    noise has none where no photon came; the border says nothing about how noise grows with
    brightness, so it is left out, and such an image keeps the plain route with the level of its
    noisy part. Shot noise with a border is still stabilised."""
    auto = Denoiser(device="cpu")
    for seed in range(2):
        clean = 0.25 + 0.5 * _photons(seed=seed)
        white = quantize8(clean + torch.randn(clean.shape, generator=seeded_generator(seed)) * 25 / 255)
        shot = _poisson(_photons(97, 83, seed=seed), 30, seed)  # a 67x45 one keeps too few blocks to confirm
        for noisy in (white, shot):
            noisy[..., :15] = 0
            noisy[..., -8:, :] = 0
        fit = signal_dependence(white)
        assert (fit is None or fit[1] < STABILISE_RATIO) and bright_to_dark_noise(white) < 1.2
        [level] = auto.levels([white])
        assert level.stabiliser is None and level.sigma * 255 == pytest.approx(25, abs=2)
        assert auto.levels([shot])[0].stabiliser is not None
        assert psnr(quantize8(auto(white))[..., :-8, 15:], clean[..., :-8, 15:]) > psnr(white[..., :-8, 15:], clean[..., :-8, 15:]) + 5


def test_shipped_grey_model_gains_on_shot_noise_when_stabilised():
    """By default a grey image with shot noise is stabilised and comes out much closer to the
    clean one than without (Set12 and BSD68: weights/README.md); a colour photo is not
    stabilised by default."""
    gains = []
    for seed in range(2):
        clean = _photons(seed=seed)
        noisy = _poisson(clean, 30, seed)
        auto, off = Denoiser(device="cpu"), Denoiser(device="cpu", stabilise=False)
        [level] = auto.levels([noisy])
        assert level.stabiliser is not None and off.levels([noisy])[0].stabiliser is None
        assert level.sigma == pytest.approx(level.stabiliser.noise_std(float(noisy.clamp(0, 1).mean())))
        out, plain = auto(noisy), off(noisy)
        assert out.shape == noisy.shape and torch.isfinite(out).all()
        gains.append(psnr(quantize8(out), clean) - psnr(quantize8(plain), clean))
    assert min(gains) > 1.0, gains
    photo = torch.from_numpy(smooth_image(45, 67)).permute(2, 0, 1).float() / 255
    shot_photo = quantize8(PoissonNoise(30.0).train()(photo[None], generator=seeded_generator(3))[0])
    assert all(lv.stabiliser is None for lv in Denoiser(device="cpu").levels([shot_photo]))
    assert any(lv.stabiliser is not None for lv in Denoiser(device="cpu", stabilise=True).levels([shot_photo]))


def test_stabilised_input_runs_tiled_and_ensembled():
    noisy = _poisson(_photons(97, 83), 30, 4)
    whole = Denoiser(device="cpu")(noisy)
    tiled = Denoiser(device="cpu", tile=64)(noisy)
    assert torch.isfinite(tiled).all() and psnr(quantize8(tiled), quantize8(whole)) > 35
    assert torch.isfinite(Denoiser(device="cpu", ensemble=True)(noisy)).all()


def test_stabilise_with_sigma_or_a_blind_model_is_a_clear_error(tiny_model_file):
    with pytest.raises(DenoiseError, match="--stabilise .*--sigma"):
        Denoiser(device="cpu", sigma=20, stabilise=True)
    with pytest.raises(DenoiseError, match="--stabilise needs a model with a noise-level input"):
        Denoiser(tiny_model_file, device="cpu", stabilise=True)


def test_run_and_eval_report_stabilised_images(tmp_path):
    """`run -v` says which files were stabilised; `eval` counts them and marks each score."""
    import json

    from PIL import Image
    from typer.testing import CliRunner

    from denoisecli.cli import app

    noisy = _poisson(_photons(), 30, 0)
    save(tmp_path / "in" / "cells.png", (noisy[0] * 255).round().byte().numpy())
    mid = 0.25 + 0.5 * _photons()
    save(tmp_path / "in" / "white.png", (quantize8(ClampedNormalNoise(std=20 / 255).train()(mid[None],
                                                    generator=seeded_generator(5))[0])[0] * 255).round().byte().numpy())
    runner = CliRunner()
    for option, expected in (([], True), (["--no-stabilise"], False)):
        out = tmp_path / f"out{len(option)}"
        result = runner.invoke(app, ["run", str(tmp_path / "in"), "-o", str(out), "-v", *option])
        assert result.exit_code == 0, result.output
        lines = {name: line for line in result.output.splitlines() for name in ("cells.png", "white.png") if name in line}
        assert ("stabilised" in lines["cells.png"]) is expected and "stabilised" not in lines["white.png"]
        assert np.asarray(Image.open(out / "cells.png")).shape == (67, 45)
    result = runner.invoke(app, ["run", str(tmp_path / "in"), "-o", str(tmp_path / "x"), "--stabilise", "--sigma", "20"])
    assert result.exit_code == 1 and "choose one" in result.output and "Traceback" not in result.output

    clean = tmp_path / "clean"
    for seed in range(2):
        save(clean / f"c{seed}.png", (_photons(seed=seed)[0] * 255).round().byte().numpy())
    report = tmp_path / "eval.json"
    result = runner.invoke(app, ["eval", str(clean), "--noise", "poisson", "--level", "30", "--json", str(report)])
    assert result.exit_code == 0, result.output
    assert "2 of 2 images' noise stabilised" in " ".join(result.output.split())
    scores = json.loads(report.read_text())["images"]
    assert [s["stabilised"] for s in scores if s["method"] == "denoise"] == [True, True]


def test_a_16_bit_count_file_is_stretched_then_stabilised(tmp_path):
    """A camera's 16-bit counts (offset 100 ADU, 20 ADU per photon, up to 30 photons) fill a
    hundredth of the file's range: `run` stretches the image to its range, stabilises it and
    writes 16-bit counts back, much closer to the clean counts than without stabilising."""
    import tifffile
    from typer.testing import CliRunner

    from denoisecli.cli import app

    clean = 100 + 20 * 30 * _photons(97, 83, seed=3)[0].double()
    counts = (100 + 20 * torch.poisson((clean - 100) / 20, generator=torch.Generator().manual_seed(0))).round()
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "cells.tif", counts.numpy().astype(np.uint16))
    errors = {}
    for option in ([], ["--no-stabilise"]):
        out = tmp_path / f"out{len(option)}"
        result = CliRunner().invoke(app, ["run", str(tmp_path / "in"), "-o", str(out), "-v", *option])
        assert result.exit_code == 0, result.output
        assert ("stabilised" in result.output) is (not option)
        written = tifffile.imread(out / "cells.tif")
        assert written.dtype == np.uint16 and written.shape == (97, 83)
        errors[len(option)] = float(((torch.from_numpy(written.astype(np.float64)) - clean) ** 2).mean())
    gain = 10 * math.log10(errors[1] / errors[0])
    assert gain > 1.0, gain  # 8.7 dB when this test was written


def _counts_cases() -> dict[str, tuple[torch.Tensor, float | None]]:
    """Name: (image in the file's units, the step of one photon or None) on a 37x31 micrograph."""
    clean = _photons(37, 31, seed=4)
    g = torch.Generator().manual_seed(5)
    photons = torch.poisson(clean * 20, generator=g)
    read = quantize8(PoissonGaussianNoise(peak=10, std=2 / 255).train()(clean[None], generator=seeded_generator(1))[0])
    return {
        **{f"8-bit, peak {p}": (_poisson(clean, p, p), 1 / p) for p in (3, 5, 10, 30)},
        "8-bit, peak 30, no pixel at 0": (quantize8(torch.poisson(clean * 30, generator=g).clamp(1, 30) / 30), 1 / 30),
        "16-bit, 7 ADU a photon": (photons * 7 / 65535, 7 / 65535),
        "8-bit, peak 100: off its levels": (_poisson(clean, 100, 0), None),
        "white noise": (quantize8(clean + torch.randn(clean.shape, generator=g) * 0.1), None),
        "shot and read noise": (read, None),
        "a black level of 5 steps": ((photons + 5) * 7 / 65535, None),
        "16-bit, 1 ADU a photon: the file's own levels": (photons / 65535, None),
        "10-bit HEIF, 3 levels a photon": (photons * 3 / 1023, 3 / 1023),
        "10-bit HEIF, 1 level a photon: the file's own levels": (photons / 1023, None),
        "clean": (quantize8(clean), None),
    }


@pytest.mark.parametrize("case", list(_counts_cases()))
def test_count_step_reads_whole_photon_counts_and_nothing_else(case):
    image, step = _counts_cases()[case]
    found = noise_estimate.count_step(image)
    assert (found is None) if step is None else found == pytest.approx(step, rel=1e-3)


def test_whole_counts_give_the_stabiliser_without_a_fit():
    """Given the stretch `run` made, a stretched count image gets ``COUNT_GAIN`` of the true gain
    and ``COUNT_OFFSET`` photons above the true offset, in the stretched units; without it, the fit."""
    clean = 0.2 + 0.5 * _photons(67, 45, seed=2)
    noisy = quantize8(torch.poisson(clean * 10, generator=seeded_generator(0)).clamp(1, 10) / 10)  # no pixel without a photon
    lo, span = value_range(noisy)
    assert lo > 0 and span < 1
    st = stabiliser(_stretched(noisy, lo, span).clamp(0, 1), ratio=1.0, confirm=1.0, least=0.0, growth=None, stretch=(lo, span))
    assert st.gain == pytest.approx(COUNT_GAIN / (10 * span), rel=1e-2)
    assert st.offset == pytest.approx((lo + COUNT_OFFSET / 10) / span, rel=1e-2)  # lo and the steps as rounded to 8 bits
    fitted = stabiliser(_stretched(noisy, lo, span).clamp(0, 1), ratio=1.0, confirm=1.0, least=0.0, growth=None)
    assert fitted.gain != pytest.approx(st.gain, rel=1e-3)
    posterised = quantize8(torch.round(_photons(67, 45, seed=2) * 15) / 15)
    assert stabilise.default_stabiliser(posterised, stretch=value_range(posterised)) is None, "levels without noise are no counts"


def test_reading_whole_counts_makes_the_shipped_grey_model_better(monkeypatch):
    """Poisson noise at peak 5 on the six bright images above (a quarter of their pixels at white):
    `grey.pt` through the route gained 0.42-1.90 dB (1.30 on average) from reading the counts
    rather than fitting them when this test was written, and none lost."""
    forced = Denoiser(stabilise=True)
    pairs = [(clean, _poisson(clean, 5, seed)) for seed, (clean, _) in enumerate(map(_bright_shot, range(6)))]
    counted = [psnr(quantize8(forced(noisy)), clean) for clean, noisy in pairs]
    monkeypatch.setattr(stabilise, "count_step", lambda *args: None)
    gains = [c - psnr(quantize8(forced(noisy)), clean) for c, (clean, noisy) in zip(counted, pairs)]
    assert sum(gains) / len(gains) > 0.5 and min(gains) > -0.1, gains


def test_equal_count_excess_tells_photon_counts_from_a_clean_image_of_few_levels():
    smooth = _photons(67, 45, seed=6)
    for peak in (3, 5, 30):
        counts = torch.poisson(smooth * peak, generator=seeded_generator(peak))
        assert abs(noise_estimate.equal_count_excess(counts)) < 0.15, peak
    for levels in (2, 4, 16):
        assert noise_estimate.equal_count_excess(torch.round(smooth * levels)) > 0.5, levels


def test_by_default_counts_skip_the_tests_where_they_look_like_noise():
    """At peak 5 with a quarter of the pixels at white, the tests turn away five of these six
    images; read as counts, all six are stabilised. A clean image of a few levels is not."""
    def default(image: torch.Tensor, counts: bool) -> Stabiliser | None:
        lo, span = value_range(image)
        return stabilise.default_stabiliser(_stretched(image, lo, span), stretch=(lo, span) if counts else None)

    noisy = [_poisson(clean, 5, seed) for seed, (clean, _) in enumerate(map(_bright_shot, range(6)))]
    assert sum(default(x, False) is not None for x in noisy) <= 2
    assert all(default(x, True) is not None for x in noisy)
    for levels in (2, 4, 8):
        assert default(quantize8(torch.round(_bright_shot(0)[0] * levels) / levels), True) is None, levels


def test_count_step_of_values_with_no_step_near_black_is_none():
    """A dark value far below a cluster of close bright ones leaves no multiple to fit from."""
    assert noise_estimate.count_step(torch.tensor([[[0.0, 0.0, 0.9, 0.94, 0.98]]])) is None

import pytest
import torch

from denoisecli.noise import ClampedNormalNoise, fixed_levels, seeded_generator


def test_statistics_match_requested_normal():
    layer = ClampedNormalNoise(scale=1.0, mean=0.0, std=0.1).train()
    x = torch.full((1, 3, 200, 200), 0.5)
    n = layer(x, generator=seeded_generator(0)) - x
    assert abs(n.mean().item()) < 2e-3
    assert n.std().item() == pytest.approx(0.1, rel=0.02)


def test_scale_and_mean_apply_to_the_noise():
    layer = ClampedNormalNoise(scale=0.5, mean=0.04, std=0.1).train()
    x = torch.full((1, 1, 300, 300), 0.5)
    n = layer(x, generator=seeded_generator(1)) - x
    assert n.mean().item() == pytest.approx(0.02, abs=2e-3)
    assert n.std().item() == pytest.approx(0.05, rel=0.03)


def test_output_is_clamped_to_unit_range():
    layer = ClampedNormalNoise(std=1.0).train()
    x = torch.rand(2, 3, 37, 31)
    y = layer(x, generator=seeded_generator(2))
    assert y.min() >= 0 and y.max() <= 1
    assert (y == 0).any() and (y == 1).any()


def test_eval_mode_is_identity():
    layer = ClampedNormalNoise(std=0.5).eval()
    x = torch.rand(1, 3, 8, 8)
    assert layer(x) is x


def test_per_sample_std_mixes_levels_in_one_batch():
    layer = ClampedNormalNoise().train()
    x = torch.full((3, 1, 128, 128), 0.5)
    std = torch.tensor([0.0, 0.05, 0.1])
    n = layer(x, std=std, generator=seeded_generator(3)) - x
    per = n.flatten(1).std(dim=1)
    assert per[0].item() == 0.0
    assert per[1].item() == pytest.approx(0.05, rel=0.05)
    assert per[2].item() == pytest.approx(0.1, rel=0.05)


def test_per_sample_std_of_wrong_length_is_refused():
    with pytest.raises(ValueError, match="shape"):
        ClampedNormalNoise().train()(torch.rand(2, 1, 4, 4), std=torch.tensor([0.1, 0.2, 0.3]))


def test_independent_noise_is_drawn_as_before_the_correlation_level():
    x = torch.rand(2, 3, 37, 31)
    y = ClampedNormalNoise(std=0.1).train()(x, generator=seeded_generator(4))
    expected = (x + torch.randn(x.shape, generator=seeded_generator(4)) * 0.1).clamp(0, 1)
    assert torch.equal(y, expected)


@pytest.mark.parametrize("rho", [0.0, 0.5, 1.0])
def test_correlation_shares_that_much_of_each_channels_noise(rho):
    layer = ClampedNormalNoise(std=0.05, correlation=rho).train()
    x = torch.full((1, 3, 200, 200), 0.5)
    n = (layer(x, generator=seeded_generator(8)) - x)[0].flatten(1)
    assert n.std(dim=1).tolist() == pytest.approx([0.05] * 3, rel=0.03)
    c = torch.corrcoef(n)
    assert [c[0, 1].item(), c[0, 2].item(), c[1, 2].item()] == pytest.approx([rho] * 3, abs=0.02)


def test_per_sample_correlation_and_its_bounds():
    x = torch.full((2, 3, 64, 64), 0.5)
    n = ClampedNormalNoise(std=0.05).train()(x, correlation=torch.tensor([0.0, 1.0]), generator=seeded_generator(9)) - x
    assert not torch.allclose(n[0, 0], n[0, 1])
    assert torch.allclose(n[1, 0], n[1, 1]) and torch.allclose(n[1, 0], n[1, 2])
    with pytest.raises(ValueError, match="correlation"):
        ClampedNormalNoise(correlation=1.5)
    with pytest.raises(ValueError, match="correlation"):
        ClampedNormalNoise().train()(x, correlation=-0.1)


def test_shared_kind_samples_its_correlation_per_sample():
    assert fixed_levels("gaussian-shared") == {"std": (0.2, 0.2), "correlation": (1.0, 1.0)}
    sampler = NoiseSampler("gaussian-shared", {"std": (0.1, 0.1), "correlation": (0.0, 1.0)})
    x = _flat(0.5, (16, 3, 48, 48))
    noisy, sigma = sampler.draw(x, seeded_generator(10), seeded_generator(11))
    assert sigma.tolist() == pytest.approx([0.1] * 16)
    c = [float(torch.corrcoef((noisy[i] - x[i]).flatten(1))[0, 1]) for i in range(16)]
    assert min(c) < 0.3 and max(c) > 0.7
    mixed = NoiseSampler("gaussian", {"std": (0.1, 0.1)}, mix={"gaussian-shared": 0.5})
    assert isinstance(mixed.parts[1][0], NOISE_MODELS["gaussian-shared"])


def test_generator_makes_noise_reproducible_and_keyed():
    layer = ClampedNormalNoise(std=0.2).train()
    x = torch.rand(1, 3, 16, 16)
    a = layer(x, generator=seeded_generator(5, "a.png"))
    b = layer(x, generator=seeded_generator(5, "a.png"))
    c = layer(x, generator=seeded_generator(5, "b.png"))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_keeps_dtype_and_device(dtype):
    layer = ClampedNormalNoise(std=0.1).train()
    x = torch.rand(2, 3, 9, 7, dtype=dtype)
    y = layer(x, std=torch.tensor([0.1, 0.2]))
    assert y.dtype == dtype and y.device == x.device and y.shape == x.shape


def test_gradients_flow_through_unclamped_pixels():
    layer = ClampedNormalNoise(std=0.01).train()
    x = torch.full((1, 1, 8, 8), 0.5, requires_grad=True)
    layer(x).sum().backward()
    assert torch.allclose(x.grad, torch.ones_like(x))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_noise_on_first_gpu():
    layer = ClampedNormalNoise(std=0.1).train()
    x = torch.rand(2, 3, 16, 16, device="cuda:0")
    y = layer(x, std=torch.tensor([0.1, 0.2]), generator=seeded_generator(0, device="cuda:0"))
    assert y.device == x.device


from denoisecli.errors import DenoiseError
from denoisecli.noise import NOISE_MODELS, NoiseSampler, user_levels


def _flat(v=0.5, size=(2, 3, 96, 96)):
    return torch.full(size, v)


def test_poisson_variance_is_mean_over_peak():
    layer = NOISE_MODELS["poisson"](peak=50).train()
    x = _flat(0.4)
    y = layer(x, generator=seeded_generator(0))
    assert y.mean().item() == pytest.approx(0.4, abs=3e-3)
    assert y.var().item() == pytest.approx(0.4 / 50, rel=0.05)


def test_poisson_gaussian_adds_read_noise_variance():
    layer = NOISE_MODELS["poisson-gaussian"](peak=50, std=0.05).train()
    y = layer(_flat(0.4), generator=seeded_generator(1))
    assert y.var().item() == pytest.approx(0.4 / 50 + 0.05**2, rel=0.05)


def test_salt_pepper_hits_the_requested_fraction_with_black_and_white():
    layer = NOISE_MODELS["salt-pepper"](amount=0.1).train()
    x = _flat(0.5)
    y = layer(x, generator=seeded_generator(2))
    hit = (y != 0.5).float().mean().item()
    assert hit == pytest.approx(0.1, abs=0.01)
    changed = y[y != 0.5]
    assert set(changed.unique().tolist()) == {0.0, 1.0}
    assert (changed == 1).float().mean().item() == pytest.approx(0.5, abs=0.05)


def test_speckle_std_scales_with_intensity():
    layer = NOISE_MODELS["speckle"](std=0.2).train()
    dark = layer(_flat(0.2), generator=seeded_generator(3)) - 0.2
    mid = layer(_flat(0.4), generator=seeded_generator(3)) - 0.4
    assert dark.std().item() == pytest.approx(0.04, rel=0.05)
    assert mid.std().item() == pytest.approx(0.08, rel=0.05)


def test_jpeg_error_grows_as_quality_drops():
    from conftest import smooth_image

    x = torch.from_numpy(smooth_image(64, 64)).permute(2, 0, 1).float()[None] / 255
    x = (x + 0.05 * torch.randn(x.shape, generator=seeded_generator(4))).clamp(0, 1)
    layer = NOISE_MODELS["jpeg"]().train()
    errors = [(layer(x, quality=q) - x).abs().mean().item() for q in (95, 50, 10)]
    assert errors[0] < errors[1] < errors[2]
    per_sample = layer(x.repeat(2, 1, 1, 1), quality=torch.tensor([95.0, 10.0]))
    assert (per_sample[0] - x[0]).abs().mean() < (per_sample[1] - x[0]).abs().mean()


@pytest.mark.parametrize("kind", list(NOISE_MODELS))
def test_every_noise_model_keeps_shape_range_and_eval_identity(kind):
    layer = NOISE_MODELS[kind]()
    x = torch.rand(2, 3, 37, 31)
    y = layer.train()(x, generator=seeded_generator(5))
    assert y.shape == x.shape and y.dtype == x.dtype and 0 <= y.min() and y.max() <= 1
    assert layer.eval()(x) is x


def test_sampler_draws_one_level_per_sample():
    sampler = NoiseSampler("gaussian", {"std": (0.0, 0.2)})
    x = _flat(0.5, (8, 1, 64, 64))
    y = sampler(x, seeded_generator(6), seeded_generator(7))
    stds = (y - x).flatten(1).std(dim=1)
    assert stds.max() - stds.min() > 0.05


def test_user_levels_maps_cli_options():
    assert user_levels("gaussian", sigma=(0, 51)) == {"std": (0.0, 0.2)}
    assert user_levels("gaussian") is None
    with pytest.raises(DenoiseError, match="--peak does not apply"):
        user_levels("gaussian", peak=(1, 2))
    with pytest.raises(DenoiseError, match="out of bounds"):
        user_levels("salt-pepper", amount=(0, 2))
    assert user_levels("gaussian-shared", sigma=(25.5, 25.5), correlation=(0.5, 1)) == {"std": (0.1, 0.1), "correlation": (0.5, 1)}
    with pytest.raises(DenoiseError, match="--correlation does not apply"):
        user_levels("gaussian", correlation=(1, 1))
    with pytest.raises(DenoiseError, match="out of bounds"):
        user_levels("gaussian-shared", correlation=(0, 2))


def _lag1(r):
    """Mean correlation of horizontally adjacent noise values, per channel."""
    return sum(float(torch.corrcoef(torch.stack([p[:, :-1].flatten(), p[:, 1:].flatten()]))[0, 1]) for p in r) / len(r)


def test_camera_noise_is_sensor_noise_then_jpeg():
    """JPEG of the noisy image leaves noise that is weaker but spatially correlated, as in real photos."""
    x = _flat(0.4, (2, 3, 64, 64))
    levels = {"peak": 20.0, "std": 0.01}
    camera = NOISE_MODELS["camera"]().train()(x, quality=80.0, generator=torch.Generator().manual_seed(0), **levels)
    sensor = NOISE_MODELS["poisson-gaussian"]().train()(x, generator=torch.Generator().manual_seed(0), **levels)
    assert camera.shape == x.shape and camera.min() >= 0 and camera.max() <= 1
    assert torch.equal(camera * 255, (camera * 255).round())
    assert 0.03 < (camera - x).std() < (sensor - x).std()
    assert _lag1((camera - x)[0]) > _lag1((sensor - x)[0]) + 0.03


def test_sampler_mixes_other_noise_into_a_fraction_of_samples():
    x = _flat(0.5, (200, 3, 16, 16))
    sampler = NoiseSampler("gaussian", {"std": (0.0, 0.0)}, mix={"salt-pepper": 0.3})
    y = sampler(x, torch.Generator().manual_seed(0), torch.Generator().manual_seed(1))
    touched = (y != x).flatten(1).any(dim=1).float().mean().item()
    assert 0.2 < touched < 0.4
    again = sampler(x, torch.Generator().manual_seed(0), torch.Generator().manual_seed(1))
    assert torch.equal(y, again)


@pytest.mark.parametrize("mix", [{"nope": 0.1}, {"jpeg": 0.7, "camera": 0.5}, {"jpeg": -0.1}])
def test_sampler_refuses_a_bad_mix(mix):
    with pytest.raises(ValueError):
        NoiseSampler("gaussian", {"std": (0.0, 0.1)}, mix=mix)


def test_sampler_reports_each_samples_white_noise_sigma():
    """Gaussian samples carry their sigma (std * |scale|); noise without a single sigma gets NaN."""
    x = _flat(0.5, (64, 3, 16, 16))
    sampler = NoiseSampler("gaussian", {"std": (0.0, 0.3)}, mix={"camera": 0.4}, scale=0.5)
    y, sigma = sampler.draw(x, torch.Generator().manual_seed(0), torch.Generator().manual_seed(1))
    assert torch.equal(y, sampler(x, torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)))
    white = ~torch.isnan(sigma)
    assert 0.4 < white.float().mean() < 0.8 and bool((sigma[white] <= 0.15).all())
    measured = (y - x).flatten(1).std(dim=1)
    assert torch.allclose(measured[white], sigma[white].float(), atol=0.015)
    assert ClampedNormalNoise(std=0.1, scale=-2.0).sigma() == pytest.approx(0.2)


def test_fixed_levels_are_each_layers_own_defaults():
    from denoisecli.noise import fixed_levels

    assert fixed_levels("gaussian") == {"std": (0.2, 0.2)}
    for kind, cls in NOISE_MODELS.items():
        layer = cls()
        assert set(fixed_levels(kind)) == set(cls.levels)
        assert all(lo == hi for lo, hi in fixed_levels(kind).values())
        if hasattr(layer, "std") and "std" in cls.levels:
            assert fixed_levels(kind)["std"][0] == layer.std

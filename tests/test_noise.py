import pytest
import torch

from denoisecli.noise import ClampedNormalNoise, seeded_generator


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

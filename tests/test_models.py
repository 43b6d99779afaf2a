import pytest
import torch

from denoisecli.models import build_model, count_parameters, default_config

from conftest import TINY_MODEL


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [(37, 31), (16, 16), (5, 3), (64, 47)])
def test_unet_keeps_shape_at_odd_sizes(channels, size):
    model = build_model({"arch": "unet", "channels": channels, **TINY_MODEL})
    x = torch.rand(2, channels, *size)
    y = model(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.isfinite(y).all()


def test_untrained_unet_is_identity():
    model = build_model(default_config(3))
    x = torch.rand(1, 3, 37, 31)
    assert torch.equal(model(x), x)


def test_unet_gradients_reach_every_parameter():
    model = build_model({"arch": "unet", "channels": 3, **TINY_MODEL})
    torch.nn.init.normal_(model.tail.weight, std=0.1)
    x = torch.rand(2, 3, 37, 31)
    (model(x) - x.flip(-1)).abs().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.head.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("unshuffle", [1, 2])
def test_a_constant_per_pixel_level_map_matches_the_per_image_level(unshuffle):
    """A [B, 1, H, W] level (FFDNet's spatially variant map) at an odd size: a constant map gives what
    the per-image level gives, and a map that differs on part of the image changes the output."""
    torch.manual_seed(0)
    model = build_model({"arch": "unet", "channels": 3, **TINY_MODEL, "unshuffle": unshuffle, "noise_map": True})
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.2)
    x = torch.rand(2, 3, 37, 31)
    sigma = torch.tensor([0.05, 0.2])
    flat = sigma.view(2, 1, 1, 1).expand(2, 1, 37, 31)
    assert torch.allclose(model(x, flat), model(x, sigma), atol=1e-6)
    varied = flat.clone()
    varied[..., 24:] = 0.3
    out = model(x, varied)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert not torch.allclose(out, model(x, sigma), atol=1e-4)
    with pytest.raises(ValueError, match="per-pixel"):
        model(x, flat[..., :30])


@pytest.mark.parametrize("unshuffle", [1, 2])
def test_config_controls_size(unshuffle):
    small = build_model({"arch": "unet", "channels": 3, "width": 8, "depth": 2, "unshuffle": unshuffle})
    big = build_model({"arch": "unet", "channels": 3, "width": 16, "depth": 3, "unshuffle": unshuffle})
    assert count_parameters(big) > count_parameters(small)
    assert big.stride == unshuffle * 4


def test_default_model_is_small_enough_to_ship():
    assert count_parameters(build_model(default_config(3))) * 4 < 20e6


def test_unknown_config_is_refused():
    with pytest.raises(ValueError, match="widht"):
        build_model({"arch": "unet", "widht": 8})
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model({"arch": "resnet"})


def test_patch_discriminator_scores_patches():
    disc = build_model({"arch": "patchgan", "channels": 3, "width": 8})
    scores = disc(torch.rand(2, 3, 64, 64))
    assert scores.shape[0] == 2 and scores.shape[1] == 1 and scores.shape[-1] > 1
    scores.mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in disc.parameters() if p.grad is not None)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_unet_on_cuda_matches_cpu():
    model = build_model({"arch": "unet", "channels": 3, **TINY_MODEL})
    torch.nn.init.normal_(model.tail.weight, std=0.1)
    x = torch.rand(1, 3, 37, 31)
    ref = model(x)
    out = model.to("cuda")(x.to("cuda")).cpu()
    assert torch.allclose(ref, out, atol=1e-4)


def _zero_writers(model, stream_keep, inner_keep):
    """Silence every channel not kept: zero the weights and bias that write it. A stream channel no
    layer writes stays zero all through the network, and so does an inner channel, whatever reads them."""
    def silence(conv, keep, transposed=False):
        drop = torch.ones(conv.bias.numel(), dtype=torch.bool)
        drop[keep] = False
        with torch.no_grad():
            if transposed:
                conv.weight[:, drop] = 0
            else:
                conv.weight[drop] = 0
            conv.bias[drop] = 0

    depth = model.depth
    stages = [*model.encoders, model.bottleneck]
    decoders, ups = list(model.decoders)[::-1], list(model.ups)[::-1]
    silence(model.head, stream_keep[0])
    for i in range(depth):
        for block in [*stages[i], *(decoders[i] if i < depth - 1 else [])]:
            silence(block.conv1, inner_keep[i])
            silence(block.conv2, stream_keep[i])
        if i < depth - 1:
            silence(model.downs[i], stream_keep[i + 1])
            silence(ups[i], stream_keep[i], transposed=True)


def test_narrowing_keeps_the_channels_that_carry_the_signal():
    """Narrowing a UNet whose extra channels are silent gives the same function at odd sizes, so
    channels are mapped consistently through skips, downs, ups and every block."""
    from denoisecli.models.unet import narrowed

    torch.manual_seed(0)
    wide = build_model({"arch": "unet", "channels": 3, "width": 4, "depth": 3, "blocks": 2, "noise_map": True})
    for p in wide.parameters():
        torch.nn.init.normal_(p, std=0.1)
    stream_keep = [torch.tensor([1, 3]), torch.tensor([0, 2, 5, 7]), torch.tensor([0, 1, 2, 3, 8, 9, 12, 15])]
    inner_keep = [torch.tensor([0, 2]), torch.tensor([1, 3, 4, 6]), torch.tensor([2, 4, 5, 7, 9, 10, 11, 14])]
    _zero_writers(wide, stream_keep, inner_keep)
    small = narrowed(wide, 2)
    assert small.head.out_channels == 2 and count_parameters(small) < count_parameters(wide) / 3
    x = torch.rand(2, 3, 37, 31)
    with torch.no_grad():
        assert torch.allclose(small(x, 0.1), wide(x, 0.1), rtol=1e-4, atol=1e-5)
    assert torch.equal(narrowed(wide, 4)(x, 0.1), wide(x, 0.1))
    with pytest.raises(ValueError, match="narrow"):
        narrowed(wide, 5)

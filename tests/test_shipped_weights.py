"""The shipped weights: present, loadable without code, and a clear gain on a generated image."""

import re

import pytest
import torch

from denoisecli.inference import Denoiser
from denoisecli.metrics import psnr, quantize8
from denoisecli.noise import ClampedNormalNoise, SharedNormalNoise, seeded_generator
from denoisecli.weights import load_model, shipped_weights, weights_dir

from conftest import smooth_image


def _roughness(t: torch.Tensor) -> float:
    """Mean absolute difference of horizontal neighbours: noise left raises it, smoothing lowers it."""
    return float((t[..., 1:] - t[..., :-1]).abs().mean())


@pytest.mark.parametrize("channels,name", [(3, "color.pt"), (1, "grey.pt")])
def test_shipped_models_load_and_match_their_config(channels, name):
    path = shipped_weights(channels)
    assert path == weights_dir() / name and path.stat().st_size < 20e6
    model, ckpt = load_model(path)
    assert model.channels == ckpt["config"]["channels"] == channels
    assert ckpt["config"]["arch"] == "unet" and ckpt["meta"]["steps"] > 0
    assert ckpt["config"]["noise_map"] is True and model.noise_map
    assert ckpt["config"]["level"] == model.level in ("estimate", "sigma", "clamped"), "the file says what its level input means"
    assert ckpt["meta"]["history"], "the shipped file records how it was trained"
    assert sum(p.numel() for p in model.parameters()) == ckpt["meta"]["parameters"]


@pytest.mark.parametrize("channels", [3, 1])
def test_sigma_sets_the_strength_monotonically(channels):
    """A larger --sigma removes more: the change from the input grows and the output gets smoother."""
    clean = torch.from_numpy(smooth_image(64, 53, channels=channels)).float()
    clean = (clean.permute(2, 0, 1) if channels == 3 else clean[None]) / 255
    noisy = ClampedNormalNoise(std=20 / 255).train()(clean[None], generator=seeded_generator(4))[0]

    removed, roughness = [], []
    for sigma in (2, 10, 20, 40, 75):
        out = Denoiser(device="cpu", sigma=sigma)(noisy)
        removed.append(float((out - noisy).std()))
        roughness.append(_roughness(out))
    assert removed == sorted(removed) and removed[0] < 0.8 * removed[-1], removed
    # Roughness falls until the output is as smooth as the clean image, then plateaus below it: a wiggle
    # there is allowed, any rise that puts texture (noise) back above the clean image's level is not.
    clean_roughness = _roughness(clean)
    assert all(b <= a or b <= clean_roughness for a, b in zip(roughness, roughness[1:])), (roughness, clean_roughness)
    assert roughness[-1] < 0.7 * roughness[0], roughness


def test_strength_scales_the_level_fed_to_the_model():
    """--strength k feeds k times the estimate: the output of --sigma at k times it, removing more
    as k grows. (What it is for, noise the same in every channel, is measured on CBSD68 in the
    model card: +0.9 to +3.3 dB at strength 2.)"""
    clean = torch.from_numpy(smooth_image(67, 45)).permute(2, 0, 1).float() / 255
    noisy = quantize8(SharedNormalNoise(std=25 / 255).train()(clean[None], generator=seeded_generator(5))[0])
    [(sigma, *_)] = Denoiser(device="cpu").levels([noisy])
    outputs = {k: Denoiser(device="cpu", strength=k)(noisy) for k in (0.5, 1, 2)}
    assert torch.allclose(outputs[2], Denoiser(device="cpu", sigma=2 * sigma * 255)(noisy), atol=1e-5)
    removed = [float((outputs[k] - noisy).std()) for k in (0.5, 1, 2)]
    roughness = [_roughness(outputs[k]) for k in (0.5, 1, 2)]
    assert removed == sorted(removed) and roughness == sorted(roughness, reverse=True), (removed, roughness)
    assert roughness[-1] < 0.85 * roughness[0], roughness


def test_per_channel_keeps_edges_that_only_one_channel_has():
    """Bars in red, other bars in green, a disc in blue: `color.pt` learned photos, where colour
    changes slowly, and blurs such edges; --per-channel sends each channel alone through the grey
    model (with its own estimate), which keeps them (model card: dead leaves, +5 to +7 dB). Such
    channels are independent, so by default the shipped models split the image too."""
    clean = _bars()
    noisy = quantize8(ClampedNormalNoise(std=25 / 255).train()(clean[None], generator=seeded_generator(1))[0])
    # float32: in int8 the three channels in one batch and each alone round a few pixels apart
    # (up to 0.15 of 255 here), which says nothing about the route
    per_channel = Denoiser(device="cpu", per_channel=True, int8=False)
    out = per_channel(noisy)
    grey = Denoiser(device="cpu", int8=False)  # a grey image gets the shipped grey model, as each channel does here
    assert torch.allclose(out, torch.cat([grey(noisy[c : c + 1]) for c in range(3)]), atol=1e-5)
    assert len(per_channel.levels([noisy])) == 3, "one level per channel"
    assert psnr(quantize8(out), clean) > psnr(quantize8(Denoiser(device="cpu", per_channel=False)(noisy)), clean) + 5
    default = Denoiser(device="cpu", int8=False)
    assert default.split(noisy) and torch.equal(default(noisy), out)


def test_shipped_model_denoises_a_generated_image():
    clean = torch.from_numpy(smooth_image(67, 45)).permute(2, 0, 1).float() / 255
    noisy = quantize8(ClampedNormalNoise(std=25 / 255).train()(clean[None], generator=seeded_generator(0))[0])
    out = quantize8(Denoiser(device="cpu")(noisy))
    assert psnr(out, clean) > psnr(noisy, clean) + 5


def test_self_ensemble_beats_the_single_pass():
    clean = torch.from_numpy(smooth_image(67, 45)).permute(2, 0, 1).float() / 255
    noisy = quantize8(ClampedNormalNoise(std=25 / 255).train()(clean[None], generator=seeded_generator(0))[0])
    single = psnr(quantize8(Denoiser(device="cpu")(noisy)), clean)
    ensemble = psnr(quantize8(Denoiser(device="cpu", ensemble=True)(noisy)), clean)
    assert ensemble > single, (ensemble, single)


def test_grey_images_get_a_model_too():
    clean = torch.from_numpy(smooth_image(40, 33, channels=1)).float()[None] / 255
    noisy = quantize8(ClampedNormalNoise(std=15 / 255).train()(clean[None], generator=seeded_generator(1))[0])
    out = quantize8(Denoiser(device="cpu")(noisy))
    assert out.shape == clean.shape
    assert psnr(out, clean) > psnr(noisy, clean) + 5


def test_weights_ship_inside_a_non_editable_install(tmp_path):
    """What `pip install .` installs carries the weights, found without the source tree."""
    import subprocess
    import sys
    import zipfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(root), "--no-deps", "--no-build-isolation",
                            "-w", str(tmp_path / "dist"), "-q"], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("denoisecli-*.whl"))
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    code = "from denoisecli.weights import shipped_weights; print(shipped_weights(3))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"}, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert Path(out.stdout.strip()).is_relative_to(tmp_path / "site")


@pytest.mark.parametrize("size,tile", [((301, 263), 160), ((257, 331), 200)])
def test_shipped_model_tiled_matches_whole_within_one_level(size, tile):
    from denoisecli.inference import denoise_tensor

    model, _ = load_model(shipped_weights(3))
    clean = torch.from_numpy(smooth_image(*size)).permute(2, 0, 1).float() / 255
    x = ClampedNormalNoise(std=25 / 255).train()(clean[None], generator=seeded_generator(2))
    level = torch.tensor([25 / 255])
    whole = denoise_tensor(model, x, sigma=level)
    tiled = denoise_tensor(model, x, tile=tile, sigma=level)
    assert (whole - tiled).abs().max() < 1 / 255


def test_a_dim_sixteen_bit_file_is_denoised_like_a_full_range_one(tmp_path):
    """A microscope's 12-bit counts in a 16-bit file fill a sixteenth of its range; `run` stretches
    them (inference.value_range), so the file is denoised as well as the same image at full range."""
    import numpy as np
    from PIL import Image

    from denoisecli.image_io import read_image
    from denoisecli.inference import denoise_files

    clean = smooth_image(61, 57, channels=1).astype(np.float64) / 255
    noisy = clean + np.random.default_rng(0).normal(0, 25 / 255, clean.shape)
    counts = (noisy * 4095 + 100).round().clip(0, 65535).astype(np.uint16)
    Image.fromarray(counts).save(tmp_path / "cells.png")
    denoise_files(tmp_path / "cells.png", tmp_path / "out")
    out = read_image(tmp_path / "out" / "cells.png")
    assert out.bits == 16

    def own_span_psnr(image: torch.Tensor) -> float:
        ref = torch.from_numpy(clean * 4095 + 100)
        return float(10 * torch.log10(4095**2 / ((image.double()[0] * 65535 - ref) ** 2).mean()))

    full = Denoiser(device="cpu")(torch.from_numpy(noisy).float().clamp(0, 1)[None])
    assert own_span_psnr(out.pixels) > own_span_psnr(torch.from_numpy(counts / 65535)[None]) + 5
    assert own_span_psnr(out.pixels) > psnr(full, torch.from_numpy(clean).float()[None]) - 0.5


def test_four_channels_stored_in_each_pixel_are_each_denoised(tmp_path):
    """Four fluorescence channels stored side by side in each pixel: each is denoised as a grey
    plane at its own level and goes back in its place (the fourth was taken for alpha and left noisy)."""
    import numpy as np
    import tifffile

    from denoisecli.inference import denoise_files

    rng = np.random.default_rng(1)
    clean = np.stack([smooth_image(45, 53, channels=1, seed=s).astype(np.float64) / 255 for s in range(4)], axis=-1)
    sigmas = np.array([10, 20, 30, 40]) / 255
    noisy = ((clean + rng.normal(0, 1, clean.shape) * sigmas) * 65535).round().clip(0, 65535).astype(np.uint16)
    tifffile.imwrite(tmp_path / "c.tif", noisy, photometric="minisblack", planarconfig="contig")
    [result] = denoise_files(tmp_path / "c.tif", tmp_path / "out").results
    assert result.status == "denoised" and result.detail.startswith("4 planes, sigma ")
    out = tifffile.imread(tmp_path / "out" / "c.tif").astype(np.float64) / 65535
    assert out.shape == clean.shape
    for k in range(4):
        before = 10 * np.log10(1 / ((noisy[..., k] / 65535 - clean[..., k]) ** 2).mean())
        after = 10 * np.log10(1 / ((out[..., k] - clean[..., k]) ** 2).mean())
        assert after > before + 3, (k, before, after)


def test_a_microscope_z_stack_is_denoised_plane_by_plane(tmp_path):
    """A 16-bit ImageJ z-stack of dim 12-bit counts, each plane with its own noise level: `run`
    writes the same stack back, every plane clearly cleaner, each read at its own level."""
    import numpy as np
    import tifffile

    from denoisecli.inference import denoise_files

    rng = np.random.default_rng(0)
    clean = np.stack([smooth_image(45, 53, channels=1, seed=s).astype(np.float64) / 255 for s in range(3)])
    sigmas = np.array([10, 25, 40])[:, None, None] / 255
    counts = ((clean + rng.normal(0, 1, clean.shape) * sigmas) * 4095 + 100).round().clip(0, 65535).astype(np.uint16)
    tifffile.imwrite(tmp_path / "z.tif", counts, imagej=True, metadata={"axes": "ZYX", "spacing": 0.2, "unit": "um"})
    report = denoise_files(tmp_path / "z.tif", tmp_path / "out")
    [result] = report.results
    assert result.status == "denoised" and result.detail.startswith("3 planes, sigma ")
    low, high = map(float, result.detail.split(", ")[1].removeprefix("sigma ").split("-"))
    span = 4095 / 65535  # levels are reported in the file's units
    assert low < 15 * span < 35 * span < high, result.detail  # each plane's own level, not one for the stack
    with tifffile.TiffFile(tmp_path / "out" / "z.tif") as tf:
        assert tf.is_imagej and tf.series[0].axes == "ZYX" and tf.imagej_metadata["spacing"] == 0.2
        out = tf.series[0].asarray()
    assert out.shape == counts.shape and out.dtype == np.uint16

    def own_span_psnr(values: np.ndarray, i: int) -> float:
        return float(10 * np.log10(4095**2 / ((values[i].astype(np.float64) - (clean[i] * 4095 + 100)) ** 2).mean()))

    for i in range(3):
        assert own_span_psnr(out, i) > own_span_psnr(counts, i) + 5, i


def test_a_grey_photo_saved_as_rgb_goes_through_the_grey_model():
    """Noise that is the same in all three channels is not what the colour model learned: such an
    image is denoised by the grey model, alone or batched beside a colour image, and stays RGB."""
    clean = torch.from_numpy(smooth_image(45, 39, channels=1)).float()[None] / 255
    noisy = quantize8(ClampedNormalNoise(std=25 / 255).train()(clean[None], generator=seeded_generator(2))[0])
    as_rgb = noisy.expand(3, -1, -1).contiguous()
    denoiser = Denoiser(device="cpu")
    assert denoiser.grey_copy(as_rgb) and not denoiser.grey_copy(noisy)
    grey_out = denoiser(noisy)
    out = denoiser(as_rgb)
    assert out.shape == as_rgb.shape and torch.equal(out, grey_out.expand(3, -1, -1))
    assert psnr(quantize8(out[:1]), clean) > psnr(quantize8(denoiser.model_for(3)(
        as_rgb[None], torch.tensor([25 / 255]))[0].mean(0, keepdim=True).clamp(0, 1)), clean) + 1
    colour = torch.from_numpy(smooth_image(45, 39)).permute(2, 0, 1).float() / 255
    both = denoiser.batch([colour, as_rgb])
    assert torch.allclose(both[0], denoiser(colour), atol=1e-6) and torch.equal(both[1], out)
    tinted = as_rgb.clone()
    tinted[0, 0, 0] += 1 / 255
    assert not denoiser.grey_copy(tinted)
    assert not Denoiser(shipped_weights(3), device="cpu").grey_copy(as_rgb), "a model file the user names is used for every image"


def test_run_says_when_a_grey_photo_in_rgb_took_the_grey_model(tmp_path):
    import numpy as np
    from PIL import Image

    from denoisecli.inference import denoise_files

    grey = smooth_image(33, 29, channels=1)
    Image.fromarray(np.stack([grey] * 3, -1)).save(tmp_path / "bw.jpg", quality=95)
    Image.fromarray(smooth_image(33, 29)).save(tmp_path / "colour.jpg", quality=95)
    details = {r.src.name: r.detail for r in denoise_files(tmp_path, tmp_path / "out").results}
    assert details["bw.jpg"].endswith(", estimated, grey in RGB: grey model") and "grey" not in details["colour.jpg"]
    out = np.asarray(Image.open(tmp_path / "out" / "bw.jpg"))
    assert out.ndim == 3 and out.shape[2] == 3


def _bars(h: int = 61, w: int = 67) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([(xx // 9 % 2) * 0.6 + 0.2, (yy // 7 % 2) * 0.5 + 0.3, (((yy - 30) ** 2 + (xx - 33) ** 2) < 400) * 0.6 + 0.2]).float()


def test_one_batch_takes_each_image_by_its_own_route(tmp_path, monkeypatch):
    """Independent channels (split), a grey photo in RGB (grey model) and a colour photo (colour
    model) batched together come out as each does alone, with one level per model input; run -v
    names the split one, and --no-per-channel keeps every image whole."""
    import numpy as np
    from PIL import Image

    from denoisecli.inference import RunOptions, denoise_files

    def noisy(clean: torch.Tensor, seed: int) -> torch.Tensor:
        return quantize8(ClampedNormalNoise(std=20 / 255).train()(clean[None], generator=seeded_generator(seed))[0])

    split = noisy(_bars(), 1)
    grey = noisy(torch.from_numpy(smooth_image(61, 67, channels=1)).float()[None] / 255, 2).expand(3, -1, -1).contiguous()
    photo = noisy(torch.from_numpy(smooth_image(61, 67)).permute(2, 0, 1).float() / 255, 3)
    denoiser = Denoiser(device="cpu")
    assert [denoiser.split(im) for im in (split, grey, photo)] == [True, False, False]
    assert len(denoiser.levels([split, grey, photo])) == 5
    assert len(denoiser.levels([split, grey, photo], splits=[False, False, True])) == 5, "a caller's answers are taken"
    together = denoiser.batch([split, grey, photo])
    for im, out in zip((split, grey, photo), together):
        assert out.shape == im.shape and torch.allclose(out, denoiser(im), atol=1e-5)
    assert not Denoiser(device="cpu", per_channel=False).split(split)
    assert not Denoiser(shipped_weights(3), device="cpu").split(split), "a model file the user names is used for every image"
    for name, im in (("bars.png", split), ("photo.png", photo)):
        Image.fromarray((im.permute(1, 2, 0) * 255).round().byte().numpy()).save(tmp_path / name)
    from denoisecli import noise_estimate

    measured = []
    coupling = noise_estimate.channel_coupling
    monkeypatch.setattr(noise_estimate, "channel_coupling", lambda im: measured.append(im.shape) or coupling(im))
    details = {r.src.name: r.detail for r in denoise_files(tmp_path, tmp_path / "auto").results}
    assert len(measured) == 2, "each colour image's coupling is measured once, in its reading thread"
    measured.clear()
    Denoiser(device="cpu")(photo)
    assert len(measured) == 1
    assert details["bars.png"].endswith(", estimated, per channel") and "per channel" not in details["photo.png"], details
    assert re.fullmatch(r"sigma [\d.]+ / [\d.]+ / [\d.]+, estimated, per channel", details["bars.png"]), details
    whole = {r.src.name: r.detail for r in denoise_files(tmp_path, tmp_path / "whole", RunOptions(per_channel=False)).results}
    assert "per channel" not in whole["bars.png"]
    assert np.asarray(Image.open(tmp_path / "whole" / "bars.png")).shape == (61, 67, 3)

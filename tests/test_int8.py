"""Int8 deep levels on a CPU: the same output as float32 within quantisation error, or float32 untouched."""

import pytest
import torch
from typer.testing import CliRunner

from denoisecli import int8
from denoisecli.cli import app
from denoisecli.inference import Denoiser
from denoisecli.int8 import Int8ResBlock, calibrate_on_images, int8_supported, quantize
from denoisecli.metrics import psnr, quantize8
from denoisecli.models import build_model
from denoisecli.models.unet import ResBlock
from denoisecli.noise import ClampedNormalNoise, seeded_generator
from denoisecli.weights import atomic_save, load_checkpoint, load_model, model_payload, shipped_weights

from conftest import smooth_image

needs_int8 = pytest.mark.skipif(not int8_supported(), reason="this torch has no oneDNN int8 convolutions")
CONFIG = {"arch": "unet", "channels": 3, "width": 64, "depth": 2, "blocks": 1, "unshuffle": 2, "noise_map": True, "level": "estimate"}


def _image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(smooth_image(h, w, seed=seed)).permute(2, 0, 1).float() / 255


def _model() -> torch.nn.Module:
    """A width-64 UNet whose blocks are not the identity (a fresh one's second convolutions are zero)."""
    torch.manual_seed(0)
    model = build_model(CONFIG)
    for m in model.modules():
        if isinstance(m, ResBlock):
            torch.nn.init.normal_(m.conv2.weight, std=0.02)
    torch.nn.init.normal_(model.tail.weight, std=0.01)
    return model.eval()


def _calibrated(tmp_path):
    model = _model()
    calibration = calibrate_on_images(model, [_image(70, 90, seed=s) for s in range(6)])
    path = tmp_path / "m.pt"
    atomic_save({**model_payload(model, CONFIG), "int8": calibration}, path)
    return model, calibration, path


def test_calibration_covers_the_deep_blocks_and_survives_a_weights_only_file(tmp_path):
    model, calibration, path = _calibrated(tmp_path)
    assert set(calibration["blocks"]) == {"encoders.0.0", "bottleneck.0", "decoders.0.0"}  # widths 64 and 128
    for lo, hi, h_max in calibration["blocks"].values():
        assert lo <= 0 <= hi and lo < hi and h_max > 0
    assert load_checkpoint(path)["int8"] == calibration  # torch.load(weights_only=True) inside


@needs_int8
@pytest.mark.parametrize("batch,h,w", [(1, 37, 31), (2, 64, 48)])
def test_int8_reproduces_float32_on_odd_sizes_and_batches(tmp_path, batch, h, w):
    model, calibration, _ = _calibrated(tmp_path)
    x = torch.stack([ClampedNormalNoise(std=0.1).train()(_image(h, w, seed=9 + i)[None], generator=seeded_generator(i))[0]
                     for i in range(batch)])
    level = torch.full((batch,), 0.1)
    with torch.no_grad():
        ref = model(x, level)
        assert quantize(model, calibration)
        assert sum(isinstance(m, Int8ResBlock) for m in model.modules()) == 3
        assert not any(type(m) is ResBlock and m.conv1.in_channels >= 64 for m in model.modules())
        out = model(x.clone(), level)
    assert out.shape == ref.shape and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert psnr(out.clamp(0, 1), ref.clamp(0, 1)) > 45
    assert not torch.equal(out, ref), "the int8 path really ran"


@needs_int8
def test_a_failed_probe_leaves_the_float_model_exactly_as_it_was(tmp_path, monkeypatch):
    model, calibration, _ = _calibrated(tmp_path)
    x, level = _image(40, 40)[None], torch.tensor([0.05])
    with torch.no_grad():
        ref = model(x, level)
        monkeypatch.setattr(int8, "PROBE_DB", 1000.0)
        assert not quantize(model, calibration)
        assert not any(isinstance(m, Int8ResBlock) for m in model.modules())
        assert torch.equal(model(x, level), ref)


def test_quantize_declines_what_it_cannot_run(tmp_path, monkeypatch):
    model, calibration, _ = _calibrated(tmp_path)
    other = {**calibration, "blocks": {"encoders.9.0": [-1.0, 1.0, 1.0]}}
    assert not quantize(model, None)
    assert not quantize(model, other)
    assert not quantize(model, {**calibration, "version": 99})
    assert not quantize(build_model({"arch": "dncnn", "channels": 3}), calibration)
    monkeypatch.setattr(int8, "int8_supported", lambda: False)
    assert not quantize(model, calibration)
    assert not any(isinstance(m, Int8ResBlock) for m in model.modules())


@needs_int8
def test_denoiser_uses_int8_only_where_the_file_and_the_user_allow(tmp_path, tiny_model_file):
    _, _, path = _calibrated(tmp_path)
    noisy = _image(37, 31)
    assert Denoiser(path, device="cpu").int8_used == {path}
    assert Denoiser(path, device="cpu", int8=False).int8_used == set()
    assert Denoiser(tiny_model_file, device="cpu").int8_used == set()  # no ranges in the file: float32
    on, off = Denoiser(path, device="cpu", sigma=20)(noisy), Denoiser(path, device="cpu", sigma=20, int8=False)(noisy)
    assert psnr(on.clamp(0, 1), off.clamp(0, 1)) > 45


@needs_int8
@pytest.mark.parametrize("channels", [3, 1])
def test_shipped_models_run_int8_with_the_float32_quality(channels):
    _, ckpt = load_model(shipped_weights(channels))
    assert ckpt["int8"]["version"] == int8.VERSION and len(ckpt["int8"]["blocks"]) == 10
    clean = _image(67, 45) if channels == 3 else _image(67, 45)[:1]
    noisy = quantize8(ClampedNormalNoise(std=25 / 255).train()(clean[None], generator=seeded_generator(0))[0])
    on, off = Denoiser(device="cpu"), Denoiser(device="cpu", int8=False)
    a, b = quantize8(on(noisy)), quantize8(off(noisy))
    assert on.int8_used == {shipped_weights(channels)} and not off.int8_used
    assert abs(psnr(a, clean) - psnr(b, clean)) < 0.05
    assert psnr(a, b) > 45  # here 52 / 59 dB (colour / grey) where written, 60.3 / 60.1 on an AVX-512 EPYC VM; 60-70 on photos


@needs_int8
def test_cli_reports_int8_and_can_turn_it_off(tmp_path):
    _, _, path = _calibrated(tmp_path)
    from conftest import save

    save(tmp_path / "clean" / "a.png", smooth_image(48, 40))
    runner = CliRunner()
    on = runner.invoke(app, ["eval", str(tmp_path / "clean"), "--weights", str(path), "--sigma", "25", "--no-per-image"])
    off = runner.invoke(app, ["eval", str(tmp_path / "clean"), "--weights", str(path), "--sigma", "25", "--no-per-image", "--no-int8"])
    assert on.exit_code == 0 and off.exit_code == 0, on.output + off.output
    assert "deep levels in int8" in " ".join(on.output.split())
    assert "deep levels in int8" not in " ".join(off.output.split())
    run = runner.invoke(app, ["run", str(tmp_path / "clean"), "-o", str(tmp_path / "out"), "--weights", str(path), "--no-int8"])
    assert run.exit_code == 0 and (tmp_path / "out" / "a.png").is_file(), run.output


@needs_int8
def test_bench_times_int8_as_run_runs_it_with_float32_beside_it(tmp_path):
    from denoisecli.benchmark import FLOAT32, SIGMA_GIVEN, bench

    _, _, path = _calibrated(tmp_path)
    report = bench("cpu", sizes=(48,), repeats=1, warmup=1, train_steps=1, patch=24, batch=2, weights=path)
    assert report.int8
    assert {r.model for r in report.inference} == {"denoise", SIGMA_GIVEN, FLOAT32, "dncnn-17", "ffdnet"}
    assert {r.model for r in report.training} == {"denoise", "dncnn-17", "ffdnet"}, "training times the float network"
    assert report.ratio(FLOAT32, 48) > 0
    assert not bench("cpu", sizes=(48,), repeats=1, warmup=1, train_steps=0, weights=path, int8=False).int8


def test_train_stores_the_ranges_in_model_pt_so_its_model_runs_in_int8_too(clean_dir, tmp_path):
    from denoisecli.training import TrainOptions, train

    model = {"width": 64, "depth": 2, "blocks": 1, "noise_map": True}
    train(TrainOptions(data=str(clean_dir), out=str(tmp_path / "run"), steps=2, batch=2, patch=24, model=model,
                       device="cpu", save_every=100, val_every=100))
    _, ckpt = load_model(tmp_path / "run" / "model.pt")
    assert set(ckpt["int8"]["blocks"]) == {"encoders.0.0", "bottleneck.0", "decoders.0.0"}
    assert ckpt["int8"]["images"] >= 1
    if int8_supported():
        assert Denoiser(tmp_path / "run" / "model.pt", device="cpu").int8_used == {tmp_path / "run" / "model.pt"}
    tiny = {"width": 8, "depth": 2, "blocks": 1}
    train(TrainOptions(data=str(clean_dir), out=str(tmp_path / "tiny"), steps=1, batch=2, patch=24, model=tiny, device="cpu"))
    assert "int8" not in load_model(tmp_path / "tiny" / "model.pt")[1], "nothing of 64 channels to quantise"

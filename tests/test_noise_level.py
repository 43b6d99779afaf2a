"""Noise-level input (noise-map UNet) and the noise estimator."""

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from denoisecli.cli import app
from denoisecli.models import build_model
from denoisecli.noise_estimate import estimate_sigma

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


def test_estimator_on_a_clean_flat_image_is_zero():
    assert estimate_sigma(torch.full((1, 40, 40), 0.5)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.skipif(not DATA.is_dir(), reason="needs ../shared/data")
def test_estimator_on_cbsd68_images():
    from denoisecli.image_io import read_image

    paths = sorted(DATA.glob("*.png"))[1::17]
    errors = []
    for sigma in (5, 25, 50):
        for i, p in enumerate(paths):
            errors.append(estimate_sigma(_noisy(read_image(p).pixels.double(), sigma, i)) * 255 - sigma)
    assert max(abs(e) for e in errors) < 2.0, errors


def test_noise_map_training_and_run_with_sigma(clean_dir, tmp_path):
    args = ["train", str(clean_dir), "--out", str(tmp_path / "r"), "--steps", "3", "--batch", "2", "--patch", "24",
            "--width", "8", "--depth", "2", "--blocks", "1", "--device", "cpu", "--noise-map"]
    assert runner.invoke(app, args).exit_code == 0
    weights = str(tmp_path / "r" / "model.pt")
    fixed = runner.invoke(app, ["run", str(clean_dir), "-o", str(tmp_path / "a"), "--weights", weights, "--sigma", "30", "-v"])
    assert fixed.exit_code == 0, fixed.output
    assert "sigma 30.0" in fixed.output and "estimated" not in fixed.output
    auto = runner.invoke(app, ["run", str(clean_dir), "-o", str(tmp_path / "b"), "--weights", weights, "-v"])
    assert auto.exit_code == 0 and "(estimated)" in auto.output


def test_sigma_with_a_blind_model_is_a_clear_error(clean_dir, tiny_model_file):
    result = runner.invoke(app, ["run", str(clean_dir), "--weights", str(tiny_model_file), "--sigma", "20"])
    assert result.exit_code == 1 and "noise-level input" in result.output


def test_estimator_on_a_large_image_uses_crops():
    clean = torch.from_numpy(smooth_image(1500, 1300)).permute(2, 0, 1).float() / 255
    est = estimate_sigma(_noisy(clean, 20)) * 255
    assert est == pytest.approx(20, abs=1.0)

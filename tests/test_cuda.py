"""CUDA paths: skipped without a GPU (run with `pytest -m cuda` on a machine that has one)."""

import math

import pytest
import torch

from denoisecli.inference import Denoiser
from denoisecli.training import TrainOptions, train
from denoisecli.weights import load_model

from conftest import TINY_MODEL

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize(("gan", "amp"), [(False, True), (True, True), (False, False)])
def test_training_on_cuda_with_mixed_precision(clean_dir, tmp_path, gan, amp):
    opts = TrainOptions(data=str(clean_dir), out=str(tmp_path / "r"), steps=6, batch=4, patch=24,
                        model={**TINY_MODEL, "noise_map": True}, mix={"camera": 0.5}, val=str(clean_dir), val_every=3,
                        device="cuda", gan=gan, gan_warmup=2, workers=2, amp=amp)
    result = train(opts)
    assert result.step == 6 and result.best_psnr is not None and math.isfinite(result.best_psnr)
    model, _ = load_model(tmp_path / "r" / "model.pt")
    assert torch.isfinite(model(torch.rand(1, 3, 37, 31), sigma=25 / 255)).all()


def test_run_on_cuda_matches_cpu(tiny_model_file):
    x = torch.rand(3, 67, 45)
    cpu = Denoiser(tiny_model_file, device="cpu")(x)
    gpu = Denoiser(tiny_model_file, device="cuda")(x)
    assert (cpu - gpu).abs().max() < 1 / 255


def test_a_cuda_tensor_with_hot_pixels_comes_back_as_on_cpu(tiny_model_file):
    """A Python caller's image already on the GPU: its hot pixels (see inference.value_range) are
    put back from it, whatever device it is on."""
    x = torch.rand(3, 67, 45) * 0.05
    x[:, 10, 20] = 1.0
    cpu = Denoiser(tiny_model_file, device="cpu")(x)
    gpu = Denoiser(tiny_model_file, device="cuda")(x.cuda())
    assert (cpu - gpu.cpu()).abs().max() < 1 / 255 and float(gpu[0, 10, 20]) == 1.0


def test_metrics_on_cuda_tensors():
    from denoisecli.metrics import psnr, ssim

    a, b = torch.rand(3, 40, 37, device="cuda"), torch.rand(3, 40, 37, device="cuda")
    assert ssim(a, b) == pytest.approx(ssim(a.cpu(), b.cpu()), abs=1e-9)
    assert psnr(a, b) == pytest.approx(psnr(a.cpu(), b.cpu()), abs=1e-6)

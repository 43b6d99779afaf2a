from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features

# AVIF goes through Pillow's own plugin, which only builds with libavif have (PyPI's wheels do)
requires_avif = pytest.mark.skipif(not features.check("avif"), reason="this Pillow has no AVIF support")

TINY_MODEL = {"width": 8, "depth": 2, "blocks": 1}


def smooth_image(h: int, w: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    """A smooth, textured uint8 image: gradients plus blobs, something a denoiser can recover; in
    colour, channels that share most of their structure, as a photo's do."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    planes = []
    for c in range(channels):
        a, b, f = rng.uniform(0.5, 1.5, 3)
        plane = 0.5 + 0.25 * np.sin(xx / (6 * a) + c) * np.cos(yy / (7 * b)) + 0.2 * np.sin((xx + yy) / (11 * f))
        planes.append(plane)
    if channels > 1:  # a photo's channels share their structure (and the default route depends on it)
        planes = [0.6 * planes[0] + 0.4 * plane for plane in planes]
    arr = np.clip(np.stack(planes, -1), 0, 1) * 255
    arr = arr.round().astype(np.uint8)
    return arr[:, :, 0] if channels == 1 else arr


def save(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def float_pair(root: Path, h: int, w: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A float TIFF pair, root/clean/f.tif and root/noisy/f.tif: a grey image at values 100-500
    and it with Gaussian noise of std ``noise``; each file is read onto [0, 1] by its own range."""
    import tifffile

    clean = (smooth_image(h, w, channels=1).astype(np.float32) / 255 * 400 + 100).astype(np.float32)
    noisy = (clean + np.random.default_rng(seed).normal(0, noise, clean.shape)).astype(np.float32)
    for folder, arr in (("clean", clean), ("noisy", noisy)):
        (root / folder).mkdir()
        tifffile.imwrite(root / folder / "f.tif", arr)
    return clean, noisy


@pytest.fixture
def clean_dir(tmp_path: Path) -> Path:
    """Four colour images of odd sizes, one in a subfolder, and one grey image."""
    root = tmp_path / "clean"
    save(root / "a.png", smooth_image(37, 31, seed=1))
    save(root / "b.png", smooth_image(48, 53, seed=2))
    save(root / "sub" / "c.png", smooth_image(41, 45, seed=3))
    save(root / "d.jpg", smooth_image(40, 40, seed=4))
    save(root / "grey.png", smooth_image(33, 39, channels=1, seed=5))
    return root


@pytest.fixture(scope="session")
def tiny_model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny colour UNet saved as a model file, with a non-zero tail so it is not the identity."""
    import torch

    from denoisecli.models import build_model
    from denoisecli.weights import atomic_save, model_payload

    config = {"arch": "unet", "channels": 3, **TINY_MODEL}
    torch.manual_seed(0)
    model = build_model(config)
    torch.nn.init.normal_(model.tail.weight, std=0.01)
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    atomic_save(model_payload(model, config), path)
    return path

"""The whole tool on tiny generated images: add-noise, train (L1 and GAN), run with the result."""

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from denoisecli.cli import app

runner = CliRunner()


def _psnr(a, b):
    mse = np.mean((np.asarray(a, dtype=float) - np.asarray(b, dtype=float)) ** 2)
    return 10 * np.log10(255.0**2 / mse)


def test_add_noise_train_and_run(clean_dir, tmp_path):
    noisy = tmp_path / "noisy"
    assert runner.invoke(app, ["add-noise", str(clean_dir), str(noisy), "--sigma", "25", "--seed", "0"]).exit_code == 0
    common = ["--steps", "80", "--batch", "4", "--patch", "32", "--width", "8", "--depth", "2", "--blocks", "1",
              "--sigma", "20-30", "--device", "cpu", "--lr", "3e-3"]
    l1 = runner.invoke(app, ["train", str(clean_dir), "--out", str(tmp_path / "l1"), *common])
    assert l1.exit_code == 0, l1.output
    gan = runner.invoke(app, ["train", str(clean_dir), "--out", str(tmp_path / "gan"), *common, "--gan", "--gan-warmup", "30"])
    assert gan.exit_code == 0, gan.output
    for run in ("l1", "gan"):
        out = tmp_path / f"den-{run}"
        r = runner.invoke(app, ["run", str(noisy), "-o", str(out), "--weights", str(tmp_path / run / "model.pt"), "--device", "cpu"])
        assert r.exit_code == 0, r.output
        gains = [
            _psnr(Image.open(out / name), Image.open(clean_dir / name)) - _psnr(Image.open(noisy / name), Image.open(clean_dir / name))
            for name in ("a.png", "b.png")
        ]
        assert min(gains) > 1.0, (run, gains)

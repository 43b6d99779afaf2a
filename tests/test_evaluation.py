import json

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from denoisecli.cli import app
from denoisecli.evaluation import evaluate
from conftest import TINY_MODEL

runner = CliRunner()


def test_standard_protocol_is_seeded_and_unclipped(clean_dir, tiny_model_file):
    a, _ = evaluate(clean_dir, [25], weights=tiny_model_file, device="cpu", baselines=("noisy",))
    b, _ = evaluate(clean_dir, [25], weights=tiny_model_file, device="cpu", baselines=("noisy",))
    assert [s.psnr for s in a.scores] == [s.psnr for s in b.scores]
    c, _ = evaluate(clean_dir, [25], weights=tiny_model_file, device="cpu", seed=1, baselines=("noisy",))
    assert [s.psnr for s in a.scores] != [s.psnr for s in c.scores]
    clipped, _ = evaluate(clean_dir, [25], weights=tiny_model_file, device="cpu", protocol="clipped", baselines=("noisy",))
    assert a.mean("denoise", "sigma 25") != clipped.mean("denoise", "sigma 25")
    assert 19 < a.mean("noisy", "sigma 25") < 22


def test_standard_noise_is_not_clipped():
    import torch

    from denoisecli.evaluation import _noisy_input
    from pathlib import Path

    clean = torch.ones(3, 16, 16)
    noisy = _noisy_input(Path("x.png"), clean, "s", {"std": 0.1}, "standard", "gaussian", 0)
    assert noisy.max() > 1.0


def test_bm3d_gets_the_unclipped_noisy_image_and_the_true_sigma(monkeypatch):
    """The published BM3D figures denoise y = x + n as it is; clipping it first would shift them."""
    import sys
    import types

    import numpy as np
    import torch

    from denoisecli.evaluation import _classical

    seen = {}

    def fake_bm3d_rgb(img, sigma):
        seen.update(lo=img.min(), hi=img.max(), sigma=sigma)
        return np.zeros_like(img)

    monkeypatch.setitem(sys.modules, "bm3d", types.SimpleNamespace(bm3d_rgb=fake_bm3d_rgb))
    noisy = torch.linspace(-0.3, 1.3, 3 * 8 * 8).reshape(3, 8, 8)
    out = _classical("bm3d", noisy, 50 / 255)
    assert out.shape == noisy.shape
    assert seen["lo"] < -0.29 and seen["hi"] > 1.29 and seen["sigma"] == 50 / 255


def test_a_ten_bit_heif_is_scored_on_its_own_levels(tmp_path, tiny_model_file):
    """A camera's 10-bit HIF as a clean image: its noisy input and outputs are rounded to its own
    1023 levels, as the file holds them, not to 16 bits (nor to 8)."""
    pytest.importorskip("pillow_heif")
    import numpy as np
    import pillow_heif

    from conftest import smooth_image

    levels = np.round(smooth_image(40, 44).astype(np.float64) / 255 * 1023).astype(np.uint16)
    (tmp_path / "clean").mkdir()
    pillow_heif.from_bytes(mode="RGB;10", size=(44, 40), data=levels.tobytes()).save(tmp_path / "clean" / "C1.HIF", quality=-1)
    report, _ = evaluate(tmp_path / "clean", [15], weights=tiny_model_file, device="cpu", baselines=("noisy",),
                         protocol="clipped")
    assert {s.bits for s in report.scores} == {10}
    from denoisecli.evaluation import _noisy_input
    from denoisecli.image_io import read_image

    clean = read_image(tmp_path / "clean" / "C1.HIF").pixels
    noisy = _noisy_input(tmp_path / "clean" / "C1.HIF", clean, "sigma 15", {"std": 15 / 255}, "clipped", "gaussian", 0, 10)
    assert torch.allclose(noisy * 1023, (noisy * 1023).round(), atol=1e-3)


def test_real_pairs_and_classical_baseline(clean_dir, tmp_path, tiny_model_file):
    from denoisecli.addnoise import add_noise

    add_noise(clean_dir, tmp_path / "noisy", levels={"std": (0.1, 0.1)})
    report, _ = evaluate(clean_dir, weights=tiny_model_file, device="cpu", noisy_dir=tmp_path / "noisy",
                         baselines=("noisy", "wavelet"))
    assert report.protocol == "pairs" and report.levels() == ["real"]
    assert report.mean("wavelet", "real") > report.mean("noisy", "real")


def test_sixteen_bit_pairs_are_scored_at_their_own_depth_and_span(tmp_path):
    """A microscope's 16-bit pairs (12-bit counts): rounded to 8 bits they would be 17 levels of
    256; they are kept at 16 bits and scored on the clean image's span, as `run` denoises them."""
    import numpy as np

    from conftest import smooth_image

    rng = np.random.default_rng(0)
    clean = smooth_image(45, 53, channels=1).astype(np.float64) / 255 * 4000 + 100
    noisy = (clean + rng.normal(0, 100, clean.shape)).round().clip(0, 65535).astype(np.uint16)
    for folder, arr in (("clean", clean.round().astype(np.uint16)), ("noisy", noisy)):
        (tmp_path / folder).mkdir()
        Image.fromarray(arr).save(tmp_path / folder / "cells.png")
    result = runner.invoke(app, ["eval", str(tmp_path / "clean"), "--noisy", str(tmp_path / "noisy"), "--baseline", "noisy",
                                 "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    assert "1 of 1 images deeper than 8 bits or float" in " ".join(result.output.split())
    scores = {s["method"]: s for s in json.loads((tmp_path / "r.json").read_text())["images"]}
    c = clean.round()
    expected = 10 * np.log10((c.max() - c.min()) ** 2 / ((noisy - c) ** 2).mean())
    assert scores["noisy"]["bits"] == 16 and scores["noisy"]["psnr"] == pytest.approx(expected, abs=1e-3)
    assert scores["denoise"]["psnr"] > scores["noisy"]["psnr"] + 5


def test_float_pairs_are_scored_on_one_scale_unrounded(tmp_path):
    """Float files are each read onto [0, 1] by their own range: the clean image of a pair is
    put on the noisy one's scale, nothing is rounded, and the score is on the clean span."""
    import numpy as np

    from conftest import float_pair

    clean, noisy = float_pair(tmp_path, 45, 53, noise=10, seed=1)
    report, _ = evaluate(tmp_path / "clean", noisy_dir=tmp_path / "noisy", baselines=("noisy",), device="cpu")
    scores = {s.method: s for s in report.scores}
    c, n = clean.astype(np.float64), noisy.astype(np.float64)
    expected = 10 * np.log10((c.max() - c.min()) ** 2 / ((n - c) ** 2).mean())
    assert scores["noisy"].bits == 32 and scores["noisy"].psnr == pytest.approx(expected, abs=1e-3)
    assert scores["denoise"].psnr > scores["noisy"].psnr + 3


def test_eval_cli_table_json_and_sheet(clean_dir, tmp_path, tiny_model_file):
    result = runner.invoke(app, ["eval", str(clean_dir), "--sigma", "15,50", "--weights", str(tiny_model_file),
                                 "--baseline", "noisy", "--json", str(tmp_path / "r.json"), "--sheet", str(tmp_path / "s.png")])
    assert result.exit_code == 0, result.output
    assert "protocol standard" in result.output and "sigma 50" in result.output
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["protocol"] == "standard" and len(data["images"]) == 5 * 2 * 2
    assert {m["method"] for m in data["means"]} == {"noisy", "denoise"}
    assert Image.open(tmp_path / "s.png").size[0] > 300
    from datetime import date

    import torch

    # a saved report says where, when and with what it was measured, as the terminal does
    assert data["device"] == "cpu" and data["date"] == date.today().isoformat() and "threads" in data["machine"]
    assert data["versions"]["torch"] == torch.__version__
    assert f"measured on cpu ({data['machine']}), {data['date']}" in " ".join(result.output.split())


def test_eval_goes_on_past_a_bad_file_and_exits_non_zero(clean_dir, tmp_path, tiny_model_file):
    """One damaged or tiny file in a folder of clean images is named, left out of the means with
    its other levels, and the rest scored; the exit code says something failed."""
    (clean_dir / "broken.png").write_bytes((clean_dir / "a.png").read_bytes()[:60])
    Image.new("RGB", (5, 7)).save(clean_dir / "tiny.png")
    result = runner.invoke(app, ["eval", str(clean_dir), "--sigma", "15,50", "--weights", str(tiny_model_file),
                                 "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    text = " ".join(result.output.split())
    assert "failed: " + str(clean_dir / "broken.png") + ": cannot decode image" in text
    assert "failed: " + str(clean_dir / "tiny.png") + ": 5x7 is smaller than SSIM's 11x11 window" in text
    assert "mean over 5 images" in text and "2 image(s) could not be scored and are not in the means" in text
    data = json.loads((tmp_path / "r.json").read_text())
    assert len(data["images"]) == 5 * 2 and len(data["failed"]) == 2
    heard = []
    evaluate(clean_dir, [15, 50], weights=tiny_model_file, device="cpu", on_progress=lambda *dt: heard.append(dt))
    assert heard[0] == (0, 14) and heard[-1] == (14, 14), "the bar's total is known, and a failed file counts as done"


@pytest.mark.parametrize(
    "args,message,code",
    [
        (["eval", "{empty}"], "no images found", 1),
        (["eval", "{clean}", "--sigma", "300"], "within 0-255", 2),
        (["eval", "{clean}", "--noise", "poisson", "--protocol", "standard"], "gaussian noise", 1),
        (["eval", "{clean}", "--weights", "{grey}"], "grey images, this image is colour", 1),
        (["eval", "{clean}", "--baseline", "magic"], "unknown", 1),
        (["eval", "{clean}", "--correlation", "0.5"], "only to gaussian-shared", 1),
        (["eval", "{clean}", "--noise", "gaussian-shared", "--correlation", "2"], "within 0-1", 1),
        (["eval", "{clean}", "--noise", "gaussian-shared", "--level", "0.1"], "with --sigma", 1),
    ],
)
def test_eval_errors(clean_dir, tmp_path, args, message, code):
    from denoisecli.models import build_model
    from denoisecli.weights import atomic_save, model_payload

    config = {"arch": "unet", "channels": 1, "width": 8, "depth": 2, "blocks": 1}
    atomic_save(model_payload(build_model(config), config), tmp_path / "g.pt")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images")
    args = [a.format(clean=clean_dir, empty=tmp_path / "empty", grey=tmp_path / "g.pt") for a in args]
    result = runner.invoke(app, args)
    assert result.exit_code == code
    assert message in result.output and "Traceback" not in result.output


def test_eval_other_noise_clipped(clean_dir, tiny_model_file):
    report, _ = evaluate(clean_dir, weights=tiny_model_file, device="cpu", protocol="clipped", noise="poisson", levels=[10, 50])
    assert report.levels() == ["peak 10", "peak 50"]
    default, _ = evaluate(clean_dir, weights=tiny_model_file, device="cpu", noise="poisson", levels=[10])
    assert default.protocol == "clipped"
    assert default.mean("denoise", "peak 10") == report.mean("denoise", "peak 10")
    gaussian, _ = evaluate(clean_dir, [25], weights=tiny_model_file, device="cpu")
    assert gaussian.protocol == "standard"


def test_eval_shared_noise_takes_sigma_and_correlation(clean_dir, tiny_model_file):
    """gaussian-shared is scored like gaussian, by sigma, at each correlation; at correlation 0
    it is the clipped protocol's independent noise, so the noisy input scores as gaussian's does
    at the same sigma (within the spread of two noise draws), and fully shared noise, whose
    channels move together, gives the noisy image the same PSNR too (each channel keeps its std)."""
    shared, _ = evaluate(clean_dir, [20], weights=tiny_model_file, device="cpu", protocol="clipped", noise="gaussian-shared",
                         correlations=[0, 1], baselines=("noisy",))
    assert shared.levels() == ["sigma 20 correlation 0", "sigma 20 correlation 1"]
    plain, _ = evaluate(clean_dir, [20], weights=tiny_model_file, device="cpu", protocol="clipped", baselines=("noisy",))
    expected = plain.mean("noisy", "sigma 20")
    for level in shared.levels():
        assert shared.mean("noisy", level) == pytest.approx(expected, abs=0.3)
    default, _ = evaluate(clean_dir, [20], weights=tiny_model_file, device="cpu", protocol="clipped", noise="gaussian-shared")
    assert default.levels() == ["sigma 20 correlation 1"]


def test_eval_cli_means_stay_readable_with_many_levels(clean_dir, tmp_path, tiny_model_file):
    """One row per level and method: with a column per level, four levels and a baseline no longer
    fit 80 columns and rich cut every figure to an ellipsis."""
    result = runner.invoke(app, ["eval", str(clean_dir), "--protocol", "clipped", "--noise", "gaussian-shared", "--sigma", "15,25",
                                 "--correlation", "0,1", "--weights", str(tiny_model_file), "--baseline", "noisy", "--no-per-image",
                                 "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    means = json.loads((tmp_path / "r.json").read_text())["means"]
    assert len(means) == 8
    for m in means:
        assert f"{m['psnr']:.2f}" in result.output and f"{m['ssim']:.4f}" in result.output
    assert "sigma 25 correlation 1" in result.output


def test_eval_oracle_sigma_with_shared_noise(clean_dir, tmp_path, monkeypatch):
    """The true sigma of shared noise is known too, so --oracle-sigma takes it: a noise-map model
    is then fed that sigma, not its estimate."""
    from denoisecli.inference import Denoiser
    from denoisecli.models import build_model
    from denoisecli.weights import atomic_save, model_payload

    given = []
    levels = Denoiser.levels
    monkeypatch.setattr(Denoiser, "levels", lambda self, images, sigma=None, splits=None: given.append(sigma) or levels(self, images, sigma, splits))

    config = {"arch": "unet", "channels": 3, "width": 8, "depth": 2, "blocks": 1, "noise_map": True}
    atomic_save(model_payload(build_model(config), config), tmp_path / "m.pt")
    report, _ = evaluate(clean_dir, [30], weights=tmp_path / "m.pt", device="cpu", protocol="clipped", noise="gaussian-shared",
                         oracle=True)
    assert report.oracle and report.levels() == ["sigma 30 correlation 1"]
    assert given and all(g == pytest.approx(30 / 255) for g in given)


def test_bench_cli_reports_ratios(tmp_path, tiny_model_file):
    result = runner.invoke(app, ["bench", "--weights", str(tiny_model_file), "--sizes", "32,48", "--repeats", "1",
                                 "--warmup", "0", "--train-steps", "1", "--device", "cpu", "--json", str(tmp_path / "b.json")])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "b.json").read_text())
    assert {r["model"] for r in data["inference"]} == {"denoise", "dncnn-17", "ffdnet"}
    assert all(r["mps"] > 0 and r["peak_mib"] > 0 for r in data["inference"])
    assert set(data["ratios"]) == {"dncnn-17", "ffdnet"} and data["ratios"]["ffdnet"]["48"] > 0
    assert {r["model"] for r in data["training"]} == {"denoise", "dncnn-17", "ffdnet"}
    assert "7/7" in result.output, "the bar knows its total: 3 models at 2 sizes, and the training rates"
    assert data["versions"]["denoisecli"] and data["machine"] and data["date"], "a saved bench says what it ran on"


def test_bench_times_a_noise_map_model_with_its_estimator(tmp_path, monkeypatch):
    """`denoise` is timed as `run` works by default (estimate, then denoise, in inference mode);
    `denoise --sigma` is the network alone. Until 2026-11-26 the wrapper stayed in training mode,
    which skipped the estimate, so the published figures were the network's alone."""
    from denoisecli import noise_estimate
    from denoisecli.benchmark import SIGMA_GIVEN, bench
    from denoisecli.models import build_model
    from denoisecli.weights import atomic_save, model_payload

    config = {"arch": "unet", "channels": 3, **TINY_MODEL, "noise_map": True}
    atomic_save(model_payload(build_model(config), config), tmp_path / "m.pt")
    calls = []
    real = noise_estimate.estimate_sigma

    def counted(image, *args):
        calls.append(torch.is_inference_mode_enabled())
        return real(image, *args)

    monkeypatch.setattr(noise_estimate, "estimate_sigma", counted)
    report = bench("cpu", sizes=(40,), repeats=2, warmup=1, train_steps=1, weights=tmp_path / "m.pt")
    assert calls == [True] * 3
    assert {r.model for r in report.inference} == {"denoise", SIGMA_GIVEN, "dncnn-17", "ffdnet"}
    assert {r.model for r in report.training} == {"denoise", "dncnn-17", "ffdnet"}
    assert report.ratio("ffdnet", 40) > 0 and report.train_ratio("ffdnet") > 0


def test_oracle_sigma_feeds_the_true_level(clean_dir, tmp_path, tiny_model_file):
    import torch

    from denoisecli.models import build_model
    from denoisecli.weights import atomic_save, model_payload

    config = {"arch": "unet", "channels": 3, **TINY_MODEL, "noise_map": True}
    torch.manual_seed(0)
    model = build_model(config)
    torch.nn.init.normal_(model.tail.weight, std=0.05)
    atomic_save(model_payload(model, config), tmp_path / "m.pt")
    est, _ = evaluate(clean_dir, [30], weights=tmp_path / "m.pt", device="cpu")
    orc, _ = evaluate(clean_dir, [30], weights=tmp_path / "m.pt", device="cpu", oracle=True)
    assert orc.oracle and orc.to_dict()["oracle_sigma"] is True
    assert orc.mean("denoise", "sigma 30") != est.mean("denoise", "sigma 30")
    result = runner.invoke(app, ["eval", str(clean_dir), "--sigma", "30", "--weights", str(tiny_model_file), "--oracle-sigma",
                                 "--device", "cpu"])
    assert result.exit_code == 1 and "blind" in result.output
    result = runner.invoke(app, ["eval", str(clean_dir), "--sigma", "30", "--weights", str(tmp_path / "m.pt"), "--oracle-sigma",
                                 "--device", "cpu", "--no-per-image"])
    assert result.exit_code == 0 and "true sigma" in result.output


def test_ensemble_is_scored_and_recorded(clean_dir, tiny_model_file):
    plain, _ = evaluate(clean_dir, [30], weights=tiny_model_file, device="cpu")
    both, _ = evaluate(clean_dir, [30], weights=tiny_model_file, device="cpu", ensemble=True)
    assert both.to_dict()["ensemble"] is True and plain.to_dict()["ensemble"] is False
    assert both.mean("denoise", "sigma 30") != plain.mean("denoise", "sigma 30")
    result = runner.invoke(app, ["eval", str(clean_dir), "--sigma", "30", "--weights", str(tiny_model_file), "--ensemble",
                                 "--device", "cpu", "--no-per-image"])
    assert result.exit_code == 0 and "self-ensemble" in result.output


def test_bench_peak_leaves_out_the_other_models_weights():
    """On CUDA every model stays on the device for the whole bench, so a model's peak would count the
    others' weights: they are taken off, and weights a wrapper shares with the model count as its own."""
    from denoisecli.benchmark import _AsRun, _others_mib
    from denoisecli.models import build_model

    ours = build_model({"arch": "unet", "channels": 3, **TINY_MODEL, "noise_map": True})
    ref = build_model({"arch": "dncnn", "channels": 3})
    models = {"denoise": _AsRun(ours), "denoise --sigma": _AsRun(ours, 0.1), "dncnn-17": ref}

    def mib(model):
        return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers())) / 2**20

    assert _others_mib(models, "denoise") == pytest.approx(mib(ref))
    assert _others_mib(models, "dncnn-17") == pytest.approx(mib(ours))


@pytest.mark.parametrize("channels,module,measure", [(3, "noise_estimate", "channel_coupling"), (1, "stabilise", "default_stabiliser")])
def test_bench_times_what_run_measures_to_route_each_image(monkeypatch, channels, module, measure):
    """With the shipped models `run` measures a colour image's channel coupling and decides
    whether to stabilise a grey image before denoising it; `bench` charges that too. Given a
    sigma, `run` still measures the coupling but never stabilises, and `bench` times the same."""
    import importlib

    from denoisecli.benchmark import _AsRun
    from denoisecli.models import build_model

    calls = []
    where = importlib.import_module(f"denoisecli.{module}")
    original = getattr(where, measure)
    monkeypatch.setattr(where, measure, lambda im, *rest: calls.append(im.shape) or original(im, *rest))
    model = build_model({"arch": "unet", "channels": channels, **TINY_MODEL, "noise_map": True}).eval()
    with torch.no_grad():
        _AsRun(model, route=True).eval()(torch.rand(2, channels, 40, 37))
        _AsRun(model).eval()(torch.rand(2, channels, 40, 37))
    assert calls == [(channels, 40, 37)] * 2
    calls.clear()
    with torch.no_grad():
        _AsRun(model, 20 / 255, route=True).eval()(torch.rand(2, channels, 40, 37))
    assert calls == ([(channels, 40, 37)] * 2 if channels == 3 else [])


@pytest.mark.parametrize("size", [48, 256, 1024])
def test_bench_image_is_one_run_denoises_whole(size):
    """`bench` times the colour model on its image whole; `run` with the shipped models splits a
    colour image whose channels are independent, so the image must be photo-like, with coupled
    channels, or `bench` would time a route that `run` never takes on it."""
    from denoisecli.benchmark import SIGMA
    from denoisecli.inference import Denoiser
    from denoisecli.noise import noisy_photo

    image = noisy_photo(3, size, SIGMA)[0]
    assert not Denoiser(device="cpu").split(image)
    assert not torch.equal(image[0], image[1])


def test_eval_strength_is_run_strength_and_is_reported(clean_dir, tmp_path):
    """--strength in eval scores what `run --strength` writes, and the report says it was used."""
    from denoisecli.models import build_model
    from denoisecli.weights import atomic_save, model_payload

    config = {"arch": "unet", "channels": 3, "width": 8, "depth": 2, "blocks": 1, "noise_map": True}
    model = build_model(config)
    torch.manual_seed(0)
    for p in model.parameters():  # a fresh model starts blind to its level input
        p.data.normal_(0, 0.1)
    atomic_save(model_payload(model, config), tmp_path / "m.pt")
    plain, _ = evaluate(clean_dir, [25], weights=tmp_path / "m.pt", device="cpu")
    strong, _ = evaluate(clean_dir, [25], weights=tmp_path / "m.pt", device="cpu", strength=2)
    assert plain.to_dict()["strength"] == 1 and strong.to_dict()["strength"] == 2
    assert strong.mean("denoise", "sigma 25") != plain.mean("denoise", "sigma 25")
    result = runner.invoke(app, ["eval", str(clean_dir), "--sigma", "25", "--weights", str(tmp_path / "m.pt"), "--strength", "2",
                                 "--no-per-image"])
    assert result.exit_code == 0 and "x2 (--strength)" in result.output, result.output


def test_eval_per_channel_scores_colour_images_through_a_grey_model(clean_dir, tmp_path):
    from denoisecli.models import build_model
    from denoisecli.weights import atomic_save, model_payload

    config = {"arch": "unet", "channels": 1, "width": 8, "depth": 2, "blocks": 1, "noise_map": True}
    atomic_save(model_payload(build_model(config), config), tmp_path / "g.pt")
    report, _ = evaluate(clean_dir, [25], weights=tmp_path / "g.pt", device="cpu", per_channel=True)
    assert report.to_dict()["per_channel"] is True and len({s.image for s in report.scores}) == 5
    refused = runner.invoke(app, ["eval", str(clean_dir), "--sigma", "25", "--weights", str(tmp_path / "g.pt")])
    assert refused.exit_code == 1 and "grey images, this image is colour" in refused.output


def test_eval_says_how_many_images_the_shipped_models_split(tmp_path):
    """Bars in red, other bars in green: independent channels, which the shipped models denoise one
    channel at a time by default; eval counts them in its note and in each score, and
    --no-per-channel scores the colour model on them instead."""
    yy, xx = torch.meshgrid(torch.arange(45), torch.arange(51), indexing="ij")
    bars = torch.stack([(xx // 9 % 2) * 0.6 + 0.2, (yy // 7 % 2) * 0.5 + 0.3, (xx // 13 % 2) * 0.4 + 0.3])
    Image.fromarray((bars.permute(1, 2, 0) * 255).round().byte().numpy()).save(tmp_path / "bars.png")
    result = runner.invoke(app, ["eval", str(tmp_path), "--sigma", "25", "--no-per-image", "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    assert "1 of 1 images each channel alone through the grey model" in " ".join(result.output.split()), result.output
    split = json.loads((tmp_path / "r.json").read_text())
    assert split["per_channel"] is None and [s["split"] for s in split["images"] if s["method"] == "denoise"] == [True]
    whole = runner.invoke(app, ["eval", str(tmp_path), "--sigma", "25", "--no-per-image", "--no-per-channel", "--json", str(tmp_path / "w.json")])
    assert whole.exit_code == 0 and "grey model" not in whole.output, whole.output
    psnr = {name: json.loads((tmp_path / name).read_text())["means"][0]["psnr"] for name in ("r.json", "w.json")}
    assert psnr["r.json"] > psnr["w.json"] + 3, psnr


def test_stacks_are_scored_plane_by_plane(tmp_path):
    """A clean z-stack with synthetic noise (each plane its own draw) and a pair of stacks (plane
    for plane): every plane is scored as an image of its own, named by its index."""
    import numpy as np
    import tifffile

    from conftest import smooth_image

    clean = np.stack([smooth_image(37, 31, channels=1, seed=s) for s in range(3)])
    (tmp_path / "clean").mkdir()
    tifffile.imwrite(tmp_path / "clean" / "z.tif", clean, imagej=True, metadata={"axes": "ZYX"})
    report, _ = evaluate(tmp_path / "clean", [25], baselines=("noisy",), device="cpu", protocol="clipped")
    names = [s.image for s in report.scores if s.method == "noisy"]
    assert names == ["z.tif[0]", "z.tif[1]", "z.tif[2]"]
    assert len({round(s.psnr, 6) for s in report.scores if s.method == "noisy"}) == 3  # noise drawn per plane
    assert report.mean("denoise", "sigma 25") > report.mean("noisy", "sigma 25") + 3

    rng = np.random.default_rng(0)
    noisy = np.clip(clean + rng.normal(0, 20, clean.shape), 0, 255).round().astype(np.uint8)
    (tmp_path / "noisy").mkdir()
    tifffile.imwrite(tmp_path / "noisy" / "z.tif", noisy, imagej=True, metadata={"axes": "ZYX"})
    report, _ = evaluate(tmp_path / "clean", noisy_dir=tmp_path / "noisy", baselines=("noisy",), device="cpu")
    scores = [s for s in report.scores if s.method == "noisy"]
    expected = [10 * np.log10(255**2 / ((noisy[k].astype(float) - clean[k]) ** 2).mean()) for k in range(3)]
    assert [s.image for s in scores] == names and [s.psnr for s in scores] == pytest.approx(expected, abs=1e-6)
    tifffile.imwrite(tmp_path / "noisy" / "z.tif", noisy[:2], imagej=True, metadata={"axes": "ZYX"})
    from denoisecli.errors import DenoiseError

    with pytest.raises(DenoiseError, match=r"z.tif: size, channels or planes differ"):
        evaluate(tmp_path / "clean", noisy_dir=tmp_path / "noisy", device="cpu")

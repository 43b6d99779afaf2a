import json
from pathlib import Path
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from denoisecli.cli import app
from denoisecli.weights import load_checkpoint

from conftest import save, smooth_image

runner = CliRunner()


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["train", "--help"], ["add-noise", "--help"], ["run"],
                                  ["run", "no_such_folder"], ["add-noise", "no_such_folder", "out"], ["train", "no_such_folder", "--out", "r"],
                                  ["eval", "no_such_folder"], ["train", "tests", "--out", "r", "--sigma", "60-10"],
                                  ["add-noise", "tests", "out", "--sigma", "abc"], ["run", "pyproject.toml"], ["run", "tests", "-o", "tests"],
                                  ["run", "tests", "--weights", "none.pt"], ["add-noise", "tests", "tests"], ["bench", "--weights", "none.pt"]])
def test_help_and_argument_errors_do_not_import_torch(args):
    code = (
        "import sys\nfrom denoisecli.cli import main\nsys.argv = ['denoise', *sys.argv[1:]]\n"
        "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\nprint('ok', code)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)
    assert "ok" in out.stdout, out.stderr


def test_module_entry_point():
    out = subprocess.run([sys.executable, "-m", "denoisecli", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "add-noise" in out.stdout


def test_add_noise_mirrors_tree_as_png_and_keeps_grey(clean_dir, tmp_path):
    out = tmp_path / "noisy"
    result = runner.invoke(app, ["add-noise", str(clean_dir), str(out), "--sigma", "25", "--seed", "3"])
    assert result.exit_code == 0, result.output
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert names == ["a.png", "b.png", "d.png", "grey.png", "sub/c.png"]
    assert "5/5" in result.output, "the bar knows its total once the files are found"
    assert Image.open(out / "grey.png").mode == "L" and Image.open(out / "a.png").mode == "RGB"
    diff = np.asarray(Image.open(out / "a.png"), dtype=float) - np.asarray(Image.open(clean_dir / "a.png"), dtype=float)
    assert 15 < diff.std() < 30


def test_add_noise_json_records_each_files_drawn_level(clean_dir, tmp_path):
    """With a range, each file draws its own level, which nothing recorded: --json gives each
    file's levels and sigma (a stack's per plane), the truth a noise estimate is tested on."""
    import tifffile

    tifffile.imwrite(clean_dir / "z.tif", np.stack([smooth_image(30, 34, channels=1, seed=s) for s in range(3)]),
                     imagej=True, metadata={"axes": "ZYX"})
    out = tmp_path / "noisy"
    result = runner.invoke(app, ["add-noise", str(clean_dir), str(out), "--sigma", "5-40", "--seed", "3",
                                 "--json", str(tmp_path / "n.json")])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "n.json").read_text())
    assert data["noise"] == "gaussian" and data["seed"] == 3 and data["ranges"]["std"] == pytest.approx([5 / 255, 40 / 255])
    files = {Path(f["input"]).name: f for f in data["files"]}
    assert len(files) == 6 and len({round(f["sigma"], 6) for n, f in files.items() if n != "z.tif"}) == 5
    for name in ("a.png", "b.png"):
        f = files[name]
        assert 5 <= f["sigma"] <= 40 and f["levels"]["std"] == pytest.approx(f["sigma"] / 255)
        diff = np.asarray(Image.open(out / name), float) - np.asarray(Image.open(clean_dir / name), float)
        assert abs(diff.std() - f["sigma"]) < 0.2 * f["sigma"] + 1  # the noise in the file is the recorded level's
    assert len(files["z.tif"]["sigma"]) == 3 and len(files["z.tif"]["levels"]["std"]) == 3


def test_add_noise_says_where_a_renamed_copy_went(clean_dir, tmp_path):
    """Noisy copies are lossless, so `add-noise photo.jpg noisy.jpg` writes noisy.png: it says so."""
    result = runner.invoke(app, ["add-noise", str(clean_dir / "d.jpg"), str(tmp_path / "noisy.jpg"), "--sigma", "10"])
    assert result.exit_code == 0, result.output
    assert f"written: {tmp_path / 'noisy.png'} (noisy copies are lossless" in " ".join(result.output.split())
    assert Image.open(tmp_path / "noisy.png").format == "PNG" and not (tmp_path / "noisy.jpg").exists()


def test_add_noise_is_deterministic_per_file_whatever_the_set(clean_dir, tmp_path):
    runner.invoke(app, ["add-noise", str(clean_dir), str(tmp_path / "all"), "--sigma", "10", "--seed", "7"])
    runner.invoke(app, ["add-noise", str(clean_dir / "sub"), str(tmp_path / "one"), "--sigma", "10", "--seed", "7"])
    runner.invoke(app, ["add-noise", str(clean_dir), str(tmp_path / "other"), "--sigma", "10", "--seed", "8"])
    a = np.asarray(Image.open(tmp_path / "all" / "sub" / "c.png"))
    b = np.asarray(Image.open(tmp_path / "one" / "c.png"))
    c = np.asarray(Image.open(tmp_path / "other" / "sub" / "c.png"))
    assert not np.array_equal(a, c)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "all" / "a.png")), np.asarray(Image.open(tmp_path / "all" / "a.png")))
    # the key is the path relative to the input, so a folder run and a sub-folder run differ only by that key
    again = tmp_path / "again"
    runner.invoke(app, ["add-noise", str(clean_dir), str(again), "--sigma", "10", "--seed", "7"])
    assert np.array_equal(a, np.asarray(Image.open(again / "sub" / "c.png")))
    assert b.shape == a.shape


def test_add_noise_raw_parameters_and_conflicts(clean_dir, tmp_path):
    ok = runner.invoke(app, ["add-noise", str(clean_dir / "a.png"), str(tmp_path / "o"), "--std", "0.1", "--mean", "0.05", "--scale", "0.5"])
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "o" / "a.png").exists()
    bad = runner.invoke(app, ["add-noise", str(clean_dir), str(tmp_path / "p"), "--std", "0.1", "--sigma", "5"])
    assert bad.exit_code != 0


def test_run_folder_default_output_is_a_new_sibling(clean_dir, tiny_model_file):
    before = {p: p.read_bytes() for p in clean_dir.rglob("*") if p.is_file()}
    result = runner.invoke(app, ["run", str(clean_dir), "--weights", str(tiny_model_file), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    out = clean_dir.with_name("clean-denoised")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == ["a.png", "b.png", "d.jpg", "grey.png", "sub/c.png"]
    assert Image.open(out / "d.jpg").format == "JPEG" and Image.open(out / "grey.png").mode == "L"
    assert {p: p.read_bytes() for p in clean_dir.rglob("*") if p.is_file()} == before
    again = runner.invoke(app, ["run", str(clean_dir), "--weights", str(tiny_model_file)])
    assert again.exit_code == 0 and "5" in again.output and "skipped" in again.output


def test_run_single_file_to_named_output_with_tiles(clean_dir, tiny_model_file, tmp_path):
    save(tmp_path / "big.png", smooth_image(150, 170))
    target = tmp_path / "res" / "clean.png"
    result = runner.invoke(app, ["run", str(tmp_path / "big.png"), "-o", str(target), "--weights", str(tiny_model_file), "--tile", "128"])
    assert result.exit_code == 0, result.output
    assert Image.open(target).size == (170, 150)
    both = tmp_path / "res" / "ensemble.png"
    result = runner.invoke(app, ["run", str(tmp_path / "big.png"), "-o", str(both), "--weights", str(tiny_model_file), "--tile", "128",
                                 "--ensemble"])
    assert result.exit_code == 0, result.output
    assert Image.open(both).size == (170, 150) and Image.open(both).tobytes() != Image.open(target).tobytes()


def test_run_goes_on_past_a_bad_file_and_exits_1(clean_dir, tiny_model_file, tmp_path):
    (clean_dir / "broken.png").write_bytes(b"not a png")
    result = runner.invoke(app, ["run", str(clean_dir), "-o", str(tmp_path / "o"), "--weights", str(tiny_model_file)])
    assert result.exit_code == 1
    assert "broken.png" in result.output and "not an image" in result.output and "Traceback" not in result.output
    assert (tmp_path / "o" / "a.png").exists() and not (tmp_path / "o" / "broken.png").exists()


def test_run_json_records_each_file_and_how_it_was_run(clean_dir, tiny_model_file, tmp_path):
    """`run --json`: what was done to each file, in the inputs' order (a failure with its reason),
    and with what: the options, the weights, the machine and the versions."""
    import torch

    (clean_dir / "broken.png").write_bytes(b"not a png")
    result = runner.invoke(app, ["run", str(clean_dir), "-o", str(tmp_path / "o"), "--weights", str(tiny_model_file),
                                 "--batch", "2", "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 1, result.output
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["counts"] == {"denoised": 5, "failed": 1} and data["weights"] == str(tiny_model_file)
    assert data["options"]["batch"] == 2 and data["device"] == "cpu" and data["versions"]["torch"] == torch.__version__
    names = [Path(f["input"]).relative_to(clean_dir).as_posix() for f in data["files"]]
    assert names == ["a.png", "b.png", "broken.png", "d.jpg", "grey.png", "sub/c.png"]
    broken = data["files"][2]
    assert broken["status"] == "failed" and "broken.png: not an image" in broken["reason"]
    denoised = [f for f in data["files"] if f["status"] == "denoised"]
    assert all(f["planes"] == 1 and Path(f["output"]).exists() for f in denoised)
    assert [f["grey_model_for_grey_in_rgb"] for f in denoised] == [False] * 5  # a blind colour model: no level, no grey route


@pytest.mark.parametrize(
    "args,message",
    [
        (["run", "missing_dir"], "no such file or folder"),
        (["run", "{clean}", "--weights", "{tmp}/none.pt"], "weights file not found"),
        (["run", "{clean}", "--weights", "{tmp}/corrupt.pt"], "truncated or corrupt"),
        (["run", "{clean}", "-o", "{clean}"], "input folder"),
    ],
)
def test_run_errors_are_one_clear_line(clean_dir, tmp_path, args, message):
    (tmp_path / "corrupt.pt").write_bytes(b"PK\x03\x04garbage")
    args = [a.format(clean=clean_dir, tmp=tmp_path) for a in args]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
    assert result.output.strip().startswith("error:"), "a bar that never moved is not left above the error"


def test_cuda_without_cuda_is_the_one_line_of_every_command(clean_dir, tiny_model_file, tmp_path, monkeypatch):
    """Before, an empty progress bar stood above the error: train's with "loss nan"."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for args in (["run", str(clean_dir), "--weights", str(tiny_model_file)], ["train", str(clean_dir), "--out", str(tmp_path / "r")],
                 ["eval", str(clean_dir)], ["bench"]):
        result = runner.invoke(app, [*args, "--device", "cuda"])
        assert result.exit_code == 1 and result.output.strip().splitlines() == [
            "error: --device cuda: CUDA is not available on this machine (use --device cpu or auto)"], result.output


def test_train_cli_l1_and_resume_refusal(clean_dir, tmp_path):
    args = ["train", str(clean_dir), "--out", str(tmp_path / "r"), "--steps", "3", "--batch", "2", "--patch", "24",
            "--width", "8", "--depth", "2", "--blocks", "1", "--device", "cpu", "--no-amp"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert (tmp_path / "r" / "model.pt").exists() and (tmp_path / "r" / "last.pt").exists()
    assert json.loads((tmp_path / "r" / "config.json").read_text())["amp"] is False, "the run records its precision"
    second = runner.invoke(app, args)
    assert second.exit_code == 1 and "--resume" in second.output
    bad = runner.invoke(app, ["train", str(clean_dir), "--out", str(tmp_path / "x"), "--sigma", "60-10"])
    assert bad.exit_code == 2


def test_add_noise_other_models_and_inapplicable_options(clean_dir, tmp_path):
    ok = runner.invoke(app, ["add-noise", str(clean_dir / "a.png"), str(tmp_path / "sp"), "--noise", "salt-pepper", "--amount", "0.2"])
    assert ok.exit_code == 0, ok.output
    arr = np.asarray(Image.open(tmp_path / "sp" / "a.png"))
    hit = np.mean(np.all(arr == 0, -1) | np.all(arr == 255, -1))
    assert 0.15 < hit < 0.25
    ranged = runner.invoke(app, ["add-noise", str(clean_dir), str(tmp_path / "pg"), "--noise", "poisson-gaussian", "--peak", "10-50", "--sigma", "5"])
    assert ranged.exit_code == 0, ranged.output
    bad = runner.invoke(app, ["add-noise", str(clean_dir), str(tmp_path / "x"), "--peak", "3"])
    assert bad.exit_code == 1 and "--peak does not apply to --noise gaussian" in bad.output
    bad_range = runner.invoke(app, ["add-noise", str(clean_dir), str(tmp_path / "y"), "--sigma", "300"])
    assert bad_range.exit_code == 2


def test_add_noise_shared_between_channels(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.full((31, 37, 3), 128, np.uint8)).save(src / "grey.png")
    for rho, name in (("1", "same"), ("0", "apart")):
        ok = runner.invoke(app, ["add-noise", str(src), str(tmp_path / name), "--noise", "gaussian-shared", "--sigma", "20",
                                 "--correlation", rho])
        assert ok.exit_code == 0, ok.output
    same = np.asarray(Image.open(tmp_path / "same" / "grey.png")).astype(int)
    apart = np.asarray(Image.open(tmp_path / "apart" / "grey.png")).astype(int)
    assert same.std() > 15 and (same == same[..., :1]).all()
    assert apart.std() > 15 and (apart != apart[..., :1]).mean() > 0.5
    default = runner.invoke(app, ["add-noise", str(src), str(tmp_path / "d"), "--noise", "gaussian-shared", "--std", "0.05"])
    assert default.exit_code == 0, default.output
    d = np.asarray(Image.open(tmp_path / "d" / "grey.png")).astype(int)
    assert (d == d[..., :1]).all() and 8 < d.std() < 18
    bad = runner.invoke(app, ["add-noise", str(src), str(tmp_path / "x"), "--correlation", "1"])
    assert bad.exit_code == 1 and "--correlation does not apply to --noise gaussian" in bad.output
    assert runner.invoke(app, ["add-noise", str(src), str(tmp_path / "y"), "--noise", "gaussian-shared", "--correlation", "2"]).exit_code == 2


def test_train_cli_noise_model_validation_and_resume(clean_dir, tmp_path):
    args = ["train", str(clean_dir), "--out", str(tmp_path / "r"), "--steps", "4", "--batch", "2", "--patch", "24",
            "--width", "8", "--depth", "2", "--blocks", "1", "--device", "cpu", "--noise", "jpeg", "--quality", "30-60",
            "--val", str(clean_dir), "--val-every", "2", "--independent-channels", "0.5", "--downscale", "0.5"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "best validation PSNR" in result.output and (tmp_path / "r" / "best.pt").exists()
    meta = load_checkpoint(tmp_path / "r" / "model.pt")["meta"]
    assert meta["downscale"] == 0.5 and meta["independent_channels"] == 0.5
    over = runner.invoke(app, args[:-1] + ["1.5"])
    assert over.exit_code == 2 and "--downscale" in over.output
    again = runner.invoke(app, ["train", str(clean_dir), "--out", str(tmp_path / "r"), "--resume"])
    assert again.exit_code == 0 and "done: 4 steps" in again.output
    clash = runner.invoke(app, ["train", str(clean_dir), "--out", str(tmp_path / "r"), "--resume", "--width", "16"])
    assert clash.exit_code == 1 and "another architecture" in clash.output


def test_add_noise_never_merges_two_inputs_into_one_png(tmp_path):
    save(tmp_path / "in" / "x.png", smooth_image(10, 10, seed=1))
    save(tmp_path / "in" / "x.jpg", smooth_image(10, 10, seed=2))
    result = runner.invoke(app, ["add-noise", str(tmp_path / "in"), str(tmp_path / "out"), "--sigma", "5"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["x.jpg.png", "x.png.png"]


def test_add_noise_keeps_a_tiff_as_tiff_float_data_included(tmp_path):
    """PNG holds no float data, and a TIFF's compression and depth are worth keeping: TIFF in, TIFF out."""
    import tifffile

    src = tmp_path / "in"
    src.mkdir()
    plane = smooth_image(21, 19, channels=1).astype(np.float32) / 255
    tifffile.imwrite(src / "f.tif", plane * 0.05, compression="zlib", predictor=True)
    tifffile.imwrite(src / "w.TIFF", (plane * 4095).astype(np.uint16), compression="lzw", predictor=True)
    save(src / "p.png", smooth_image(21, 19))
    result = runner.invoke(app, ["add-noise", str(src), str(tmp_path / "out"), "--sigma", "2"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["f.tif", "p.png", "w.TIFF"]
    with tifffile.TiffFile(tmp_path / "out" / "f.tif") as f, tifffile.TiffFile(tmp_path / "out" / "w.TIFF") as w:
        floats, words = f.pages[0].asarray(), w.pages[0].asarray()
        assert floats.dtype == np.float32 and w.pages[0].predictor > 1 and words.dtype == np.uint16
    assert 0 < np.abs(floats - plane * 0.05).mean() and not np.array_equal(words, (plane * 4095).astype(np.uint16))


def test_a_dataset_of_pgm_files_stays_pgm_at_its_depth_through_add_noise_and_run(tmp_path):
    """An ML dataset of PGM files, or a raw converter's 12-bit output: add-noise keeps the format
    (it is lossless) and run denoises it into the same format and depth."""
    src = tmp_path / "in"
    src.mkdir()
    levels = np.round(smooth_image(33, 29, channels=1).astype(np.float64) / 255 * 4095).astype(">u2")
    (src / "a.pgm").write_bytes(b"P5\n29 33\n4095\n" + levels.tobytes())
    result = runner.invoke(app, ["add-noise", str(src), str(tmp_path / "noisy"), "--sigma", "10", "--seed", "1"])
    assert result.exit_code == 0, result.output
    noisy = (tmp_path / "noisy" / "a.pgm").read_bytes()
    assert noisy.startswith(b"P5\n29 33\n4095\n") and noisy[-levels.nbytes:] != levels.tobytes()
    result = runner.invoke(app, ["run", str(tmp_path / "noisy"), "-o", str(tmp_path / "out"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    out = np.frombuffer((tmp_path / "out" / "a.pgm").read_bytes()[-levels.nbytes:], ">u2").astype(np.float64)
    clean, noisy_levels = levels.reshape(-1).astype(np.float64), np.frombuffer(noisy[-levels.nbytes:], ">u2")
    assert np.abs(out - clean).mean() < 0.6 * np.abs(noisy_levels - clean).mean()


def test_add_noise_keeps_a_stack_as_the_stack_each_plane_its_own_noise(tmp_path):
    """A z-stack's noisy copy is the same ImageJ stack, every plane noisy with noise of its own (not
    one noise image repeated); the same file gets the same noise again; and stacks train, plane by
    plane (here two noisy copies as a pair, which trains without skipping anything)."""
    import tifffile

    src = tmp_path / "in"
    src.mkdir()
    plane = smooth_image(31, 37, channels=1)
    arr = np.stack([plane] * 4).reshape(2, 2, 31, 37)
    tifffile.imwrite(src / "z.tif", arr, imagej=True, metadata={"axes": "TZYX", "spacing": 0.5})
    for out in ("a", "b"):
        result = runner.invoke(app, ["add-noise", str(src), str(tmp_path / out), "--sigma", "5-30"])
        assert result.exit_code == 0, result.output
    with tifffile.TiffFile(tmp_path / "a" / "z.tif") as tf:
        assert tf.is_imagej and tf.series[0].axes == "TZYX" and tf.imagej_metadata["spacing"] == 0.5
        noisy = tf.series[0].asarray().reshape(4, 31, 37).astype(float)
    assert np.array_equal(tifffile.imread(tmp_path / "b" / "z.tif"), noisy.reshape(arr.shape))
    residuals = noisy - plane
    stds = residuals.std(axis=(1, 2))
    assert (stds > 3).all() and stds.max() > 1.2 * stds.min(), stds  # a level drawn per plane from the range
    assert abs(np.corrcoef(residuals[0].ravel(), residuals[1].ravel())[0, 1]) < 0.2
    result = runner.invoke(app, ["train", str(tmp_path / "a"), "--noisy", str(tmp_path / "b"), "--out", str(tmp_path / "r"),
                                 "--steps", "2", "--patch", "16", "--batch", "2"])
    assert result.exit_code == 0 and "skipped" not in result.output, result.output


def test_ctrl_c_during_training_saves_a_checkpoint(clean_dir, tmp_path):
    import json
    import os
    import signal
    import time

    out = tmp_path / "run"
    args = [sys.executable, "-m", "denoisecli", "train", str(clean_dir), "--out", str(out), "--steps", "100000",
            "--batch", "2", "--patch", "24", "--width", "8", "--depth", "2", "--blocks", "1", "--device", "cpu",
            "--save-every", "100000"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 600  # generous: a loaded machine starts torch slowly; it leaves as soon as a step is logged
    while time.time() < deadline and not ((out / "metrics.jsonl").exists() and '"train"' in (out / "metrics.jsonl").read_text()):
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "checkpoint saved" in err and "Traceback" not in err
    import torch

    step = torch.load(out / "last.pt", weights_only=True)["step"]
    assert step >= 50
    logged = [json.loads(l)["step"] for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(logged) <= step


@pytest.mark.parametrize("how", ["sigterm", "sigint-while-ignored"])
def test_train_stopped_by_kill_saves_a_checkpoint_and_says_so(clean_dir, tmp_path, how):
    """`kill PID` (SIGTERM), or SIGINT to a `nohup ... &` job that inherited it ignored, stops a run
    the way Ctrl-C does: a checkpoint at the step reached, exit code 130."""
    import os
    import signal
    import time

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "denoisecli", "train", str(clean_dir), "--out", str(out), "--steps", "1000000",
           "--batch", "2", "--patch", "16", "--width", "4", "--depth", "2", "--blocks", "0",
           "--val-every", "1000000", "--save-every", "1000000"]
    ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if how == "sigint-while-ignored" else None
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=ignore,
                            env={**os.environ, "COLUMNS": "200"})
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.exists() and '"train"' in metrics.read_text()) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    assert "interrupted at step" in output and "--resume" in output
    assert load_checkpoint(out / "last.pt")["step"] > 0


def test_train_cli_overset(clean_dir, tmp_path):
    """--overset reaches the trainer; a non-Gaussian noise gets a one-line error, not a traceback."""
    args = ["train", str(clean_dir), "--out", str(tmp_path / "o"), "--steps", "2", "--batch", "2", "--patch", "24",
            "--width", "8", "--depth", "2", "--blocks", "1", "--device", "cpu", "--noise-map", "--overset", "0.5"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert load_checkpoint(tmp_path / "o" / "model.pt")["meta"]["overset"] == 0.5
    refused = runner.invoke(app, args[:3] + [str(tmp_path / "p")] + args[4:] + ["--noise", "camera"])
    assert refused.exit_code == 1 and "--overset needs white Gaussian noise" in refused.output
    assert "Traceback" not in refused.output
    assert runner.invoke(app, args[:-1] + ["2"]).exit_code == 2


def test_train_cli_edge_weight(clean_dir, tmp_path):
    """--edge-weight reaches the trainer and its term the log; a negative weight is refused before torch loads."""
    args = ["train", str(clean_dir), "--out", str(tmp_path / "e"), "--steps", "2", "--batch", "2", "--patch", "24",
            "--width", "8", "--depth", "2", "--blocks", "1", "--device", "cpu", "--edge-weight", "0.1"]
    result = runner.invoke(app, args + ["--val-every", "100"])
    assert result.exit_code == 0, result.output
    assert load_checkpoint(tmp_path / "e" / "model.pt")["meta"]["edge_weight"] == 0.1
    logged = [json.loads(line) for line in (tmp_path / "e" / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("edge", 0) > 0 for r in logged if r["event"] == "train")
    assert runner.invoke(app, args[:-1] + ["-1"]).exit_code == 2


def test_train_cli_gan_skip_white(clean_dir, tmp_path):
    """--gan-skip-white reaches the trainer and the model's meta; without --gan it is a one-line error."""
    args = ["train", str(clean_dir), "--out", str(tmp_path / "g"), "--steps", "2", "--batch", "4", "--patch", "24",
            "--width", "8", "--depth", "2", "--blocks", "1", "--device", "cpu", "--mix", "camera:0.5", "--gan-skip-white"]
    result = runner.invoke(app, args + ["--gan", "--gan-warmup", "0", "--val-every", "100"])
    assert result.exit_code == 0, result.output
    assert load_checkpoint(tmp_path / "g" / "model.pt")["meta"]["gan_skip_white"] is True
    refused = runner.invoke(app, args[:3] + [str(tmp_path / "h")] + args[4:])
    assert refused.exit_code == 1 and "--gan-skip-white needs --gan" in refused.output
    assert "Traceback" not in refused.output


def test_train_cli_ema(clean_dir, tmp_path):
    """--ema reaches the trainer and the model's meta; a decay of 1 (nothing would move) is refused as a usage error."""
    args = ["train", str(clean_dir), "--out", str(tmp_path / "m"), "--steps", "2", "--batch", "2", "--patch", "24",
            "--width", "8", "--depth", "2", "--blocks", "1", "--device", "cpu", "--ema", "0.9"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert load_checkpoint(tmp_path / "m" / "model.pt")["meta"]["ema"] == 0.9
    assert load_checkpoint(tmp_path / "m" / "last.pt")["ema"]["n_averaged"] == 3, "the start plus one update per step"
    refused = runner.invoke(app, args[:-1] + ["1"])
    assert refused.exit_code == 2 and "Traceback" not in refused.output

"""`denoise run` on real users' folders: nesting, names, formats, batching, interruptions, broken files."""

import io
import random
from pathlib import Path

import numpy as np
import tifffile
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from denoisecli.addnoise import add_noise
from denoisecli.cli import app
from denoisecli.inference import Denoiser, RunOptions, denoise_files

from conftest import requires_avif, save, smooth_image

runner = CliRunner()


def test_output_inside_input_is_never_read_back(clean_dir, tiny_model_file):
    out = clean_dir / "denoised"
    first = runner.invoke(app, ["run", str(clean_dir), "-o", str(out), "--weights", str(tiny_model_file)])
    assert first.exit_code == 0, first.output
    second = runner.invoke(app, ["run", str(clean_dir), "-o", str(out), "--weights", str(tiny_model_file), "--overwrite"])
    assert second.exit_code == 0
    assert not (out / "denoised").exists()
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == ["a.png", "b.png", "d.jpg", "grey.png", "sub/c.png"]


def test_unicode_spaces_and_upper_case_extensions(tmp_path, tiny_model_file):
    save(tmp_path / "in" / "été photo 1.JPG", smooth_image(30, 34))
    save(tmp_path / "in" / "日本 dir" / "ímage.TIFF", smooth_image(25, 27))
    result = runner.invoke(app, ["run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--weights", str(tiny_model_file)])
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "out" / "été photo 1.JPG").format == "JPEG"
    assert Image.open(tmp_path / "out" / "日本 dir" / "ímage.TIFF").format == "TIFF"



def test_files_it_does_not_read_are_counted_not_silently_skipped(clean_dir, tmp_path, tiny_model_file):
    (clean_dir / "IMG_1.CR2").write_bytes(b"raw")
    (clean_dir / "sub" / "IMG_2.dng").write_bytes(b"dng")
    (clean_dir / ".DS_Store").write_bytes(b"mac")
    result = runner.invoke(app, ["run", str(clean_dir), "-o", str(tmp_path / "o"), "--weights", str(tiny_model_file)])
    assert result.exit_code == 0, result.output
    assert "left alone: 1 .cr2, 1 .dng (files this tool does not read" in " ".join(result.output.split())
    assert "Camera RAW: export a 16-bit TIFF with the converter's own noise reduction off" in " ".join(result.output.split())
    assert add_noise(clean_dir, tmp_path / "noisy").unread == {".cr2": 1, ".dng": 1}
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "IMG_3.cr2").write_bytes(b"raw")
    result = runner.invoke(app, ["run", str(raw), "-o", str(tmp_path / "o2"), "--weights", str(tiny_model_file)])
    assert result.exit_code == 1
    assert "no images found (it reads .png, .jpg, .tif, .webp, .bmp, .heic (.hif), .avif and .pgm/.ppm); it holds 1 .cr2. Camera RAW:" \
        in " ".join(result.output.split())
    (raw / "cells.czi").write_bytes(b"czi")
    result = runner.invoke(app, ["run", str(raw / "cells.czi"), "--weights", str(tiny_model_file)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "cells.czi: not an image file name (it reads .png, .jpg, .tif, .webp, .bmp, .heic (.hif), .avif and .pgm/.ppm). " \
           "Microscope files: save them as OME-TIFF" in " ".join(result.output.split())

def test_format_option_changes_extension_and_format(clean_dir, tmp_path, tiny_model_file):
    result = runner.invoke(app, ["run", str(clean_dir), "-o", str(tmp_path / "o"), "--weights", str(tiny_model_file),
                                 "--format", "webp"])
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "o" / "a.webp").format == "WEBP" and (tmp_path / "o" / "sub" / "c.webp").exists()


@requires_avif
def test_avif_in_and_out(tmp_path, tiny_model_file):
    """AVIF stays AVIF, and --format avif writes it from other formats."""
    (tmp_path / "in").mkdir()
    Image.fromarray(smooth_image(37, 31)).save(tmp_path / "in" / "web.avif", quality=90)
    save(tmp_path / "in" / "b.png", smooth_image(20, 24))
    result = runner.invoke(app, ["run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--weights", str(tiny_model_file)])
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "out" / "web.avif").format == "AVIF" and Image.open(tmp_path / "out" / "web.avif").size == (31, 37)
    result = runner.invoke(app, ["run", str(tmp_path / "in" / "b.png"), "-o", str(tmp_path / "b.avif"),
                                 "--weights", str(tiny_model_file), "--format", "avif"])
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "b.avif").format == "AVIF"


def test_batched_small_images_equal_one_by_one(tmp_path, tiny_model_file):
    for i in range(5):
        save(tmp_path / "in" / f"{i}.png", smooth_image(24, 20, seed=i))
    denoise_files(tmp_path / "in", tmp_path / "b8", RunOptions(weights=tiny_model_file, batch=8))
    denoise_files(tmp_path / "in", tmp_path / "b1", RunOptions(weights=tiny_model_file, batch=1))
    for i in range(5):
        assert np.array_equal(np.asarray(Image.open(tmp_path / "b8" / f"{i}.png")), np.asarray(Image.open(tmp_path / "b1" / f"{i}.png")))


def test_out_of_memory_retries_with_smaller_tiles(tiny_model_file, monkeypatch):
    den = Denoiser(tiny_model_file, device="cpu")
    model = den.model_for(3)
    real_forward = model.forward
    sizes = []

    def picky(x):
        sizes.append(max(x.shape[-2:]))
        if max(x.shape[-2:]) > 160:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_forward(x)

    monkeypatch.setattr(model, "forward", picky)
    x = torch.rand(3, 300, 290)
    y = den(x)
    assert y.shape == x.shape and sizes[0] == 300 and max(sizes[1:]) <= 160
    whole = real_forward(x[None]).clamp(0, 1)[0]
    assert (y - whole).abs().max() < 1 / 255


@pytest.mark.parametrize("ensemble", [False, True])
def test_the_bar_moves_through_a_large_photos_windows(tmp_path, tiny_model_file, ensemble):
    """One large photo sat at 0 of 1 on the bar for the minute it took; the share of it done is
    now heard window by window (each of the ensemble's eight passes in turn), up to the whole."""
    save(tmp_path / "in" / "big.png", smooth_image(150, 170))
    save(tmp_path / "in" / "small.png", smooth_image(30, 40))
    shares = []
    report = denoise_files(tmp_path / "in", tmp_path / "out", RunOptions(weights=tiny_model_file, tile=64, ensemble=ensemble),
                           on_share=shares.append)
    assert report.count("denoised") == 2
    windows = 4 * 4 * (8 if ensemble else 1)  # 150x170 in windows of 64 that overlap by 28: 4 by 4
    assert len(shares) == windows and shares == sorted(shares) and shares[-1] == pytest.approx(1.0) and shares[0] > 0


def test_a_360_panoramas_edges_are_denoised_as_one(tmp_path):
    """A 360-degree panorama (Google's photo sphere XMP) runs on across its left and right edges,
    which the network took for the picture's end: a seam. Its edges now go in joined, so turning
    the panorama round before denoising gives what turning it after does; without the XMP it does not."""
    from PIL import PngImagePlugin

    from denoisecli.models import build_model
    from denoisecli.weights import atomic_save, model_payload

    from conftest import TINY_MODEL

    config = {"arch": "unet", "channels": 3, **TINY_MODEL, "noise_map": True}
    torch.manual_seed(0)
    model = build_model(config)
    torch.nn.init.normal_(model.tail.weight, std=0.05)
    atomic_save(model_payload(model, config), tmp_path / "level.pt")
    noisy = np.clip(smooth_image(40, 96).astype(float) + np.random.default_rng(0).normal(0, 20, (40, 96, 3)), 0, 255).astype(np.uint8)
    xmp = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
           '<rdf:Description xmlns:GPano="http://ns.google.com/photos/1.0/panorama/"><GPano:ProjectionType>equirectangular'
           '</GPano:ProjectionType></rdf:Description></rdf:RDF></x:xmpmeta>')
    for sphere in (True, False):
        info = PngImagePlugin.PngInfo()
        if sphere:
            info.add_itxt("XML:com.adobe.xmp", xmp)
        folder = tmp_path / f"in{sphere}"
        folder.mkdir()
        Image.fromarray(noisy).save(folder / "a.png", pnginfo=info)
        Image.fromarray(np.roll(noisy, 32, axis=1)).save(folder / "b.png", pnginfo=info)
        report = denoise_files(folder, tmp_path / f"out{sphere}", RunOptions(weights=tmp_path / "level.pt", sigma=20))
        assert report.count("denoised") == 2
        a, b = (np.asarray(Image.open(tmp_path / f"out{sphere}" / name)).astype(int) for name in ("a.png", "b.png"))
        apart = np.abs(np.roll(a, 32, axis=1) - b).max()
        assert apart <= 1 if sphere else apart > 3, apart
    detail = denoise_files(tmp_path / "inTrue" / "a.png", tmp_path / "v", RunOptions(weights=tmp_path / "level.pt")).results[0].detail
    assert "360-degree panorama: its edges denoised as one" in detail


def test_interrupted_write_leaves_nothing_and_a_rerun_finishes(clean_dir, tmp_path, tiny_model_file, monkeypatch):
    real_save = Image.Image.save
    calls = {"n": 0}

    def save_then_interrupt(self, fp, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            fp.write(b"half an image")
            raise KeyboardInterrupt
        return real_save(self, fp, *a, **k)

    monkeypatch.setattr(Image.Image, "save", save_then_interrupt)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        denoise_files(clean_dir, out, RunOptions(weights=tiny_model_file, threads=1, batch=1))
    monkeypatch.setattr(Image.Image, "save", real_save)
    leftovers = [p.name for p in out.rglob("*") if p.is_file()]
    assert not any("partial" in n for n in leftovers)
    for p in out.rglob("*"):
        if p.is_file():
            Image.open(p).load()
    report = denoise_files(clean_dir, out, RunOptions(weights=tiny_model_file))
    assert report.count("failed") == 0 and report.count("denoised") + report.count("skipped") == 5
    assert report.count("denoised") >= 1


def test_a_write_that_fails_fails_its_file_and_the_batch_goes_on(clean_dir, tmp_path, tiny_model_file, monkeypatch):
    import denoisecli.image_io as iio
    from denoisecli.errors import DenoiseError

    def refused(path, write):
        raise DenoiseError(f"{path}: cannot write (Permission denied)") from PermissionError(13, "Permission denied")

    monkeypatch.setattr(iio, "atomic_write", refused)
    result = runner.invoke(app, ["run", str(clean_dir), "-o", str(tmp_path / "o"), "--weights", str(tiny_model_file)])
    assert result.exit_code == 1
    assert result.output.count("Permission denied") == 5 and "Traceback" not in result.output and "stopped" not in result.output


@pytest.mark.parametrize("command", ["run", "add-noise"])
def test_a_full_disk_stops_the_batch_and_a_rerun_finishes_it(tmp_path, tiny_model_file, monkeypatch, command):
    """A full disk failed each file the same way after minutes of denoising it, for as many files
    as the folder held. The batch now stops at the first (writes already under way fail too), says
    so, and a rerun with space again skips what was written and does the rest."""
    import errno
    import json

    import denoisecli.image_io as iio
    from denoisecli.atomic import atomic_write

    for i in range(12):
        save(tmp_path / "in" / f"{i:02d}.png", smooth_image(31, 37, seed=i))
    writes = []

    def filling(path, write):
        writes.append(path)
        if len(writes) > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        atomic_write(path, write)

    monkeypatch.setattr(iio, "atomic_write", filling)
    out = tmp_path / "out"
    args = ([command, str(tmp_path / "in"), "-o", str(out), "--weights", str(tiny_model_file), "--batch", "1",
             "--json", str(tmp_path / "run.json")] if command == "run" else [command, str(tmp_path / "in"), str(out)])
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert "stopped: no space left where" in result.output and "2 file(s) written" in result.output
    assert 3 <= len(writes) < 12 and sorted(p.name for p in out.rglob("*")) == sorted(p.name for p in writes[:2])
    failed = result.output.count("No space left on device")
    assert failed == len(writes) - 2 and (failed == 1 or command == "run")
    if command == "run":
        record = json.loads((tmp_path / "run.json").read_text())
        assert record["counts"] == {"denoised": 2, "failed": failed, "skipped": 10 - failed} and record["stopped"].startswith("no space left")
    monkeypatch.setattr(iio, "atomic_write", atomic_write)
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and len(list(out.rglob("*"))) == 12, again.output


def test_a_full_disk_met_by_a_streamed_stack_stops_the_batch(tmp_path, tiny_model_file, monkeypatch):
    import errno

    import denoisecli.image_io as iio

    save(tmp_path / "in" / "a.png", smooth_image(31, 37, seed=0))
    for name in ("b", "c"):
        tifffile.imwrite(tmp_path / "in" / f"{name}.tif", np.stack([smooth_image(31, 37, channels=1, seed=i).reshape(31, 37) for i in range(5)]))

    real, writes = iio.atomic_write, []

    def filling(path, write):
        writes.append(path.name)
        if len(writes) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, write)

    monkeypatch.setattr(iio, "atomic_write", filling)
    report = denoise_files(tmp_path / "in", tmp_path / "out", RunOptions(weights=tiny_model_file, batch=1))
    assert [r.status for r in report.results] == ["denoised", "failed", "skipped"] and writes == ["a.png", "b.tif"]
    assert report.stopped.startswith("no space left") and "1 file(s) written" in report.stopped


def test_decompression_bomb_needs_max_pixels(tmp_path, tiny_model_file):
    save(tmp_path / "in" / "big.png", smooth_image(200, 200))
    refused = runner.invoke(app, ["run", str(tmp_path / "in"), "--weights", str(tiny_model_file), "--max-pixels", "0.01"])
    assert refused.exit_code == 1 and "--max-pixels" in refused.output
    allowed = runner.invoke(app, ["run", str(tmp_path / "in"), "--weights", str(tiny_model_file), "--max-pixels", "1"])
    assert allowed.exit_code == 0


@pytest.mark.parametrize("command", ["add-noise", "eval", "train"])
def test_every_command_that_reads_images_takes_max_pixels(tmp_path, tiny_model_file, command):
    """The guard's message says to raise --max-pixels: add-noise, eval and train had no such
    option, so a large image was a dead end there."""
    save(tmp_path / "in" / "big.png", smooth_image(200, 200))
    args = {"add-noise": ["add-noise", str(tmp_path / "in"), str(tmp_path / "noisy")],
            "eval": ["eval", str(tmp_path / "in"), "--weights", str(tiny_model_file), "--sigma", "25"],
            "train": ["train", str(tmp_path / "in"), "--out", str(tmp_path / "r"), "--steps", "1", "--batch", "2", "--patch", "24",
                      "--width", "8", "--depth", "2", "--blocks", "1", "--device", "cpu"]}[command]
    refused = runner.invoke(app, [*args, "--max-pixels", "0.01"])
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert "big.png: 200x200 is 0 megapixels, over the 0 MP safety limit (raise it with --max-pixels" in " ".join(refused.output.split())
    allowed = runner.invoke(app, [*args, "--max-pixels", "1"])
    assert allowed.exit_code == 0, allowed.output


def _corrupt(data: bytes, rng: random.Random) -> bytes:
    kind = rng.choice(["truncate", "flip", "zero", "splice"])
    b = bytearray(data)
    if kind == "truncate":
        return bytes(b[: rng.randrange(0, len(b))])
    if kind == "flip":
        for _ in range(rng.randrange(1, 20)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        return bytes(b)
    if kind == "zero":
        start = rng.randrange(len(b))
        b[start : start + rng.randrange(1, 200)] = bytes(min(len(b) - start, 200))
        return bytes(b)
    return bytes(b[: len(b) // 2] + b[len(b) // 3 :])


def test_many_randomly_corrupted_files_each_end_well(tmp_path, tiny_model_file):
    import tifffile

    rng = random.Random(1234)
    sources = {}
    for fmt, suffix in [("PNG", ".png"), ("JPEG", ".jpg"), ("WEBP", ".webp"), ("BMP", ".bmp")]:
        buf = io.BytesIO()
        Image.fromarray(smooth_image(29, 33)).save(buf, format=fmt)
        sources[suffix] = buf.getvalue()
    buf = io.BytesIO()
    tifffile.imwrite(buf, (np.random.default_rng(0).random((20, 22, 3)) * 65535).astype(np.uint16), compression="zlib")
    sources[".tif"] = buf.getvalue()
    folder = tmp_path / "fuzz"
    folder.mkdir()
    names = []
    for i in range(60):
        suffix = rng.choice(sorted(sources))
        name = f"f{i:02d}{suffix}"
        (folder / name).write_bytes(_corrupt(sources[suffix], rng))
        names.append(name)
    (folder / "text.png").write_text("this is not an image")
    names.append("text.png")
    result = runner.invoke(app, ["run", str(folder), "-o", str(tmp_path / "out"), "--weights", str(tiny_model_file)])
    assert result.exit_code in (0, 1), result.output
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)
    failed_lines = [line for line in result.output.splitlines() if line.startswith("failed:")]
    for name in names:
        ok = (tmp_path / "out" / name).exists()
        failed = any(name in line for line in failed_lines)
        assert ok != failed, (name, ok, failed)
    assert len(failed_lines) >= 10


def test_a_rerun_removes_temp_files_that_a_killed_run_left(clean_dir, tmp_path, tiny_model_file):
    """After kill -9 mid-write a hidden temp file remains; the next run over that output removes it,
    unless it is fresh (another run may be writing it) or not one of ours."""
    import os
    import time

    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    old = [out / ".a.png.k3j_x9q2.partial", out / "sub" / ".c.png.abcdefgh.partial"]
    fresh, foreign = out / ".b.png.zzzzzzzz.partial", out / ".notes.txt.aaaaaaaa.partial"
    for p in [*old, fresh, foreign]:
        p.write_bytes(b"half an image")
    hour_ago = time.time() - 3600
    for p in [*old, foreign]:
        os.utime(p, (hour_ago, hour_ago))
    result = runner.invoke(app, ["run", str(clean_dir), "-o", str(out), "--weights", str(tiny_model_file)])
    assert result.exit_code == 0, result.output
    assert not any(p.exists() for p in old)
    assert fresh.exists() and foreign.exists()
    assert (out / "a.png").is_file() and (out / "sub" / "c.png").is_file()


def test_add_noise_also_removes_stale_temp_files(clean_dir, tmp_path):
    import os

    out = tmp_path / "noisy"
    out.mkdir()
    stale = out / ".a.png.q1w2e3r4.partial"
    stale.write_bytes(b"half")
    os.utime(stale, (0, 0))
    assert runner.invoke(app, ["add-noise", str(clean_dir), str(out)]).exit_code == 0
    assert not stale.exists() and (out / "a.png").is_file()


def _noisy_stack(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """8-bit planes of generated images with sigma-20 noise, in ``shape`` (planes, then YX)."""
    n = int(np.prod(shape[:-2]))
    rng = np.random.default_rng(seed)
    planes = [smooth_image(*shape[-2:], channels=1, seed=seed + i) / 255 + rng.normal(0, 20 / 255, shape[-2:]) for i in range(n)]
    return (np.clip(np.stack(planes), 0, 1) * 255).round().astype(np.uint8).reshape(shape)


def test_a_tiff_stack_is_denoised_plane_by_plane_and_written_back_as_the_stack(tmp_path, tiny_model_file):
    """A microscope's z-stack goes through `run` whole: each plane is denoised as the same plane
    alone would be (in passes of at most --batch planes), and the output is the same hyperstack."""
    import tifffile

    arr = _noisy_stack((5, 31, 37))
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "z.tif", arr, imagej=True, metadata={"axes": "ZYX", "spacing": 0.5, "unit": "um"})
    save(tmp_path / "in" / "a.png", smooth_image(31, 37))
    result = runner.invoke(app, ["run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--weights", str(tiny_model_file),
                                 "--batch", "2", "-v"])
    assert result.exit_code == 0, result.output
    assert "z.tif (5 planes)" in result.output
    with tifffile.TiffFile(tmp_path / "out" / "z.tif") as tf:
        assert tf.is_imagej and tf.series[0].axes == "ZYX" and tf.imagej_metadata["spacing"] == 0.5
        out = tf.series[0].asarray()
    assert out.shape == arr.shape and out.dtype == np.uint8 and not np.array_equal(out, arr)
    alone = Denoiser(tiny_model_file)
    for i in (0, 3):
        plane = torch.from_numpy(arr[i].astype(np.float32) / 255)[None]
        expected = (alone(plane)[0].clamp(0, 1) * 255).round().numpy().astype(np.uint8)
        assert np.abs(out[i].astype(int) - expected).max() <= 1


def test_a_tiff_of_several_images_comes_out_as_the_same_images_denoised(tmp_path, tiny_model_file):
    """A TIFF holding several images (series: a microscope's stage positions, a scanned document's
    pages of two sizes) was refused; each is denoised, and they go back in one file, in order, each
    in its own shape and type, and `-v` says how many."""
    rng = np.random.default_rng(0)
    first = (smooth_image(40, 48, channels=1).reshape(1, 40, 48).repeat(5, 0) * 200).astype(np.uint16)
    second = smooth_image(30, 36)
    (tmp_path / "in").mkdir()
    with tifffile.TiffWriter(tmp_path / "in" / "positions.tif") as tw:
        tw.write(np.clip(first + rng.normal(0, 500, first.shape), 0, 65535).astype(np.uint16), metadata={"axes": "ZYX"})
        tw.write(np.clip(second + rng.normal(0, 20, second.shape), 0, 255).astype(np.uint8), photometric="rgb")
    result = runner.invoke(app, ["run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--weights", str(tiny_model_file), "-v"])
    assert result.exit_code == 0 and "2 images (series), 6 planes" in result.output, result.output
    with tifffile.TiffFile(tmp_path / "in" / "positions.tif") as a, tifffile.TiffFile(tmp_path / "out" / "positions.tif") as b:
        assert [(s.shape, s.dtype) for s in b.series] == [(s.shape, s.dtype) for s in a.series] == [((5, 40, 48), np.uint16), ((30, 36, 3), np.uint8)]
        assert not np.array_equal(b.series[1].asarray(), a.series[1].asarray())


def test_a_stack_beside_its_overview_and_two_images_of_one_shape_stay_apart(tmp_path, tiny_model_file):
    """A z-stack beside a single overview image of its size is no preview of it (the planes are
    compared, not the whole), and two single images of one shape beside it stay two: the output
    names each image's shape, where a reader merged them into a stack of two."""
    (tmp_path / "in").mkdir()
    with tifffile.TiffWriter(tmp_path / "in" / "mixed.tif") as tw:
        tw.write(np.stack([smooth_image(40, 48, channels=1, seed=k).reshape(40, 48) for k in range(5)]), photometric="minisblack",
                 metadata={"axes": "ZYX"})
        tw.write(smooth_image(40, 48, channels=1).reshape(40, 48), photometric="minisblack", metadata={"axes": "YX"})
        tw.write(smooth_image(40, 48, channels=1, seed=5).reshape(40, 48), photometric="minisblack", metadata={"axes": "YX"})
    report = denoise_files(tmp_path / "in", tmp_path / "out", RunOptions(weights=tiny_model_file))
    assert report.count("denoised") == 1 and "3 images (series)" in report.results[0].detail, report.results
    with tifffile.TiffFile(tmp_path / "out" / "mixed.tif") as tf:
        assert [s.shape for s in tf.series] == [(5, 40, 48), (40, 48), (40, 48)]


def test_a_multi_position_ome_tiff_keeps_its_xml(tmp_path, tiny_model_file):
    """An OME-TIFF of two stage positions (bfconvert's of a Leica file): both denoised, the XML
    on the first page as it was, still mapping each plane to its page."""
    (tmp_path / "in").mkdir()
    with tifffile.TiffWriter(tmp_path / "in" / "plate.ome.tif", ome=True) as tw:
        for k in range(2):
            tw.write((smooth_image(24, 20, channels=1, seed=k).reshape(1, 24, 20).repeat(3, 0)).astype(np.uint8),
                     metadata={"axes": "ZYX", "PhysicalSizeX": 0.2, "PhysicalSizeXUnit": "µm"})
    report = denoise_files(tmp_path / "in", tmp_path / "out", RunOptions(weights=tiny_model_file))
    assert report.count("denoised") == 1, report.results
    with tifffile.TiffFile(tmp_path / "in" / "plate.ome.tif") as a, tifffile.TiffFile(tmp_path / "out" / "plate.ome.tif") as b:
        assert b.is_ome and b.pages[0].description == a.pages[0].description and len(b.pages) == 6
        assert [s.shape for s in b.series] == [s.shape for s in a.series] == [(3, 24, 20), (3, 24, 20)]


def test_a_stack_asked_for_in_another_format_fails_alone(tmp_path, tiny_model_file):
    import tifffile

    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "t.tif", _noisy_stack((3, 20, 24)), photometric="minisblack")
    save(tmp_path / "in" / "a.png", smooth_image(20, 24))
    result = runner.invoke(app, ["run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--weights", str(tiny_model_file),
                                 "--format", "png"])
    assert result.exit_code == 1
    assert "t.tif: a TIFF stack can only be written as TIFF, not PNG" in result.output and "Traceback" not in result.output
    assert (tmp_path / "out" / "a.png").exists() and not (tmp_path / "out" / "t.png").exists()


def _stack_layouts() -> dict[str, tuple[np.ndarray, dict]]:
    """Stacks in the layouts a microscope or an analysis pipeline writes, each with a value that
    tests what streaming must keep: one scale across slabs, NaN where it was, pages compressed."""
    grey = _noisy_stack((5, 31, 37)).astype(np.float32) / 255
    nan = grey * 40 - 7  # float on its own range, beyond [0, 1]
    nan[3, 4:9, 5:11] = np.nan  # masked pixels in a slab after the first
    colour = np.stack([_noisy_stack((5, 31, 37), seed=s) for s in (1, 2, 3)], axis=-1)
    return {
        "uint16, uncompressed": ((grey * 4095).round().astype(np.uint16), {"photometric": "minisblack"}),
        "uint8 colour, LZW": (colour, {"photometric": "rgb", "compression": "lzw"}),
        "float with NaN, zlib": (nan, {"photometric": "minisblack", "compression": "zlib"}),
        "int16, ImageJ": (((grey - 0.5) * 2000).round().astype(np.int16).reshape(5, 1, 31, 37),
                          {"imagej": True, "metadata": {"axes": "ZCYX"}}),
        "4 grey channels a pixel": ((np.moveaxis(np.concatenate([grey, grey[::-1]]).reshape(2, 5, 31, 37), 1, -1)[:, :, :, :4] * 255)
                                    .round().astype(np.uint8), {"photometric": "minisblack", "planarconfig": "contig",
                                                                "extrasamples": ("unspecified",) * 3}),
    }


@pytest.mark.parametrize("layout", list(_stack_layouts()))
def test_a_stack_is_streamed_slab_by_slab_to_the_same_output_as_whole(tmp_path, tiny_model_file, layout, monkeypatch):
    """A stack goes through `run` a slab of --batch planes at a time, each read by itself, so it
    need not fit in memory (until 2026-11-29 it was held whole, and one larger than the memory free
    was refused): the output is the one a single slab of the whole stack gives."""
    import tifffile

    from denoisecli.image_io import TiffStack

    arr, kwargs = _stack_layouts()[layout]
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "z.tif", arr, **kwargs)
    read = TiffStack.read
    spans = []

    def recorded(self, start=0, stop=None):
        spans.append((start, stop))
        return read(self, start, stop)

    monkeypatch.setattr(TiffStack, "read", recorded)
    outs = {}
    for batch in (2, 64):
        spans.clear()
        report = denoise_files(tmp_path / "in", tmp_path / f"out{batch}", RunOptions(weights=tiny_model_file, batch=batch))
        assert [r.status for r in report.results] == ["denoised"], report.results[0].reason
        outs[batch] = tifffile.imread(tmp_path / f"out{batch}" / "z.tif")
        with tifffile.TiffFile(tmp_path / f"out{batch}" / "z.tif") as tf:
            assert tf.pages[0].compression == tifffile.TiffFile(tmp_path / "in" / "z.tif").pages[0].compression
    with tifffile.TiffFile(tmp_path / "in" / "z.tif") as tf:
        assert spans == [(0, len(tf.pages))]  # a single slab: the stack read whole
    streamed = outs[2]
    assert streamed.shape == arr.squeeze().shape and streamed.dtype == arr.dtype and not np.array_equal(streamed, arr)
    arr = arr.squeeze()
    if arr.dtype.kind == "f":
        # one scale across slabs; the masked pixels' stand-ins are drawn from a slab's own values, so
        # the plane that holds them differs near them alone
        assert np.array_equal(np.isnan(streamed), np.isnan(arr))
        assert np.allclose(np.delete(streamed, 3, 0), np.delete(outs[64], 3, 0), atol=1e-4 * 47)
        assert np.allclose(streamed[3, 20:], outs[64][3, 20:], atol=1e-4 * 47)
    else:
        assert np.abs(streamed.astype(int) - outs[64].astype(int)).max() <= 1


def test_a_stack_streamed_reads_each_slab_alone(tmp_path, tiny_model_file, monkeypatch):
    """No read covers the whole stack: two slabs at most are held, whatever its length."""
    import tifffile

    import denoisecli.inference as inference

    from denoisecli.image_io import TiffStack

    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "z.tif", _noisy_stack((7, 20, 24)), photometric="minisblack", compression="zlib")
    read, spans = TiffStack.read, []
    monkeypatch.setattr(TiffStack, "read", lambda self, start=0, stop=None: spans.append((start, stop)) or read(self, start, stop))
    report = denoise_files(tmp_path / "in", tmp_path / "out", RunOptions(weights=tiny_model_file, batch=3))
    assert report.results[0].status == "denoised" and report.results[0].info["planes"] == 7
    assert spans == [(0, 3), (3, 6), (6, 7)]
    monkeypatch.setattr(inference, "SLAB_PIXELS", 2 * 20 * 24)  # large planes: fewer a slab than --batch
    spans.clear()
    denoise_files(tmp_path / "in", tmp_path / "out", RunOptions(weights=tiny_model_file, batch=3, overwrite=True))
    assert spans == [(0, 2), (2, 4), (4, 6), (6, 7)]


def test_max_pixels_bounds_each_plane_of_a_stack_not_the_stack(tmp_path, tiny_model_file):
    """A stack is never held whole, so the bomb guard reads each plane: 400 planes of 1024x1024
    were refused by the default 120 MP, a light-sheet stack's everyday size."""
    import tifffile

    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "t.tif", _noisy_stack((4, 50, 60)), photometric="minisblack")  # 12,000 pixels, 3,000 a plane
    result = runner.invoke(app, ["run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--weights", str(tiny_model_file),
                                 "--max-pixels", "0.005"])
    assert result.exit_code == 0, result.output
    assert tifffile.imread(tmp_path / "out" / "t.tif").shape == (4, 50, 60)
    result = runner.invoke(app, ["run", str(tmp_path / "in"), "-o", str(tmp_path / "out2"), "--weights", str(tiny_model_file),
                                 "--max-pixels", "0.002"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "t.tif: 60x50 is 0 megapixels, over the 0 MP safety limit" in " ".join(result.output.split())


def test_a_stack_that_fails_midway_leaves_no_output_and_the_batch_goes_on(tmp_path, tiny_model_file):
    """A page damaged past the first slab is found only once the output is half written: that
    file fails in one line, its temp file is removed, and the other files are denoised."""
    import tifffile

    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "t.tif", _noisy_stack((6, 40, 48)), photometric="minisblack", compression="zlib")
    with tifffile.TiffFile(tmp_path / "in" / "t.tif") as tf:
        offset = tf.pages[4].dataoffsets[0]
    data = bytearray((tmp_path / "in" / "t.tif").read_bytes())
    data[offset : offset + 40] = b"\xff" * 40  # the fifth page's deflate stream
    (tmp_path / "in" / "t.tif").write_bytes(bytes(data))
    save(tmp_path / "in" / "a.png", smooth_image(20, 24))
    result = runner.invoke(app, ["run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--weights", str(tiny_model_file),
                                 "--batch", "2"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "t.tif: cannot decode image, the file is damaged or truncated" in " ".join(result.output.split())
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png"]


def test_a_stack_whose_network_pass_fails_midway_fails_alone(tmp_path, tiny_model_file, monkeypatch):
    """An unforeseen error in the network on a later slab (out of memory on a GPU): that stack fails
    in one line naming it, its half-written output goes, and the next file is denoised."""
    import tifffile

    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "t.tif", _noisy_stack((6, 40, 48)), photometric="minisblack")
    save(tmp_path / "in" / "u.png", smooth_image(20, 24))
    batch, calls = Denoiser.batch, []

    def failing(self, images, *args, **kwargs):
        calls.append(len(images))
        if len(calls) == 2:
            raise RuntimeError("CUDA out of memory")
        return batch(self, images, *args, **kwargs)

    monkeypatch.setattr(Denoiser, "batch", failing)
    report = denoise_files(tmp_path / "in", tmp_path / "out", RunOptions(weights=tiny_model_file, batch=2))
    assert [(r.src.name, r.status) for r in report.results] == [("t.tif", "failed"), ("u.png", "denoised")]
    assert report.results[0].reason == f"{tmp_path / 'in' / 't.tif'}: the network failed on it (CUDA out of memory)"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["u.png"]


def test_a_stack_interrupted_midway_leaves_no_file_behind(tmp_path, tiny_model_file):
    """Ctrl-C while a stack streams into its output: the temp file goes, the output never appears."""
    import tifffile

    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "t.tif", _noisy_stack((6, 40, 48)), photometric="minisblack")

    def interrupt(share: float) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        denoise_files(tmp_path / "in", tmp_path / "out", RunOptions(weights=tiny_model_file, batch=2), on_share=interrupt)
    assert list((tmp_path / "out").iterdir()) == []


def test_hot_pixels_are_written_back_as_read_and_run_v_counts_them(tmp_path):
    """A dim 16-bit image with two hot pixels: they come out as read, the rest is denoised on its
    own range, and `-v` and --json say how many were kept (the shipped grey model)."""
    import json

    import tifffile

    counts = (smooth_image(60, 50, channels=1).astype(np.float64) / 255 * 3000 + 100)
    counts = np.clip(counts + np.random.default_rng(0).normal(0, 60, counts.shape), 0, 65535).round().astype(np.uint16)
    counts[7, 9] = counts[40, 30] = 65535
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "cells.tif", counts)
    result = runner.invoke(app, ["run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-v", "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    assert "2 hot pixels kept as read" in " ".join(result.output.split())
    assert json.loads((tmp_path / "r.json").read_text())["files"][0]["hot_pixels"] == 2
    out = tifffile.imread(tmp_path / "out" / "cells.tif")
    assert out[7, 9] == out[40, 30] == 65535 and out.max() == 65535 and np.sort(out.ravel())[-3] < 4000


def _ome_xml(tiffdata: str, size_z: int, h: int = 30, w: int = 40, uuid: str = "") -> str:
    """An OME-XML for one z stack of 8-bit planes, its planes mapped to pages by ``tiffdata``."""
    own = f' UUID="{uuid}"' if uuid else ""
    return (f'<?xml version="1.0" encoding="UTF-8"?><OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06"{own}>'
            f'<Image ID="Image:0"><Pixels ID="Pixels:0" DimensionOrder="XYZCT" Type="uint8" SizeX="{w}" SizeY="{h}" '
            f'SizeZ="{size_z}" SizeC="1" SizeT="1"><Channel ID="Channel:0:0" SamplesPerPixel="1"/>{tiffdata}</Pixels></Image></OME>')


def _nearest(back: np.ndarray, planes: np.ndarray) -> list[int]:
    """For each plane read back, the input plane it lies nearest (the tiny model barely changes them)."""
    return [int(np.argmin([np.abs(b.astype(int) - p.astype(int)).mean() for p in planes])) for b in back]


def _multifile_ome(folder: Path, planes: np.ndarray) -> None:
    """A dataset over two OME-TIFF files, as Micro-Manager splits an acquisition: each holds half the
    z planes, and each one's OME-XML maps every plane to its file and page."""
    import uuid

    import tifffile

    ids = [f"urn:uuid:{uuid.uuid4()}" for _ in range(2)]
    tiffdata = "".join(f'<TiffData FirstZ="{2 * k}" IFD="0" PlaneCount="2"><UUID FileName="{name}">{ids[k]}</UUID></TiffData>'
                       for k, name in enumerate(("a.ome.tif", "b.ome.tif")))
    for k, name in enumerate(("a.ome.tif", "b.ome.tif")):
        xml = _ome_xml(tiffdata, 4, *planes.shape[1:], uuid=ids[k])
        with tifffile.TiffWriter(folder / name) as tw:
            for i, plane in enumerate(planes[2 * k : 2 * k + 2]):
                tw.write(plane, photometric="minisblack", description=xml if i == 0 else None, metadata=None)


def test_a_multi_file_ome_tiff_dataset_is_denoised_file_by_file_and_stays_one_dataset(tmp_path, tiny_model_file):
    """tifffile read the whole dataset through each of its files: each output held all four planes,
    and the dataset written back read planes 0, 1, 0, 1. Each file now holds its own pages, under
    its own OME-XML, so the outputs make the same dataset."""
    import tifffile

    planes = _noisy_stack((4, 30, 40))
    (tmp_path / "in").mkdir()
    _multifile_ome(tmp_path / "in", planes)
    result = runner.invoke(app, ["run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--weights", str(tiny_model_file)])
    assert result.exit_code == 0, result.output
    for name in ("a.ome.tif", "b.ome.tif"):
        with tifffile.TiffFile(tmp_path / "out" / name) as tf:
            assert len(tf.pages) == 2 and tf.is_ome
    with tifffile.TiffFile(tmp_path / "out" / "a.ome.tif") as tf:
        back = tf.series[0].asarray()
    assert back.shape == planes.shape and _nearest(back, planes) == [0, 1, 2, 3]


@pytest.mark.parametrize("batch", [1, 8])
def test_an_ome_tiff_whose_planes_lie_out_of_page_order_keeps_them_in_place(tmp_path, tiny_model_file, batch):
    """The OME-XML, written back as it was, maps each plane to a page: the pages go back in the
    file's order (streamed or whole), where they were written in the planes' order and so permuted."""
    import tifffile

    xml = _ome_xml('<TiffData FirstZ="0" IFD="2" PlaneCount="1"/><TiffData FirstZ="1" IFD="0" PlaneCount="1"/>'
                   '<TiffData FirstZ="2" IFD="1" PlaneCount="1"/>', 3)
    planes = _noisy_stack((3, 30, 40))
    (tmp_path / "in").mkdir()
    with tifffile.TiffWriter(tmp_path / "in" / "r.ome.tif") as tw:
        for i, z in enumerate((1, 2, 0)):  # page 0 holds z 1, page 1 z 2, page 2 z 0
            tw.write(planes[z], photometric="minisblack", description=xml if i == 0 else None, metadata=None)
    report = denoise_files(tmp_path / "in", tmp_path / "out", RunOptions(weights=tiny_model_file, batch=batch))
    assert report.results[0].status == "denoised"
    with tifffile.TiffFile(tmp_path / "out" / "r.ome.tif") as tf:
        assert _nearest(tf.series[0].asarray(), planes) == [0, 1, 2]


def test_an_ome_tiffs_xml_that_maps_planes_past_a_thumbnail_is_left_out_not_broken(tmp_path, tiny_model_file):
    """A page the XML does not describe (a thumbnail) before the planes: the output's planes could
    not be where the XML says, and kept, it read them shifted by one (and one missing). The XML is
    left out, as -v says, and the planes keep their order and axes."""
    import tifffile

    xml = _ome_xml('<TiffData FirstZ="0" IFD="1" PlaneCount="3"/>', 3)
    planes = _noisy_stack((3, 30, 40))
    (tmp_path / "in").mkdir()
    with tifffile.TiffWriter(tmp_path / "in" / "t.ome.tif") as tw:
        tw.write(np.zeros((6, 8), np.uint8), photometric="minisblack", description=xml, metadata=None)
        for plane in planes:
            tw.write(plane, photometric="minisblack", metadata=None)
    result = runner.invoke(app, ["run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--weights", str(tiny_model_file), "-v"])
    assert result.exit_code == 0, result.output
    assert "left out: its OME-XML, whose map of planes to pages the output could not keep" in " ".join(result.output.split())
    with tifffile.TiffFile(tmp_path / "out" / "t.ome.tif") as tf:
        assert not tf.is_ome and tf.series[0].axes == "ZYX"
        assert _nearest(tf.series[0].asarray(), planes) == [0, 1, 2]


def test_a_stacks_dry_run_reads_every_planes_level_and_writes_nothing(tmp_path):
    """With the shipped grey model, which takes the noise level: each plane's sigma-20 noise read."""
    import tifffile

    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "t.tif", _noisy_stack((5, 40, 48)), photometric="minisblack")
    report = denoise_files(tmp_path / "in", tmp_path / "out", RunOptions(batch=2, dry_run=True))
    (result,) = report.results
    assert result.status == "estimated" and result.info["planes"] == 5 and len(result.info["sigma"]) == 5
    assert all(15 < s < 25 for s in result.info["sigma"]) and not (tmp_path / "out").exists()


def test_run_takes_an_iphone_folder_of_heic_and_writes_heic(tmp_path, tiny_model_file):
    """HEIC in, HEIC out (EXIF kept), as for every format; --format heic converts others to it."""
    pytest.importorskip("pillow_heif")
    from denoisecli.image_io import _heif

    _heif(tmp_path / "x.heic")
    exif = Image.Exif()
    exif[0x0110] = "iPhone"
    (tmp_path / "in").mkdir()
    Image.fromarray(smooth_image(37, 31)).save(tmp_path / "in" / "IMG_0001.HEIC", format="HEIF", quality=90, exif=exif.tobytes())
    save(tmp_path / "in" / "b.png", smooth_image(20, 24))
    result = runner.invoke(app, ["run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--weights", str(tiny_model_file)])
    assert result.exit_code == 0, result.output
    out = Image.open(tmp_path / "out" / "IMG_0001.HEIC")
    assert out.format == "HEIF" and out.size == (31, 37) and out.getexif()[0x0110] == "iPhone"
    result = runner.invoke(app, ["run", str(tmp_path / "in" / "b.png"), "-o", str(tmp_path / "b.heic"),
                                 "--weights", str(tiny_model_file), "--format", "heic"])
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "b.heic").format == "HEIF"


def test_run_keeps_a_cameras_10_bit_hif_at_10_bits(tmp_path, tiny_model_file):
    """Canon and Sony cameras write 10-bit HEIF as .HIF: `run` denoises it on its own levels and
    writes a 10-bit .HIF, where it used to read and write 8 bits."""
    pytest.importorskip("pillow_heif")
    import pillow_heif

    levels = np.round(smooth_image(37, 31).astype(np.float64) / 255 * 1023).astype(np.uint16)
    (tmp_path / "in").mkdir()
    pillow_heif.from_bytes(mode="RGB;10", size=(31, 37), data=levels.tobytes()).save(tmp_path / "in" / "C0001.HIF", quality=90)
    result = runner.invoke(app, ["run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--weights", str(tiny_model_file)])
    assert result.exit_code == 0, result.output
    out = pillow_heif.open_heif(tmp_path / "out" / "C0001.HIF", convert_hdr_to_8bit=False, hdr_to_16bit=False)
    assert out.info["bit_depth"] == 10 and out.size == (31, 37) and np.asarray(out).max() > 255


def test_progress_moves_through_a_stack_pass_by_pass(tmp_path, tiny_model_file):
    """A long stack is one file: after each pass of its planes `run` hears the share done, so its
    progress bar moves through the stack; single images make no such calls."""
    import tifffile

    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "t.tif", _noisy_stack((5, 20, 24)), photometric="minisblack")
    save(tmp_path / "in" / "a.png", smooth_image(20, 24))
    shares = []
    report = denoise_files(tmp_path / "in", tmp_path / "out", RunOptions(weights=tiny_model_file, batch=2), on_share=shares.append)
    assert [r.status for r in report.results] == ["denoised", "denoised"]
    assert shares == pytest.approx([1 / 3, 2 / 3, 1.0])


def test_files_are_reported_in_their_order_around_a_stack(tmp_path, tiny_model_file):
    """`run -v` prints each file as it is recorded: the images before a stack, written in the
    background, came after it."""
    import tifffile

    (tmp_path / "in").mkdir()
    for name in ("a.png", "b.png", "y.png"):
        save(tmp_path / "in" / name, smooth_image(20, 24))
    tifffile.imwrite(tmp_path / "in" / "t.tif", _noisy_stack((5, 20, 24)), photometric="minisblack")
    heard = []
    denoise_files(tmp_path / "in", tmp_path / "out", RunOptions(weights=tiny_model_file, batch=2), on_file=lambda r: heard.append(r.src.name))
    assert heard == ["a.png", "b.png", "t.tif", "y.png"]


def test_a_stack_with_its_last_page_headers_cut_reads_without_stray_log_lines(tmp_path, tiny_model_file):
    """tifffile repairs such a file as it reads it (the planes are intact) and logs each repair;
    `denoise run` keeps its own one line per file and no such noise, and `-v` names the repair."""
    import subprocess
    import sys

    import tifffile

    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "s.tif", _noisy_stack((6, 64, 64)), photometric="minisblack")
    data = (tmp_path / "s.tif").read_bytes()
    (tmp_path / "in" / "s.tif").write_bytes(data[: len(data) - 100])
    out = subprocess.run([sys.executable, "-m", "denoisecli", "run", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
                          "--weights", str(tiny_model_file), "-v"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "(read past damage: invalid page offset" in " ".join((out.stdout + out.stderr).split())
    assert "TiffPages" not in out.stdout + out.stderr and (out.stdout + out.stderr).count("invalid page offset") == 1
    assert tifffile.imread(tmp_path / "out" / "s.tif").shape == (6, 64, 64)


def test_run_takes_several_inputs_as_a_shell_glob_gives_them(tmp_path, tiny_model_file):
    """`denoise run IMG_*.JPG` hands the command many files (Typer refused the second): into one
    -o folder, folders under their own names there, or without -o each beside itself."""
    shoot = tmp_path / "shoot"
    for name in ("IMG_1.png", "IMG_2.png", "notes.png"):
        save(shoot / name, smooth_image(24, 20))
    save(tmp_path / "more" / "sub" / "x.png", smooth_image(20, 24))
    (tmp_path / "more" / "raw.cr2").write_bytes(b"raw")
    result = runner.invoke(app, ["run", str(shoot / "IMG_1.png"), str(shoot / "IMG_2.png"), str(shoot / "IMG_1.png"),
                                 str(tmp_path / "more"), "-o", str(tmp_path / "out"), "--weights", str(tiny_model_file)])
    assert result.exit_code == 0, result.output
    written = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.png"))
    assert written == ["IMG_1.png", "IMG_2.png", "more/sub/x.png"]
    assert "left alone: 1 .cr2" in " ".join(result.output.split())
    result = runner.invoke(app, ["run", str(shoot / "IMG_1.png"), str(tmp_path / "more" / "sub" / "x.png"), "--weights", str(tiny_model_file)])
    assert result.exit_code == 0, result.output
    assert (shoot / "denoised" / "IMG_1.png").exists() and (tmp_path / "more" / "sub" / "denoised" / "x.png").exists()


def test_several_inputs_that_would_share_an_output_are_refused(tmp_path, tiny_model_file):
    save(tmp_path / "a" / "x.png", smooth_image(24, 20))
    save(tmp_path / "b" / "x.png", smooth_image(24, 20))
    result = runner.invoke(app, ["run", str(tmp_path / "a" / "x.png"), str(tmp_path / "b" / "x.png"), "-o", str(tmp_path / "out"),
                                 "--weights", str(tiny_model_file)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "would be written there; denoise them into separate folders" in " ".join(result.output.split())
    result = runner.invoke(app, ["run", str(tmp_path / "a" / "x.png"), str(tmp_path / "b" / "x.png"), "-o", str(tmp_path / "one.png"),
                                 "--weights", str(tiny_model_file)])
    assert result.exit_code == 1 and "with 2 inputs the output is a folder, not an image file" in " ".join(result.output.split())
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("stage,said", [("levels", "its noise level could not be read"), ("batch", "the network failed on it")])
def test_an_unforeseen_error_fails_its_file_alone(tmp_path, tiny_model_file, monkeypatch, stage, said):
    """An unforeseen error while one file's noise level is read, or in its pass of the network,
    ends that file in one line, not the batch with a traceback (a float TIFF with NaN did, before
    its NaN were handled)."""
    save(tmp_path / "in" / "a.png", smooth_image(23, 20, seed=1))
    save(tmp_path / "in" / "b.png", smooth_image(24, 20, seed=2))
    real = getattr(Denoiser, stage)

    def picky(self, images, *args, **kwargs):
        if images[0].shape[-2] == 23:
            raise RuntimeError("linalg.eigh: The algorithm failed to converge\ndetails")
        return real(self, images, *args, **kwargs)

    monkeypatch.setattr(Denoiser, stage, picky)
    report = denoise_files(tmp_path / "in", tmp_path / "out", RunOptions(weights=tiny_model_file))
    assert [(r.src.name, r.status) for r in report.results] == [("a.png", "failed"), ("b.png", "denoised")]
    assert report.results[0].reason == f"{tmp_path / 'in' / 'a.png'}: {said} (linalg.eigh: The algorithm failed to converge)"


def test_run_keeps_nan_where_a_float_tiff_had_it(tmp_path):
    import tifffile

    arr = (np.random.default_rng(0).normal(100, 10, (48, 40))).astype(np.float32)
    arr[10:20, 5:15] = np.nan
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "ratio.tif", arr)
    report = denoise_files(tmp_path / "in", tmp_path / "out", RunOptions())
    assert [r.status for r in report.results] == ["denoised"]
    out = tifffile.imread(tmp_path / "out" / "ratio.tif")
    assert np.array_equal(np.isnan(out), np.isnan(arr)) and out[~np.isnan(arr)].std() < arr[~np.isnan(arr)].std() / 2


@pytest.mark.parametrize("name,fmt", [("clean.jpg", "JPEG"), ("clean.JPEG", "JPEG"), ("clean.tiff", "TIFF"), ("clean.webp", "WEBP")])
def test_an_output_file_name_sets_its_format(tmp_path, tiny_model_file, name, fmt):
    """`run photo.png -o clean.jpg` wrote PNG bytes under a .jpg name: the name now sets the format
    (the name kept as given); --format still wins, and renames the file to its own extension."""
    save(tmp_path / "photo.png", smooth_image(24, 20))
    result = runner.invoke(app, ["run", str(tmp_path / "photo.png"), "-o", str(tmp_path / name), "--weights", str(tiny_model_file)])
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / name).format == fmt
    result = runner.invoke(app, ["run", str(tmp_path / "photo.png"), "-o", str(tmp_path / "x.jpg"), "--format", "png",
                                 "--weights", str(tiny_model_file)])
    assert result.exit_code == 0 and Image.open(tmp_path / "x.png").format == "PNG" and not (tmp_path / "x.jpg").exists()


def test_several_inputs_never_read_the_output_folder_back(tmp_path, tiny_model_file):
    """`denoise run . extra.png -o out` from inside the folder: a rerun finds the earlier outputs
    inside ".", and leaves the whole -o folder out of the inputs, not just its part for "."."""
    save(tmp_path / "shoot" / "a.png", smooth_image(24, 20))
    save(tmp_path / "extra.png", smooth_image(20, 24))
    args = ["run", str(tmp_path / "shoot"), str(tmp_path / "extra.png"), "-o", str(tmp_path / "shoot" / "out"),
            "--weights", str(tiny_model_file)]
    for _ in range(2):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    written = sorted(p.relative_to(tmp_path / "shoot" / "out").as_posix() for p in (tmp_path / "shoot" / "out").rglob("*.png"))
    assert written == ["extra.png", "shoot/a.png"]


def test_file_names_with_brackets_are_printed_as_they_are(tmp_path, tiny_model_file):
    """Rich read "[red]" in a file's name as markup, so the line named another file (bad.png);
    names are printed as they are."""
    save(tmp_path / "in" / "[bold]c.png", smooth_image(24, 20))
    (tmp_path / "in" / "[red]bad.png").write_bytes(b"xx")
    result = runner.invoke(app, ["run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-v", "--weights", str(tiny_model_file)])
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert f"failed: {tmp_path / 'in' / '[red]bad.png'}: not an image file" in text
    assert f"denoised: {tmp_path / 'out' / '[bold]c.png'}" in text


def test_pair_roles_and_keys_of_real_noise_datasets():
    """The word that says which of a pair a file is, as SIDD, PolyU and Nam name them, is left out
    of the key; other names keep theirs, and a folder a pair (scene/GT.png) pairs by its folder."""
    from pathlib import Path

    from denoisecli.files import pair_key, pair_role

    root = Path("/data")
    cases = {"s/0001_GT_SRGB_010.PNG": ("clean", "s/0001_SRGB_010"), "s/0001_NOISY_SRGB_010.PNG": ("noisy", "s/0001_SRGB_010"),
             "s/GT_SRGB_010.PNG": ("clean", "s/SRGB_010"), "s/NOISY_SRGB_010.PNG": ("noisy", "s/SRGB_010"),
             "Canon5D2_bag_mean.JPG": ("clean", "Canon5D2_bag"), "Canon5D2_bag_real.JPG": ("noisy", "Canon5D2_bag"),
             "scene/GT.png": ("clean", "scene/"), "scene/NOISY.png": ("noisy", "scene/"),
             "0001.png": (None, "0001"), "0001_noisy.png": ("noisy", "0001"), "dog-clean.png": ("clean", "dog"),
             "gtx.png": (None, "gtx"), "meaning.tif": (None, "meaning"), "realm_x.png": (None, "realm_x")}
    for name, (role, key) in cases.items():
        assert (pair_role(root / name), pair_key(root / name, root)) == (role, key), name


def test_a_dry_run_estimates_each_files_level_and_writes_nothing(tmp_path):
    """`run --dry-run`: each file's noise level and route, as -v gives them (and --json records
    them), whether its output exists or not, with nothing denoised or written."""
    import json

    rng = np.random.default_rng(0)
    for name, sigma in (("a.png", 10), ("b.png", 30)):
        clean = smooth_image(64, 72, seed=sigma)
        save(tmp_path / "in" / name, np.clip(clean + rng.normal(0, sigma, clean.shape), 0, 255).round().astype(np.uint8))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.png").write_bytes(b"an earlier output")
    result = runner.invoke(app, ["run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--dry-run", "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert f"estimated: {tmp_path / 'in' / 'a.png'} (sigma " in text and "estimated" in text
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png"] and (tmp_path / "out" / "a.png").read_bytes() == b"an earlier output"
    files = json.loads((tmp_path / "r.json").read_text())["files"]
    assert [f["status"] for f in files] == ["estimated", "estimated"] and all(f["output"] is None for f in files)
    assert abs(files[0]["sigma"][0] - 10) < 3 and abs(files[1]["sigma"][0] - 30) < 5


def test_a_streamed_imagej_stack_keeps_its_lut(tmp_path, tiny_model_file):
    """Fiji's 8-bit stack shown through a LUT is a palette TIFF, which was refused: streamed slab by
    slab, each page keeps the LUT, and the calibration stays."""
    import tifffile

    arr = _noisy_stack((5, 31, 37))
    lut = np.zeros((3, 256), np.uint16)
    lut[1] = np.arange(256) * 257
    tifffile.imwrite(tmp_path / "z.tif", arr, imagej=True, colormap=lut, metadata={"axes": "ZYX", "spacing": 0.5, "unit": "um"})
    result = runner.invoke(app, ["run", str(tmp_path / "z.tif"), "-o", str(tmp_path / "out.tif"), "--weights", str(tiny_model_file),
                                 "--batch", "2"])
    assert result.exit_code == 0, result.output
    with tifffile.TiffFile(tmp_path / "out.tif") as tf:
        assert tf.is_imagej and tf.series[0].axes == "ZYX" and tf.imagej_metadata["unit"] == "um"
        assert all(p.photometric.name == "PALETTE" and np.array_equal(p.colormap, lut) for p in tf.pages)
        assert tf.series[0].shape == arr.shape and not np.array_equal(tf.series[0].asarray(), arr)


def test_run_v_says_what_the_output_format_leaves_out(tmp_path, tiny_model_file):
    """XMP too long for a JPEG is left out of one, and `run -v` says so, where it failed the file."""
    import tifffile

    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"/>' + b" " * 70000 + b"</x:xmpmeta>"
    tifffile.imwrite(tmp_path / "a.tif", smooth_image(31, 37), photometric="rgb", extratags=[(700, 1, len(xmp), xmp, True)])
    result = runner.invoke(app, ["run", str(tmp_path / "a.tif"), "-o", str(tmp_path / "out"), "--weights", str(tiny_model_file),
                                 "--format", "jpeg", "-v"])
    assert result.exit_code == 0, result.output
    assert "left out: its XMP (70 kB), too long for a JPEG" in " ".join(result.output.split())
    assert (tmp_path / "out" / "a.jpg").exists()
    result = runner.invoke(app, ["run", str(tmp_path / "a.tif"), "-o", str(tmp_path / "dry"), "--weights", str(tiny_model_file),
                                 "--format", "jpeg", "-v", "--dry-run"])
    assert result.exit_code == 0 and "left out: its XMP (70 kB), too long for a JPEG" in " ".join(result.output.split())

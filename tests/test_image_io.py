import numpy as np
import pytest
import torch
from PIL import Image

from denoisecli.errors import DenoiseError
from denoisecli.image_io import list_images, read_image, write_image

from conftest import save, smooth_image


@pytest.mark.parametrize("mode,channels", [("RGB", 3), ("L", 1)])
def test_png_roundtrip_is_exact(tmp_path, mode, channels):
    arr = smooth_image(37, 31, channels=channels)
    src = save(tmp_path / "x.png", arr)
    img = read_image(src)
    assert img.pixels.shape == (channels, 37, 31) and img.pixels.dtype == torch.float32
    write_image(img, tmp_path / "y.png")
    out = Image.open(tmp_path / "y.png")
    assert out.mode == mode
    assert np.array_equal(np.asarray(out), arr)


def test_rgba_alpha_passes_through(tmp_path):
    arr = np.dstack([smooth_image(20, 21), np.arange(20 * 21, dtype=np.uint8).reshape(20, 21)])
    src = save(tmp_path / "a.png", arr)
    img = read_image(src)
    assert img.channels == 3
    write_image(img, tmp_path / "b.png")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "b.png")), arr)


def test_sixteen_bit_grey_keeps_depth(tmp_path):
    arr = (np.linspace(0, 65535, 23 * 17).reshape(23, 17)).astype(np.uint16)
    Image.fromarray(arr).save(tmp_path / "g16.png")
    img = read_image(tmp_path / "g16.png")
    assert img.bits == 16
    write_image(img, tmp_path / "o16.png")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o16.png")).astype(np.uint16), arr)


def test_jpeg_keeps_format_and_metadata(tmp_path):
    im = Image.fromarray(smooth_image(32, 40))
    exif = Image.Exif()
    exif[0x0112] = 6
    im.save(tmp_path / "p.jpg", exif=exif, dpi=(300, 300))
    img = read_image(tmp_path / "p.jpg")
    write_image(img, tmp_path / "q.jpg")
    out = Image.open(tmp_path / "q.jpg")
    assert out.format == "JPEG"
    assert out.getexif()[0x0112] == 6
    assert round(out.info["dpi"][0]) == 300


@pytest.mark.parametrize("content,reason", [(b"", "not an image"), (b"hello", "not an image")])
def test_bad_files_give_one_clear_error(tmp_path, content, reason):
    p = tmp_path / "bad.png"
    p.write_bytes(content)
    with pytest.raises(DenoiseError, match=reason) as err:
        read_image(p)
    assert str(p) in str(err.value) and "\n" not in str(err.value)


def test_truncated_file_is_an_error(tmp_path):
    src = save(tmp_path / "t.png", smooth_image(64, 64))
    data = src.read_bytes()
    src.write_bytes(data[: len(data) // 2])
    with pytest.raises(DenoiseError, match="t.png"):
        read_image(src)


def test_missing_file(tmp_path):
    with pytest.raises(DenoiseError, match="not found"):
        read_image(tmp_path / "none.png")


def test_write_leaves_no_partial_file_on_failure(tmp_path, monkeypatch):
    img = read_image(save(tmp_path / "x.png", smooth_image(8, 8)))

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", boom)
    with pytest.raises(DenoiseError, match="No space left"):
        write_image(img, tmp_path / "out" / "y.png")
    assert list((tmp_path / "out").iterdir()) == []


def test_list_images_is_recursive_case_insensitive_and_excludes(tmp_path):
    save(tmp_path / "a.PNG", smooth_image(8, 8))
    save(tmp_path / "s" / "b.jpg", smooth_image(8, 8))
    save(tmp_path / "out" / "c.png", smooth_image(8, 8))
    (tmp_path / "notes.txt").write_text("x")
    found = [p.name for p in list_images(tmp_path, exclude=tmp_path / "out")]
    assert found == ["a.PNG", "b.jpg"]

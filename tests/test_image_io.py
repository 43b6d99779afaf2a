import functools
import importlib.util
import io
import json
import struct
import zlib

import imagecodecs
import tifffile

import numpy as np
import pytest
import torch
from PIL import Image

from denoisecli.errors import DenoiseError
from denoisecli.formats import list_images, require_images, unread_files
from denoisecli.image_io import LoadedImage, read_image, write_image

from conftest import requires_avif, save, smooth_image


def test_files_it_does_not_read_come_with_what_to_make_of_them():
    """RAW, microscope files, HDR, other images and video each get the step that turns them into a
    file this tool reads; a kind it knows nothing of gets no advice."""
    from denoisecli.formats import conversion_hints

    assert conversion_hints([".CR2", ".czi"]).startswith(". Camera RAW: export a 16-bit TIFF")
    assert ". Microscope files: save them as OME-TIFF" in conversion_hints([".CR2", ".czi"]) == conversion_hints([".CR2", ".dm4"])
    assert conversion_hints([".exr"]) == ". HDR images: save them as 32-bit float TIFF"
    assert conversion_hints([".mov"]).startswith(". Video: extract its frames first")
    assert conversion_hints([".FITS"]).startswith(". Astronomy images: save them as 32-bit float or 16-bit TIFF")
    assert conversion_hints([".dcm"]).startswith(". DICOM images: save them as 16-bit TIFF")
    assert conversion_hints([".txt", ""]) == ""


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


@pytest.mark.parametrize("content,reason", [(b"", "empty file"), (b"hello", "not an image")])
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


def test_unread_files_counts_what_a_batch_leaves_alone_by_extension(tmp_path):
    save(tmp_path / "a.png", smooth_image(8, 8))
    for name in ("raw/x.CR2", "raw/y.cr2", "anim.gif", "README", ".DS_Store", ".cache/z.heic", "out/w.gif"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert unread_files(tmp_path, exclude=tmp_path / "out") == {".cr2": 2, "": 1, ".gif": 1}
    assert unread_files(tmp_path / "a.png") == {}


def test_a_folder_without_images_says_what_it_holds(tmp_path):
    for name in ("a.cr2", "b.cr2", "a.xmp"):
        (tmp_path / name).write_bytes(b"x")
    with pytest.raises(DenoiseError, match=r"no images found .*; it holds 2 \.cr2, 1 \.xmp\. Camera RAW: export a 16-bit TIFF"):
        require_images(tmp_path)
    save(tmp_path / "c.jpg", smooth_image(8, 8))
    assert require_images(tmp_path) == [tmp_path / "c.jpg"]


@functools.cache
def _icc() -> bytes:
    """One profile per run: lcms stamps its creation time, so two builds a second apart differ."""
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _float_arr(shape, seed=0):
    return np.random.default_rng(seed).random(shape)


def test_sixteen_bit_colour_png_roundtrip_with_alpha_and_metadata(tmp_path):
    import imagecodecs

    arr = (_float_arr((21, 19, 4)) * 65535).astype(np.uint16)
    (tmp_path / "c16.png").write_bytes(imagecodecs.png_encode(arr))
    img = read_image(tmp_path / "c16.png")
    assert img.bits == 16 and img.channels == 3 and img.alpha.dtype == np.uint16
    assert torch.allclose(img.pixels[0], torch.from_numpy(arr[:, :, 0] / 65535).float(), atol=1e-6)
    img.info.update(icc_profile=_icc(), dpi=(300, 300))
    write_image(img, tmp_path / "o16.png")
    assert np.array_equal(imagecodecs.png_decode((tmp_path / "o16.png").read_bytes()), arr)
    out = Image.open(tmp_path / "o16.png")
    assert out.info["icc_profile"] == img.info["icc_profile"] and round(out.info["dpi"][0]) == 300


@pytest.mark.parametrize("shape,dtype", [((23, 17), np.uint16), ((23, 17, 3), np.uint16), ((23, 17, 3), np.uint8), ((23, 17, 4), np.uint16)])
def test_tiff_roundtrip_keeps_depth_channels_and_alpha(tmp_path, shape, dtype):
    import tifffile

    top = np.iinfo(dtype).max
    arr = (_float_arr(shape) * top).astype(dtype)
    extras = ("unassalpha",) if len(shape) == 3 and shape[2] == 4 else None
    tifffile.imwrite(tmp_path / "in.tif", arr, photometric="rgb" if len(shape) == 3 else "minisblack",
                     extrasamples=extras, resolution=(300, 300), iccprofile=_icc(), compression="zlib")
    img = read_image(tmp_path / "in.tif")
    assert img.bits == (16 if dtype == np.uint16 else 8) and img.format == "TIFF"
    write_image(img, tmp_path / "out.tif")
    with tifffile.TiffFile(tmp_path / "out.tif") as tf:
        page = tf.pages[0]
        assert np.array_equal(page.asarray(), arr)
        assert bytes(page.tags[34675].value) == _icc()
        assert page.tags["XResolution"].value[0] / page.tags["XResolution"].value[1] == pytest.approx(300)


@pytest.mark.parametrize("dtype,compression", [(np.uint8, "lzw"), (np.uint16, "zlib"), (np.float32, "zlib")])
def test_tiff_keeps_its_compression_and_predictor(tmp_path, dtype, compression):
    arr = _float_arr((29, 31, 3)) * (np.iinfo(dtype).max if dtype != np.float32 else 1)
    tifffile.imwrite(tmp_path / "in.tif", arr.astype(dtype), photometric="rgb", compression=compression, predictor=True)
    write_image(read_image(tmp_path / "in.tif"), tmp_path / "out.tif")
    with tifffile.TiffFile(tmp_path / "in.tif") as a, tifffile.TiffFile(tmp_path / "out.tif") as b:
        assert b.pages[0].predictor == a.pages[0].predictor > 1 and b.pages[0].compression == a.pages[0].compression
        out = b.pages[0].asarray()
    if dtype == np.float32:
        assert np.allclose(out, arr, atol=1e-6)
    else:
        assert np.array_equal(out, arr.astype(dtype))


def test_float_tiff_keeps_its_range(tmp_path):
    import tifffile

    arr = (_float_arr((19, 23)) * 1000 - 50).astype(np.float32)
    tifffile.imwrite(tmp_path / "f.tif", arr)
    img = read_image(tmp_path / "f.tif")
    assert img.bits == 32 and 0 <= img.pixels.min() and img.pixels.max() <= 1
    write_image(img, tmp_path / "g.tif")
    out = tifffile.imread(tmp_path / "g.tif")
    assert out.dtype == np.float32 and np.allclose(out, arr, atol=1e-3)


def test_la_and_palette_images(tmp_path):
    la = Image.fromarray(np.dstack([smooth_image(16, 18, channels=1), np.full((16, 18), 77, np.uint8)]), mode="LA")
    la.save(tmp_path / "la.png")
    img = read_image(tmp_path / "la.png")
    assert img.channels == 1 and int(img.alpha[0, 0]) == 77
    write_image(img, tmp_path / "la2.png")
    assert Image.open(tmp_path / "la2.png").mode == "LA"
    Image.fromarray(smooth_image(16, 18)).convert("P").save(tmp_path / "p.png")
    assert read_image(tmp_path / "p.png").channels == 3


@pytest.mark.parametrize("transparent", [False, True])
def test_a_grey_palette_png_is_grey_in_and_out(tmp_path, transparent):
    """A scan or a chart saved as indexed colour with a grey palette came out as RGB, three equal
    channels three times the size; it is read and written as grey (with its transparent index as alpha)."""
    grey = smooth_image(16, 18, channels=1).reshape(16, 18)
    Image.fromarray(grey).convert("P").save(tmp_path / "p.png", **({"transparency": int(grey[0, 0])} if transparent else {}))
    img = read_image(tmp_path / "p.png")
    assert img.channels == 1 and (img.alpha is not None) == transparent
    assert np.array_equal(np.round(img.pixels[0].numpy() * 255).astype(np.uint8)[grey != grey[0, 0]], grey[grey != grey[0, 0]])
    write_image(img, tmp_path / "out.png")
    assert Image.open(tmp_path / "out.png").mode == ("LA" if transparent else "L")


def test_cmyk_is_refused_clearly(tmp_path):
    Image.fromarray(smooth_image(8, 8)).convert("CMYK").save(tmp_path / "c.jpg")
    with pytest.raises(DenoiseError, match="CMYK images are not supported"):
        read_image(tmp_path / "c.jpg")


def test_png_keeps_exif_orientation_icc_and_dpi(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 8
    Image.fromarray(smooth_image(12, 20)).save(tmp_path / "e.png", exif=exif, icc_profile=_icc(), dpi=(72, 72))
    img = read_image(tmp_path / "e.png")
    write_image(img, tmp_path / "f.png")
    out = Image.open(tmp_path / "f.png")
    assert out.getexif()[0x0112] == 8 and out.info["icc_profile"] == _icc() and out.size == (20, 12)


XMP = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
       b'<rdf:Description xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/" '
       b'xmp:Rating="5"><dc:rights>\xc2\xa9 A. Photographer</dc:rights></rdf:Description></rdf:RDF></x:xmpmeta>')


@pytest.mark.parametrize("fmt,bits", [("png", 8), ("png", 16), ("jpeg", 8), ("webp", 8), ("tiff", 8), ("tiff", 16), ("heic", 8), ("heic", 16)])
def test_xmp_is_kept_in_every_format_that_holds_it(tmp_path, fmt, bits):
    """A photographer's rating, keywords and copyright live in XMP (Lightroom embeds it in what it
    exports): a denoised copy keeps it, from any format into any that can carry it."""
    if fmt == "heic":
        pytest.importorskip("pillow_heif")
    Image.fromarray(smooth_image(31, 37)).save(tmp_path / "in.jpg", xmp=XMP)
    img = read_image(tmp_path / "in.jpg")
    assert img.info["xmp"] == XMP
    img = LoadedImage(img.pixels, img.format, bits, None, img.info)
    write_image(img, tmp_path / f"out.{fmt}", fmt=fmt)
    back = read_image(tmp_path / f"out.{fmt}")
    assert back.info["xmp"] == XMP and back.bits == bits
    write_image(back, tmp_path / f"again.{fmt}")  # and from that format on
    assert read_image(tmp_path / f"again.{fmt}").info["xmp"] == XMP


def test_jpeg_keeps_chroma_subsampling_and_icc(tmp_path):
    from PIL import JpegImagePlugin

    Image.fromarray(smooth_image(32, 32)).save(tmp_path / "s.jpg", subsampling=2, icc_profile=_icc())
    img = read_image(tmp_path / "s.jpg")
    write_image(img, tmp_path / "t.jpg", jpeg_quality=90)
    out = Image.open(tmp_path / "t.jpg")
    assert JpegImagePlugin.get_sampling(out) == 2 and out.info["icc_profile"] == _icc()


@pytest.mark.parametrize("channels", [3, 1])
def test_heic_keeps_format_metadata_and_chroma(tmp_path, channels):
    """An iPhone's photos are HEIC: read through pillow-heif, written back as HEIC with the
    input's EXIF, ICC profile and chroma subsampling, close to the pixels at quality 95."""
    pytest.importorskip("pillow_heif")
    from denoisecli.image_io import _heif

    _heif(tmp_path / "x.heic")
    arr = smooth_image(31, 37, channels=channels)
    exif = Image.Exif()
    exif[0x010F] = "Phone"
    Image.fromarray(arr).save(tmp_path / "x.HEIC", format="HEIF", quality=95, chroma=420, exif=exif.tobytes(),
                              icc_profile=_icc())
    img = read_image(tmp_path / "x.HEIC")
    assert img.format == "HEIF" and img.channels == channels and img.pixels.shape[-2:] == (31, 37)
    assert img.info.get("chroma") == (420 if channels == 3 else None)  # grey HEIC has no chroma
    write_image(img, tmp_path / "y.heic")
    out = Image.open(tmp_path / "y.heic")
    assert out.format == "HEIF" and out.getexif()[0x010F] == "Phone" and out.info["icc_profile"] == _icc()
    assert channels == 1 or out.info["chroma"] == 420
    back = np.asarray(out.convert("RGB" if channels == 3 else "L"), np.float64)
    assert 10 * np.log10(255**2 / ((back - arr) ** 2).mean()) > 35
    write_image(read_image(tmp_path / "y.heic"), tmp_path / "z.png", fmt="png")
    assert Image.open(tmp_path / "z.png").format == "PNG"


HDR_NCLX = {"color_primaries": 9, "transfer_characteristics": 16, "matrix_coefficients": 9, "full_range_flag": 1}  # BT.2020, PQ


def _nclx(info: dict) -> dict:
    """The coded fields of a HEIF's nclx colour description (pillow-heif adds the primaries' xy)."""
    return {k: info["nclx_profile"][k] for k in HDR_NCLX}


def test_heic_keeps_its_nclx_colour_description(tmp_path):
    """A phone's HDR photo describes its colour by nclx (BT.2020 primaries, PQ or HLG transfer)
    rather than an ICC profile; written without it, the same pixels would be labelled sRGB."""
    pytest.importorskip("pillow_heif")
    from denoisecli.image_io import _heif

    _heif(tmp_path / "x.heic")
    Image.fromarray(smooth_image(31, 37)).save(tmp_path / "x.heic", quality=95, nclx_profile=HDR_NCLX)
    write_image(read_image(tmp_path / "x.heic"), tmp_path / "y.heic")
    assert _nclx(Image.open(tmp_path / "y.heic").info) == HDR_NCLX


def _deep_heif(path, levels: np.ndarray, depth: int, **save) -> None:
    """Write ``levels`` (uint16 in 0..2**depth-1, HxW or HxWxC) as a HEIF of that depth, as a
    camera writes its HIF; pillow-heif's Pillow plugin only writes 8 bits."""
    import pillow_heif

    mode = {2: "L", 3: {3: "RGB", 4: "RGBA"}.get(levels.shape[-1])}[levels.ndim]
    pillow_heif.from_bytes(mode=f"{mode};{depth}", size=(levels.shape[1], levels.shape[0]),
                           data=np.ascontiguousarray(levels).tobytes()).save(path, **save)


@pytest.mark.parametrize("depth,channels", [(10, 3), (12, 3), (10, 1)])
def test_deep_heif_is_read_and_written_at_its_depth(tmp_path, depth, channels):
    """A camera's 10-bit HIF (Canon, Sony) or a phone's 10-bit HDR photo keeps its depth: read
    on its own levels (Pillow's plugin would hand out 8 bits), written back as HEIF of the same
    depth with its EXIF and chroma, and as 16 bits in formats that hold them."""
    pytest.importorskip("pillow_heif")
    top = 2**depth - 1
    levels = np.round(smooth_image(37, 31, channels=channels).astype(np.float64) / 255 * top).astype(np.uint16)
    exif = Image.Exif()
    exif[0x010F] = "Camera"
    _deep_heif(tmp_path / "IMG_1.HIF", levels, depth, quality=-1, chroma=422, exif=exif.tobytes(), nclx_profile=HDR_NCLX)
    assert [p.name for p in list_images(tmp_path)] == ["IMG_1.HIF"]
    img = read_image(tmp_path / "IMG_1.HIF")
    assert img.bits == 16 and img.info["depth"] == depth and img.channels == channels
    assert channels == 1 or img.info["chroma"] == 422
    read = np.moveaxis(img.pixels.numpy(), 0, -1).reshape(levels.shape) * top
    assert np.allclose(read, np.round(read), atol=1e-3)  # whole levels of the file
    assert np.any(np.round(read) % 2 ** (depth - 8))  # finer than 8 bits
    assert ((read - levels) ** 2).mean() < top**2 / 10**3.8  # above 38 dB: lossless luma, chroma at 4:2:2 (40.9)
    write_image(img, tmp_path / "out.HIF")
    out = Image.open(tmp_path / "out.HIF")
    assert out.info["bit_depth"] == depth and out.getexif()[0x010F] == "Camera" and _nclx(out.info) == HDR_NCLX
    back = read_image(tmp_path / "out.HIF")
    assert 10 * np.log10(1 / float(((back.pixels - img.pixels) ** 2).mean())) > 40
    write_image(img, tmp_path / "out.png", fmt="png")
    assert read_image(tmp_path / "out.png").bits == 16


def test_deep_images_become_10_bit_heif_with_alpha(tmp_path):
    """A 16-bit PNG asked for as HEIC is written at 10 bits, not 8; alpha goes with it."""
    pytest.importorskip("pillow_heif")
    from denoisecli.image_io import _heif

    arr = smooth_image(31, 37).astype(np.uint16) * 257
    alpha = np.tile(np.linspace(0, 65535, 37), (31, 1)).astype(np.uint16)
    img = LoadedImage(torch.from_numpy(np.moveaxis(arr / 65535, -1, 0)).float(), "PNG", 16, alpha, {})
    write_image(img, tmp_path / "x.heic", fmt="heic", jpeg_quality=100)
    _heif(tmp_path / "x.heic")
    assert Image.open(tmp_path / "x.heic").info["bit_depth"] == 10
    back = read_image(tmp_path / "x.heic")
    assert back.info["depth"] == 10 and back.alpha is not None and back.alpha.dtype == np.uint16
    assert np.abs(back.alpha.astype(np.int64) - alpha).max() <= 3 * 64  # a few 10-bit levels
    assert 10 * np.log10(1 / float(((back.pixels - img.pixels) ** 2).mean())) > 40


@requires_avif
@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA"])
def test_avif_round_trips_with_its_metadata(tmp_path, mode):
    """AVIF (the web's photos) through Pillow's own plugin: read, and written back as AVIF with
    EXIF, ICC profile, XMP and alpha, close to the pixels at quality 95."""
    arr = smooth_image(31, 37, channels=1 if mode == "L" else 3)
    im = Image.fromarray(arr)
    if mode == "RGBA":
        im.putalpha(Image.fromarray(np.tile(np.linspace(0, 255, 37), (31, 1)).astype(np.uint8)))
    exif = Image.Exif()
    exif[0x010F] = "Web"
    im.save(tmp_path / "x.AVIF", quality=95, exif=exif.tobytes(), icc_profile=_icc(), xmp=XMP)
    img = read_image(tmp_path / "x.AVIF")
    assert img.format == "AVIF" and img.channels == (1 if mode == "L" else 3) and (img.alpha is not None) == (mode == "RGBA")
    write_image(img, tmp_path / "y.avif")
    out = Image.open(tmp_path / "y.avif")
    assert out.format == "AVIF" and out.mode == mode and out.getexif()[0x010F] == "Web"
    assert out.info["icc_profile"] == _icc() and out.info["xmp"] == XMP
    back = np.asarray(out.convert("RGB" if mode != "L" else "L"), np.float64)
    assert 10 * np.log10(255**2 / ((back - arr) ** 2).mean()) > 35


def _avif_nclx(data: bytes) -> tuple:
    at = data.find(b"colrnclx") + 8
    return struct.unpack(">HHH", data[at : at + 6])


@requires_avif
@pytest.mark.parametrize("depth, alpha", [(10, False), (12, True)])
def test_an_hdr_avif_keeps_its_depth_and_colour_description(tmp_path, depth, alpha):
    """Lightroom's HDR AVIF (10 bits, BT.2020 primaries, PQ) came out as 8-bit sRGB: its colours
    shown wrong. It is read at its depth and written back at it, with its nclx; a PNG of it carries
    the nclx in cICP, at 16 bits."""
    top = 2**depth - 1
    levels = (smooth_image(31, 37).astype(np.float64) / 255 * top).round().astype(np.uint16)
    if alpha:
        levels = np.concatenate([levels, np.tile(np.linspace(0, top, 37), (31, 1)).round().astype(np.uint16)[..., None]], -1)
    (tmp_path / "hdr.avif").write_bytes(imagecodecs.avif_encode(levels, 100, bitspersample=depth, primaries=9, transfer=16, matrix=9))
    img = read_image(tmp_path / "hdr.avif")
    assert (img.bits, img.info["depth"], img.channels, img.alpha is not None) == (16, depth, 3, alpha)
    assert _nclx(img.info) == HDR_NCLX
    assert np.abs(img.pixels.permute(1, 2, 0).numpy() * top - levels[..., :3]).max() <= 0.02 * top
    write_image(img, tmp_path / "out.avif", jpeg_quality=95)
    data = (tmp_path / "out.avif").read_bytes()
    back = imagecodecs.avif_decode(data)
    assert _avif_nclx(data) == (9, 16, 9) and back.dtype == np.uint16 and back.shape == levels.shape
    assert 20 * np.log10(top / np.sqrt(((back.astype(np.float64) - levels) ** 2).mean())) > 38
    write_image(img, tmp_path / "out.png", fmt="png")
    png = (tmp_path / "out.png").read_bytes()
    assert png[png.find(b"cICP") + 4 : png.find(b"cICP") + 8] == bytes([9, 16, 0, 1])
    assert imagecodecs.png_decode(png).dtype == np.uint16


@requires_avif
def test_a_10_bit_sdr_avif_is_read_at_its_depth(tmp_path):
    """A 10-bit AVIF in sRGB is read at its depth (Pillow hands out 8 bits), and written as AVIF
    by Pillow's plugin, which keeps EXIF and XMP, at 8 bits: sRGB needs no more."""
    levels = (smooth_image(31, 37).astype(np.float64) / 255 * 1023).round().astype(np.uint16)
    (tmp_path / "sdr.avif").write_bytes(imagecodecs.avif_encode(levels, 100, bitspersample=10, primaries=1, transfer=13, matrix=6))
    img = read_image(tmp_path / "sdr.avif")
    assert (img.bits, img.info["depth"]) == (16, 10)
    assert np.abs(img.pixels.permute(1, 2, 0).numpy() * 1023 - levels).max() <= 0.02 * 1023
    write_image(img, tmp_path / "out.avif")
    assert imagecodecs.avif_decode((tmp_path / "out.avif").read_bytes()).dtype == np.uint8


def test_avif_without_pillow_support_is_one_clear_line(tmp_path, monkeypatch):
    (tmp_path / "x.avif").write_bytes(b"\x00\x00\x00\x1cftypavif")
    Image.init()
    monkeypatch.delitem(Image.OPEN, "AVIF", raising=False)
    with pytest.raises(DenoiseError, match=r"x.avif: this Pillow cannot read or write AVIF \(recent releases can: pip install -U pillow\)"):
        read_image(tmp_path / "x.avif")


def test_heic_without_its_plugin_is_one_clear_line(tmp_path, monkeypatch):
    """pillow-heif is an optional extra (its wheels bundle the GPL x265 encoder): without it a HEIC
    file fails in one line that says what to install, and is not silently left alone."""
    import sys

    (tmp_path / "IMG_1.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")
    monkeypatch.setitem(sys.modules, "pillow_heif", None)
    with pytest.raises(DenoiseError, match=r"IMG_1.heic: HEIC/HEIF images need the optional pillow-heif package \(pip install 'denoisecli\[heif\]'\)"):
        read_image(tmp_path / "IMG_1.heic")
    assert [p.name for p in list_images(tmp_path)] == ["IMG_1.heic"]


@pytest.mark.parametrize("fmt,suffix", [("WEBP", ".webp"), ("BMP", ".bmp"), ("PNG", ".PNG")])
def test_other_formats_roundtrip(tmp_path, fmt, suffix):
    arr = smooth_image(15, 13)
    Image.fromarray(arr).save(tmp_path / f"x{suffix}", format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    img = read_image(tmp_path / f"x{suffix}")
    write_image(img, tmp_path / f"y{suffix}")
    assert np.array_equal(np.asarray(Image.open(tmp_path / f"y{suffix}").convert("RGB")), arr)


@pytest.mark.parametrize("bits", [8, 16])
def test_png_is_written_at_fast_settings_without_growing(tmp_path, bits):
    """Run-length coding (image_io.PNG_STRATEGY) must stay lossless and cost a photo-like image
    little size against the encoders' defaults (about 1% on denoised Kodak24)."""
    rng = np.random.default_rng(0)
    arr = (smooth_image(97, 101).astype(np.float32) + rng.normal(0, 2, (97, 101, 3))).clip(0, 255)
    arr = (arr * 257).round().astype(np.uint16) if bits == 16 else arr.round().astype(np.uint8)
    tifffile.imwrite(tmp_path / "x.tif", arr, photometric="rgb")
    img = read_image(tmp_path / "x.tif")
    write_image(img, tmp_path / "y.png", fmt="png")
    out = read_image(tmp_path / "y.png")
    assert out.bits == bits and torch.equal(out.pixels, img.pixels)
    default = len(imagecodecs.png_encode(arr)) if bits == 16 else _pillow_png_size(arr)
    assert (tmp_path / "y.png").stat().st_size <= 1.05 * default


def _pillow_png_size(arr: np.ndarray) -> int:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.tell()


def test_png_converted_to_lossless_webp_is_exact(tmp_path):
    arr = smooth_image(23, 29)
    img = read_image(save(tmp_path / "a.png", arr))
    write_image(img, tmp_path / "a.webp", fmt="webp")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a.webp").convert("RGB")), arr)


def test_format_conversion_on_write(tmp_path):
    img = read_image(save(tmp_path / "a.png", smooth_image(9, 9)))
    write_image(img, tmp_path / "a.jpg", fmt="jpeg")
    assert Image.open(tmp_path / "a.jpg").format == "JPEG"


def test_decompression_bomb_limit(tmp_path):
    src = save(tmp_path / "big.png", smooth_image(60, 50))
    with pytest.raises(DenoiseError, match="--max-pixels"):
        read_image(src, max_pixels=1000)
    assert read_image(src, max_pixels=None).pixels.shape == (3, 60, 50)


def test_multipage_tiff_is_refused_unless_stacks_are_asked_for(tmp_path):
    """A caller that takes one image per file gets a stack refused in one line; every command asks
    for stacks."""
    import tifffile

    tifffile.imwrite(tmp_path / "stack.tif", (_float_arr((5, 10, 12)) * 255).astype(np.uint8), photometric="minisblack")
    with pytest.raises(DenoiseError, match=r"stack.tif: a multi-page TIFF stack.*stacks=True"):
        read_image(tmp_path / "stack.tif")
    assert read_image(tmp_path / "stack.tif", stacks=True).pixels.shape == (5, 1, 10, 12)
    tifffile.imwrite(tmp_path / "one.tif", np.zeros((1, 10, 12), np.uint8), photometric="minisblack", metadata={"axes": "ZYX"})
    assert read_image(tmp_path / "one.tif").pixels.shape == (1, 10, 12)
    assert read_image(tmp_path / "one.tif", stacks=True).info["stack"]["shape"] == (1,)


def test_imagej_hyperstack_round_trips_with_its_axes_calibration_and_compression(tmp_path):
    """A microscope's 16-bit hyperstack (time, z, channel) comes back as the same hyperstack: shape,
    axes, ImageJ calibration and labels, resolution, compression and every value."""
    import tifffile

    arr = (_float_arr((2, 3, 2, 31, 37)) * 65535).astype(np.uint16)
    labels = [f"plane {i}" for i in range(12)]
    tifffile.imwrite(tmp_path / "hyper.tif", arr, imagej=True, compression="zlib", resolution=(2.5, 2.5),
                     metadata={"axes": "TZCYX", "spacing": 0.3, "unit": "um", "finterval": 2.0, "Labels": labels})
    img = read_image(tmp_path / "hyper.tif", stacks=True)
    assert img.pixels.shape == (12, 1, 31, 37) and img.pixels.dtype == torch.float32 and img.bits == 16
    assert img.channels == 1 and len(img.planes) == 12 and img.megapixels == pytest.approx(12 * 31 * 37 / 1e6)
    assert torch.equal(img.planes[5][0], torch.from_numpy(arr.reshape(12, 31, 37)[5].astype(np.float32) / 65535))
    write_image(img, tmp_path / "out.tif")
    with tifffile.TiffFile(tmp_path / "out.tif") as tf:
        series = tf.series[0]
        assert tf.is_imagej and series.shape == arr.shape and series.axes == "TZCYX"
        assert np.array_equal(series.asarray(), arr)
        meta = tf.imagej_metadata
        assert (meta["spacing"], meta["unit"], meta["finterval"], meta["Labels"]) == (0.3, "um", 2.0, labels)
        assert tf.pages[0].compression.name == "ADOBE_DEFLATE"
        assert tf.pages[0].tags["XResolution"].value == (5, 2)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_plain_colour_and_float_stacks_round_trip(tmp_path, dtype):
    """A stack tifffile wrote without ImageJ's metadata, RGB planes or float data: the same series
    back. Float data is read on the whole stack's range, so its planes keep their brightness."""
    import tifffile

    arr = _float_arr((4, 31, 37, 3)) if dtype == np.float32 else (_float_arr((4, 31, 37, 3)) * 255).astype(dtype)
    if dtype == np.float32:
        arr = (arr * 1000 - 200).astype(dtype)
        arr[2] /= 10
    tifffile.imwrite(tmp_path / "rgb.tif", arr, photometric="rgb", metadata={"axes": "ZYXS"})
    img = read_image(tmp_path / "rgb.tif", stacks=True)
    assert img.pixels.shape == (4, 3, 31, 37) and img.channels == 3
    if dtype == np.float32:
        assert float(img.pixels[2].max()) < 0.3 < float(img.pixels[1].max())
    write_image(img, tmp_path / "out.tif")
    with tifffile.TiffFile(tmp_path / "out.tif") as tf:
        assert tf.series[0].shape == arr.shape and tf.series[0].axes == "ZYXS" and not tf.is_imagej
        back = tf.series[0].asarray()
    assert back.dtype == arr.dtype
    assert np.array_equal(back, arr) if dtype == np.uint8 else np.allclose(back, arr, atol=1e-3)


def test_what_tifffile_repairs_is_kept_with_the_image_for_run_v(tmp_path):
    """A stack whose last page headers were cut still reads (its planes are intact); what tifffile
    worked around goes with the image, once per kind, and an intact file carries nothing."""
    planes = (np.arange(6 * 64 * 64) % 251).astype(np.uint8).reshape(6, 64, 64)
    tifffile.imwrite(tmp_path / "s.tif", planes, photometric="minisblack")
    assert "notes" not in read_image(tmp_path / "s.tif", stacks=True).info
    data = (tmp_path / "s.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) - 100])
    img = read_image(tmp_path / "cut.tif", stacks=True)
    assert [n.split(" ")[:6] for n in img.info["notes"]] == [["read", "past", "damage:", "invalid", "page", "offset"]]
    assert np.array_equal(np.round(img.pixels[:, 0].numpy() * 255), planes)


def test_stack_limits_count_every_plane_and_alpha_is_refused(tmp_path):
    import tifffile

    tifffile.imwrite(tmp_path / "tall.tif", np.zeros((10, 20, 30), np.uint8), photometric="minisblack")
    with pytest.raises(DenoiseError, match="tall.tif: a stack of 10 planes of 30x20 .*--max-pixels"):
        read_image(tmp_path / "tall.tif", max_pixels=5000, stacks=True)
    assert read_image(tmp_path / "tall.tif", max_pixels=6000, stacks=True).pixels.shape == (10, 1, 20, 30)
    tifffile.imwrite(tmp_path / "alpha.tif", np.zeros((3, 20, 30, 4), np.uint8), photometric="rgb", extrasamples=["unassalpha"])
    with pytest.raises(DenoiseError, match="alpha.tif: TIFF stacks with an alpha channel are not supported"):
        read_image(tmp_path / "alpha.tif", stacks=True)


@pytest.mark.parametrize("layout", ["uint16", "uint16 big-endian", "ImageJ over 4 GB", "uint16 zlib", "float zlib", "3 grey channels, separate"])
def test_a_tiff_stack_reads_slab_by_slab_as_it_reads_whole_and_writes_back_the_same(tmp_path, layout):
    """``TiffStack`` (which `run` streams) reads any run of pages alone, each on the whole file's
    scale (float: its range, which a slab of its own would not have), and writes the slabs back as
    the file's own layout."""
    from denoisecli.image_io import TiffStack, write_stacks

    arr = _float_arr((6, 31, 37))
    kwargs: dict = {"photometric": "minisblack"}
    if layout == "float zlib":
        arr, kwargs["compression"] = (arr * 300 - 50).astype(np.float32), "zlib"
        arr[4] /= 10  # a slab of its own would be stretched
    elif layout == "3 grey channels, separate":
        arr = np.round(arr.reshape(2, 3, 31, 37) * 255).astype(np.uint8)
        kwargs.update(planarconfig="separate", extrasamples=("unspecified",) * 2, compression="lzw")
    else:
        arr = np.round(arr * 65535).astype(np.uint16)
        kwargs.update({"uint16 big-endian": {"byteorder": ">"}, "uint16 zlib": {"compression": "zlib"},
                       "ImageJ over 4 GB": {"imagej": True, "truncate": True}}.get(layout, {}))  # ImageJ's: one page header
    tifffile.imwrite(tmp_path / "z.tif", arr, **kwargs)
    whole = read_image(tmp_path / "z.tif", stacks=True).pixels
    with TiffStack(tmp_path / "z.tif") as stack:
        per = stack.samples
        slabs = [stack.read(i, min(i + 2, stack.pages)) for i in range(0, stack.pages, 2)]
        for i, slab in zip(range(0, stack.pages, 2), slabs):
            assert torch.equal(slab.pixels, whole[i * per : (i + 2) * per])
        write_stacks(tmp_path / "out.tif", [stack], [iter(slabs)])
    back = tifffile.imread(tmp_path / "out.tif")
    assert back.shape == arr.shape and back.dtype == arr.dtype
    assert np.array_equal(back, arr) if arr.dtype != np.float32 else np.allclose(back, arr, atol=1e-3)
    with tifffile.TiffFile(tmp_path / "out.tif") as tf:
        assert tf.pages[0].compression == tifffile.TiffFile(tmp_path / "z.tif").pages[0].compression


def test_a_tiffs_descriptive_tags_and_georeferencing_go_back_into_it(tmp_path):
    """A scanner's or camera's TIFF keeps its make, model, orientation (a portrait shot came out
    sideways), date, artist, copyright and description, and a GeoTIFF its georeferencing and no-data
    value: all were dropped until 2026-11-29. The
    layout's own description (tifffile's shape, ImageJ's) is written anew, not copied."""
    arr = smooth_image(37, 31)
    tags = [(271, "s", 0, "Nikon", True), (272, "s", 0, "D850", True), (274, "H", 1, 6, True), (306, "s", 0, "2026:11:29 10:00:00", True),
            (315, "s", 0, "A. Photographer", True), (33432, "s", 0, "(c) 2026 A. Photographer", True),
            (33550, "d", 3, (0.5, 0.5, 0.0), True), (33922, "d", 6, (0.0, 0.0, 0.0, 500000.0, 4100000.0, 0.0), True),
            (34735, "H", 8, (1, 1, 0, 1, 1024, 0, 1, 1), True), (42113, "s", 0, "0", True)]
    tifffile.imwrite(tmp_path / "scan.tif", arr, photometric="rgb", extratags=tags, description="slide 12, 4000 dpi")
    write_image(read_image(tmp_path / "scan.tif"), tmp_path / "out.tif")
    with tifffile.TiffFile(tmp_path / "scan.tif") as a, tifffile.TiffFile(tmp_path / "out.tif") as b:
        for code in (271, 272, 274, 306, 315, 33432, 33550, 33922, 34735, 42113):
            assert b.pages[0].tags[code].value == a.pages[0].tags[code].value, code
        assert b.pages[0].description == "slide 12, 4000 dpi"
    planes = np.zeros((3, 20, 24), np.uint8)
    tifffile.imwrite(tmp_path / "z.tif", planes, imagej=True, metadata={"axes": "ZYX"}, extratags=tags[:2])
    write_image(read_image(tmp_path / "z.tif", stacks=True), tmp_path / "zout.tif")
    with tifffile.TiffFile(tmp_path / "zout.tif") as tf:
        assert tf.is_imagej and tf.pages[0].tags[271].value == "Nikon" and tf.series[0].shape == (3, 20, 24)


def test_a_stack_over_4_gb_is_written_as_bigtiff_or_as_imagej_writes_it(tmp_path, monkeypatch, recwarn):
    """Past 4 GB a classic TIFF's offsets overflow: a plain stack goes out as BigTIFF, an ImageJ
    hyperstack in ImageJ's own layout (one page header before all the planes), without tifffile's
    "truncating ImageJ file" warning in the terminal. The bound is lowered here to a few kB."""
    import denoisecli.image_io as iio

    monkeypatch.setattr(iio, "CLASSIC_TIFF_BYTES", 3000)
    planes = (np.arange(4 * 30 * 40) % 251).astype(np.uint8).reshape(4, 30, 40)
    tifffile.imwrite(tmp_path / "plain.tif", planes, photometric="minisblack")
    tifffile.imwrite(tmp_path / "ij.tif", planes, imagej=True, metadata={"axes": "ZYX"})
    for name in ("plain.tif", "ij.tif"):
        write_image(read_image(tmp_path / name, stacks=True), tmp_path / f"out-{name}")
        with tifffile.TiffFile(tmp_path / f"out-{name}") as tf:
            assert np.array_equal(tf.series[0].asarray(), planes)
            assert (tf.is_bigtiff, tf.is_imagej, len(tf.pages)) == ((True, False, 4) if name == "plain.tif" else (False, True, 1))
    assert not [w for w in recwarn if "truncating" in str(w.message)]


@pytest.mark.parametrize("bits", [8, 16])
def test_a_pngs_text_chunks_go_back_into_it(tmp_path, bits):
    """Title, author, copyright, a caption in any script, an image generator's parameters: a PNG's
    text chunks were dropped until 2026-11-29; 16-bit colour PNG (written through libpng) too."""
    from PIL import PngImagePlugin

    text = PngImagePlugin.PngInfo()
    text.add_text("Author", "A. Photographer")
    text.add_text("Copyright", "(c) 2026")
    text.add_itxt("Description", "Ünïcode caption")
    text.add_text("parameters", "a cat, steps 30", zip=True)
    arr = smooth_image(37, 31) if bits == 8 else smooth_image(37, 31, channels=1).astype(np.uint16) * 257
    Image.fromarray(arr).save(tmp_path / "a.png", pnginfo=text)
    img = read_image(tmp_path / "a.png")
    if bits == 16:  # as colour, the way Pillow cannot write it
        img = LoadedImage(img.pixels.expand(3, -1, -1).clone(), "PNG", 16, None, img.info)
    write_image(img, tmp_path / "out.png")
    out = Image.open(tmp_path / "out.png")
    out.load()
    assert out.text == {"Author": "A. Photographer", "Copyright": "(c) 2026", "Description": "Ünïcode caption",
                        "parameters": "a cat, steps 30"}
    if bits == 16:
        assert imagecodecs.png_decode((tmp_path / "out.png").read_bytes()).dtype == np.uint16


def test_a_jpegs_comment_goes_back_into_it(tmp_path):
    """A scanner's or an editor's COM note was dropped until 2026-11-29."""
    Image.fromarray(smooth_image(37, 31)).save(tmp_path / "a.jpg", quality=95, comment=b"scanned at 2400 dpi")
    img = read_image(tmp_path / "a.jpg")
    write_image(img, tmp_path / "out.jpg")
    assert Image.open(tmp_path / "out.jpg").info["comment"] == b"scanned at 2400 dpi"
    from denoisecli.image_io import left_out

    assert left_out(img) == [] and left_out(img, "png") == ["left out: its JPEG comment"]


@pytest.mark.parametrize("ext", ["webp", pytest.param("avif", marks=requires_avif)])
def test_a_webp_or_avif_portraits_exif_goes_into_a_jpeg(tmp_path, ext):
    """WebP's EXIF comes without JPEG's "Exif" header (AVIF's with it), and Pillow's JPEG writer wrote
    it so, where no reader finds it: a portrait WebP came out as a JPEG without EXIF, sideways."""
    exif = Image.Exif()
    exif.update({274: 6, 271: "Cam"})
    Image.fromarray(smooth_image(30, 44)).save(tmp_path / f"IMG_1.{ext}", quality=90, exif=exif.tobytes())
    write_image(read_image(tmp_path / f"IMG_1.{ext}"), tmp_path / "out.jpg", "JPEG")
    got = Image.open(tmp_path / "out.jpg").getexif()
    assert (got.get(271), got.get(274)) == ("Cam", 6)


@pytest.mark.parametrize("fmt, name", [("BMP", "out.bmp"), ("PPM", "out.ppm")])
def test_a_portrait_photo_written_where_exif_cannot_go_is_turned_upright(tmp_path, fmt, name):
    """BMP and PPM hold no EXIF, so a phone's portrait photo (orientation 6) came out sideways;
    its orientation now goes into the pixels, and `-v` says what was left out."""
    from denoisecli.image_io import left_out

    arr = smooth_image(30, 44)
    exif = Image.Exif()
    exif[274] = 6
    Image.fromarray(arr).save(tmp_path / "IMG_1.jpg", quality=95, exif=exif.tobytes())
    img = read_image(tmp_path / "IMG_1.jpg")
    assert left_out(img, fmt) == [f"left out: its EXIF, which {'BMP' if fmt == 'BMP' else 'PGM/PPM'} cannot hold (its orientation is turned into the pixels)"]
    write_image(img, tmp_path / name, fmt)
    out = np.asarray(Image.open(tmp_path / name).convert("RGB")).astype(float)
    shown = np.rot90(np.asarray(Image.open(tmp_path / "IMG_1.jpg").convert("RGB")), k=-1).astype(float)  # as a viewer turns it
    assert out.shape == (44, 30, 3) and np.abs(out - shown).mean() < 3


def test_a_whole_360_panorama_is_told_by_its_photo_sphere_xmp():
    """Google's photo sphere XMP, as attributes or elements: equirectangular and not cropped across
    is a whole 360-degree panorama; a partial one, or another projection, is not."""
    from denoisecli.image_io import wraps

    ns = 'xmlns:GPano="http://ns.google.com/photos/1.0/panorama/"'
    assert wraps(f'<rdf:Description {ns} GPano:ProjectionType="equirectangular"/>'.encode())
    assert wraps(f'<rdf:Description {ns}><GPano:ProjectionType>equirectangular</GPano:ProjectionType>'
                 '<GPano:FullPanoWidthPixels>6000</GPano:FullPanoWidthPixels>'
                 '<GPano:CroppedAreaImageWidthPixels>6000</GPano:CroppedAreaImageWidthPixels></rdf:Description>'.encode())
    assert not wraps(f'<rdf:Description {ns} GPano:ProjectionType="equirectangular" GPano:FullPanoWidthPixels="6000" '
                     'GPano:CroppedAreaImageWidthPixels="3000"/>'.encode())
    assert not wraps(f'<rdf:Description {ns} GPano:ProjectionType="cylindrical"/>'.encode()) and not wraps(b"")


def test_make_model_orientation_and_date_cross_between_exif_and_tiff_tags(tmp_path):
    """A phone's portrait JPEG written as TIFF (`run --format tiff`) came out sideways: its EXIF
    orientation was dropped, with its make, model and date. They now become the TIFF's tags of the
    same numbers, and a TIFF's go into a JPEG's EXIF."""
    exif = Image.Exif()
    exif.update({274: 6, 271: "Apple", 272: "iPhone 15", 306: "2026:11:29 10:00:00"})
    Image.fromarray(smooth_image(37, 31)).save(tmp_path / "IMG_1.jpg", quality=92, exif=exif.tobytes())
    write_image(read_image(tmp_path / "IMG_1.jpg"), tmp_path / "IMG_1.tif", "TIFF")
    with tifffile.TiffFile(tmp_path / "IMG_1.tif") as tf:
        tags = tf.pages[0].tags
        assert (tags[274].value, tags[271].value, tags[272].value, tags[306].value) == (6, "Apple", "iPhone 15", "2026:11:29 10:00:00")
    write_image(read_image(tmp_path / "IMG_1.tif"), tmp_path / "back.jpg", "JPEG")
    assert {k: v for k, v in Image.open(tmp_path / "back.jpg").getexif().items()} == {274: 6, 271: "Apple", 272: "iPhone 15",
                                                                                      306: "2026:11:29 10:00:00"}


def _camera_exif(endian="<", interop=True):
    """EXIF as a camera writes it: exposure, ISO, capture date, lens, a maker note and an
    interoperability directory in its EXIF directory (which Pillow's TIFF writer misplaces), and
    where it was in its GPS directory."""
    exif = Image.Exif()
    exif.endian = endian
    exif.update({271: "NIKON CORPORATION", 272: "NIKON Z 6", 274: 1, 33432: "© Zoë".encode()})
    exif[0x8769] = {0x829A: 1 / 250, 0x8827: 6400, 0x9003: "2026:11:29 10:00:00", 0xA434: "NIKKOR Z 24-70mm f/4 S",
                    0x927C: b"Nikon\x00\x02\x10\x00\x00MM\x00*" + bytes(40), **({0xA005: {1: "R98"}} if interop else {})}
    exif[0x8825] = {1: "N", 2: (52.0, 31.0, 12.0), 3: "E", 4: (13.0, 24.0, 0.5)}
    return exif


def _exif_of(path):
    exif = Image.open(path).getexif()
    ifd = {k: v for k, v in exif.get_ifd(0x8769).items() if k != 0xA005}  # where it points differs by file
    return {k: exif.get(k) for k in (271, 272, 33432)}, ifd, dict(exif.get_ifd(0x8825)), dict(exif.get_ifd(0xA005))


@pytest.mark.parametrize("big", [False, True])
def test_a_tiffs_exif_and_gps_stay_with_it(tmp_path, monkeypatch, big):
    """A raw converter's TIFF points to its EXIF and GPS directories: exposure, ISO, lens, capture
    date, place. They were dropped (tifffile writes no directories of tags), so a catalogue sorted
    the output by the day it was denoised. They now go back into a TIFF, BigTIFF too, and into
    any other format's EXIF; the maker note, whose offsets point into the input, is left out and said."""
    import denoisecli.image_io as image_io

    Image.fromarray(smooth_image(37, 31)).save(tmp_path / "DSC_0001.tif", exif=_camera_exif(interop=False).tobytes())
    base, ifd, gps, interop = _exif_of(tmp_path / "DSC_0001.tif")
    assert 0x927C in ifd and ifd[0x9003] == "2026:11:29 10:00:00" and gps[1] == "N"
    img = read_image(tmp_path / "DSC_0001.tif")
    assert img.info["notes"] == ["left out: its EXIF maker note (a camera maker's data, which points into the input)"]
    monkeypatch.setattr(image_io, "CLASSIC_TIFF_BYTES", 0 if big else image_io.CLASSIC_TIFF_BYTES)
    write_image(img, tmp_path / "out.tif")
    with tifffile.TiffFile(tmp_path / "out.tif") as tf:
        assert tf.is_bigtiff == big and np.array_equal(tf.asarray(), np.round(np.moveaxis(img.pixels.numpy(), 0, -1) * 255).astype(np.uint8))
        assert tf.pages[0].tags[34665].value["DateTimeOriginal"] == "2026:11:29 10:00:00"  # as text, its type kept
        assert tf.pages[0].tags[34853].value["GPSLatitudeRef"] == "N"
    del ifd[0x927C]
    if not big:  # Pillow reads no BigTIFF's EXIF
        assert _exif_of(tmp_path / "out.tif") == (base, ifd, gps, interop)
    write_image(img, tmp_path / "out.jpg", "JPEG")
    assert _exif_of(tmp_path / "out.jpg") == (base, ifd, gps, interop)


@pytest.mark.parametrize("endian", ["<", ">"])
def test_a_jpegs_whole_exif_goes_into_a_tiff(tmp_path, endian):
    """A JPEG written as TIFF (`run --format tiff`) kept its make, model and date alone; its EXIF
    and GPS directories go along now, from either byte order (Nikon's EXIF is big-endian)."""
    from denoisecli.image_io import left_out

    Image.fromarray(smooth_image(37, 31)).save(tmp_path / "a.jpg", quality=92, exif=_camera_exif(endian).tobytes())
    base, ifd, gps, interop = _exif_of(tmp_path / "a.jpg")
    img = read_image(tmp_path / "a.jpg")
    assert left_out(img) == [] and left_out(img, "tiff") == ["left out: its EXIF maker note (a camera maker's data, which points into the input)"]
    write_image(img, tmp_path / "a.tif", "TIFF")
    del ifd[0x927C]
    assert _exif_of(tmp_path / "a.tif") == (base, ifd, gps, interop)
    assert _raw_tag(tmp_path / "a.tif", 33432) == "© Zoë".encode() + b"\0"


@pytest.mark.parametrize("fill, mode", [(0, "RGBA"), (255, "RGBA"), (0, "LA"), (0, "RGBA16")])
def test_a_cut_outs_transparent_fill_is_filled_from_the_picture_and_written_back_as_read(tmp_path, fill, mode):
    """A cut-out's transparent pixels hold one colour, whose hard edge cost the picture beside it
    (benchmarks/transparent_fill.py). They are filled smoothly from the visible pixels around them
    while the image is denoised, and go back exactly as read; alpha is untouched."""
    channels = 1 if mode == "LA" else 3
    rgb = smooth_image(37, 31, channels=channels).reshape(37, 31, channels)
    alpha = np.zeros((37, 31), np.uint8)
    alpha[8:30, 6:25] = 255
    alpha[8:30, 5] = 128  # a soft edge, which is visible and is left alone
    rgb[alpha == 0] = fill
    if mode == "RGBA16":
        arr = np.dstack([rgb.astype(np.uint16) * 257, alpha.astype(np.uint16) * 257])
        tifffile.imwrite(tmp_path / "a.tif", arr, photometric="rgb", extrasamples=["unassalpha"])
        path = tmp_path / "a.tif"
    else:
        Image.fromarray(np.dstack([rgb, alpha]) if channels == 3 else np.dstack([rgb[..., 0], alpha]), mode).save(tmp_path / "a.png")
        path = tmp_path / "a.png"
    img = read_image(path)
    pixels = np.moveaxis(img.pixels.numpy(), 0, -1) * 255
    seen = alpha > 0
    assert np.allclose(pixels[seen], rgb[seen], atol=0.01)
    hidden = pixels[~seen]
    assert hidden.min() >= rgb[seen].min() - 0.01 and hidden.max() <= rgb[seen].max() + 0.01  # from the picture, not the fill
    beside = rgb[8, 10:20].astype(float)  # the visible row under the fill
    assert np.abs(pixels[7, 10:20] - beside).mean() < np.abs(fill - beside).mean() / 2  # close to it, where the fill stepped
    img.pixels = (img.pixels + 0.02).clamp(0, 1)  # as a denoiser changes every pixel
    write_image(img, tmp_path / f"out{path.suffix}")
    out = tifffile.imread(tmp_path / "out.tif") if mode == "RGBA16" else np.asarray(Image.open(tmp_path / "out.png"))
    out = out.reshape(37, 31, channels + 1)
    scale = 257 if mode == "RGBA16" else 1
    assert np.array_equal(out[..., -1], alpha.astype(out.dtype) * scale)
    assert np.array_equal(out[..., :-1][~seen], rgb[~seen].astype(out.dtype) * scale)
    assert not np.array_equal(out[..., :-1][seen], rgb[seen].astype(out.dtype) * scale)


def test_transparent_pixels_that_hold_a_picture_are_left_as_they_are(tmp_path):
    """An editor that keeps the photo under erased areas: those pixels are the picture's own
    continuation, better context than any fill, and are denoised with it as before."""
    rgb = np.clip(smooth_image(37, 31).astype(np.int16) + np.random.default_rng(0).normal(0, 20, (37, 31, 3)), 0, 255).astype(np.uint8)
    alpha = np.zeros((37, 31), np.uint8)
    alpha[8:30, 6:25] = 255
    Image.fromarray(np.dstack([rgb, alpha])).save(tmp_path / "a.png")
    img = read_image(tmp_path / "a.png")
    assert "masked" not in img.info and np.allclose(np.moveaxis(img.pixels.numpy(), 0, -1) * 255, rgb, atol=0.01)


@pytest.mark.parametrize("kind", ["assocalpha", "unassalpha"])
def test_a_tiffs_alpha_keeps_its_kind(tmp_path, kind):
    """Premultiplied (associated) alpha was written back as straight, which darkens a viewer's
    semi-transparent edges; each kind now goes back as it was."""
    arr = np.concatenate([smooth_image(37, 31), np.full((37, 31, 1), 128, np.uint8)], axis=2)
    tifffile.imwrite(tmp_path / "a.tif", arr, photometric="rgb", extrasamples=[kind])
    write_image(read_image(tmp_path / "a.tif"), tmp_path / "out.tif")
    with tifffile.TiffFile(tmp_path / "out.tif") as tf:
        assert tf.pages[0].extrasamples[0].name == kind.upper()


def test_a_jpeg_compressed_tiff_is_read_as_rgb_and_written_lossless(tmp_path):
    """Photoshop's and scanners' JPEG-compressed TIFF stores YCbCr, which the JPEG decoder turns
    into RGB: it was refused ("YCBCR colour is not supported"). It is written back in deflate with
    the predictor, not through JPEG a second time."""
    arr = smooth_image(64, 80)
    tifffile.imwrite(tmp_path / "scan.tif", arr, photometric="rgb", compression="jpeg")
    with tifffile.TiffFile(tmp_path / "scan.tif") as tf:
        assert tf.pages[0].photometric.name == "YCBCR"
    img = read_image(tmp_path / "scan.tif")
    assert img.pixels.shape == (3, 64, 80) and np.abs(np.moveaxis(img.pixels.numpy(), 0, -1) * 255 - arr).mean() < 3
    write_image(img, tmp_path / "out.tif")
    with tifffile.TiffFile(tmp_path / "out.tif") as tf:
        page = tf.pages[0]
        assert (page.photometric.name, page.compression.name, int(page.predictor)) == ("RGB", "ADOBE_DEFLATE", 2)
        assert np.array_equal(page.asarray(), np.round(np.moveaxis(img.pixels.numpy(), 0, -1) * 255).astype(np.uint8))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_a_min_is_white_tiff_is_read_as_it_looks_and_stored_back_as_it_was(tmp_path, dtype):
    """Grey stored white at 0 (a radiograph's MONOCHROME1, some scanners') was refused: it is read
    as it looks, so the model sees the picture, and a TIFF output stores it as the input did."""
    top = np.iinfo(dtype).max
    looks = (smooth_image(40, 50, channels=1).astype(np.float64) / 255 * top).round().astype(dtype)
    tifffile.imwrite(tmp_path / "xray.tif", top - looks, photometric="miniswhite")
    img = read_image(tmp_path / "xray.tif")
    assert np.abs(img.pixels[0].numpy() * top - looks).max() < 0.01 * top
    write_image(img, tmp_path / "out.tif")
    with tifffile.TiffFile(tmp_path / "out.tif") as tf:
        assert tf.pages[0].photometric.name == "MINISWHITE" and np.array_equal(tf.pages[0].asarray(), top - looks)


def test_ome_tiff_keeps_its_xml_and_page_order(tmp_path):
    """An OME-TIFF's XML (physical pixel sizes, channel names, the instrument) is written back as it
    was: the planes go back in the order read, so the XML stays true of the file."""
    planes = (np.arange(2 * 3 * 24 * 20) % 241).astype(np.uint16).reshape(2, 3, 24, 20) * 200
    tifffile.imwrite(tmp_path / "cells.ome.tif", planes, ome=True, compression="zlib",
                     metadata={"axes": "TZYX", "PhysicalSizeX": 0.108, "PhysicalSizeXUnit": "µm", "Channel": {"Name": ["DAPI"]}})
    img = read_image(tmp_path / "cells.ome.tif", stacks=True)
    assert img.pixels.shape == (6, 1, 24, 20) and "PhysicalSizeX" in img.info["ome"]
    write_image(img, tmp_path / "out.ome.tif")
    with tifffile.TiffFile(tmp_path / "cells.ome.tif") as a, tifffile.TiffFile(tmp_path / "out.ome.tif") as b:
        assert b.is_ome and b.pages[0].description == a.pages[0].description
        assert (b.series[0].shape, b.series[0].axes) == ((2, 3, 24, 20), "TZYX") and b.pages[0].compression == 8
        assert np.array_equal(b.series[0].asarray(), planes)


def test_a_tiff_of_several_images_is_refused_where_one_is_read_and_previews_are_left_out(tmp_path):
    """Several full images in one TIFF (an OME-TIFF of stage positions) used to come out as the
    first page alone; where one image or stack is read (`train`, `eval`, `add-noise`) they are
    refused in one line (`run` denoises each). Small previews beside one image are left out, and
    the read says so (for run -v)."""
    with tifffile.TiffWriter(tmp_path / "positions.tif") as tw:
        tw.write(np.zeros((3, 40, 30), np.uint8), photometric="minisblack")
        tw.write(np.zeros((3, 40, 30), np.uint8), photometric="minisblack")
    with pytest.raises(DenoiseError, match=r"positions.tif: a TIFF holding 2 images \(series; .*save each in a file of its own first"):
        read_image(tmp_path / "positions.tif", stacks=True)
    with tifffile.TiffWriter(tmp_path / "scan.tif") as tw:
        tw.write(np.full((40, 30, 3), 7, np.uint8), photometric="rgb")
        tw.write(np.zeros((10, 8, 3), np.uint8), photometric="rgb")
    img = read_image(tmp_path / "scan.tif")
    assert img.pixels.shape == (3, 40, 30) and img.info["notes"] == ["left out: 1 preview (10x8x3)"]


def test_an_encoder_failure_is_one_line_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(tifffile.TiffWriter, "write", lambda *a, **k: (_ for _ in ()).throw(ValueError("data too large\nmore")))
    img = read_image(save(tmp_path / "a.png", smooth_image(13, 15)))
    with pytest.raises(DenoiseError, match=r"^.*out.tif: cannot write it as TIFF \(data too large\)$"):
        write_image(img, tmp_path / "out.tif", fmt="tiff")
    assert not (tmp_path / "out.tif").exists()


def test_a_camera_jpeg_with_mpf_pictures_is_its_first_picture_as_jpeg(tmp_path):
    """Pillow opens a JPEG with pictures after it (MPF: cameras' large previews, Android's Ultra
    HDR gain maps) as MPO, which used to fail as an unknown format: the photo is read and written
    as a JPEG, with its EXIF, and the read names what was left out."""
    exif = Image.Exif()
    exif[0x010F] = "Camera"
    Image.fromarray(smooth_image(40, 50)).save(tmp_path / "DSC_1.JPG", format="MPO", save_all=True, quality=95,
                                               append_images=[Image.fromarray(smooth_image(20, 25))], exif=exif.tobytes())
    assert Image.open(tmp_path / "DSC_1.JPG").format == "MPO"
    img = read_image(tmp_path / "DSC_1.JPG")
    assert img.format == "JPEG" and img.pixels.shape == (3, 40, 50) and img.info["notes"][0].startswith("left out: 1 picture after")
    write_image(img, tmp_path / "out.jpg")
    out = Image.open(tmp_path / "out.jpg")
    assert out.format == "JPEG" and out.getexif()[0x010F] == "Camera"


def test_an_animation_is_refused_rather_than_cut_to_its_first_frame(tmp_path):
    frames = [Image.fromarray(smooth_image(30, 40, seed=s)) for s in range(3)]
    frames[0].save(tmp_path / "anim.png", save_all=True, append_images=frames[1:], duration=100)
    with pytest.raises(DenoiseError, match=r"anim.png: an animation of 3 frames; only still images are read"):
        read_image(tmp_path / "anim.png")


def test_nan_and_infinite_floats_are_written_back_where_they_were(tmp_path):
    """Masked pixels of processed microscope data are NaN (or inf): they ended `run` with a
    traceback. They are read as finite stand-ins and written back as they were."""
    arr = (np.random.default_rng(0).random((2, 23, 19)) * 40 + 10).astype(np.float32)
    arr[0, 3:6, 4:9] = np.nan
    arr[1, 7, 7], arr[1, 8, 8] = np.inf, -np.inf
    tifffile.imwrite(tmp_path / "ratio.tif", arr, photometric="minisblack")
    img = read_image(tmp_path / "ratio.tif", stacks=True)
    assert bool(torch.isfinite(img.pixels).all()) and 0 <= float(img.pixels.min()) and float(img.pixels.max()) <= 1
    assert img.info["float_range"] == (float(np.nanmin(arr[np.isfinite(arr)])), float(arr[np.isfinite(arr)].max()))
    write_image(img, tmp_path / "out.tif")
    back = tifffile.imread(tmp_path / "out.tif")
    assert np.array_equal(np.isnan(back), np.isnan(arr)) and np.array_equal(back[np.isinf(arr)], arr[np.isinf(arr)])
    assert np.allclose(back[np.isfinite(arr)], arr[np.isfinite(arr)], rtol=1e-5)
    tifffile.imwrite(tmp_path / "void.tif", np.full((12, 12), np.nan, np.float32))
    with pytest.raises(DenoiseError, match="void.tif: no finite value"):
        read_image(tmp_path / "void.tif")


@pytest.mark.parametrize("dtype", [np.float32, np.uint16])
def test_pixels_set_aside_are_filled_from_the_data_around_them(tmp_path, dtype):
    """NaN or no-data pixels held values drawn at random from the whole image, a step at the data's
    edge that the denoiser smeared into it; they now hold the data around them, as a cut-out's
    transparent pixels do (benchmarks/geotiff_nodata.py)."""
    y, x = np.mgrid[0:40, 0:48]
    arr = (1000 + 20 * x + 5 * y).astype(dtype)
    hole = (slice(10, 20), slice(30, 40))
    if dtype == np.float32:
        arr[hole] = np.nan
        tifffile.imwrite(tmp_path / "dem.tif", arr)
    else:
        arr[hole] = 0
        tifffile.imwrite(tmp_path / "dem.tif", arr, extratags=[(42113, "s", 0, "0", True)])
    img = read_image(tmp_path / "dem.tif")
    lo, hi = img.info["float_range"] if dtype == np.float32 else (0, 65535)
    values = img.pixels[0].numpy() * (hi - lo) + lo
    ring = np.concatenate([arr[9, 29:41], arr[20, 29:41], arr[9:21, 29], arr[9:21, 40]]).astype(float)
    assert ring.min() - 1 <= values[hole].min() and values[hole].max() <= ring.max() + 1
    write_image(img, tmp_path / "out.tif")
    back = tifffile.imread(tmp_path / "out.tif")
    assert (np.isnan(back[hole]).all() if dtype == np.float32 else (back[hole] == 0).all())


def test_googles_container_xmp_is_not_kept_without_what_it_maps(tmp_path):
    """An Ultra HDR or Motion Photo JPEG's XMP maps a gain map or an MP4 stored after the photo;
    the output holds neither, so that XMP is left out (and said), where other XMP is kept."""
    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
           b'<rdf:Description xmlns:Container="http://ns.google.com/photos/1.0/container/" '
           b'xmlns:GCamera="http://ns.google.com/photos/1.0/camera/" GCamera:MotionPhoto="1"/></rdf:RDF></x:xmpmeta>')
    Image.fromarray(smooth_image(24, 20)).save(tmp_path / "PXL_1.MP.jpg", xmp=xmp)
    (tmp_path / "PXL_1.MP.jpg").write_bytes((tmp_path / "PXL_1.MP.jpg").read_bytes() + b"\x00\x00\x00\x18ftypmp42")
    img = read_image(tmp_path / "PXL_1.MP.jpg")
    assert "xmp" not in img.info and img.info["notes"] == ["left out: its XMP, which maps a gain map or a video after the photo",
                                                           "left out: 1 kB stored after the picture (a Motion Photo's video, a maker's data)"]
    write_image(img, tmp_path / "out.jpg")
    assert "xmp" not in Image.open(tmp_path / "out.jpg").info


@pytest.mark.parametrize("progressive", [False, True])
def test_what_a_phone_stores_after_a_jpegs_picture_is_named(tmp_path, progressive):
    """A Samsung Motion Photo stores its video after the picture, with a trailer ending "SEFT" that
    also holds the photo before an edit; no output keeps them, and they went without a word.
    Padding after the picture is nothing to name."""
    Image.fromarray(smooth_image(24, 20)).save(tmp_path / "a.jpg", quality=90, progressive=progressive)
    jpeg = (tmp_path / "a.jpg").read_bytes()
    (tmp_path / "20261129_100000.jpg").write_bytes(jpeg + b"\x00\x00\x00\x18ftypmp42" + bytes(250_000) + b"SEFH" + bytes(8) + b"SEFT")
    (tmp_path / "padded.jpg").write_bytes(jpeg + bytes(100))
    assert read_image(tmp_path / "20261129_100000.jpg").info["notes"] == [
        "left out: 0.3 MB stored after the picture (Samsung's trailer: a Motion Photo's video, the photo before an edit)"]
    assert "notes" not in read_image(tmp_path / "padded.jpg").info and "notes" not in read_image(tmp_path / "a.jpg").info


def test_a_heic_of_several_images_is_its_primary_image_and_says_so(tmp_path):
    """A HEIC may hold more than one image: its primary one is denoised as before (the animation
    refusal is for PNG and WebP), and the read names what the output leaves out."""
    pytest.importorskip("pillow_heif")
    from denoisecli.image_io import _heif

    _heif(tmp_path / "x.heic")
    Image.fromarray(smooth_image(30, 40)).save(tmp_path / "x.heic", save_all=True, quality=90,
                                               append_images=[Image.fromarray(smooth_image(20, 24))])
    img = read_image(tmp_path / "x.heic")
    assert img.pixels.shape == (3, 30, 40) and img.info["notes"] == ["left out: 1 other image"]


def test_a_file_whose_content_belies_its_name_is_written_as_its_name_says(tmp_path):
    """Downloads and transfer tools mislabel files: a JPEG saved as .png, a GIF as .png, a HEIC
    renamed .jpg. Each is read by its content and written as its name says; a format this tool
    does not write, under a name that says none, fails in a line that names the file."""
    arr = smooth_image(30, 40)
    Image.fromarray(arr).save(tmp_path / "jpeg.png", format="JPEG")
    Image.fromarray(arr).save(tmp_path / "gif.png", format="GIF")
    for name in ("jpeg.png", "gif.png"):
        img = read_image(tmp_path / name)
        assert img.format == "PNG"
        write_image(img, tmp_path / f"out-{name}")
        assert Image.open(tmp_path / f"out-{name}").format == "PNG"
    if importlib.util.find_spec("pillow_heif") is not None:
        from denoisecli.image_io import _heif

        _heif(tmp_path / "x.heic")
        Image.fromarray(arr).save(tmp_path / "IMG_1.jpg", format="HEIF")
        assert read_image(tmp_path / "IMG_1.jpg").format == "JPEG"
    img = read_image(tmp_path / "gif.png")
    img.format = "GIF"
    with pytest.raises(DenoiseError, match=r"out.dat: format GIF: unknown"):
        write_image(img, tmp_path / "out.dat")


@pytest.mark.parametrize("mode,fmt", [("RGBA", "jpeg"), ("LA", "jpeg"), ("LA", "bmp")])
def test_transparency_is_laid_on_white_where_the_format_has_no_alpha(tmp_path, mode, fmt):
    """A transparent PNG asked for as JPEG showed the colour left under its transparent pixels
    (here black): it is laid on white, as image editors flatten."""
    arr = np.zeros((20, 24, 2 if mode == "LA" else 4), np.uint8)
    arr[:, 12:, :-1], arr[:, 12:, -1] = 90, 255  # right half opaque grey, left half transparent black
    Image.fromarray(arr, mode).save(tmp_path / "logo.png")
    write_image(read_image(tmp_path / "logo.png"), tmp_path / f"out.{fmt}", fmt=fmt)
    out = np.asarray(Image.open(tmp_path / f"out.{fmt}").convert("L"), np.float64)
    assert out[:, :10].mean() > 250 and abs(out[:, 14:].mean() - 90) < 3


def test_a_file_that_begins_as_an_image_but_fails_is_called_damaged(tmp_path):
    """Pillow does not identify some damaged files at all (a truncated AVIF, a PNG cut in its
    header): where the file begins as an image this tool reads, it is damaged, not some other kind."""
    (tmp_path / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIH")
    with pytest.raises(DenoiseError, match=r"cut.png: cannot decode image, the file is damaged or truncated"):
        read_image(tmp_path / "cut.png")
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(DenoiseError, match=r"notes.png: not an image file"):
        read_image(tmp_path / "notes.png")


def _pnm(path, levels, top, comment=b""):
    """A binary PGM or PPM as netpbm and raw converters write it (big-endian words above 8 bits)."""
    magic = b"P6" if levels.ndim == 3 else b"P5"
    h, w = levels.shape[:2]
    data = levels.astype(">u2" if top > 255 else np.uint8).tobytes()
    path.write_bytes(magic + b"\n" + comment + f"{w} {h}\n{top}\n".encode() + data)


@pytest.mark.parametrize("top,channels", [(65535, 3), (4095, 1), (65535, 1), (255, 3), (255, 1)])
def test_pgm_and_ppm_are_read_and_written_at_their_depth(tmp_path, top, channels):
    """A raw converter's 16-bit PPM (`dcraw -4`) was read as 8 bits by Pillow, and a 12-bit PGM's
    levels were stretched onto 16 bits: both are read on their own levels and written back at
    the same depth, pixel for pixel; 8-bit files as Pillow reads them."""
    levels = np.round(smooth_image(37, 31, channels=channels).astype(np.float64) / 255 * top).astype(np.uint16)
    h, w = levels.shape[:2]
    levels[0, :3] = [top - 1, 1, top]  # levels 8 bits would lose
    name = "img.ppm" if channels == 3 else "img.pgm"
    _pnm(tmp_path / name, levels, top, comment=b"# written by a converter\n")
    assert [p.name for p in list_images(tmp_path)] == [name]
    img = read_image(tmp_path / name)
    assert img.format == "PPM" and img.channels == channels and img.bits == (8 if top == 255 else 16)
    assert img.info.get("depth") == (12 if top == 4095 else None)
    read = np.moveaxis(img.pixels.numpy(), 0, -1).reshape(levels.shape) * top
    assert np.abs(read - levels).max() < 1e-2
    write_image(img, tmp_path / "out" / name)
    out = (tmp_path / "out" / name).read_bytes()
    assert out.startswith((b"P6" if channels == 3 else b"P5") + f"\n{w} {h}\n{top}\n".encode())
    assert np.array_equal(np.frombuffer(out[-levels.size * (2 if top > 255 else 1):], ">u2" if top > 255 else np.uint8),
                          levels.reshape(-1))


def test_pnm_has_no_alpha_or_float_and_its_faults_are_one_line(tmp_path):
    """Netpbm holds pixels alone: alpha is laid on white, float data is refused in one line, and
    a deep file cut short is called damaged with the count of bytes it lacks."""
    arr = np.zeros((20, 24, 4), np.uint16)
    arr[:, 12:, :3], arr[:, 12:, 3] = 30000, 65535  # right half opaque grey, left half transparent black
    img = LoadedImage(torch.from_numpy(np.moveaxis(arr[:, :, :3] / 65535, -1, 0)).float(), "PNG", 16, arr[:, :, 3].copy(), {})
    write_image(img, tmp_path / "flat.ppm", fmt="ppm")
    back = read_image(tmp_path / "flat.ppm")
    assert back.alpha is None and float(back.pixels[:, :, :10].min()) == 1.0
    assert abs(float(back.pixels[:, :, 14:].mean()) - 30000 / 65535) < 1e-4
    floats = LoadedImage(torch.rand(1, 8, 9), "TIFF", 32, None, {"float_range": (-1.0, 3.0)})
    with pytest.raises(DenoiseError, match=r"f.pgm: 32-bit float images cannot be written as PGM/PPM; use --format tiff"):
        write_image(floats, tmp_path / "f.pgm", fmt="pgm")
    _pnm(tmp_path / "cut.ppm", np.zeros((31, 37, 3), np.uint16), 65535)
    (tmp_path / "cut.ppm").write_bytes((tmp_path / "cut.ppm").read_bytes()[:-100])
    with pytest.raises(DenoiseError, match=r"cut.ppm: cannot decode image, the file is damaged or truncated \(6782 of 6882"):
        read_image(tmp_path / "cut.ppm")
    (tmp_path / "cut.pgm").write_bytes(b"P5\n37 31\n255\n" + bytes(100))
    with pytest.raises(DenoiseError, match=r"cut.pgm: cannot decode image, the file is damaged or truncated"):
        read_image(tmp_path / "cut.pgm")


@pytest.mark.parametrize("separate", [False, True])
def test_grey_samples_that_are_not_alpha_are_channels_of_their_own(tmp_path, separate):
    """A microscope's four channels stored in each pixel (grey samples whose extra samples are not
    alpha) are four grey planes in their order, and go back into the same layout; the fourth was
    taken for alpha and left as it was. A grey image with a real alpha sample stays grey and alpha."""
    import tifffile

    channels = np.stack([smooth_image(31, 37, channels=1, seed=s).astype(np.uint16) * 257 for s in range(4)])
    data = channels if separate else np.moveaxis(channels, 0, -1)
    tifffile.imwrite(tmp_path / "c.tif", data, photometric="minisblack", planarconfig="separate" if separate else "contig")
    img = read_image(tmp_path / "c.tif", stacks=True)
    assert img.pixels.shape == (4, 1, 31, 37) and img.alpha is None and img.bits == 16
    assert np.array_equal(np.round(img.pixels[:, 0].numpy() * 65535).astype(np.uint16), channels)
    with pytest.raises(DenoiseError, match="a TIFF of 4 grey channels, where one image was expected"):
        read_image(tmp_path / "c.tif")
    write_image(img, tmp_path / "out.tif")
    with tifffile.TiffFile(tmp_path / "out.tif") as tf:
        page = tf.pages[0]
        assert page.samplesperpixel == 4 and page.planarconfig == (2 if separate else 1) and page.photometric.name == "MINISBLACK"
        assert np.array_equal(tf.asarray(), data)
    tifffile.imwrite(tmp_path / "la.tif", np.stack([channels[0], channels[1]], -1), photometric="minisblack", extrasamples=["unassalpha"])
    la = read_image(tmp_path / "la.tif", stacks=True)
    assert la.pixels.shape == (1, 31, 37) and la.alpha is not None and np.array_equal(la.alpha, channels[1])


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.uint32, np.int8])
def test_signed_and_32_bit_integer_tiffs_are_read_on_their_range_and_written_in_their_type(tmp_path, dtype):
    """Background-subtracted (negative) or summed counts from an analysis pipeline were refused:
    they are read as float data on their range and written back in their own type, value for value."""
    import tifffile

    base = smooth_image(29, 35, channels=1).astype(np.int64)
    values = {np.int16: base * 40 - 5000, np.int32: base * 9000 - 1_000_000, np.uint32: base * 60_000 + 70_000,
              np.int8: base // 2 - 64}[dtype].astype(dtype)
    tifffile.imwrite(tmp_path / "x.tif", values, compression="zlib")
    img = read_image(tmp_path / "x.tif")
    assert img.bits == 32 and float(img.pixels.min()) == 0.0 and float(img.pixels.max()) == 1.0
    write_image(img, tmp_path / "out.tif")
    back = tifffile.imread(tmp_path / "out.tif")
    assert back.dtype == dtype and np.array_equal(back, values)
    img.pixels = img.pixels + 0.7  # what a denoiser cannot give, past the top: clipped to the range, not wrapped
    write_image(img, tmp_path / "over.tif")
    assert tifffile.imread(tmp_path / "over.tif").max() == values.max()


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_half_and_double_float_tiffs_are_written_in_their_type(tmp_path, dtype):
    """A half-float TIFF (an HDR render's) or a double one (numpy's, MATLAB's) came out as single
    float, which a pipeline that reads it back in its own type did not expect."""
    values = (smooth_image(29, 35).astype(np.float64) / 255 * 3.5 - 0.25).astype(dtype)
    tifffile.imwrite(tmp_path / "x.tif", values, photometric="rgb")
    write_image(read_image(tmp_path / "x.tif"), tmp_path / "out.tif")
    back = tifffile.imread(tmp_path / "out.tif")
    assert back.dtype == dtype and np.allclose(back, values, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("depth", [8, 10])
def test_an_hdr_heif_written_as_png_keeps_its_colour_description_in_cicp(tmp_path, depth):
    """An HDR photo's BT.2020 primaries and PQ transfer, which no ICC profile carries, were lost
    on the way to PNG, so the PNG read as sRGB: they go into PNG's cICP chunk, before the pixels."""
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    levels = np.round(smooth_image(31, 37).astype(np.float64) / 255 * (2**depth - 1)).astype(np.uint16)
    if depth == 8:
        Image.fromarray(levels.astype(np.uint8)).save(tmp_path / "x.heic", quality=95, nclx_profile=HDR_NCLX)
    else:
        _deep_heif(tmp_path / "x.heic", levels, depth, quality=-1, nclx_profile=HDR_NCLX)
    write_image(read_image(tmp_path / "x.heic"), tmp_path / "x.png", fmt="png")
    data = (tmp_path / "x.png").read_bytes()
    assert b"cICP\x09\x10\x00\x01" in data and data.index(b"cICP") < data.index(b"IDAT")
    Image.fromarray(levels.astype(np.uint8) if depth == 8 else levels[..., 0]).save(tmp_path / "sdr.png")
    write_image(read_image(tmp_path / "sdr.png"), tmp_path / "sdr-out.png")
    assert b"cICP" not in (tmp_path / "sdr-out.png").read_bytes()


def _lut(kind):
    """(3, 256) TIFF colour maps: a LUT that brightens (Fiji's Green), one that does not (Fire-like,
    blue rising and falling), and a picture's palette."""
    i = np.arange(256)
    cmap = np.zeros((3, 256), np.uint16)
    if kind == "green":
        cmap[1] = i * 257
    elif kind == "fire":
        cmap[0], cmap[1], cmap[2] = np.clip(i * 3, 0, 255) * 257, np.clip(i * 2 - 256, 0, 255) * 257, (np.sin(i / 40) ** 2 * 255).astype(int) * 257
    else:
        cmap[0], cmap[1], cmap[2] = i * 257, (255 - i) * 257, 128 * 257
    return cmap


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_a_single_imagej_image_keeps_its_calibration(tmp_path, dtype):
    """Fiji's 2D image lost its ImageJ description (unit, display range, notes): Fiji then showed its
    pixels in no unit. A stack kept it; a single image keeps it too."""
    arr = (smooth_image(31, 37, channels=1) * (10 if dtype == np.uint16 else 1)).astype(dtype)
    tifffile.imwrite(tmp_path / "cell.tif", arr, imagej=True, resolution=(1 / 0.13, 1 / 0.13),
                     metadata={"unit": "um", "min": 0, "max": 2000, "Info": "Objective: 63x", "ROI": b"Iout" + bytes(60)})
    write_image(read_image(tmp_path / "cell.tif"), tmp_path / "out.tif")
    with tifffile.TiffFile(tmp_path / "out.tif") as tf:
        meta = tf.imagej_metadata
        assert tf.is_imagej and (meta["unit"], meta["max"], meta["Info"], meta["ROI"]) == ("um", 2000, "Objective: 63x", b"Iout" + bytes(60))
        assert tf.pages[0].dtype == dtype and np.allclose(tf.asarray(), arr, atol=1e-3)


@pytest.mark.parametrize("kind", ["green", "fire"])
def test_fijis_8_bit_image_with_a_lut_is_denoised_as_grey_and_keeps_its_lut(tmp_path, kind):
    """Fiji saves an 8-bit image shown through a LUT as a palette TIFF, which was refused: its
    values are the data, so they are read as grey, and the TIFF keeps its LUT. Fire's does not
    brighten in every colour, but ImageJ's palette is always a LUT."""
    arr = smooth_image(31, 37, channels=1)
    tifffile.imwrite(tmp_path / "cell.tif", arr, imagej=True, colormap=_lut(kind))
    img = read_image(tmp_path / "cell.tif")
    assert img.channels == 1 and np.array_equal((img.pixels[0].numpy() * 255).round(), arr)
    write_image(img, tmp_path / "out.tif")
    with tifffile.TiffFile(tmp_path / "out.tif") as tf:
        page = tf.pages[0]
        assert tf.is_imagej and page.photometric.name == "PALETTE" and np.array_equal(page.colormap, _lut(kind))
        assert np.array_equal(page.asarray(), arr)


def test_a_16_bit_imagej_image_keeps_the_lut_of_its_colormap_tag(tmp_path):
    """ImageJ keeps a 16-bit image's LUT in a ColorMap tag of a grey page, which was dropped."""
    arr = smooth_image(31, 37, channels=1).astype(np.uint16) * 12
    tifffile.imwrite(tmp_path / "cell.tif", arr, imagej=True, colormap=_lut("green"))
    write_image(read_image(tmp_path / "cell.tif"), tmp_path / "out.tif")
    with tifffile.TiffFile(tmp_path / "out.tif") as tf:
        page = tf.pages[0]
        assert page.photometric.name == "MINISBLACK" and np.array_equal(page.colormap, _lut("green"))
        assert np.array_equal(page.asarray(), arr)


@pytest.mark.parametrize("scale", [257, 256])
def test_a_palette_pictures_colours_are_read_as_rgb(tmp_path, scale):
    """A palette that is no LUT holds a picture's colours: its pixels are read through it as RGB
    (TIFF stores the colours at 16 bits, as v * 257 or v << 8), and written as RGB, which a
    denoised image's colours need."""
    idx = smooth_image(31, 37, channels=1)
    cmap = (_lut("picture").astype(np.int64) // 257 * scale).astype(np.uint16)
    tifffile.imwrite(tmp_path / "map.tif", idx, photometric="palette", colormap=cmap)
    img = read_image(tmp_path / "map.tif")
    expected = np.stack([idx, 255 - idx, np.full_like(idx, 128)], -1)
    assert img.channels == 3 and np.array_equal((img.pixels.permute(1, 2, 0).numpy() * 255).round(), expected)
    assert img.info["notes"] == ["read as RGB: its palette cannot hold the denoised colours"]
    write_image(img, tmp_path / "out.tif")
    with tifffile.TiffFile(tmp_path / "out.tif") as tf:
        assert tf.pages[0].photometric.name == "RGB" and np.array_equal(tf.asarray(), expected)


def test_a_grey_palette_outside_imagej_is_read_as_grey(tmp_path):
    """A palette that brightens with its index (grey here: software that saves grey as a palette)
    shows intensities, denoised as grey."""
    idx = smooth_image(31, 37, channels=1)
    Image.fromarray(idx).convert("P").save(tmp_path / "grey.tif")
    img = read_image(tmp_path / "grey.tif")
    assert img.channels == 1 and np.array_equal((img.pixels[0].numpy() * 255).round(), idx)


@pytest.mark.parametrize("kind", ["8-bit RGB", "16-bit RGB", "16-bit grey"])
def test_a_pngs_gamma_and_colour_chunks_are_kept(tmp_path, kind):
    """A PNG stored linear (gAMA 1.0, with cHRM primaries) lost both chunks, and a browser then
    showed it far darker: gAMA, cHRM and sRGB go back as they were, at any depth."""
    arr = smooth_image(31, 37, channels=1 if "grey" in kind else 3)
    arr = arr.astype(np.uint16) * 257 if "16" in kind else arr
    png = imagecodecs.png_encode(arr)
    chrm = (31270, 32900, 64000, 33000, 30000, 60000, 15000, 6000)
    chunks = b"".join(struct.pack(">I", len(body)) + name + body + struct.pack(">I", zlib.crc32(name + body))
                      for name, body in ((b"gAMA", struct.pack(">I", 100000)), (b"cHRM", struct.pack(">8I", *chrm)), (b"sRGB", b"\x01")))
    (tmp_path / "linear.png").write_bytes(png[:33] + chunks + png[33:])
    img = read_image(tmp_path / "linear.png")
    from denoisecli.image_io import left_out

    assert left_out(img) == [] and left_out(img, "jpeg") == ["left out: its gamma (1; another format shows it as sRGB)"]
    write_image(img, tmp_path / "out.png")
    with Image.open(tmp_path / "out.png") as im:
        assert (im.info["gamma"], im.info["chromaticity"], im.info["srgb"]) == (1.0, tuple(v / 100000 for v in chrm), 1)
        assert np.array_equal(imagecodecs.png_decode((tmp_path / "out.png").read_bytes()), arr)


def test_a_16_bit_grey_pngs_transparent_level_becomes_alpha(tmp_path):
    """The same for a 16-bit grey PNG's transparent level, which Pillow reports and left unused."""
    arr = np.full((31, 37), 65535, np.uint16)
    arr[8:20, 8:30] = 30000
    png = imagecodecs.png_encode(arr)
    trns = b"tRNS" + struct.pack(">H", 65535)
    (tmp_path / "mask.png").write_bytes(png[:33] + struct.pack(">I", 2) + trns + struct.pack(">I", zlib.crc32(trns)) + png[33:])
    img = read_image(tmp_path / "mask.png")
    assert img.bits == 16 and img.alpha is not None and (img.alpha == 65535).sum() == 12 * 22 and img.alpha[0, 0] == 0
    write_image(img, tmp_path / "out.png")
    assert imagecodecs.png_decode((tmp_path / "out.png").read_bytes()).shape == (31, 37, 2)


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_a_pngs_transparent_colour_becomes_alpha(tmp_path, mode):
    """A PNG whose white is its transparent colour (tRNS) came out with an opaque background: no
    denoised pixel is exactly that colour any more. The colour is read as alpha, which is kept."""
    arr = np.full((31, 37, 3) if mode == "RGB" else (31, 37), 255, np.uint8)
    arr[8:20, 8:30] = (200, 40, 40) if mode == "RGB" else 90
    Image.fromarray(arr).save(tmp_path / "logo.png", transparency=(255, 255, 255) if mode == "RGB" else 255)
    img = read_image(tmp_path / "logo.png")
    assert img.alpha is not None and (img.alpha == 255).sum() == 12 * 22 and img.alpha[0, 0] == 0
    img.pixels = img.pixels * 0.99  # as a denoiser leaves it: not exactly the transparent colour
    write_image(img, tmp_path / "out.png")
    with Image.open(tmp_path / "out.png") as im:
        assert im.mode == {"RGB": "RGBA", "L": "LA"}[mode]
        assert np.array_equal(np.asarray(im)[..., -1], img.alpha)


def test_a_1_bit_tiff_is_refused_in_words_a_user_knows(tmp_path):
    """A fax's or a document scanner's 1-bit TIFF was refused as "samples of type bool"."""
    tifffile.imwrite(tmp_path / "scan.tif", smooth_image(31, 37, channels=1) > 128, photometric="miniswhite")
    with pytest.raises(DenoiseError, match=r"scan.tif: a 1-bit \(black and white\) TIFF has no grey levels to denoise"):
        read_image(tmp_path / "scan.tif")


def test_hidden_files_and_system_folders_are_not_taken_as_images(tmp_path):
    """macOS's AppleDouble ``._a.jpg`` beside each photo copied to an SD card failed as "not an
    image file", and thumbnail folders (``.thumbnails``, a Synology NAS's ``@eaDir``) were denoised
    with the photos. A hidden folder named as the input itself is read."""
    save(tmp_path / "a.jpg", smooth_image(31, 37))
    (tmp_path / "._a.jpg").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(64))
    for folder in (".thumbnails", "@eaDir/a.jpg", "$RECYCLE.BIN"):
        (tmp_path / folder).mkdir(parents=True)
        save(tmp_path / folder / "t.jpg", smooth_image(31, 37))
        (tmp_path / folder / "t.cr2").write_bytes(b"raw")
    assert list_images(tmp_path) == [tmp_path / "a.jpg"]
    assert unread_files(tmp_path) == {}
    assert list_images(tmp_path / ".thumbnails") == [tmp_path / ".thumbnails" / "t.jpg"]


def test_a_micro_manager_frame_keeps_its_frame_metadata(tmp_path):
    """Micro-Manager writes each frame of an image sequence as a TIFF with its exposure, stage
    position and time as JSON in tag 51123, which was dropped (tifffile parses it into a dict)."""
    frame = {"Exposure-ms": 50.0, "XPositionUm": 12.5, "ElapsedTime-ms": 1234}
    arr = smooth_image(31, 37, channels=1).astype(np.uint16) * 16
    tifffile.imwrite(tmp_path / "img_000000000_DAPI_000.tif", arr, imagej=True, extratags=[(51123, "s", 0, json.dumps(frame), True)])
    write_image(read_image(tmp_path / "img_000000000_DAPI_000.tif"), tmp_path / "out.tif")
    with tifffile.TiffFile(tmp_path / "out.tif") as tf:
        assert tf.pages[0].tags[51123].value == frame and np.array_equal(tf.asarray(), arr)


def _raw_tag(path, code):
    """A tag's bytes as the file holds them, which tifffile's parsed value hides."""
    with tifffile.TiffFile(path) as tf:
        tag = tf.pages[0].tags[code]
        tf.filehandle.seek(tag.valueoffset)
        return tf.filehandle.read(tag.valuebytecount)


@pytest.mark.parametrize("encoding", ["utf-8", "cp1252"])
def test_a_tiffs_text_beyond_ascii_goes_back_byte_for_byte(tmp_path, encoding):
    """A TIFF whose copyright held "©", whose artist had an accent or whose description said "µm"
    failed to write (tifffile writes only ASCII from text): the whole file failed. The text goes
    back as the bytes it was, in whatever encoding the writer used."""
    text = {270: "Probe 5 µm, 20 kV", 315: "José Müller", 33432: "© 2026 Studio Nord"}
    tifffile.imwrite(tmp_path / "scan.tif", smooth_image(37, 31), photometric="rgb", description=text[270].encode(encoding),
                     extratags=[(code, 2, 0, text[code].encode(encoding), True) for code in (315, 33432)])
    write_image(read_image(tmp_path / "scan.tif"), tmp_path / "out.tif")
    for code, value in text.items():
        assert _raw_tag(tmp_path / "out.tif", code) == value.encode(encoding) + b"\0"


def test_a_photographers_copyright_crosses_between_jpeg_and_tiff_as_written(tmp_path):
    """A JPEG whose EXIF copyright held "©" failed as TIFF (`run --format tiff`); a TIFF's went
    into a JPEG's EXIF as "?" (Pillow writes text as ASCII). Both now carry its bytes across."""
    exif = Image.Exif()
    exif.update({315: "Zoë".encode(), 33432: "© 2026 Zoë".encode()})
    Image.fromarray(smooth_image(37, 31)).save(tmp_path / "a.jpg", quality=92, exif=exif.tobytes())
    write_image(read_image(tmp_path / "a.jpg"), tmp_path / "a.tif", "TIFF")
    assert _raw_tag(tmp_path / "a.tif", 33432) == "© 2026 Zoë".encode() + b"\0"
    write_image(read_image(tmp_path / "a.tif"), tmp_path / "back.jpg", "JPEG")
    back = Image.open(tmp_path / "back.jpg").getexif()
    assert back[33432].encode("latin-1") == "© 2026 Zoë".encode() and back[315].encode("latin-1") == "Zoë".encode()


SEM_TAGS = {
    "fei": (34682, b"[User]\r\nDate=11/29/2026\r\n[Beam]\r\nHV=5000\r\n[Scan]\r\nPixelWidth=1.5e-009\r\nPixelHeight=1.5e-009\r\n"),
    "zeiss": (34118, b"0\r\nAP_PIXEL_SIZE\r\nImage Pixel Size = 1.5 nm\r\nAP_MANUALKV\r\nEHT Target = 5.00 kV\r\n"),
    "tescan": (50431, b"[MAIN]\r\nPixelSizeX=1.5e-09\r\nHV=5000.0\r\n"),
}


@pytest.mark.parametrize("maker", sorted(SEM_TAGS))
def test_an_electron_microscopes_settings_stay_with_its_picture(tmp_path, maker):
    """An SEM stores its pixel size, beam voltage and dwell time as text in a tag of its own,
    from which Fiji and the maker's software read the scale. They were dropped without a word: they
    now go back as written, and another format says it leaves them out."""
    code, text = SEM_TAGS[maker]
    arr = smooth_image(40, 48, channels=1)
    tifffile.imwrite(tmp_path / "sem.tif", arr, extratags=[(code, 2, 0, text, True)])
    img = read_image(tmp_path / "sem.tif")
    write_image(img, tmp_path / "out.tif")
    assert _raw_tag(tmp_path / "out.tif", code) == text + b"\0"
    with tifffile.TiffFile(tmp_path / "out.tif") as tf:
        assert (tf.is_fei, tf.is_sem) == (maker == "fei", maker == "zeiss")
    from denoisecli.image_io import left_out
    assert left_out(img) == [] and left_out(img, "png") == [f"left out: its {maker.upper() if maker != 'zeiss' else 'Zeiss'} SEM settings"]


def test_an_andor_cameras_settings_stay_with_its_frame(tmp_path):
    """An EMCCD frame from Andor's Solis carries its exposure, temperature and model in tags of
    Andor's own (4864-5030), dropped without a word until 2026-11-29."""
    tags = [(4864, 4, 1, 1, True), (4869, 11, 1, -70.0, True), (4876, 11, 1, 0.05, True), (4914, 2, 0, "DU-897_BV", True)]
    tifffile.imwrite(tmp_path / "frame.tif", smooth_image(40, 48, channels=1).astype(np.uint16) * 40, extratags=tags)
    img = read_image(tmp_path / "frame.tif")
    write_image(img, tmp_path / "out.tif")
    with tifffile.TiffFile(tmp_path / "out.tif") as tf:
        assert tf.is_andor and {t.code: t.value for t in tf.pages[0].tags if 4864 <= t.code <= 5030} == {
            4864: 1, 4869: -70.0, 4876: pytest.approx(0.05), 4914: "DU-897_BV"}
    from denoisecli.image_io import left_out
    assert left_out(img, "png") == ["left out: its Andor camera settings"]


def test_tags_no_output_keeps_are_named(tmp_path):
    """An instrument's or an editor's private tags and a stack's per-page settings went without a
    word; `run -v` names them. Photoshop's image resources (a product shot's clipping path) are
    kept, and named where another format leaves them out."""
    from denoisecli.image_io import left_out

    arr = smooth_image(40, 48, channels=1)
    path = b"8BIM\x07\xd0\x00\x00\x00\x00\x00\x0cclipping pth"  # resource 2000: a path
    tifffile.imwrite(tmp_path / "a.tif", arr, extratags=[(65000, 2, 0, "vendor", True), (34377, 7, len(path), path, True), (37706, 4, 2, (1, 2), True)])
    img = read_image(tmp_path / "a.tif")
    assert img.info["notes"] == ["left out: its private TIFF tags TVIPS (37706), 65000"]
    assert left_out(img, "png") == ["left out: its IPTC and Photoshop data (captions, keywords, clipping paths)"]
    write_image(img, tmp_path / "out.tif")
    assert _raw_tag(tmp_path / "out.tif", 34377) == path
    tifffile.imwrite(tmp_path / "fib.tif", np.stack([arr, arr]), extratags=[(34682, 2, 0, SEM_TAGS["fei"][1], True)])
    img = read_image(tmp_path / "fib.tif", stacks=True)
    assert img.info["notes"] == ["left out: its FEI SEM settings (a stack's pages each hold their own)"] and "tiff_tags" not in img.info


@pytest.mark.parametrize("codec, arr, out", [
    ("jpeg", smooth_image(64, 80, channels=1), ("ADOBE_DEFLATE", 2)),
    ("webp", smooth_image(64, 80), ("ADOBE_DEFLATE", 2)),
    ("jpeg2000", smooth_image(64, 80), ("ADOBE_DEFLATE", 2)),
    ("lerc", smooth_image(64, 80, channels=1).astype(np.float32) / 7, ("ADOBE_DEFLATE", 3)),
    ("lzma", smooth_image(64, 80).astype(np.uint16) * 200, ("LZMA", 1)),
])
def test_a_tiff_in_a_codec_tifffile_does_not_write_back_goes_out_lossless_and_compressed(tmp_path, codec, arr, out):
    """A grey JPEG-compressed TIFF, and WebP, JPEG 2000 or LERC in TIFF, came out uncompressed:
    they go out in deflate with the predictor (the floating-point one for float data), not
    through a lossy codec again, as a colour JPEG one did. LZMA, lossless, stays LZMA."""
    tifffile.imwrite(tmp_path / "in.tif", arr, photometric="rgb" if arr.ndim == 3 else "minisblack", compression=codec)
    write_image(read_image(tmp_path / "in.tif"), tmp_path / "out.tif")
    with tifffile.TiffFile(tmp_path / "out.tif") as tf:
        assert (tf.pages[0].compression.name, int(tf.pages[0].predictor)) == out and tf.pages[0].dtype == arr.dtype


@pytest.mark.parametrize("dtype, nodata", [(np.float32, -9999.0), (np.int16, -32768), (np.uint16, 0), (np.uint16, 65535), (np.uint8, 0)])
def test_a_geotiffs_no_data_pixels_are_set_aside_and_written_back(tmp_path, dtype, nodata):
    """GDAL's no-data value (a terrain model's -9999 border, a satellite scene's 0) set the range a
    file was denoised on, and its pixels came out as data: they are read as stand-ins drawn from
    the image, so the range is the data's, and written back exactly."""
    top = 250 if dtype == np.uint8 else 3000
    arr = (smooth_image(31, 37, channels=1).astype(np.float64) / 255 * top + 5).astype(dtype)
    arr[:6, :9] = nodata
    tifffile.imwrite(tmp_path / "dem.tif", arr, extratags=[(42113, "s", 0, f"{nodata}\x00", True)])
    img = read_image(tmp_path / "dem.tif")
    valid = arr != nodata
    scale = {np.uint8: 255, np.uint16: 65535}.get(dtype)
    lo, hi = img.info.get("float_range", (0, scale))
    values = img.pixels[0].numpy() * (hi - lo) + lo
    assert values.min() >= arr[valid].min() - 1e-3 and values.max() <= arr[valid].max() + 1e-3  # no -9999 in the range
    img.pixels = img.pixels * 0.98 + 0.01  # as a denoiser leaves it: no pixel exactly as read
    write_image(img, tmp_path / "out.tif")
    back = tifffile.imread(tmp_path / "out.tif")
    assert back.dtype == dtype and np.array_equal(back == nodata, ~valid)
    with tifffile.TiffFile(tmp_path / "out.tif") as tf:
        assert tf.pages[0].tags[42113].value.strip("\x00") == f"{nodata}"


def test_the_exif_of_one_of_several_images_is_named_as_left_out(tmp_path):
    """The images of a multi-image TIFF go out through one writer, which lays no EXIF after them: the
    first one's EXIF directory is named as left out, not dropped without a word."""
    from denoisecli.image_io import open_stack

    exif = Image.Exif()
    exif[0x8769] = {0x8827: 800}
    Image.fromarray(smooth_image(40, 60)).save(tmp_path / "two.tif", exif=exif.tobytes())
    tifffile.imwrite(tmp_path / "two.tif", smooth_image(40, 50), append=True, photometric="rgb")
    stacks = open_stack(tmp_path / "two.tif")
    assert [s.notes for s in stacks] == [["left out: its EXIF directory"], []] and not any("exif" in s.info for s in stacks)
    for stack in reversed(stacks):
        stack.close()


def test_a_streamed_float_stacks_range_leaves_out_no_data(tmp_path):
    """A float stack streamed slab by slab is read on the whole file's range, which must leave out
    its no-data value as each slab's does."""
    from denoisecli.image_io import open_stack

    arr = (np.random.default_rng(0).random((4, 23, 19)) * 40 + 100).astype(np.float32)
    arr[2, :5, :5] = -9999
    tifffile.imwrite(tmp_path / "dem.tif", arr, photometric="minisblack", extratags=[(42113, "s", 0, "-9999", True)])
    [stack] = open_stack(tmp_path / "dem.tif")
    with stack:
        slab = stack.read(2, 4)
    assert slab.info["float_range"] == (float(arr[arr > 0].min()), float(arr.max()))


def test_a_tiff_with_its_thumbnail_first_is_read_as_its_image(tmp_path):
    """A scanner's or a camera's TIFF may hold a reduced-resolution thumbnail before the image: it
    was refused as "a TIFF holding 2 images". The largest is the image; the thumbnail is left out."""
    arr = smooth_image(64, 80)
    with tifffile.TiffWriter(tmp_path / "scan.tif") as tw:
        tw.write(arr[::8, ::8].copy(), photometric="rgb", subfiletype=1)
        tw.write(arr, photometric="rgb", compression="zlib")
    img = read_image(tmp_path / "scan.tif")
    assert img.pixels.shape == (3, 64, 80) and np.array_equal((img.pixels.permute(1, 2, 0).numpy() * 255).round(), arr)
    assert img.info["notes"] == ["left out: 1 preview (8x10x3)"] and img.info["compression"] == "adobe_deflate"


def _xmp_of(body: bytes) -> bytes:
    return (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            b'<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/">'
            + body + b"</rdf:Description></rdf:RDF></x:xmpmeta>")


def test_xmp_too_long_for_a_jpeg_no_longer_fails_the_file(tmp_path):
    """A Photoshop TIFF's XMP can run to megabytes of DocumentAncestors, past the 64 kB a JPEG
    segment holds: written as JPEG it failed the file. That list is dropped and the rest kept;
    XMP still too long is left out, and ``left_out`` says so for `run -v`."""
    from denoisecli.image_io import left_out

    ancestors = b"<photoshop:DocumentAncestors><rdf:Bag>" + b"".join(b"<rdf:li>xmp.did:%032d</rdf:li>" % i for i in range(4000)) \
        + b"</rdf:Bag></photoshop:DocumentAncestors>"
    for name, xmp in (("bloated", _xmp_of(b"<dc:rights>Jo</dc:rights>" + ancestors)), ("huge", _xmp_of(b"<dc:rights>" + b"y" * 90000 + b"</dc:rights>"))):
        tifffile.imwrite(tmp_path / f"{name}.tif", smooth_image(31, 37), photometric="rgb", extratags=[(700, 1, len(xmp), xmp, True)])
        img = read_image(tmp_path / f"{name}.tif")
        write_image(img, tmp_path / f"{name}.jpg", fmt="jpeg")
        kept = Image.open(tmp_path / f"{name}.jpg").info.get("xmp")
        if name == "bloated":
            assert kept == _xmp_of(b"<dc:rights>Jo</dc:rights>") and left_out(img, "jpeg") == []
        else:
            assert kept is None and left_out(img, "jpeg") == ["left out: its XMP (90 kB), too long for a JPEG"]
        assert left_out(img) == [] and left_out(img, "png") == []


def test_an_hdr_avif_output_says_what_its_writer_leaves_out():
    from denoisecli.image_io import left_out

    img = LoadedImage(torch.rand(3, 8, 8), "HEIF", 16, None, {"exif": b"Exif\x00\x00II*\x00", "nclx_profile": HDR_NCLX, "depth": 10})
    assert left_out(img, "avif") == ["left out: its EXIF, which the AVIF writer for HDR and wide colour cannot hold"]
    assert left_out(img) == [] and left_out(LoadedImage(img.pixels, "GIF"), None) == []


def test_a_live_photos_clip_is_not_taken_for_a_video_to_extract(tmp_path):
    """An iPhone export holds IMG_0001.HEIC with IMG_0001.MOV, its Live Photo: the left-alone line
    told the user to extract the clip's frames with ffmpeg. Such clips are named for what they are."""
    save(tmp_path / "IMG_0001.jpg", smooth_image(31, 37))
    (tmp_path / "IMG_0001.MOV").write_bytes(b"clip")
    (tmp_path / "holiday.mov").write_bytes(b"film")
    counts = unread_files(tmp_path)
    assert counts == {".mov": 1, ".mov of Live Photos": 1}
    from denoisecli.formats import conversion_hints, describe_counts

    assert describe_counts(counts) == "1 .mov, 1 .mov of Live Photos"
    assert conversion_hints(counts).startswith(". Video: extract its frames") and conversion_hints({".mov of Live Photos": 1}) == ""


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_a_tiffs_resolution_goes_into_other_formats_as_dpi(tmp_path, fmt):
    """A 300 dpi scan written as JPEG or PNG came out with no resolution, to print at a viewer's
    default size: its resolution (per inch or per centimetre) goes along as DPI."""
    for name, res, unit in (("inch.tif", 300, "INCH"), ("cm.tif", 300 / 2.54, "CENTIMETER")):
        tifffile.imwrite(tmp_path / name, smooth_image(31, 37), photometric="rgb", resolution=(res, res), resolutionunit=unit)
        write_image(read_image(tmp_path / name), tmp_path / f"{name}.{fmt}", fmt=fmt)
        dpi = Image.open(tmp_path / f"{name}.{fmt}").info["dpi"]
        assert abs(dpi[0] - 300) < 0.01 and abs(dpi[1] - 300) < 0.01


def test_what_only_a_tiff_or_a_png_holds_is_said_when_another_format_is_asked_for():
    """`--format jpeg` of a drone's GeoTIFF, a Fiji image or a PNG with text dropped their
    georeferencing, calibration, LUT or text without a word: `run -v` names them."""
    from denoisecli.image_io import left_out

    tiff = LoadedImage(torch.rand(1, 8, 8), "TIFF", 8, None, {"tiff_tags": [(33550, 12, 3, (0.1, 0.1, 0.0)), (271, 2, 4, "DJI")],
                                                            "imagej": {"unit": "um"}, "colormap": np.zeros((3, 256), np.uint16)})
    assert left_out(tiff) == [] and left_out(tiff, "tiff") == []
    assert left_out(tiff, "jpeg") == ["left out: its GeoTIFF georeferencing; its ImageJ calibration; its LUT"]
    png = LoadedImage(torch.rand(3, 8, 8), "PNG", 8, None, {"png_text": {"Title": "Dunes", "Author": "Jo"}})
    assert left_out(png) == [] and left_out(png, "jpeg") == ["left out: its PNG text (Title, Author)"]


APPLE_XMP = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
             b'<rdf:Description xmlns:HDRGainMap="http://ns.apple.com/HDRGainMap/1.0/">'
             b'<HDRGainMap:HDRGainMapVersion>65536</HDRGainMap:HDRGainMapVersion></rdf:Description></rdf:RDF></x:xmpmeta>')


def _ultra_hdr(path, photo, gain_map, hdrgm=True, apple=False):
    """An Ultra HDR JPEG laid out as Android writes it: the photo with the container XMP that names
    its gain map, an ISO 21496-1 segment and an MPF index (little-endian here), then the gain map.
    ``apple``: as an iPhone's HDR JPEG, the gain map named by its own XMP alone, the photo's XMP plain."""
    gain = io.BytesIO()
    Image.fromarray(gain_map).save(gain, format="JPEG", quality=90,
                                   xmp=APPLE_XMP if apple else b'<x:xmpmeta xmlns:x="adobe:ns:meta/" hdrgm:Version="1.0"/>')
    gain = gain.getvalue()
    xmp = _xmp_of(b"<dc:rights>Jo</dc:rights>") if apple else (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
           b'<rdf:Description xmlns:Container="http://ns.google.com/photos/1.0/container/" '
           b'xmlns:Item="http://ns.google.com/photos/1.0/container/item/" xmlns:hdrgm="http://ns.adobe.com/hdr-gain-map/1.0/" '
           + (b'hdrgm:Version="1.0"' if hdrgm else b"") + b'><Container:Directory><rdf:Seq>'
           b'<rdf:li rdf:parseType="Resource"><Container:Item Item:Semantic="Primary" Item:Mime="image/jpeg"/></rdf:li>'
           b'<rdf:li rdf:parseType="Resource"><Container:Item Item:Semantic="GainMap" Item:Mime="image/jpeg" Item:Length="%d"/></rdf:li>'
           b'</rdf:Seq></Container:Directory></rdf:Description></rdf:RDF></x:xmpmeta>' % len(gain))
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, format="JPEG", quality=95, xmp=xmp)
    primary = buf.getvalue()
    at = 2
    while primary[at + 1] in range(0xE0, 0xF0):
        at += 2 + struct.unpack(">H", primary[at + 2 : at + 4])[0]
    iso = b"urn:iso:std:iso:ts:21496:-1\x00\x00\x00\x00\x00"
    iso = b"" if apple else b"\xff\xe2" + struct.pack(">H", len(iso) + 2) + iso
    size = len(primary) + len(iso) + 4 + 86
    header = at + len(iso) + 8
    mpf = (b"MPF\x00II\x2a\x00" + struct.pack("<IH", 8, 3) + struct.pack("<HHI", 0xB000, 7, 4) + b"0100"
           + struct.pack("<HHII", 0xB001, 4, 1, 2) + struct.pack("<HHII", 0xB002, 7, 32, 50) + struct.pack("<I", 0)
           + struct.pack("<IIIHH", 0x030000, size, 0, 0, 0) + struct.pack("<IIIHH", 0, len(gain), size - header, 0, 0))
    path.write_bytes(primary[:at] + iso + b"\xff\xe2" + struct.pack(">H", len(mpf) + 2) + mpf + primary[at:] + gain)
    return gain


@pytest.mark.parametrize("hdrgm", [True, False])
def test_an_ultra_hdr_jpeg_keeps_its_gain_map(tmp_path, hdrgm):
    """Android's photos are Ultra HDR: a gain map after the photo says how much brighter each part
    shows on an HDR screen. It was left out, so the output showed no HDR: it goes back after the
    denoised photo, as read, with the XMP and ISO 21496-1 segment that describe it; written as
    another format it is left out, as `run -v` says."""
    from denoisecli.image_io import left_out

    gain = _ultra_hdr(tmp_path / "PXL_1.jpg", smooth_image(40, 48), smooth_image(10, 12, channels=1), hdrgm)
    assert Image.open(tmp_path / "PXL_1.jpg").format == ("JPEG" if hdrgm else "MPO")  # Pillow opens Ultra HDR as JPEG
    assert Image.open(tmp_path / "PXL_1.jpg")._getmp()[0xB002][1]["Size"] == len(gain)  # the fixture, as Pillow reads MPF
    img = read_image(tmp_path / "PXL_1.jpg")
    assert img.format == "JPEG" and img.info["gain_map"]["jpeg"] == gain and not img.info.get("notes")
    img.pixels = img.pixels * 0.98
    write_image(img, tmp_path / "out.jpg")
    data = (tmp_path / "out.jpg").read_bytes()
    with Image.open(tmp_path / "out.jpg") as out:  # Pillow reads its MPF index
        assert b'Item:Semantic="GainMap"' in out.info["xmp"] and out.info["xmp"] == img.info["gain_map"]["xmp"]
        assert any(seg.startswith(b"urn:iso:std:iso:ts:21496:-1") for marker, seg in out.applist if marker == "APP2")
        photo, mp = np.asarray(out.convert("RGB"), np.float64), out._getmp()
        first, second = mp[0xB002]
        assert (mp[0xB001], first["Size"], first["DataOffset"], second["Size"]) == (2, len(data) - len(gain), 0, len(gain))
        assert data[data.index(b"MPF\x00") + 4 + second["DataOffset"]:] == gain
    assert abs(photo.mean() - smooth_image(40, 48).mean() * 0.98) < 2
    assert left_out(img) == [] and left_out(img, "png") == ["left out: its HDR gain map (Ultra HDR), which a JPEG output keeps"]
    write_image(img, tmp_path / "out.png", fmt="png")
    assert "xmp" not in Image.open(tmp_path / "out.png").info


@pytest.mark.parametrize("stack", [False, True])
def test_a_tiled_tiff_is_written_tiled(tmp_path, stack):
    """A cloud-optimised GeoTIFF or a large scan is tiled, which GIS tools read a window at a time;
    it came out in strips. It goes back in tiles of its size, a stack's every page too."""
    arr = (smooth_image(200, 300).astype(np.uint16) * 200)
    arr = np.stack([arr, arr // 2, arr // 3]) if stack else arr
    tifffile.imwrite(tmp_path / "ortho.tif", arr, photometric="rgb", tile=(128, 64), compression="zlib", predictor=2,
                     **({"metadata": {"axes": "ZYXS"}} if stack else {}))
    write_image(read_image(tmp_path / "ortho.tif", stacks=True), tmp_path / "out.tif")
    with tifffile.TiffFile(tmp_path / "out.tif") as tf:
        assert all(p.is_tiled and (p.tilelength, p.tilewidth) == (128, 64) for p in tf.pages)
        assert tf.series[0].shape == arr.shape and np.array_equal(tf.asarray(), arr)


def test_a_cloud_optimised_geotiffs_overviews_are_left_out_and_said(tmp_path):
    """A COG holds reduced-resolution overviews after its image, which were dropped without a word:
    the image is read, and the read names the levels left out (GIS viewers rebuild them)."""
    arr = smooth_image(64, 64, channels=1).astype(np.uint16) * 40
    with tifffile.TiffWriter(tmp_path / "cog.tif") as tw:
        tw.write(arr, tile=(32, 32), compression="zlib")
        tw.write(arr[::2, ::2].copy(), tile=(32, 32), compression="zlib", subfiletype=1)
    img = read_image(tmp_path / "cog.tif")
    assert img.pixels.shape == (1, 64, 64) and img.info["notes"] == ["left out: 1 reduced-resolution level (viewers rebuild them)"]


def test_a_film_scanners_infrared_channel_is_not_made_alpha(tmp_path):
    """A film scanner stores RGBI: an infrared channel for dust removal, declared as no alpha. It
    went out declared as alpha, and viewers showed the photo see-through. It is kept as read and
    declared as it was; another format leaves it out, as `run -v` says, rather than make it alpha."""
    from denoisecli.image_io import left_out

    rgbi = np.concatenate([smooth_image(31, 37), smooth_image(31, 37, channels=1, seed=3)[..., None]], -1).astype(np.uint16) * 257
    tifffile.imwrite(tmp_path / "scan.tif", rgbi, photometric="rgb", extrasamples=["unspecified"])
    img = read_image(tmp_path / "scan.tif")
    write_image(img, tmp_path / "out.tif")
    with tifffile.TiffFile(tmp_path / "out.tif") as tf:
        assert tf.pages[0].extrasamples[0].name == "UNSPECIFIED" and np.array_equal(tf.asarray()[..., 3], rgbi[..., 3])
    write_image(img, tmp_path / "out.png", fmt="png")
    assert imagecodecs.png_decode((tmp_path / "out.png").read_bytes()).shape == (31, 37, 3)
    assert left_out(img, "png") == ["left out: its fourth channel, which is no alpha (a film scanner's infrared)"]


def test_jpeg_segments_an_output_leaves_out_are_named(tmp_path):
    """A thermal camera's readings (FLIR's APP1, DJI's APP3) and a portrait's depth map in extended
    XMP went without a word: Pillow writes EXIF, XMP, ICC and comments alone."""
    buf = io.BytesIO()
    Image.fromarray(smooth_image(31, 37)).save(buf, format="JPEG", quality=90)
    plain = buf.getvalue()

    def seg(marker, body):
        return bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body

    extra = seg(0xE1, b"FLIR\x00\x01\x01\x02" + bytes(40)) + seg(0xE3, bytes(40)) + seg(0xE6, b"GoPro\x00" + bytes(20)) + seg(0xEC, b"Ducky" + bytes(10))
    (tmp_path / "IR_0001.jpg").write_bytes(plain[:20] + extra + plain[20:])  # after SOI and JFIF's APP0
    notes = read_image(tmp_path / "IR_0001.jpg").info["notes"]
    assert notes == ["left out: its FLIR thermal data; its APP3 data (a thermal camera's readings, a maker's data)"]
    (tmp_path / "plain.jpg").write_bytes(plain)
    assert "notes" not in read_image(tmp_path / "plain.jpg").info


def test_a_gopros_telemetry_goes_back_into_its_jpeg(tmp_path):
    """A GoPro photo's telemetry (APP6 GPMF: the camera's sensors and GPS) holds no offsets; it was
    dropped, and goes back into a JPEG as read, named where another format leaves it out."""
    from denoisecli.image_io import left_out

    buf = io.BytesIO()
    Image.fromarray(smooth_image(31, 37)).save(buf, format="JPEG", quality=90)
    gpmf = b"GoPro\x00" + b"DEVC" + bytes(40)
    plain = buf.getvalue()
    (tmp_path / "GOPR0001.JPG").write_bytes(plain[:20] + b"\xff\xe6" + struct.pack(">H", len(gpmf) + 2) + gpmf + plain[20:])
    img = read_image(tmp_path / "GOPR0001.JPG")
    assert "notes" not in img.info and left_out(img, "png") == ["left out: its GoPro telemetry (GPMF: the camera's sensors and GPS)"]
    write_image(img, tmp_path / "out.jpg")
    assert [body for marker, body in Image.open(tmp_path / "out.jpg").applist if marker == "APP6"] == [gpmf]


def test_a_tiffs_photoshop_layers_are_named_as_left_out(tmp_path):
    """A Photoshop TIFF's layers (tag 37724) went without a word: the output is the flattened
    picture, and `run -v` says what it lost."""
    tifffile.imwrite(tmp_path / "edit.tif", smooth_image(31, 37), photometric="rgb",
                     extratags=[(37724, 7, 16, b"Adobe Photoshop\x00", True)])
    assert read_image(tmp_path / "edit.tif").info["notes"] == ["left out: its Photoshop layers (the output is the flattened picture)"]


IPTC = b"\x1c\x02\x00\x00\x02\x00\x04" + b"\x1c\x02\x19\x00\x05alpen" + b"\x1c\x02\x78\x00\x0fBergsee, Tirol." + b"\x1c\x02\x74\x00\x0a(c) A. Bee"


def _app13(jpeg: bytes, resources: bytes) -> bytes:
    body = b"Photoshop 3.0\x00" + resources
    return jpeg[:2] + b"\xff\xed" + struct.pack(">H", len(body) + 2) + body + jpeg[2:]


def test_a_jpegs_iptc_caption_keywords_and_copyright_go_back_into_it(tmp_path):
    """A news or stock photo's IPTC (caption, keywords, copyright in Photoshop's APP13) was left
    out of every output: Pillow reads it but does not write it. It goes back into a JPEG as read, and
    into a TIFF's tags 34377 and 33723, from which it comes back; other formats name it left out."""
    from PIL import IptcImagePlugin

    from denoisecli.image_io import _resource, left_out

    buf = io.BytesIO()
    Image.fromarray(smooth_image(31, 37)).save(buf, format="JPEG", quality=90)
    resources = _resource(1028, IPTC) + _resource(1005, bytes(16))
    (tmp_path / "news.jpg").write_bytes(_app13(buf.getvalue(), resources))
    want = IptcImagePlugin.getiptcinfo(Image.open(tmp_path / "news.jpg"))
    assert want[(2, 120)] == b"Bergsee, Tirol." and want[(2, 25)] == b"alpen"
    img = read_image(tmp_path / "news.jpg")
    assert "notes" not in img.info and left_out(img) == left_out(img, "tiff") == []
    assert left_out(img, "png") == ["left out: its IPTC and Photoshop data (captions, keywords, clipping paths)"]
    write_image(img, tmp_path / "out.jpg")
    assert IptcImagePlugin.getiptcinfo(Image.open(tmp_path / "out.jpg")) == want
    write_image(img, tmp_path / "out.tif", "TIFF")
    assert _raw_tag(tmp_path / "out.tif", 33723) == IPTC and _raw_tag(tmp_path / "out.tif", 34377) == resources
    write_image(read_image(tmp_path / "out.tif"), tmp_path / "back.jpg", "JPEG")
    assert IptcImagePlugin.getiptcinfo(Image.open(tmp_path / "back.jpg")) == want


def test_a_tiffs_iptc_alone_goes_into_a_jpeg_and_a_long_thumbnail_is_dropped_first(tmp_path):
    """IPTC in a TIFF's tag 33723 alone becomes a JPEG's APP13; resources past a JPEG segment lose
    their stale thumbnail first (a thumbnail of the noisy picture), and one too long is named."""
    from PIL import IptcImagePlugin

    from denoisecli.image_io import _resource, left_out

    tifffile.imwrite(tmp_path / "scan.tif", smooth_image(31, 37), photometric="rgb", extratags=[(33723, 7, len(IPTC), IPTC, True)])
    write_image(read_image(tmp_path / "scan.tif"), tmp_path / "scan.jpg", "JPEG")
    assert IptcImagePlugin.getiptcinfo(Image.open(tmp_path / "scan.jpg"))[(2, 120)] == b"Bergsee, Tirol."
    for name, extra, kept in (("thumb", _resource(1036, bytes(40_000)), True), ("path", _resource(2000, bytes(70_000)), False)):
        resources = _resource(1028, IPTC) + _resource(1005, bytes(16))
        tifffile.imwrite(tmp_path / f"{name}.tif", smooth_image(31, 37), photometric="rgb",
                         extratags=[(34377, 7, len(resources + extra * 2), resources + extra * 2, True)])
        img = read_image(tmp_path / f"{name}.tif")
        write_image(img, tmp_path / f"{name}.jpg", "JPEG")
        got = IptcImagePlugin.getiptcinfo(Image.open(tmp_path / f"{name}.jpg"))
        assert (got is not None and got[(2, 25)] == b"alpen") == kept
        assert left_out(img, "jpeg") == ([] if kept else ["left out: its Photoshop data, a block too long for a JPEG"])


def test_an_iphones_hdr_jpeg_keeps_its_gain_map(tmp_path):
    """An iPhone's HDR JPEG carries its gain map in MPF too, named by Apple's XMP in the gain map
    alone: it goes back after the photo as read, and the photo's own XMP stays its XMP."""
    gain = _ultra_hdr(tmp_path / "IMG_1.jpg", smooth_image(40, 48), smooth_image(10, 12, channels=1), hdrgm=False, apple=True)
    img = read_image(tmp_path / "IMG_1.jpg")
    assert img.info["gain_map"]["jpeg"] == gain and img.info["xmp"] == _xmp_of(b"<dc:rights>Jo</dc:rights>") and not img.info.get("notes")
    write_image(img, tmp_path / "out.jpg")
    data = (tmp_path / "out.jpg").read_bytes()
    with Image.open(tmp_path / "out.jpg") as out:
        assert out.info["xmp"] == img.info["xmp"] and out._getmp()[0xB002][1]["Size"] == len(gain) and data.endswith(gain)

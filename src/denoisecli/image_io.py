"""Reading and writing image files: float tensors in [0, 1] in, the same kind of file out, atomically.

Pillow reads and writes most files. Pillow has no 16-bit colour mode, so two well-kept
libraries by the same author cover what it cannot: tifffile for every TIFF (8/16-bit,
32-bit float, grey, colour, alpha; its compressions through imagecodecs; multi-page stacks,
ImageJ hyperstacks among them) and imagecodecs' libpng for 16-bit colour PNG; HEIC/HEIF (an
iPhone's photos; a camera's 10-bit HIF, kept at its depth) goes through the optional pillow-heif
plugin. A PGM or PPM deeper than 8 bits (a raw converter's 16-bit PPM, `dcraw -4`) is read and
written here, at its own depth: Pillow reads a 16-bit PPM as 8 bits. Metadata (EXIF, ICC profile,
XMP, DPI; a stack's axes and ImageJ calibration) goes back into every output that can carry it.
"""

from __future__ import annotations

import io
import itertools
import logging
import math
import os
import re
import threading
import struct
import warnings
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from PIL import Image, ImageFile

from denoisecli.atomic import atomic_write
from denoisecli.device import format_bytes
from denoisecli.errors import DenoiseError, first_line
from denoisecli.formats import HEIF_SUFFIXES, format_of, normalize_format

HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}  # the ftyp box's major brand
TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF, either byte order
DEFAULT_MAX_PIXELS = 120_000_000
# Lossless encoders at fast settings: on our own denoised outputs (benchmarks/write_speed.py) zlib's
# run-length strategy wrote PNG 3-4x as fast as the default level 6, files within 1% of its size,
# as OpenCV writes PNG by default; WebP's lossless effort 0 (its "quality") wrote 3.8x as fast as
# 100, files 0.4% larger. Slow settings had made writing a PNG a third of `run`'s time at 256x256.
PNG_STRATEGY = zlib.Z_RLE
WEBP_LOSSLESS_EFFORT = 0
# HEIC's x265 encoder at its medium preset: on our outputs for 8 Kodak24 images at quality 95
# (benchmarks/write_speed.py) 488 ms/MP against 1096 at libheif's default, files 0.5% larger at
# the same PSNR; ultrafast took 206 ms/MP but made files 16% larger. The default took 10 s for a
# 12 MP photo on 2 cores, longer than the network.
HEIF_PRESET = "medium"
# threads that compress a TIFF's pages: tifffile otherwise compresses a stream of pages in one; 100 16-bit
# pages of 1024x1024 in deflate took 1.32 s with 2 against 2.44 (this 2-core VM; the file byte-identical)
TIFF_WORKERS = max(1, min(4, os.cpu_count() or 1))
# AVIF's encoder speed (libavif, 0 slowest to 10): on our outputs for 8 Kodak24 images at quality 95
# (benchmarks/write_speed.py) 265 ms/MP at 8 against 608 at Pillow's default 6, files 0.6% larger,
# 0.16 dB lower; 10 took 82 ms/MP but made files 6% larger and lost 0.4 dB.
AVIF_SPEED = 8
# the TIFF compressions written back as read: lossless ones (LZMA since 2026-11-29); the lossy, and LERC,
# go out in deflate with the predictor
TIFF_COMPRESSIONS = {"zlib", "lzw", "adobe_deflate", "deflate", "zstd", "packbits", "lzma"}
# the most pixel data a classic TIFF is written with (tifffile's own bound): its offsets are 32 bits
CLASSIC_TIFF_BYTES = 2**32 - 2**25
# float samples read at a time for a streamed stack's range (``TiffStack``): 64 MB
SCAN_SAMPLES = 16_000_000
# TIFF tags that describe an image, not its layout, and go back into a TIFF output as they were: the
# document's and page's names, camera make and model, the orientation a viewer turns the pixels to
# (as JPEG's EXIF one is kept), date, artist, host computer, copyright (a scanner's or a raw
# converter's TIFF), and GeoTIFF's georeferencing and GDAL's metadata and no-data value (a
# satellite or drone image); Photoshop's image resources and IPTC go as ``info["photoshop"]``
KEPT_TIFF_TAGS = {269, 271, 272, 274, 285, 306, 315, 316, 33432, 33550, 33922, 34264, 34735, 34736, 34737, 42112, 42113}
# TIFF tags no output keeps, named for ``run -v``: Photoshop's layers (the output is its flattened
# picture); the EXIF and GPS directories of a stack (a single image's are kept: ``EXIF_DIRECTORIES``)
DROPPED_TIFF_TAGS = {37724: "its Photoshop layers (the output is the flattened picture)", 34665: "its EXIF directory",
                     34853: "its GPS directory"}
# GeoTIFF's georeferencing: pixel scale, tie points, transformation and key directory
GEOTIFF_TAGS = {33550, 33922, 34264, 34735}
# TIFF tags that describe one plane, kept for a single image: Micro-Manager's frame metadata (51123: the
# exposure, stage position and time of each file of its image sequences), and the settings an electron
# microscope stores as text beside its picture (pixel size, beam voltage, working distance, dwell time),
# from which Fiji and the makers' software read its scale (dropped without a word until 2026-11-29);
# a stack's pages each hold their own, which one set of tags for a stream of pages cannot carry
PLANE_TIFF_TAGS = {51123: "its Micro-Manager frame metadata", 34118: "its Zeiss SEM settings", 34680: "its FEI SEM settings",
                   34682: "its FEI SEM settings", 50431: "its TESCAN SEM settings",
                   # an Andor camera's (Solis): exposure, temperature, EM gain, readout, model and serial
                   **dict.fromkeys(range(4864, 5031), "its Andor camera settings")}
# the EXIF and GPS directories a TIFF points to (a raw converter's exposure, lens, capture date and
# place), carried over as EXIF into any output and written back into a TIFF (``_with_exif``); a TIFF's
# were dropped until 2026-11-29, and a JPEG's went into a TIFF as its make, model and date alone
EXIF_DIRECTORIES = (0x8769, 0x8825)
# the TIFF tags that EXIF's first directory holds under the same numbers (make, model, orientation,
# date, artist, copyright): a JPEG written as TIFF, or a TIFF as JPEG, keeps them across (``_across``)
EXIF_TIFF_TAGS = {271: 2, 272: 2, 274: 3, 306: 2, 315: 2, 33432: 2}
# ImageJ metadata that describes the layout of a hyperstack: tifffile writes it anew from the axes
IMAGEJ_LAYOUT = {"ImageJ", "images", "channels", "slices", "frames", "hyperstack"}
# the namespace of the XMP that maps what Android stores after a JPEG's photo (Ultra HDR, Motion Photo)
GCONTAINER = b"http://ns.google.com/photos/1.0/container/"
# Google's photo sphere XMP (GPano), as attribute or element: what ``wraps`` reads
GPANO = re.compile(rb'(?<!/)GPano:(ProjectionType|FullPanoWidthPixels|CroppedAreaImageWidthPixels)\s*(?:=\s*"([^"]*)"|>([^<]*)<)')
# the APP13 segment in which a JPEG holds Photoshop's image resources (IPTC captions, keywords and
# copyright; a clipping path), which a TIFF holds in tags 34377 (all of them) and 33723 (the IPTC)
PHOTOSHOP_APP13 = b"Photoshop 3.0\x00"
# how a GoPro's APP6 segment of telemetry (GPMF) begins, which a JPEG output keeps
GPMF = b"GoPro"
# the APP2 segments of ISO 21496-1, the standard gain map metadata an Ultra HDR JPEG may carry
ISO_GAIN_MAP = b"urn:iso:std:iso:ts:21496:-1\x00"
# what a gain map's own header says it is: Adobe's XMP (Android's too), Apple's XMP, ISO 21496-1
GAIN_MAP_MARKS = (b"hdrgm:Version", b"http://ns.apple.com/HDRGainMap/", ISO_GAIN_MAP)
# the most XMP one JPEG segment holds after its namespace (Pillow refuses more); and Photoshop's list of
# every document ever pasted in, which can run XMP to megabytes (``_slim_xmp``)
JPEG_XMP_BYTES = 65504
ANCESTORS = re.compile(rb"<photoshop:DocumentAncestors\s*/>|<photoshop:DocumentAncestors>.*?</photoshop:DocumentAncestors>", re.S)
# PNG's iTXt keyword for XMP (the XMP specification, part 3)
XMP_KEY = "XML:com.adobe.xmp"
_PNM_GAP = rb"(?:\s|#[^\r\n]*[\r\n])+"  # netpbm's header fields are parted by whitespace and comments
PNM_HEADER = re.compile(rb"P([56])" + _PNM_GAP + rb"(\d+)" + _PNM_GAP + rb"(\d+)" + _PNM_GAP + rb"(\d+)\s")
ImageFile.LOAD_TRUNCATED_IMAGES = False


@dataclass
class LoadedImage:
    """Pixels as a float CxHxW tensor in [0, 1], plus what is needed to write the same kind of file.

    ``bits`` is 8, 16 (a 10- or 12-bit HEIF or a 9- to 15-bit PGM/PPM too: ``info["depth"]``, its
    own depth, which it is written back at) or 32 (float); ``alpha``
    is the untouched alpha plane in the file's own dtype; ``info`` holds metadata (icc_profile,
    exif, xmp, dpi; a HEIF's nclx_profile, a TIFF's OME-XML as ``ome``) and format details, and
    ``notes``: what reading it left out or worked around, for ``run -v``. A TIFF stack (read with
    ``stacks``) holds its planes as NxCxHxW, and ``info["stack"]`` the shape and axes of the
    file's planes, so it is written back as the same stack.
    """

    pixels: torch.Tensor
    format: str
    bits: int = 8
    alpha: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def channels(self) -> int:
        return int(self.pixels.shape[-3])

    @property
    def planes(self) -> list[torch.Tensor]:
        """The CxHxW images to denoise: a stack's planes, or the image itself."""
        return list(self.pixels) if self.pixels.ndim == 4 else [self.pixels]

    @property
    def megapixels(self) -> float:
        return math.prod(self.pixels.shape[:-3]) * self.pixels.shape[-1] * self.pixels.shape[-2] / 1e6

    def on_scale_of(self, other: LoadedImage) -> LoadedImage:
        """This image on ``other``'s scale. A float file is read onto [0, 1] by its own range
        (``float_range``), so the clean and noisy files of a pair land on different scales until
        one is put on the other's; integer files share theirs already."""
        lo, hi = self.info.get("float_range", (0.0, 1.0))
        olo, ohi = other.info.get("float_range", (0.0, 1.0))
        if (lo, hi) == (olo, ohi):
            return self
        pixels = (self.pixels * (hi - lo) + (lo - olo)) / (ohi - olo)
        return LoadedImage(pixels, self.format, self.bits, self.alpha, {**self.info, "float_range": (olo, ohi)})


def read_image(path: Path, max_pixels: int | None = DEFAULT_MAX_PIXELS, stacks: bool = False) -> LoadedImage:
    """Decode fully (so a broken file fails here, with its name and the reason, not later).

    A multi-page TIFF stack (a microscope's z-stack or time series, an ImageJ hyperstack) is
    read whole where ``stacks`` is set (`add-noise`, `train` and `eval` take each plane as an
    image; `run` streams a stack instead, see ``open_stack``), else refused; ``max_pixels`` then
    bounds the whole stack, as its planes are all held at once.

    A file whose content is another format than its name says (a JPEG saved as ``.png``, a HEIC
    renamed ``.jpg`` by a transfer tool) is read by its content and written back as its name says,
    so the output's name and content agree (``format``)."""
    image = _fill_transparent(_read(Path(path), max_pixels, stacks))
    image.info = _across(image.info)
    if wraps(image.info.get("xmp") or b"") and image.pixels.ndim == 3:
        image.info["wraps"] = True
    named = format_of(path)
    if named is not None and named != image.format and (image.pixels.ndim == 3 or named == "TIFF"):
        image.format = named
    return image


def wraps(xmp: bytes) -> bool:
    """Whether XMP says the picture is a whole 360-degree panorama (Google's photo sphere XMP, which
    360 cameras and stitchers write: an equirectangular projection not cropped across), whose
    left and right edges meet."""
    fields = {m[1]: (m[2] if m[2] is not None else m[3]).strip() for m in GPANO.finditer(xmp)}
    return fields.get(b"ProjectionType") == b"equirectangular" and fields.get(b"CroppedAreaImageWidthPixels") == fields.get(b"FullPanoWidthPixels")


def header_size(path: Path) -> tuple[int, int, int] | None:
    """(pixels per plane, planes, channels) from a file's header, without decoding it: what a
    folder of images will take once decoded, for training's memory check. None where the
    header does not say (a damaged file, HEIC without its plugin), which is then read as usual."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
        if head in TIFF_SIGNATURES:
            with TiffStack(Path(path)) as tiff:  # its planes as `train` reads them: a page's grey channels each one
                return math.prod(tiff.size), tiff.pages * tiff.samples, tiff.channels
        if Path(path).suffix.lower() in HEIF_SUFFIXES and "HEIF" not in Image.OPEN:
            _heif(Path(path))
        with warnings.catch_warnings(), _unlimited_pillow(), Image.open(path) as im:
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return im.size[0] * im.size[1], 1, 1 if im.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "F") else 3
    except Exception:  # the header of a damaged file: its read says what is wrong
        return None


def _read(path: Path, max_pixels: int | None, stacks: bool) -> LoadedImage:
    with _reading(path):
        if path.stat().st_size == 0:
            raise DenoiseError(f"{path}: empty file (0 bytes)")
        with open(path, "rb") as f:
            head = f.read(12)
        if head[:4] in TIFF_SIGNATURES:
            return _read_tiff(path, max_pixels, stacks)
        deep = _read_pnm_deep(path, max_pixels) if head[:2] in (b"P5", b"P6") else None
        if deep is not None:
            return deep
        brand = head[8:12] if head[4:8] == b"ftyp" else b""
        if path.suffix.lower() in HEIF_SUFFIXES or brand in HEIF_BRANDS:
            _heif(path)
        if path.suffix.lower() == ".avif" or brand in (b"avif", b"avis"):
            _avif(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with _unlimited_pillow(), Image.open(path) as im:
                w, h = im.size
                _check_size(path, w, h, max_pixels)
                if im.format == "PNG" and _png_header(path)[0] == 16 and _png_header(path)[1] in (2, 4, 6):
                    return _read_png16(path, im.info)
                if im.format == "HEIF" and im.info.get("bit_depth", 8) > 8:
                    return _read_heif_deep(path, im.info)
                if im.format == "AVIF":
                    return _read_avif(path, im)
                im.load()
                return _from_pil(im, path)


def _across(info: dict[str, Any]) -> dict[str, Any]:
    """``info`` with its EXIF's make, model, orientation, date, artist and copyright as TIFF tags
    (``tiff_tags``), or a TIFF's as EXIF, so an output of the other kind keeps them: a portrait
    photo's JPEG written as TIFF (`--format tiff`) came out sideways, its EXIF orientation dropped.
    A TIFF's resolution goes along as DPI: a 300 dpi scan written as JPEG or PNG came out with
    none, to print at a viewer's default size (until 2026-11-29)."""
    if "resolution" in info and "dpi" not in info:
        x, y, unit = info["resolution"]
        per_inch = {2: 1.0, 3: 2.54}.get(unit)
        info = {**info, "dpi": (x * per_inch, y * per_inch)} if per_inch and x > 0 and y > 0 else info
    if info.get("exif") and "tiff_tags" not in info:
        exif = Image.Exif()
        try:
            exif.load(info["exif"])
        except Exception:  # a damaged EXIF block goes back into a JPEG as it was, and no further
            return info
        # Pillow reads EXIF text as Latin-1, so this gives back its bytes (a photographer's "©", UTF-8)
        tags = [(code, kind, 1, exif[code].encode("latin-1", "replace") if isinstance(exif[code], str) else exif[code])
                for code, kind in EXIF_TIFF_TAGS.items() if isinstance(exif.get(code), (str, int)) and exif.get(code) != ""]
        return {**info, "tiff_tags": tags} if tags else info
    if info.get("tiff_tags") and not info.get("exif"):
        exif = Image.Exif()
        for code, _, _, value in info["tiff_tags"]:
            if code in EXIF_TIFF_TAGS and isinstance(value, (bytes, str, int)):
                exif[code] = value
        return {**info, "exif": exif.tobytes()} if len(exif) else info
    return info


def open_stack(path: Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> list[TiffStack] | None:
    """A TIFF stack opened to be streamed (`run`), or each of the images a TIFF holds (its series:
    a microscope's stage positions, a Leica file's images through bfconvert; refused until
    2026-11-29), one stack each; or None where the file is one image, to be read with
    ``read_image``. ``max_pixels`` bounds each plane, as a stack is never held whole."""
    with _reading(Path(path)):
        with open(path, "rb") as f:
            if f.read(4) not in TIFF_SIGNATURES:
                return None
        stacks = [TiffStack(Path(path), several=True)]
        try:
            stacks += [TiffStack(Path(path), series=k, shared=stacks[0]) for k in stacks[0]._mains[0][1:]]
            if len(stacks) == 1 and stacks[0].pages * stacks[0].samples == 1:
                stacks[0].close()
                return None
            for stack in stacks:
                _check_size(stack.path, *stack.size, max_pixels, planes=stack.samples)
        except BaseException:
            for stack in reversed(stacks):  # the first, which closes the file, last
                stack.close()
            raise
        return stacks


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """A decoder's failure as one line naming the file and the reason."""
    try:
        yield
    except DenoiseError:
        raise
    except FileNotFoundError as exc:
        raise DenoiseError(f"{path}: file not found") from exc
    except PermissionError as exc:
        raise DenoiseError(f"{path}: permission denied") from exc
    except IsADirectoryError as exc:
        raise DenoiseError(f"{path}: is a folder, not an image") from exc
    except MemoryError as exc:
        raise DenoiseError(f"{path}: not enough memory to decode") from exc
    except Exception as exc:  # decoders of untrusted files raise many types; each becomes one line
        from PIL import UnidentifiedImageError

        if isinstance(exc, UnidentifiedImageError) and not _signed(path):
            raise DenoiseError(f"{path}: not an image file (or a format this tool cannot read)") from exc
        raise DenoiseError(f"{path}: cannot decode image, the file is damaged or truncated ({first_line(exc)})") from exc


def _heif(path: Path) -> None:
    """Let Pillow read and write HEIC/HEIF through pillow-heif, or say in one line how to get it.
    It is an optional extra, not a dependency: its wheels bundle libheif and the GPL x265 encoder."""
    try:
        import pillow_heif
    except ImportError as exc:
        raise DenoiseError(f"{path}: HEIC/HEIF images need the optional pillow-heif package "
                           "(pip install 'denoisecli[heif]')") from exc
    if "HEIF" not in Image.OPEN:
        pillow_heif.register_heif_opener()


def _signed(path: Path) -> bool:
    """Whether a file begins as an image format this tool reads: one that then fails to open is
    damaged (a truncated AVIF is not identified at all), not some other kind of file."""
    with open(path, "rb") as f:
        head = f.read(12)
    return (head.startswith((b"\x89PNG", b"\xff\xd8\xff", b"BM")) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")
            or (head[:2] in (b"P2", b"P3", b"P5", b"P6") and head[2:3].isspace())
            or (head[4:8] == b"ftyp" and head[8:12] in HEIF_BRANDS | {b"avif", b"avis"}))


def _avif(path: Path) -> None:
    """AVIF goes through Pillow's own plugin (libavif), which only some builds have."""
    Image.init()
    if "AVIF" not in Image.OPEN:
        raise DenoiseError(f"{path}: this Pillow cannot read or write AVIF (recent releases can: pip install -U pillow)")


def _read_avif(path: Path, im: Image.Image) -> LoadedImage:
    """An AVIF at its own depth, with its nclx colour description. Pillow's plugin hands out 8
    bits and drops the nclx, so a 10-bit HDR AVIF (an editor's HDR export: BT.2020 primaries, PQ)
    came out as 8-bit sRGB, its colours shown wrong (until 2026-11-29). A deep one is decoded by
    imagecodecs' libavif, its pixels the file's levels over its top level, as a deep HEIF's."""
    data = path.read_bytes()
    depth, nclx = _avif_header(data)
    if depth > 8:
        import imagecodecs

        img = _deep_image(imagecodecs.avif_decode(data), depth, "AVIF", {**_meta(im.info), "depth": depth})
    else:
        im.load()
        img = _from_pil(im, path)
    if nclx is not None:
        img.info["nclx_profile"] = nclx
    return img


def _avif_header(data: bytes) -> tuple[int, dict[str, int] | None]:
    """An AVIF's bit depth (its AV1 configuration's, the deepest of its images') and nclx colour
    description (primaries, transfer, matrix, range; the first), read from its item properties."""
    depth, nclx = 8, None
    meta = _box(data, 0, len(data), b"meta")
    iprp = _box(data, meta[0] + 4, meta[1], b"iprp") if meta else None
    ipco = _box(data, *iprp, b"ipco") if iprp else None
    for kind, body, end in _boxes(data, *ipco) if ipco else ():
        if kind == b"av1C" and end - body >= 3:
            depth = max(depth, 12 if data[body + 2] & 0x20 else 10 if data[body + 2] & 0x40 else 8)
        elif kind == b"colr" and data[body : body + 4] == b"nclx" and end - body >= 11 and nclx is None:
            p, t, m = struct.unpack(">HHH", data[body + 4 : body + 10])
            nclx = {"color_primaries": p, "transfer_characteristics": t, "matrix_coefficients": m, "full_range_flag": data[body + 10] >> 7}
    return depth, nclx


def _boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """The ISOBMFF boxes (HEIF, AVIF) in ``data[start:end]``: (type, body start, box end)."""
    at = start
    while at + 8 <= end:
        size, kind = struct.unpack(">I4s", data[at : at + 8])
        body = at + 8
        if size == 1 and at + 16 <= end:
            size, body = struct.unpack(">Q", data[at + 8 : at + 16])[0], at + 16
        elif size == 0:
            size = end - at
        if size < body - at:
            return
        yield kind, body, min(at + size, end)
        at += size


def _box(data: bytes, start: int, end: int, kind: bytes) -> tuple[int, int] | None:
    """The body of the first box of this type in ``data[start:end]``: (start, end), or None."""
    return next(((body, stop) for k, body, stop in _boxes(data, start, end) if k == kind), None)


def _read_heif_deep(path: Path, pil_info: dict[str, Any]) -> LoadedImage:
    """A 10- or 12-bit HEIF (a camera's HIF, a phone's HDR photo) at its own depth: Pillow's plugin
    hands out 8 bits. Pixels are the file's levels over its top level, so its quantisation stays
    visible (``noise_estimate``'s file levels); alpha goes onto the 16-bit scale that other formats
    read. ``info["heif_depth"]`` writes HEIF back at the same depth."""
    import pillow_heif

    heif = pillow_heif.open_heif(path, convert_hdr_to_8bit=False, hdr_to_16bit=False)
    depth = int(heif.info["bit_depth"])
    info = {**_meta(pil_info), **_heif_info(pil_info), "depth": depth, "notes": _heif_left_out(pil_info, len(heif))}
    return _deep_image(np.asarray(heif), depth, "HEIF", info)


def _deep_image(arr: np.ndarray, depth: int, fmt: str, info: dict[str, Any]) -> LoadedImage:
    """A 10- or 12-bit decoder's HxW(xC) levels as an image: pixels over the file's top level, alpha
    on the 16-bit scale that other formats read."""
    top = float(2**depth - 1)
    alpha = None
    if arr.ndim == 3 and arr.shape[2] in (2, 4):
        arr, alpha = arr[:, :, :-1], np.round(arr[:, :, -1] * (65535.0 / top)).astype(np.uint16)
    return LoadedImage(_to_tensor(arr[..., 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr, top), fmt, 16, alpha, info)


def _heif_info(pil_info: dict[str, Any]) -> dict[str, Any]:
    """What a HEIF output needs of its input beyond EXIF and ICC: the chroma subsampling, and the
    nclx colour description (primaries, transfer, matrix), without which an HDR photo's BT.2020/PQ
    or HLG pixels would be written as sRGB and shown wrong."""
    return {k: pil_info[k] for k in ("chroma", "nclx_profile") if pil_info.get(k)}


def _heif_left_out(pil_info: dict[str, Any], images: int) -> list[str]:
    """What a HEIF holds beside its primary image, which the output leaves out (for ``run -v``):
    other images, an iPhone HDR photo's gain map and other auxiliary images, a portrait's depth map."""
    parts = [f"{images - 1} other image{'s' if images > 2 else ''}"] if images > 1 else []
    aux = [urn for urn, ids in (pil_info.get("aux") or {}).items() if ids]
    parts += ["its HDR gain map" if any("hdrgainmap" in urn for urn in aux) else f"{len(aux)} auxiliary image(s)"] if aux else []
    parts += ["its depth map"] if pil_info.get("depth_images") else []
    return [f"left out: {', '.join(parts)}"] if parts else []


def _heif_deep(img: LoadedImage) -> Any:
    """A deep image as a 10-bit HEIF (12-bit where the input had 12 bits or more, HEIF's most): an
    8-bit HEIF would throw away the depth a camera's HIF or a 16-bit PNG carried."""
    import pillow_heif

    arr, depth = _deep_levels(img)
    mode = ("RGB" if img.channels == 3 else "L") + ("A" if img.alpha is not None else "")
    return pillow_heif.from_bytes(mode=f"{mode};{depth}", size=(arr.shape[1], arr.shape[0]), data=arr.tobytes())


def _deep_levels(img: LoadedImage) -> tuple[np.ndarray, int]:
    """An image as the HxW(xC) levels of a 10-bit encoder (12-bit where the input had 12 bits or
    more, HEIF's and AVIF's most), alpha last, and that depth."""
    depth = 12 if img.info.get("depth", 10) >= 12 else 10
    top = float(2**depth - 1)
    arr = np.round(np.moveaxis(img.pixels.detach().float().clamp(0, 1).cpu().numpy(), -3, -1) * top).astype(np.uint16)
    if img.alpha is not None:
        alpha = np.round(_alpha_as(img.alpha, np.dtype(np.uint16)) * (top / 65535.0)).astype(np.uint16)
        arr = np.concatenate([arr, alpha[:, :, None]], axis=2)
    return np.ascontiguousarray(arr[..., 0] if arr.shape[-1] == 1 else arr), depth


def _read_pnm_deep(path: Path, max_pixels: int | None) -> LoadedImage | None:
    """A binary PGM or PPM of 9 to 16 bits on its own levels (``depth`` below 16 is kept), or None
    for one of 8 bits, which Pillow reads whole. Pillow reads a 16-bit PPM (what `dcraw -4` and
    other raw converters hand on) as 8 bits, and stretches a 12-bit PGM's levels onto 16 bits."""
    with open(path, "rb") as f:
        head = f.read(4096)
    m = PNM_HEADER.match(head)
    if m is None or not 255 < int(m[4]) <= 65535:
        return None  # 8 bits, or a header Pillow then names the fault of
    channels, w, h, top = (1 if m[1] == b"5" else 3), int(m[2]), int(m[3]), int(m[4])
    _check_size(path, w, h, max_pixels)
    size = w * h * channels * 2
    with open(path, "rb") as f:
        f.seek(m.end())
        data = f.read(size)
    if len(data) < size:
        raise DenoiseError(f"{path}: cannot decode image, the file is damaged or truncated ({len(data)} of {size} pixel bytes)")
    arr = np.minimum(np.frombuffer(data, ">u2").reshape(h, w, channels), top)
    info = {"depth": top.bit_length()} if top.bit_length() < 16 else {}
    return LoadedImage(_to_tensor(arr[:, :, 0] if channels == 1 else arr, float(top)), "PPM", 16, None, info)


def _check_size(path: Path, w: int, h: int, max_pixels: int | None, planes: int = 1) -> None:
    """Refuse decompression bombs before decoding: the header says how big the pixels will be."""
    if max_pixels is not None and w * h * planes > max_pixels:
        size = f"{w}x{h}" if planes == 1 else f"a stack of {planes} planes of {w}x{h}"
        raise DenoiseError(
            f"{path}: {size} is {w * h * planes / 1e6:.0f} megapixels, over the {max_pixels / 1e6:.0f} MP safety limit "
            "(raise it with --max-pixels if you trust the file)"
        )


class _unlimited_pillow:
    """Pillow's own bomb limit is global; the tool applies ``max_pixels`` itself, per file."""

    def __enter__(self) -> None:
        self.saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None

    def __exit__(self, *exc: object) -> None:
        Image.MAX_IMAGE_PIXELS = self.saved


def _png_header(path: Path) -> tuple[int, int]:
    """(bit depth, colour type) from the IHDR chunk."""
    with open(path, "rb") as f:
        head = f.read(26)
    return head[24], head[25]


def _to_tensor(arr: np.ndarray, scale: float, stack: bool = False) -> torch.Tensor:
    """HxW or HxWxC (with ``stack``, NxHxW or NxHxWxC) to CxHxW (NxCxHxW) float, scaled in place
    (a stack's float copy is its largest)."""
    arr = arr.astype(np.float32)
    arr /= scale
    if arr.ndim == (3 if stack else 2):
        arr = arr[..., None]
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(arr, -1, -3)))


def _meta(info: dict[str, Any]) -> dict[str, Any]:
    return {k: info[k] for k in ("icc_profile", "exif", "dpi", "xmp") if info.get(k)}


def _png_text(text: dict[str, Any]) -> dict[str, Any]:
    """A PNG's text chunks (title, author, copyright, description, an image generator's
    parameters: dropped until 2026-11-29) as ``info["png_text"]``, written back as they were read;
    XMP goes its own way (``info["xmp"]``)."""
    kept = {k: str(v) for k, v in text.items() if isinstance(v, str) and k != XMP_KEY}
    return {"png_text": kept} if kept else {}


def _png_colour(info: dict[str, Any]) -> dict[str, Any]:
    """A PNG's gAMA, cHRM and sRGB chunks as ``info["png_colour"]``, (type, body) pairs written
    back before the pixels: a PNG stored linear (gAMA 1.0, as renderers and some scientific software
    write it) came out without them, and a browser showed it far darker (until 2026-11-29)."""
    chunks = []
    if isinstance(info.get("gamma"), float):
        chunks.append((b"gAMA", struct.pack(">I", round(info["gamma"] * 100000))))
    if isinstance(info.get("chromaticity"), tuple) and len(info["chromaticity"]) == 8:
        chunks.append((b"cHRM", struct.pack(">8I", *(round(v * 100000) for v in info["chromaticity"]))))
    if isinstance(info.get("srgb"), int):
        chunks.append((b"sRGB", bytes([info["srgb"]])))
    return {"png_colour": chunks} if chunks else {}


def _jpeg_left_out(applist: list[tuple[str, bytes]]) -> list[str]:
    """The JPEG segments an output leaves out, named for ``run -v``: Pillow writes EXIF, XMP, ICC
    and comments (``_with_segments`` adds IPTC and GoPro's telemetry), and a thermal camera's
    readings (FLIR's APP1, DJI's APP3) or a portrait's depth map in extended XMP went without a
    word (until 2026-11-29)."""
    names = []
    for marker, body in applist:
        if marker == "APP1" and body.startswith(b"FLIR\x00"):
            names.append("its FLIR thermal data")
        elif marker == "APP1" and body.startswith(b"http://ns.adobe.com/xmp/extension/"):
            names.append("its extended XMP (a depth map or a panorama's data)")
        elif marker in ("APP3", "APP4", "APP5", "APP6", "APP7", "APP8", "APP9", "APP10", "APP11", "APP15") and not body.startswith(GPMF):
            # not APP12 ("Ducky", a web export's quality), nor GoPro's telemetry, which a JPEG output keeps
            names.append(f"its {marker} data (a thermal camera's readings, a maker's data)")
    names = list(dict.fromkeys(names))
    return [f"left out: {'; '.join(names)}"] if names else []


def _gain_map(im: Image.Image, path: Path) -> dict[str, Any] | None:
    """An HDR JPEG's gain map (Android 14's Ultra HDR photos, an iPhone's HDR JPEG: the photo, then
    a small JPEG of how much brighter each part is on an HDR screen), as its bytes, with the ISO
    21496-1 segments of the photo that describe it; or None for any other picture after the photo.
    The gain map was left out, so the output showed no HDR (until 2026-11-29); it goes back after
    the denoised photo (``_with_gain_map``), as read: it holds ratios, not the noise. Google's
    container XMP must name it and nothing else (a Motion Photo's video is not kept); without
    that XMP, the second picture must say it is a gain map (Adobe's, Apple's or ISO's metadata)."""
    xmp = im.info.get("xmp") or b""
    if not im.info.get("mp") or GCONTAINER in xmp and set(re.findall(rb'Semantic="(\w+)"', xmp)) != {b"Primary", b"GainMap"}:
        return None  # no MPF index, so no picture after the photo: the file is not read again
    with open(path, "rb") as f:
        data = f.read()
    # the MPF index, found here: Pillow keeps where it lies for a JPEG, not for an MPO
    mpf = next(((start, end) for marker, start, end in _jpeg_segments(data) if marker == 0xE2 and data[start + 4 : start + 8] == b"MPF\x00"), None)
    entries = _mp_entries(data[mpf[0] + 8 : mpf[1]]) if mpf else []
    if len(entries) != 2:
        return None
    size, offset = entries[1]
    header = mpf[0] + 8  # the index's TIFF header, which its offsets count from
    jpeg = data[header + offset : header + offset + size]
    if jpeg[:2] != b"\xff\xd8" or len(jpeg) != size:
        return None
    if GCONTAINER not in xmp and not any(mark in jpeg[:65536] for mark in GAIN_MAP_MARKS):
        return None  # a camera's preview, a stereo pair's second view
    iso = [seg for marker, seg in getattr(im, "applist", []) if marker == "APP2" and seg.startswith(ISO_GAIN_MAP)]
    return {"jpeg": jpeg, "iso": iso}


def _mp_entries(mp: bytes) -> list[tuple[int, int]]:
    """The (size, offset) of each picture an MPF index lists (CIPA DC-007; ``mp``: the segment
    after "MPF\\0", a TIFF header and IFD), offsets from that header; [] where it is damaged."""
    try:
        order = {b"II": "<", b"MM": ">"}[mp[:2]]
        at = struct.unpack(order + "I", mp[4:8])[0]
        for i in range(struct.unpack(order + "H", mp[at : at + 2])[0]):
            tag, _, count, value = struct.unpack(order + "HHII", mp[at + 2 + 12 * i : at + 14 + 12 * i])
            if tag == 0xB002:
                return [struct.unpack(order + "4xII4x", mp[value + 16 * k : value + 16 * k + 16]) for k in range(count // 16)]
    except (KeyError, struct.error):
        pass
    return []


def _with_gain_map(primary: bytes, gain: dict[str, Any]) -> bytes:
    """A JPEG as Ultra HDR lays it out: the photo with its ISO 21496-1 segments and an MPF index
    (CIPA DC-007: two pictures, the photo first), placed after its APP segments, then the gain map."""
    at = next(start for marker, start, _ in _jpeg_segments(primary) if not (0xE0 <= marker <= 0xEF or marker == 0xFE))
    iso = b"".join(_segment(0xE2, seg) for seg in gain["iso"])
    mpf_length = 4 + 8 + 2 + 3 * 12 + 4 + 2 * 16
    size = len(primary) + len(iso) + 4 + mpf_length
    header = at + len(iso) + 4 + 4  # where the MPF's offsets count from: its TIFF header
    mpf = (b"MPF\x00MM\x00\x2a" + struct.pack(">IH", 8, 3)
           + struct.pack(">HHI4s", 0xB000, 7, 4, b"0100") + struct.pack(">HHII", 0xB001, 4, 1, 2)
           + struct.pack(">HHII", 0xB002, 7, 32, 8 + 2 + 36 + 4) + struct.pack(">I", 0)
           + struct.pack(">IIIHH", 0x030000, size, 0, 0, 0) + struct.pack(">IIIHH", 0, len(gain["jpeg"]), size - header, 0, 0))
    return primary[:at] + iso + _segment(0xE2, mpf) + primary[at:] + gain["jpeg"]


def _tail(path: Path, size: int = 64) -> bytes:
    with open(path, "rb") as f:
        f.seek(max(0, f.seek(0, os.SEEK_END) - size))
        return f.read()


def _after_picture(path: Path) -> str | None:
    """The note for what a JPEG holds after its picture: a phone's Motion Photo video (Google's MP4,
    Samsung's trailer, which also holds the photo before an edit and a portrait's depth map), which
    no output keeps and which went without a word (until 2026-11-29); None where nothing follows.
    Only a file that does not end as a JPEG does is read whole."""
    if _tail(path).rstrip(b"\x00\r\n ").endswith(b"\xff\xd9"):
        return None
    data = path.read_bytes()
    scan = max((start for _, start, _ in _jpeg_segments(data)), default=len(data))
    end = data.find(b"\xff\xd9", scan)
    if end < 0 or not data[end + 2 :].strip(b"\x00\xff\r\n "):
        return None
    what = "Samsung's trailer: a Motion Photo's video, the photo before an edit" if data.endswith(b"SEFT") else "a Motion Photo's video, a maker's data"
    return f"left out: {format_bytes(len(data) - end - 2)} stored after the picture ({what})"


def _resources(data: bytes) -> list[tuple[int, bytes, bytes]]:
    """Photoshop's image resources (a JPEG's APP13, a TIFF's tag 34377): (id, the whole block, its
    data) each; what follows a block it cannot read is one block of id -1, kept as it was."""
    blocks, at = [], 0
    while at + 12 <= len(data) and data[at : at + 4] in (b"8BIM", b"8B64", b"PHUT", b"AgHg", b"DCSR", b"MeSa"):
        rid, named = struct.unpack(">HB", data[at + 4 : at + 7])
        size_at = at + 6 + named + 1 + (named + 1) % 2
        if size_at + 4 > len(data):
            break
        size = struct.unpack(">I", data[size_at : size_at + 4])[0]
        end = min(len(data), size_at + 4 + size + size % 2)
        blocks.append((rid, data[at:end], data[size_at + 4 : size_at + 4 + size]))
        at = end
    return blocks + ([(-1, data[at:], b"")] if at < len(data) else [])


def _resource(rid: int, body: bytes) -> bytes:
    return b"8BIM" + struct.pack(">HHI", rid, 0, len(body)) + body + b"\x00" * (len(body) % 2)


def _app13(resources: bytes) -> list[bytes] | None:
    """Photoshop's image resources as the bodies of APP13 segments, as Photoshop lays them out: split
    at resource boundaries where they outgrow one (a stale thumbnail of the noisy picture dropped
    first); None where one resource is too long for a segment."""
    room = 65533 - len(PHOTOSHOP_APP13)
    blocks = [(rid, block) for rid, block, _ in _resources(resources)]
    if sum(len(b) for _, b in blocks) > room:
        blocks = [(rid, block) for rid, block in blocks if rid not in (1033, 1036)]
    if any(len(block) > room for _, block in blocks):
        return None
    chunks = [b""]
    for _, block in blocks:
        chunks += [b""] if len(chunks[-1]) + len(block) > room else []
        chunks[-1] += block
    return [PHOTOSHOP_APP13 + chunk for chunk in chunks if chunk]


def _with_segments(jpeg: bytes, info: dict[str, Any]) -> bytes:
    """A JPEG with what Pillow does not write back after its other APP segments: GoPro's telemetry
    (APP6 GPMF: the camera's sensors and GPS, as read) and Photoshop's resources
    (``info["photoshop"]``, in APP13 segments; left out where they do not fit, as ``left_out`` says)."""
    segments = [(0xE6, body) for body in info.get("gpmf", [])] + [(0xED, body) for body in _app13(info.get("photoshop", b"")) or []]
    at = next(start for marker, start, _ in _jpeg_segments(jpeg) if not (0xE0 <= marker <= 0xEF or marker == 0xFE))
    return jpeg[:at] + b"".join(_segment(marker, body) for marker, body in segments) + jpeg[at:]


def _jpeg_segments(data: bytes) -> Iterator[tuple[int, int, int]]:
    """A JPEG's segments before its image data: (marker, where the segment starts, where it ends)."""
    at = 2
    while at + 4 <= len(data) and data[at] == 0xFF and data[at + 1] not in (0xDA, 0xD9):
        end = at + 2 + struct.unpack(">H", data[at + 2 : at + 4])[0]
        yield data[at + 1], at, end
        at = end
    if at + 2 <= len(data):
        yield data[at + 1], at, at  # the image data's start of scan


def _segment(marker: int, body: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body


def _from_pil(im: Image.Image, path: Path) -> LoadedImage:
    fmt = im.format or "PNG"
    info = _meta(im.info)
    if info.get("exif", b"")[:4] in (b"II*\x00", b"MM\x00*"):
        # WebP's EXIF comes without JPEG's "Exif" header, and Pillow's JPEG writer wrote it so,
        # where no reader finds it: a WebP portrait came out as a sideways JPEG (until 2026-11-29)
        info["exif"] = b"Exif\x00\x00" + info["exif"]
    frames = getattr(im, "n_frames", 1)
    gain = _gain_map(im, path) if fmt in ("JPEG", "MPO") else None  # Pillow opens an Ultra HDR photo as a plain JPEG
    if fmt == "MPO":
        # a JPEG with more pictures after it (MPF): a camera's large preview, a stereo pair's second
        # view; the first is the photo, written as JPEG (an Ultra HDR photo's gain map goes after it)
        fmt = "JPEG"
        after = f"{frames - 1} picture{'s' if frames > 2 else ''} after the photo"
        info["notes"] = [f"left out: {after} (JPEG MPF: a preview, an HDR gain map or a second view)"] if frames > 1 and gain is None else []
    elif fmt == "HEIF":
        info["notes"] = _heif_left_out(im.info, frames)
    elif frames > 1:
        raise DenoiseError(f"{path}: an animation of {frames} frames; only still images are read")
    if fmt == "JPEG":
        from PIL import JpegImagePlugin

        sampling = JpegImagePlugin.get_sampling(im)
        if sampling >= 0:
            info["subsampling"] = sampling
        if im.info.get("comment"):
            info["comment"] = im.info["comment"]  # a scanner's or an editor's COM note (dropped until 2026-11-29)
        resources = b"".join(body[len(PHOTOSHOP_APP13) :] for marker, body in getattr(im, "applist", [])
                             if marker == "APP13" and body.startswith(PHOTOSHOP_APP13))
        if resources:
            info["photoshop"] = resources  # IPTC captions and keywords, which Pillow reads but does not write (dropped until 2026-11-29)
        gpmf = [body for marker, body in getattr(im, "applist", []) if marker == "APP6" and body.startswith(GPMF)]
        if gpmf:
            info["gpmf"] = gpmf  # a GoPro's telemetry, which holds no offsets (dropped until 2026-11-29)
        unwritten = _jpeg_left_out(getattr(im, "applist", []))
        if unwritten:
            info["notes"] = [*info.get("notes", []), *unwritten]
        if gain is not None:
            # Google's container XMP maps the gain map, which only a JPEG output holds after it
            info["gain_map"] = {**gain, "xmp": info.pop("xmp")} if GCONTAINER in info.get("xmp", b"") else gain
        elif GCONTAINER in info.get("xmp", b""):
            # Google's container XMP (Motion Photo) maps a video stored after the photo, which the
            # output does not hold: kept, it would send readers into the JPEG
            del info["xmp"]
            info["notes"] = [*info.get("notes", []), "left out: its XMP, which maps a gain map or a video after the photo"]
        trailer = _after_picture(path) if frames == 1 and gain is None else None
        if trailer:
            info["notes"] = [*info.get("notes", []), trailer]
    if fmt == "WEBP":
        with open(path, "rb") as f:
            info["lossless"] = f.read(16)[12:16] == b"VP8L"
    if fmt == "HEIF":
        info.update(_heif_info(im.info))
    if fmt == "PNG":
        info.update(_png_text(im.text), **_png_colour(im.info))
    mode = im.mode
    if mode in ("CMYK", "LAB", "HSV"):
        raise DenoiseError(f"{path}: {mode} images are not supported; convert to RGB first")
    if mode == "P" or mode == "PA":
        im = im.convert("RGBA" if ("transparency" in im.info or mode == "PA") else "RGB")
        if _grey(im):  # a grey palette (a scan saved as indexed colour): grey in and out, where it came out RGB
            im = im.convert("LA" if im.mode == "RGBA" else "L")
    elif mode in ("L", "RGB") and "transparency" in im.info:
        # a PNG's transparent colour (tRNS: a logo's white, say): after denoising no pixel is that
        # colour, so the background came out opaque (until 2026-11-29); it becomes alpha
        im = im.convert("LA" if mode == "L" else "RGBA")
    elif mode in ("1", "YCbCr"):
        im = im.convert("L" if mode == "1" else "RGB")
    alpha = None
    if im.mode in ("RGBA", "LA"):
        alpha = np.asarray(im.getchannel("A")).copy()
        im = im.convert("RGB" if im.mode == "RGBA" else "L")
    if im.mode.startswith("I;16") or im.mode == "I":
        arr = np.asarray(im)
        if isinstance(im.info.get("transparency"), int):  # a 16-bit grey PNG's transparent level, as 8-bit's (above)
            alpha = np.where(arr == im.info["transparency"], 0, 65535).astype(np.uint16)
        return LoadedImage(_to_tensor(arr, 65535.0), fmt, 16, alpha, info)
    if im.mode == "F":
        arr = np.asarray(im, dtype=np.float32)
        return _float_image(path, arr, fmt, alpha, info)
    if im.mode not in ("L", "RGB"):
        raise DenoiseError(f"{path}: {im.mode} images are not supported")
    return LoadedImage(_to_tensor(np.asarray(im), 255.0), fmt, 8, alpha, info)


def _grey(im: Image.Image) -> bool:
    """Whether an RGB(A) image's colour channels are all equal."""
    r, g, b = (np.asarray(im.getchannel(c)) for c in "RGB")
    return bool(np.array_equal(r, g) and np.array_equal(g, b))


def _float_image(path: Path, arr: np.ndarray, fmt: str, alpha: np.ndarray | None, info: dict[str, Any],
                 stack: bool = False, span: tuple[float, float] | None = None, nodata: np.ndarray | None = None) -> LoadedImage:
    """Float data of any range is denoised on [0, 1] and mapped back on writing (a stack on its
    whole range, so its planes keep their relative brightness; a slab of one on ``span``, the
    whole stack's).

    NaN and infinite values (masked pixels of a microscope's processed data) ended `run` with a
    traceback. They, and ``nodata``'s pixels, are set aside (``_set_aside``)."""
    valid = np.isfinite(arr) & ~nodata if nodata is not None else np.isfinite(arr)
    if not valid.all():
        if not valid.any() and span is None:
            raise DenoiseError(f"{path}: no finite value (all NaN, infinite or no-data)")
        arr, info = _set_aside(arr, valid, info, np.array([span[0]], np.float32) if span else None, stack)
    lo, hi = span or _span_of(float(arr.min()), float(arr.max()))
    info = {**info, "float_range": (lo, hi)}
    return LoadedImage(_to_tensor((arr - lo) / (hi - lo), 1.0, stack), fmt, 32, alpha, info)


def _set_aside(arr: np.ndarray, valid: np.ndarray, info: dict[str, Any], fill: np.ndarray | None = None,
               stack: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
    """Pixels that hold no value (NaN, a GeoTIFF's no-data value) are written back exactly as
    read (``info["masked"]``), and meanwhile hold values filled from the picture around them
    (``_push_pull``; a plane with none, values drawn from the rest, else ``fill``), so they neither
    set the range the image is denoised on nor step at the data's edge: the terrain of
    benchmarks/geotiff_nodata.py came out 2.54 m RMS so at 3 m of noise, 2.61 with values drawn
    at random (until 2026-11-29), its largest error by the border 11.2 m against 12.1 (at 15 m:
    7.39 and 37.4 against 7.38 and 44.8). ``stack``: ``arr`` leads with its planes."""
    kept = (np.flatnonzero(~valid), arr[~valid])
    arr = arr.copy()
    pool = arr[valid] if valid.any() else fill
    grey = arr.ndim == (3 if stack else 2)
    planes, holes = (a.reshape(-1, *a.shape[int(stack):][:2], 1 if grey else a.shape[-1]) for a in (arr, valid))
    for k in range(planes.shape[0]):
        for c in range(planes.shape[3]):
            plane, ok = planes[k, :, :, c], holes[k, :, :, c]
            if ok.all():
                continue
            if ok.any():
                filled = _push_pull(torch.from_numpy(plane.astype(np.float32))[None], torch.from_numpy(ok))[0].numpy()
                plane[~ok] = np.round(filled[~ok]) if arr.dtype.kind in "iu" else filled[~ok]
            else:
                plane[...] = np.random.default_rng(0).choice(pool, size=plane.shape) if pool is not None else 0
    return arr, {**info, "masked": kept}


def _fill_transparent(img: LoadedImage) -> LoadedImage:
    """An image whose fully transparent pixels an editor filled with one colour (a cut-out product
    shot, a logo: black, white, or libwebp's flat blocks), with them filled from the picture around
    them (``_push_pull``) until it is written, when they go back exactly as read (``info["masked"]``).
    The fill's hard edge and flat colour cost the picture beside them: Kodak24 at sigma 25 seen
    through an ellipse, 30.96 dB (black fill) and 30.95 (white) against 31.48 for the same pixels
    in the opaque photo, and 31.34 so (benchmarks/transparent_fill.py; until 2026-11-29 the fill
    went in as read). Transparent pixels that hold a picture of their own (noise and all) are left
    as they are."""
    if img.alpha is None or img.pixels.ndim != 3 or "masked" in img.info:
        return img
    hidden = img.alpha == 0
    if not hidden.any() or hidden.all() or not _flat(img.pixels, hidden):
        return img
    where = np.flatnonzero(np.repeat(hidden.reshape(-1), img.channels))  # in ``_pixels_as``'s layout, HxWxC
    mask = torch.from_numpy(hidden)
    as_read = _pixels_as(LoadedImage(img.pixels[:, mask][:, None], img.format, img.bits, None, img.info), img.bits).reshape(-1)
    pixels = _push_pull(img.pixels, ~mask)
    return LoadedImage(pixels, img.format, img.bits, img.alpha, {**img.info, "masked": (where, as_read)})


def _flat(pixels: torch.Tensor, hidden: np.ndarray) -> bool:
    """Whether transparent pixels hold a fill, not a picture: most of them equal their neighbour
    across or down (none touching: a few stray pixels, left alone)."""
    pairs = [hidden[:, 1:] & hidden[:, :-1], hidden[1:] & hidden[:-1]]
    same = [(pixels[:, :, 1:] == pixels[:, :, :-1]).all(dim=0).numpy(), (pixels[:, 1:] == pixels[:, :-1]).all(dim=0).numpy()]
    count = sum(int(p.sum()) for p in pairs)
    return count > 0 and sum(int(s[p].sum()) for s, p in zip(same, pairs)) > count / 2


def _push_pull(pixels: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``pixels`` (CxHxW) where ``valid`` (HxW) is False filled from the valid pixels around
    (push-pull: the valid pixels' means at halving resolutions, each empty cell taking its coarser
    cell's). The fill is flat in blocks, which the noise estimate passes over as it does a flat
    fill: a smooth one it read as noise-free (sigma 0 on a cut-out photo at sigma 25)."""
    import torch.nn.functional as F

    total, weight = torch.where(valid, pixels, 0)[None], valid[None, None].to(pixels.dtype)  # a NaN times 0 is NaN
    levels = []
    while max(weight.shape[-2:]) > 1:
        levels.append((total, weight))
        total, weight = (F.avg_pool2d(t, 2, ceil_mode=True) * 4 for t in (total, weight))
    fill = total / weight.clamp_min(1e-12)
    for total, weight in reversed(levels):
        share = weight.clamp(max=1)
        fill = total / weight.clamp_min(1e-12) * share + F.interpolate(fill, size=weight.shape[-2:], mode="nearest") * (1 - share)
    return fill[0].to(pixels.dtype)


def _span_of(lo: float, hi: float) -> tuple[float, float]:
    """The range float data is mapped onto [0, 1] from: its own, unless it lies within [0, 1]."""
    return (0.0, 1.0) if lo >= 0 and hi <= 1 else (lo, hi if hi > lo else lo + 1)


def _read_png16(path: Path, pil_info: dict[str, Any]) -> LoadedImage:
    import imagecodecs

    arr = imagecodecs.png_decode(path.read_bytes())
    alpha = None
    if arr.ndim == 3 and arr.shape[2] in (2, 4):
        arr, alpha = arr[:, :, :-1], arr[:, :, -1].copy()
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    return LoadedImage(_to_tensor(arr, 65535.0), "PNG", 16, alpha, {**_meta(pil_info), **_png_text(pil_info), **_png_colour(pil_info)})


class _Repairs(logging.Handler):
    """tifffile's log records from this thread while it reads one file: what it worked around in
    a damaged file that still read (a stack whose last page headers were cut), for ``run -v``."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.thread = threading.get_ident()
        self.found: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            message = re.sub(r"^<[^>]*>\s*", "", record.getMessage().splitlines()[0])  # tifffile's "<TiffPages @8> "
            if message not in self.found:
                self.found.append(message)

    def __enter__(self) -> _Repairs:
        logging.getLogger("tifffile").addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("tifffile").removeHandler(self)


def _read_tiff(path: Path, max_pixels: int | None, stacks: bool) -> LoadedImage:
    with TiffStack(path, stacks) as tiff:
        _check_size(path, *tiff.size, max_pixels, planes=tiff.pages * tiff.samples)
        return tiff.read()


class TiffStack:
    """A TIFF open for reading a run of its pages at a time, and writing the same kind of file.

    `run` streams a stack (a light-sheet microscope's, of tens of GB) slab by slab through the
    network and into its output, so it holds a slab, not the stack: until 2026-11-29 a stack was
    read whole, and one larger than the memory free was refused. ``read_image`` reads every TIFF
    through here, whole. ``pages``: the file's images (a single image's: 1), each a plane, or
    ``samples`` grey planes where a microscope's channels lie side by side in each pixel;
    ``size``: (width, height) of a plane, ``channels`` its own (1 or 3). Readable from one thread
    at a time.
    """

    def __init__(self, path: Path, stacks: bool = True, series: int | None = None, shared: TiffStack | None = None,
                 several: bool = False) -> None:
        """``series``: which of the images a TIFF holds (``_main_series``); by default its one, or
        with ``several`` the first of several (else refused); ``shared``: another image of the same
        file, whose open file and parsed layout this one reads through (a plate of thousands of
        positions opened the file once for each, and parsed its OME-XML as often), and which closes it."""
        self.path = Path(path)
        self._repairs: list[str] = []
        self._span: tuple[float, float] | None = None
        self._file_order: list[int] | None = None
        self._colours: np.ndarray | None = None  # an indexed-colour palette's table, which its pages are read through
        self._nodata: float | None = None
        self._main = 0  # the series that is the image (``_main_series``), or the one of several asked for
        self._owner = shared is None
        with _Repairs() as repairs:
            self._tf = _open_tiff(self.path) if shared is None else shared._tf
            self._mains = _main_series(self.path, self._tf.series) if shared is None else shared._mains
            try:
                self._layout(stacks, series, several)
            except BaseException:
                if self._owner:
                    self._tf.close()
                raise
        self._repairs += repairs.found

    def _layout(self, stacks: bool, asked: int | None, several: bool) -> None:
        from tifffile import TIFF

        tf, path = self._tf, self.path
        mains, previews = self._mains
        if asked is None and len(mains) > 1 and not several:
            raise DenoiseError(f"{path}: a TIFF holding {len(mains)} images (series; e.g. several positions), where one image "
                               "or stack was expected; `denoise run` denoises each, or save each in a file of its own first")
        self._main = mains[0] if asked is None else asked
        previews = previews if self._main == mains[0] else []  # said once, by the first image's
        series = tf.series[self._main]
        page = series.keyframe  # the page its layout and tags are read from (an OME file's first, with the XML)
        if len(series.levels) > 1:  # a cloud-optimised GeoTIFF's or a slide's overviews: they would show the noise
            levels = len(series.levels) - 1
            previews = [*previews, f"left out: {levels} reduced-resolution level{'s' if levels > 1 else ''} (viewers rebuild them)"]
        # a stack: a series with more dimensions than a page (ImageJ writes one page for a stack
        # over 4 GB, so the pages are not counted)
        lead = tuple(series.shape[: series.ndim - page.ndim])
        lead = () if math.prod(lead) == 1 and not stacks else lead  # one plane: a single image where stacks are not taken
        if lead and not stacks:
            raise DenoiseError(f"{path}: a multi-page TIFF stack, where one image was expected "
                               "(read_image(..., stacks=True) reads its planes)")
        # grey samples that are not alpha (a microscope's channels stored side by side in each
        # pixel) are channels of their own, each a grey plane (until 2026-11-29 the fourth was
        # taken for alpha and left noisy, and the first three denoised as colour)
        samples = page.samplesperpixel if page.photometric.name == "MINISBLACK" and page.samplesperpixel > 1 \
            and not any(int(e) in (1, 2) for e in page.extrasamples) else 1
        separate = page.planarconfig == 2
        if samples > 1 and not stacks:
            raise DenoiseError(f"{path}: a TIFF of {samples} grey channels, where one image was expected")
        # JPEG in TIFF (Photoshop's and scanners' "JPEG" compression) is stored as YCbCr, which the
        # JPEG decoder turns into RGB; it was refused until 2026-11-29, and goes out lossless, in
        # deflate with the predictor, not through JPEG a second time
        jpeg = page.photometric.name == "YCBCR" and page.compression.name in ("JPEG", "OJPEG")
        # grey stored white at 0 (a radiograph's MONOCHROME1, a scanner's): read as it looks, and
        # written back as it was stored (refused until 2026-11-29)
        white = page.photometric.name == "MINISWHITE" and page.samplesperpixel == 1
        palette = page.photometric.name == "PALETTE" and page.samplesperpixel == 1 and page.colormap is not None
        if page.bitspersample == 1 and page.photometric.name in ("MINISBLACK", "MINISWHITE"):
            raise DenoiseError(f"{path}: a 1-bit (black and white) TIFF has no grey levels to denoise; save it as 8-bit grey first")
        if page.photometric.name not in ("MINISBLACK", "RGB") and not (jpeg or white or palette):
            raise DenoiseError(f"{path}: TIFF with {page.photometric.name} colour is not supported; convert to RGB or grey first")
        info: dict[str, Any] = {"compression": page.compression.name.lower() if page.compression > 1 else None,
                                "predictor": int(page.predictor) if page.compression > 1 and page.predictor > 1 else None}
        if page.is_tiled and page.tiledepth == 1 and page.tilelength % 16 == 0 and page.tilewidth % 16 == 0:
            # a cloud-optimised GeoTIFF's or a large scan's tiles, which GIS tools read a window at a
            # time: written tiled as read (in strips until 2026-11-29)
            info["tile"] = (int(page.tilelength), int(page.tilewidth))
        if info["compression"] not in TIFF_COMPRESSIONS | {None}:
            # JPEG (Photoshop's, a scanner's), WebP, JPEG 2000, JPEG XL or LERC in TIFF: written lossless,
            # in deflate with the predictor, not through a lossy codec again (they came out uncompressed)
            info.update(compression="zlib", predictor=3 if page.dtype is not None and page.dtype.kind == "f" else 2)
        if white:
            info["miniswhite"] = True
        if palette and not (tf.is_imagej or _ramp(page.colormap)):
            # indexed colour (a GIF-like palette): its colours are the picture, read as RGB, and
            # written so, since a palette cannot hold a denoised image's colours (refused until 2026-11-29)
            self._colours = _colours(page.colormap, page.dtype)
            previews = [*previews, "read as RGB: its palette cannot hold the denoised colours"]
        elif page.colormap is not None and (palette or tf.is_imagej):
            # a LUT: Fiji saves an 8-bit image shown in its "Green" or "Fire" as a palette TIFF (and a
            # 16-bit one's in a ColorMap tag); the values are the data and keep their LUT
            info["colormap"] = page.colormap
        if tf.is_imagej:
            # Fiji's calibration (unit, spacing), display range and notes; a single image's were
            # dropped until 2026-11-29, so Fiji showed a 2D image's pixels in no unit
            info["imagej"] = dict(tf.imagej_metadata or {})
        if any(int(e) == 1 for e in page.extrasamples):
            info["premultiplied"] = True  # associated alpha stays so: written as straight, edges would darken
        if page.photometric.name == "RGB" and page.extrasamples and int(page.extrasamples[0]) == 0:
            # a fourth channel that is no alpha (a film scanner's infrared, for dust removal): kept as
            # read, and written back as it was declared; as alpha, viewers showed the photo see-through
            info["extra_channel"] = True
        if lead:
            info["stack"] = {"shape": lead, "axes": series.axes[: len(lead)]}
        if samples > 1:
            info["stack"] = {**info.get("stack", {"axes": series.axes[: len(lead)]}),
                             "shape": (*lead, samples), "samples": samples, "separate": separate}
        at = [p.index if p is not None else None for p in series.pages] if tf.is_ome else []
        every = [p.index if p is not None else None for s in tf.series for p in s.pages] if tf.is_ome else []
        if tf.is_ome and len(tf.series) > 1 and len(mains) == len(tf.series) and every == list(range(len(tf.pages))):
            # several images, stored one after another: written back so, the XML on the first page
            # still maps each plane to its page
            if self._main == mains[0]:
                info["ome"] = page.description
        elif tf.is_ome and len(tf.series) == 1 and None not in at and sorted(at) == list(range(len(tf.pages))):
            info["ome"] = page.description
            # the XML maps each plane to a page of the file and is written back as it was, so the
            # pages go back in the file's order: where the XML stores planes out of that order,
            # writing them in the planes' order permuted them (until 2026-11-29)
            if at != sorted(at):
                self._file_order = sorted(at)
        elif tf.is_ome and self._main == mains[0]:
            # pages the XML does not describe (a thumbnail before the planes) or planes it maps to
            # missing pages: the output's pages would not be where the XML says; the axes stay
            previews = [*previews, "left out: its OME-XML, whose map of planes to pages the output could not keep"]
        single = not lead and samples == 1
        kept = KEPT_TIFF_TAGS | (set(PLANE_TIFF_TAGS) if single else set())
        tags = [(t.code, int(t.dtype), t.count, _tag_value(tf, t)) for t in page.tags.values() if t.code in kept]
        if tags:
            info["tiff_tags"] = tags
        text = page.description
        if text and not (tf.is_ome or tf.is_imagej or (text.startswith("{") and '"shape"' in text[:100])):
            info["description"] = _tag_value(tf, page.tags[270])  # a scanner's or a user's words, not a layout tifffile writes anew
        self._nodata = _nodata(page)
        # a single image's EXIF; not one of several a TIFF holds, which go out through one writer (``write_stacks``)
        alone = single and len(mains) == 1 and set(EXIF_DIRECTORIES) & set(page.tags.keys())
        exif, maker = _tiff_exif(path, page.offset, tf.byteorder, tf.is_bigtiff) if alone else (None, False)
        if exif is not None:
            info["exif"] = exif
        dropped = [name for code, name in DROPPED_TIFF_TAGS.items() if code in page.tags and not (exif and code in EXIF_DIRECTORIES)]
        dropped += ["its EXIF maker note (a camera maker's data, which points into the input)"] if maker else []
        dropped += [] if single else [f"{name} (a stack's pages each hold their own)" for name in
                                      dict.fromkeys(name for code, name in PLANE_TIFF_TAGS.items() if code in page.tags)]
        # an instrument's or an editor's own tags, which no output keeps: named, where they went without a word
        known = KEPT_TIFF_TAGS | set(PLANE_TIFF_TAGS) | set(DROPPED_TIFF_TAGS) | {33723, 34377, 34675, 50838, 50839}
        private = [f"{TIFF.TAGS[code]} ({code})" if code in TIFF.TAGS else str(code) for code in sorted(page.tags.keys()) if code >= 32768 and code not in known]
        dropped += [f"its private TIFF tags {', '.join(private)}"] if private else []
        previews = [*previews, f"left out: {'; '.join(dropped)}"] if dropped else previews
        if 34377 in page.tags or 33723 in page.tags:  # Photoshop's resources, or IPTC alone (dropped until 2026-11-29)
            info["photoshop"] = bytes(page.tags[34377].value) if 34377 in page.tags else _resource(1028, bytes(page.tags[33723].value))
        if 34675 in page.tags:
            info["icc_profile"] = bytes(page.tags[34675].value)
        if 700 in page.tags:
            info["xmp"] = bytes(page.tags[700].value)
        xres, yres = page.tags.get("XResolution"), page.tags.get("YResolution")
        if xres is not None and yres is not None:
            unit = page.tags.get("ResolutionUnit")
            info["resolution"] = (_ratio(xres.value), _ratio(yres.value), int(unit.value) if unit is not None else 2)
        self.lead, self.samples, self.separate, self.info, self._previews = lead, samples, separate, info, previews
        self.pages = math.prod(lead)
        self.size = (int(page.imagewidth), int(page.imagelength))
        self.channels = 3 if page.photometric.name == "RGB" or jpeg or self._colours is not None else 1
        self.shape = tuple(series.shape)
        self._unit = tuple(series.shape[len(lead):]) if lead else tuple(page.shape)

    @property
    def megapixels(self) -> float:
        return self.pages * self.samples * math.prod(self.size) / 1e6

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self._tf.series[self._main].dtype.itemsize

    @property
    def notes(self) -> list[str]:
        """What reading it left out or worked around so far, for ``run -v``."""
        damage = [f"read past damage: {'; '.join(self._repairs)}"] if self._repairs else []
        return damage + self._previews

    def close(self) -> None:
        if self._owner:
            self._tf.close()

    def __enter__(self) -> TiffStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, start: int = 0, stop: int | None = None) -> LoadedImage:
        """Pages ``start`` to ``stop`` (default: all) as an image, or a stack of planes: float data
        on the whole file's range, so every slab is on one scale."""
        stop = self.pages if stop is None else stop
        whole = start == 0 and stop == self.pages
        with _reading(self.path), _Repairs() as repairs:
            arr = self._raw(start, stop)
            span = None if whole or arr.dtype in (np.uint8, np.uint16) or arr.dtype.kind not in "fiu" else self._float_span()
        self._repairs += [r for r in repairs.found if r not in self._repairs]
        return self._image(arr, span)

    def _raw(self, start: int, stop: int) -> np.ndarray:
        """The pages' samples in the file's layout, one leading axis of pages: a run of them read
        by themselves."""
        series = self._tf.series[self._main]
        if self._file_order is not None:
            arr = self._tf.asarray(key=self._file_order[start:stop])
        elif start == 0 and stop == self.pages:
            arr = series.asarray() if self.lead else series.keyframe.asarray()
        elif series.dataoffset is not None:  # contiguous: read straight from the file (ImageJ's over 4 GB has one page header)
            per = math.prod(self._unit)
            dtype = np.dtype(series.dtype).newbyteorder(self._tf.byteorder)
            self._tf.filehandle.seek(series.dataoffset + start * per * dtype.itemsize)
            arr = self._tf.filehandle.read_array(dtype, count=(stop - start) * per)
            arr = arr.astype(dtype.newbyteorder("="), copy=False)
        else:  # page by page (an incomplete OME file's missing pages read as zeros, as whole)
            arr = self._tf.asarray(key=range(start, stop), series=self._main)
        return arr.reshape(-1, *self._unit)

    def _float_span(self) -> tuple[float, float]:
        """The range of the whole file's finite values, read once, slab by slab: a slab read on
        its own range would come out brighter or darker than its neighbours."""
        if self._span is None:
            lo, hi = math.inf, -math.inf
            step = max(1, SCAN_SAMPLES // max(1, math.prod(self._unit)))
            for i in range(0, self.pages, step):
                arr = self._raw(i, min(i + step, self.pages))
                arr = arr[np.isfinite(arr)] if arr.dtype.kind == "f" else arr
                arr = arr[arr != self._nodata] if self._nodata is not None else arr
                if arr.size:
                    lo, hi = min(lo, float(arr.min())), max(hi, float(arr.max()))
            if lo > hi:
                raise DenoiseError(f"{self.path}: no finite value (all NaN, infinite or no-data)")
            self._span = _span_of(lo, hi)
        return self._span

    def _image(self, arr: np.ndarray, span: tuple[float, float] | None) -> LoadedImage:
        image = self._pixels(arr, span)
        if image.info.get("miniswhite"):
            image.pixels.neg_().add_(1)
        return image

    def _pixels(self, arr: np.ndarray, span: tuple[float, float] | None) -> LoadedImage:
        path, lead = self.path, self.lead
        info = {**self.info, "notes": self.notes} if self.notes else dict(self.info)
        if self._colours is not None:
            arr = self._colours[arr]
        if self.samples > 1:
            planes = arr if self.separate else np.moveaxis(arr, -1, 1)
            arr = planes.reshape(-1, *planes.shape[2:])
            lead = (*lead, self.samples)
        if arr.ndim == 4 and arr.shape[1] in (1, 2, 3, 4) and arr.shape[-1] not in (1, 2, 3, 4):
            arr = np.moveaxis(arr, 1, -1)
        if arr.ndim not in (3, 4) or (arr.ndim == 4 and arr.shape[3] not in (1, 2, 3, 4)):
            raise DenoiseError(f"{path}: TIFF of shape {self.shape} is not a grey or colour image or a stack of them")
        alpha = None
        if arr.ndim == 4 and arr.shape[3] in (2, 4):
            if lead:
                raise DenoiseError(f"{path}: TIFF stacks with an alpha channel are not supported")
            arr, alpha = arr[..., :-1], arr[0, :, :, -1].copy()
        if arr.ndim == 4 and arr.shape[3] == 1:
            arr = arr[..., 0]
        arr = arr if lead else arr[0]
        nodata = arr == self._nodata if self._nodata is not None and arr.dtype.kind in "fiu" else None
        nodata = nodata if nodata is not None and nodata.any() else None
        if arr.dtype in (np.uint8, np.uint16):
            if nodata is not None:
                arr, info = _set_aside(arr, ~nodata, info, stack=bool(lead))
            return LoadedImage(_to_tensor(arr, 255.0 if arr.dtype == np.uint8 else 65535.0, bool(lead)), "TIFF",
                               8 if arr.dtype == np.uint8 else 16, alpha, info)
        if arr.dtype.kind == "f" or (arr.dtype.kind in "iu" and arr.dtype.itemsize <= 4):
            # signed or 32-bit integers (background-subtracted or summed counts from an analysis
            # pipeline), and float of any width: denoised on their range, and written back in their
            # own type (half and double floats came out as single until 2026-11-29)
            own = {"dtype": arr.dtype.str} if arr.dtype != np.float32 else {}
            return _float_image(path, arr.astype(np.float32), "TIFF", alpha, {**info, **own}, bool(lead), span, nodata)
        raise DenoiseError(f"{path}: TIFF samples of type {arr.dtype} are not supported (integers of up to 32 bits, or float)")



def write_stacks(path: Path, stacks: list[TiffStack], parts: Iterable[Iterable[LoadedImage]]) -> None:
    """Write each of ``parts`` (the slabs ``stacks`` ``read``, denoised, in order) as the same
    stack, one after another in one file, page by page into a temp file and then renamed, so an
    interrupted stream leaves no half-written file. Past 4 GB in all, every one is BigTIFF."""
    import tifffile

    def write(f: BinaryIO) -> None:
        streams = [iter(slabs) for slabs in parts]
        if len(streams) == 1:
            first = next(streams[0])  # the image's layout and metadata, as every slab's
            _write_tiff(first, f, itertools.chain([first], streams[0]))
            return
        with tifffile.TiffWriter(f, bigtiff=sum(stack.nbytes for stack in stacks) > CLASSIC_TIFF_BYTES) as tw:
            for slabs in streams:
                first = next(slabs)
                _write_tiff(first, f, itertools.chain([first], slabs), writer=tw)

    with _writing(path, "TIFF"):
        atomic_write(Path(path), write)


def _tiff_exif(path: Path, ifd: int, byteorder: str, bigtiff: bool) -> tuple[bytes | None, bool]:
    """The EXIF a TIFF's page points to (its EXIF and GPS directories, with the base tags that EXIF
    shares with TIFF), as a JPEG holds it, and whether a maker note was left out: its offsets
    point into the input, so moved it would be garbage to the tools that read it. None where the
    directories cannot be read: the file is denoised without them, as before."""
    head = _tiff_head(byteorder, bigtiff)
    try:
        with open(path, "rb") as fp:
            tree = _exif_tree(fp, head, ifd)
    except Exception:  # a damaged directory: left out, as it was before
        return None, False
    tree = {code: entry for code, entry in tree.items() if code in EXIF_TIFF_TAGS or code in EXIF_DIRECTORIES}
    maker = _drop_maker_note(tree)
    if not any(code in tree for code in EXIF_DIRECTORIES):
        return None, maker
    out = _tiff_head(byteorder, False)
    return b"Exif\x00\x00" + out + _directory(out, tree, len(out)), maker


def _tiff_head(byteorder: str, bigtiff: bool) -> bytes:
    """A TIFF header whose first directory follows it, as Pillow's directories take it."""
    order = "<" if byteorder == "<" else ">"
    mark = b"II" if order == "<" else b"MM"
    return mark + struct.pack(order + "HHHQ", 43, 8, 0, 16) if bigtiff else mark + struct.pack(order + "HI", 42, 8)


def _exif_tree(fp: BinaryIO, head: bytes, offset: int) -> dict[int, tuple[int, Any]]:
    """A TIFF directory as {tag: (type, value)}, each value as written, with the EXIF, GPS and
    interoperability directories it points to read in as trees of their own (type 4)."""
    from PIL import TiffImagePlugin

    ifd = TiffImagePlugin.ImageFileDirectory_v2(head)
    fp.seek(offset)
    with warnings.catch_warnings():  # Pillow warns of damage on the terminal; what it reads is kept
        warnings.simplefilter("ignore")
        ifd.load(fp)
    tree = {}
    for code in ifd:
        value = ifd[code]
        if code in (*EXIF_DIRECTORIES, 0xA005) and isinstance(value, int):
            try:
                tree[code] = (4, _exif_tree(fp, head, value))
            except Exception:  # a directory that points astray is left out, not the others
                continue
        else:
            # Pillow reads text as Latin-1 and writes str as ASCII ("©" as "?"): back to its bytes
            tree[code] = (ifd.tagtype[code], value.encode("latin-1", "replace") if isinstance(value, str) else value)
    return tree


def _directory(head: bytes, tree: dict[int, tuple[int, Any]], offset: int) -> bytes:
    """``tree`` as a TIFF directory at ``offset`` (of a file that starts with ``head``), each tag in
    its own type, the directories it points to laid after it."""
    from PIL import TiffImagePlugin

    def laid(pointers: dict[int, int]) -> bytes:
        ifd = TiffImagePlugin.ImageFileDirectory_v2(head)
        for code, (kind, value) in tree.items():
            ifd.tagtype[code] = kind
            ifd[code] = pointers.get(code, value)
        return ifd.tobytes(offset)

    subs = {code: value for code, (_, value) in tree.items() if isinstance(value, dict)}
    size = len(laid(dict.fromkeys(subs, 0)))  # the pointers' values do not change its size
    size += size % 2
    pointers, tail = {}, b""
    for code, sub in subs.items():
        pointers[code] = offset + size + len(tail)
        tail += _directory(head, sub, pointers[code])
        tail += b"\x00" * (len(tail) % 2)
    return laid(pointers).ljust(size, b"\x00") + tail


def _exif_directories(exif: bytes | None) -> tuple[dict[int, dict[int, tuple[int, Any]]], bool]:
    """The EXIF and GPS directories of an EXIF block, to write into a TIFF (``_with_exif``), without
    a maker note, and whether it held one; {} where there are none or they cannot be read."""
    data = exif[6:] if exif and exif.startswith(b"Exif\x00\x00") else exif
    if not data or data[:2] not in (b"II", b"MM"):
        return {}, False
    order = "<" if data[:2] == b"II" else ">"
    try:
        tree = _exif_tree(io.BytesIO(data), data[:8], struct.unpack(order + "I", data[4:8])[0])
    except Exception:
        return {}, False
    maker = _drop_maker_note(tree)
    subs = {code: tree[code][1] for code in EXIF_DIRECTORIES if code in tree and isinstance(tree[code][1], dict)}
    return {code: sub for code, sub in subs.items() if sub}, maker


def _drop_maker_note(tree: dict[int, tuple[int, Any]]) -> bool:
    """Take the maker note out of an EXIF tree (``_exif_tree``): its offsets point into the block or
    the file it came from, so moved it would be garbage to the tools that read it. Whether it held one."""
    exif = tree.get(0x8769, (0, None))[1]
    return isinstance(exif, dict) and exif.pop(0x927C, None) is not None


def _with_exif(f: BinaryIO, subs: dict[int, dict[int, tuple[int, Any]]]) -> None:
    """Lay ``subs`` (``_exif_directories``) after a TIFF that tifffile wrote into ``f``, and make
    its first page's placeholder tags (numbered one less) point at them: tifffile writes no
    directories of tags, and refuses their numbers."""
    f.flush()
    f.seek(0)
    head = f.read(16)
    order = "<" if head[:2] == b"II" else ">"
    big = struct.unpack(order + "H", head[2:4])[0] == 43
    first = struct.unpack(order + "Q", head[8:16])[0] if big else struct.unpack(order + "I", head[4:8])[0]
    f.seek(first)
    count = struct.unpack(order + ("Q" if big else "H"), f.read(8 if big else 2))[0]
    size = 20 if big else 12
    entries = f.read(count * size)
    codes = [struct.unpack(order + "H", entries[i * size : i * size + 2])[0] for i in range(count)]
    for code, sub in subs.items():
        at = f.seek(0, os.SEEK_END)
        f.write(b"\x00" * (at % 2))
        at += at % 2
        f.write(_directory(_tiff_head(order, big), sub, at))
        entry = first + (8 if big else 2) + codes.index(code - 1) * size
        f.seek(entry)
        f.write(struct.pack(order + "H", code))
        f.seek(entry + (12 if big else 8))
        f.write(struct.pack(order + ("Q" if big else "I"), at))
    f.seek(0, os.SEEK_END)




def _tag_value(tf: Any, tag: Any) -> Any:
    """A tag's value to write back: text as its bytes in the file, so a copyright's "©" or a
    description's "µm" goes back as it was (tifffile writes only ASCII from text, and every TIFF with
    one failed to write until 2026-11-29), and a value tifffile parses (Micro-Manager's JSON, an
    electron microscope's settings) as written, not as parsed."""
    if int(tag.dtype) != 2:
        return tag.value
    with tf.filehandle.lock:
        tf.filehandle.seek(tag.valueoffset)
        return tf.filehandle.read(tag.valuebytecount).rstrip(b"\0")


def _nodata(page: Any) -> float | None:
    """A GeoTIFF's no-data value (GDAL's tag 42113: -9999 around a terrain model, 0 around a
    satellite scene), or None. Those pixels are set aside and written back as they were
    (``_set_aside``): a -9999 border set the range a terrain model was denoised on, which left
    it noisier than read (3.0 m RMS error in, 12.4 out) and dragged its edge hundreds of metres
    down, and no-data pixels came out as data (until 2026-11-29). NaN is set aside as it is."""
    tag = page.tags.get(42113)
    try:
        value = float(str(tag.value).strip("\x00 ")) if tag is not None else math.nan
    except ValueError:
        return None
    return None if math.isnan(value) else value


def _ramp(colormap: np.ndarray) -> bool:
    """A palette that only brightens with the index (grey, or a LUT such as green) shows
    intensities, which are denoised as grey; any other is a picture's colours."""
    return bool((np.diff(colormap.astype(np.int64), axis=1) >= 0).all())


def _colours(colormap: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The palette's colours as an (entries, 3) table in the index's type: TIFF stores them at 16
    bits, most writers as v * 257, some as v << 8."""
    table = colormap.T
    if np.dtype(dtype) != np.uint8:
        return np.ascontiguousarray(table.astype(np.uint16))
    return np.ascontiguousarray(table >> 8 if not (table & 255).any() else np.round(table / 257)).astype(np.uint8)


def _open_tiff(path: Path) -> Any:
    """A TIFF file by itself: one file of a multi-file OME-TIFF dataset (Micro-Manager splits an
    acquisition over files of 4 GB) holds its own pages alone. tifffile reads the whole dataset
    through any of its files by default, so each output held every file's planes, and the
    dataset written back read planes 0, 1, 0, 1 where it had 0, 1, 2, 3 (until 2026-11-29)."""
    import tifffile

    return tifffile.TiffFile(path, _multifile=False)


def _main_series(path: Path, series: list[Any]) -> tuple[list[int], list[str]]:
    """The images a TIFF holds (series, maybe stacks): those whose planes are at least a quarter of
    the largest's, with the notes for ``run -v`` that name the small previews beside them, which are left
    out of the output (they would show the noise). A scanner's or a camera's TIFF may hold its
    thumbnail first: that file was refused as one of several images (until 2026-11-29). Several
    full images (an OME-TIFF of several stage positions): only the first used to be denoised, and
    the output silently held only that."""
    sizes = [math.prod(s.keyframe.shape) for s in series]  # a plane's: a stack beside its overview image is no preview of it
    mains = [i for i, size in enumerate(sizes) if size * 4 > max(sizes)]
    others = [s for i, s in enumerate(series) if i not in mains]
    return mains, [f"left out: {len(others)} preview{'s' if len(others) > 1 else ''} "
                   f"({', '.join('x'.join(map(str, s.shape)) for s in others)})"] if others else []


def _ratio(v: Any) -> float:
    return v[0] / v[1] if isinstance(v, tuple) else float(v)


def _pixels_as(img: LoadedImage, bits: int) -> np.ndarray:
    """HxW or HxWxC array in the file's dtype, alpha re-attached (a stack: NxHxW or NxHxWxC).
    A stack is converted plane by plane, so it is held once more in the file's dtype, not in
    several float copies (with this and the outputs written in place, `run` of 80 16-bit planes
    of 1024x1024 peaked at 1.59 GB, against 2.86)."""
    pixels = img.pixels.detach().cpu()
    dtype = np.dtype(np.float32 if bits == 32 else np.uint16 if bits == 16 else np.uint8)
    dtype = np.dtype(img.info["dtype"]) if bits == 32 and "dtype" in img.info else dtype  # a TIFF's int16, uint32, float16...
    out = np.empty((*pixels.shape[:-3], *pixels.shape[-2:], pixels.shape[-3]), dtype)
    lo, hi = img.info.get("float_range", (0.0, 1.0)) if bits == 32 else (0.0, 65535.0 if bits == 16 else 255.0)
    for plane, dst in zip(pixels.reshape(-1, *pixels.shape[-3:]), out.reshape(-1, *out.shape[-3:])):
        arr = np.moveaxis(plane.float().clamp(0, 1).numpy(), 0, -1) * (hi - lo) + lo
        dst[...] = arr if dtype.kind == "f" else np.clip(np.round(arr), np.iinfo(dtype).min, np.iinfo(dtype).max)
    if "masked" in img.info and bits == img.bits:  # NaN, inf and no-data back where the input held them, at its depth
        where, values = img.info["masked"]
        out.reshape(-1)[where] = values
    if img.alpha is not None:
        out = np.concatenate([out, _alpha_as(img.alpha, out.dtype)[:, :, None]], axis=2)
    return np.ascontiguousarray(out[..., 0] if out.shape[-1] == 1 else out)


def _alpha_as(alpha: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The alpha plane unchanged when the depth is kept, else rescaled to the output's depth."""
    if alpha.dtype == dtype:
        return alpha
    src = 65535.0 if alpha.dtype == np.uint16 else 255.0 if alpha.dtype == np.uint8 else 1.0
    dst = 65535.0 if dtype == np.uint16 else 255.0 if dtype == np.uint8 else 1.0
    return np.round(alpha.astype(np.float64) / src * dst).astype(dtype)


def to_pil(img: LoadedImage) -> Image.Image:
    """8-bit (or 16-bit grey, or float grey) Pillow image with its alpha."""
    bits = img.bits if img.channels == 1 and img.alpha is None else 8
    arr = _pixels_as(LoadedImage(img.pixels, img.format, bits, img.alpha, img.info), bits)
    return Image.fromarray(arr)


def write_image(img: LoadedImage, path: Path, fmt: str | None = None, jpeg_quality: int = 95) -> None:
    """Write via a temp file and a rename, so an interrupted run never leaves half an image.

    The file keeps its format, bit depth (where the format allows it: PNG and TIFF at 16 bits,
    HEIF at 10 or 12), alpha and metadata. An encoder's failure is one line naming the file, as a
    decoder's is (``read_image``), so a batch goes on past it.
    """
    try:
        fmt = normalize_format(fmt or img.format)
    except DenoiseError as exc:  # content of a format this tool does not write, under a name that says none
        raise DenoiseError(f"{path}: {exc}") from exc
    with _writing(path, fmt):
        _write(img, Path(path), fmt, jpeg_quality)


def left_out(img: LoadedImage, fmt: str | None = None) -> list[str]:
    """What writing ``img`` as ``fmt`` (default: its own format) leaves out of its metadata, which
    that format's writer here cannot hold, as notes for ``run -v``; a format it does not write says
    so when it is written."""
    try:
        fmt = normalize_format(fmt or img.format)
    except DenoiseError:
        return []
    info, lost = img.info, []
    if fmt != "TIFF":  # what only a TIFF output holds (`--format` to another)
        codes = {code for code, *_ in info.get("tiff_tags", [])}
        lost += ["its GeoTIFF georeferencing"] if codes & GEOTIFF_TAGS else []
        lost += ["its Photoshop image resources (clipping paths, print settings)"] if 34377 in codes else []
        lost += list(dict.fromkeys(name for code, name in PLANE_TIFF_TAGS.items() if code in codes))
        lost += ["its ImageJ calibration"] if info.get("imagej") else []
        lost += ["its OME-XML"] if info.get("ome") else []
        lost += ["its LUT"] if info.get("colormap") is not None else []
        lost += ["its fourth channel, which is no alpha (a film scanner's infrared)"] if info.get("extra_channel") else []
    if fmt == "TIFF" and img.format != "TIFF" and info.get("exif") and _exif_directories(info["exif"])[1]:
        lost.append("its EXIF maker note (a camera maker's data, which points into the input)")
    if fmt != "JPEG" and info.get("comment"):
        lost.append("its JPEG comment")
    if fmt != "JPEG" and info.get("gpmf"):
        lost.append("its GoPro telemetry (GPMF: the camera's sensors and GPS)")
    if fmt not in ("JPEG", "TIFF") and info.get("photoshop"):
        lost.append("its IPTC and Photoshop data (captions, keywords, clipping paths)")
    if fmt == "JPEG" and info.get("photoshop") and _app13(info["photoshop"]) is None:
        lost.append("its Photoshop data, a block too long for a JPEG")
    if fmt != "JPEG" and info.get("gain_map"):
        lost.append("its HDR gain map (Ultra HDR), which a JPEG output keeps")
    if fmt != "PNG" and info.get("png_text"):
        lost.append(f"its PNG text ({', '.join(info['png_text'])})")
    gamma = struct.unpack(">I", dict(info.get("png_colour", [])).get(b"gAMA", b"\x00\x00\xb1\x8f"))[0]  # default: sRGB's 45455
    if fmt != "PNG" and gamma != 45455 and not info.get("icc_profile"):
        lost.append(f"its gamma ({gamma / 100000:g}; another format shows it as sRGB)")
    if fmt == "JPEG" and info.get("xmp") and len(info["xmp"]) > JPEG_XMP_BYTES and _slim_xmp(info["xmp"]) is None:
        lost.append(f"its XMP ({len(info['xmp']) // 1000} kB), too long for a JPEG")
    if fmt == "AVIF" and _wide(info):
        held = [name for key, name in (("exif", "EXIF"), ("xmp", "XMP"), ("icc_profile", "ICC profile")) if info.get(key)]
        lost += [f"its {' and '.join(held)}, which the AVIF writer for HDR and wide colour cannot hold"] if held else []
    if fmt in ("BMP", "PPM"):
        held = [name for key, name in (("exif", "EXIF"), ("xmp", "XMP"), ("icc_profile", "ICC profile")) if info.get(key)]
        lost += [f"its {' and '.join(held)}, which {'BMP' if fmt == 'BMP' else 'PGM/PPM'} cannot hold"
                 + (" (its orientation is turned into the pixels)" if info.get("exif") else "")] if held else []
    return [f"left out: {'; '.join(lost)}"] if lost else []


@contextmanager
def _writing(path: Path, fmt: str) -> Iterator[None]:
    """An encoder's failure as one line naming the file: encoders raise many types."""
    try:
        yield
    except DenoiseError:
        raise
    except Exception as exc:
        raise DenoiseError(f"{path}: cannot write it as {fmt} ({first_line(exc)})") from exc


def _write(img: LoadedImage, path: Path, fmt: str, jpeg_quality: int) -> None:
    if fmt == "TIFF":
        atomic_write(Path(path), lambda f: _write_tiff(img, f))
        return
    if img.info.get("extra_channel"):  # another format would take it for alpha (``left_out`` says so)
        img = LoadedImage(img.pixels, img.format, img.bits, None, img.info)
    if fmt == "PNG" and img.bits == 16 and (img.channels == 3 or img.alpha is not None):
        data = _png16_bytes(img)
        atomic_write(Path(path), lambda f: f.write(data))
        return
    if fmt == "PPM" and img.bits > 8:
        if img.bits == 32:
            raise DenoiseError(f"{path}: 32-bit float images cannot be written as PGM/PPM; use --format tiff")
        data = _pnm_bytes(img)
        atomic_write(Path(path), lambda f: f.write(data))
        return
    if fmt == "HEIF" and img.bits > 8:
        options = _heif_options(img, path, jpeg_quality)
        deep = _heif_deep(img)
        atomic_write(Path(path), lambda f: deep.save(f, **options))
        return
    im = to_pil(img) if fmt == "PNG" else to_pil(LoadedImage(img.pixels, img.format, 8, img.alpha, img.info))
    kwargs: dict[str, Any] = _meta(img.info)
    if fmt == "JPEG":
        if im.mode in ("RGBA", "LA"):
            im = _on_white(im)
        kwargs.update(quality=jpeg_quality, subsampling=img.info.get("subsampling", 0 if jpeg_quality >= 90 else 2))
        if len(kwargs.get("xmp", b"")) > JPEG_XMP_BYTES:
            kwargs["xmp"] = _slim_xmp(kwargs["xmp"])
        if img.info.get("comment"):
            kwargs["comment"] = img.info["comment"]
        gain = img.info.get("gain_map")
        if gain or img.info.get("photoshop") or img.info.get("gpmf"):
            if gain and gain.get("xmp"):
                kwargs["xmp"] = gain["xmp"]
            buf = io.BytesIO()
            im.save(buf, format="JPEG", **kwargs)
            data = _with_segments(buf.getvalue(), img.info)
            data = _with_gain_map(data, gain) if gain else data
            atomic_write(Path(path), lambda f: f.write(data))
            return
    elif fmt == "WEBP":
        lossless = img.info.get("lossless", img.format != "WEBP")
        kwargs.update(lossless=lossless, quality=WEBP_LOSSLESS_EFFORT if lossless else jpeg_quality, exact=True)
    elif fmt == "HEIF":
        kwargs = _heif_options(img, path, jpeg_quality)
    elif fmt == "AVIF":
        _avif(path)
        if _wide(img.info):
            data = _avif_wide_bytes(img, jpeg_quality)
            atomic_write(Path(path), lambda f: f.write(data))
            return
        kwargs.pop("dpi", None)
        chroma = "4:0:0" if im.mode in ("L", "LA") else "4:4:4" if jpeg_quality >= 90 else "4:2:0"  # 4:0:0 stays grey
        kwargs.update(quality=jpeg_quality, subsampling=chroma, speed=AVIF_SPEED)
    elif fmt == "BMP":
        kwargs = {"dpi": kwargs["dpi"]} if "dpi" in kwargs else {}
        if im.mode == "LA":
            im = _on_white(im)
        im = _upright(im, img.info)
    elif fmt == "PPM":  # netpbm holds pixels alone
        kwargs = {}
        if im.mode in ("RGBA", "LA"):
            im = _on_white(im)
        im = _upright(im, img.info)
    elif fmt == "PNG":
        if im.mode == "F":
            raise DenoiseError(f"{path}: 32-bit float images cannot be written as PNG; use --format tiff")
        kwargs["compress_type"] = PNG_STRATEGY
        cicp, text, colour = _cicp(img.info), img.info.get("png_text", {}), img.info.get("png_colour", [])
        if "xmp" in kwargs or cicp or text or colour:
            from PIL import PngImagePlugin

            kwargs["pnginfo"] = PngImagePlugin.PngInfo()
            for kind, body in colour:
                kwargs["pnginfo"].add(kind, body)
            if "xmp" in kwargs:
                kwargs["pnginfo"].add_itxt(XMP_KEY, kwargs.pop("xmp").decode("utf-8", "replace"))
            for key, value in text.items():
                kwargs["pnginfo"].add_itxt(key, value)
            if cicp:
                kwargs["pnginfo"].add(b"cICP", cicp)
    atomic_write(Path(path), lambda f: im.save(f, format=fmt, **kwargs))


def _upright(im: Image.Image, info: dict[str, Any]) -> Image.Image:
    """The picture as its EXIF orientation shows it, for a format that holds no EXIF (BMP, PPM):
    a phone's portrait photo came out sideways (until 2026-11-29)."""
    if not info.get("exif"):
        return im
    from PIL import ImageOps

    im.info["exif"] = info["exif"]
    return ImageOps.exif_transpose(im)


def _wide(info: dict[str, Any]) -> bool:
    """Whether an image's nclx describes colour that sRGB cannot: HDR (PQ, HLG) or wide primaries
    (BT.2020, Display P3), which Pillow's AVIF writer would label sRGB."""
    nclx = info.get("nclx_profile") or {}
    return nclx.get("transfer_characteristics") in (16, 18) or nclx.get("color_primaries", 1) not in (1, 2)


def _avif_wide_bytes(img: LoadedImage, quality: int) -> bytes:
    """An AVIF at 10 bits (12 where the input had 12 or more) with the input's nclx, through
    imagecodecs' libavif: HDR or wide-gamut colour needs both. That encoder writes no EXIF, XMP or
    ICC profile, so those are left out of such an output."""
    import imagecodecs

    arr, depth = _deep_levels(img)
    nclx = img.info["nclx_profile"]
    formats = imagecodecs.AVIF.PIXEL_FORMAT
    chroma = formats.YUV400 if img.channels == 1 else formats.YUV444 if quality >= 90 or nclx.get("matrix_coefficients") == 0 \
        else formats.YUV420
    return imagecodecs.avif_encode(arr, quality, speed=AVIF_SPEED, bitspersample=depth, pixelformat=chroma,
                                   primaries=nclx.get("color_primaries"), transfer=nclx.get("transfer_characteristics"),
                                   matrix=nclx.get("matrix_coefficients"))


def _slim_xmp(xmp: bytes) -> bytes | None:
    """XMP that fits JPEG's one segment, or None to leave it out: a Photoshop TIFF's XMP can run to
    megabytes of ``photoshop:DocumentAncestors`` (the ids of every file ever pasted into it, a
    list Adobe itself tells users to clear), and written as JPEG it failed the file (until
    2026-11-29). That list is dropped; XMP still too long is left out (``left_out`` says so)."""
    xmp = ANCESTORS.sub(b"", xmp)
    return xmp if len(xmp) <= JPEG_XMP_BYTES else None


def _on_white(im: Image.Image) -> Image.Image:
    """An image with alpha laid on white, for a format without it (JPEG; grey BMP): dropping the
    alpha would show whatever colour the editor left in the transparent pixels, often black."""
    base = Image.new(im.mode[:-1], im.size, "white")
    base.paste(im.convert(base.mode), mask=im.getchannel("A"))
    return base


def _heif_options(img: LoadedImage, path: Path, quality: int) -> dict[str, Any]:
    """HEIF's encoder settings, the same at any depth: the input's chroma subsampling and nclx
    colour description, x265's medium preset (``HEIF_PRESET``); HEIF has no DPI."""
    _heif(path)
    options = {**{k: v for k, v in _meta(img.info).items() if k != "dpi"}, "quality": quality,
               "chroma": img.info.get("chroma", 444 if quality >= 90 else 420), "enc_params": {"preset": HEIF_PRESET}}
    if img.info.get("nclx_profile"):
        options["nclx_profile"] = img.info["nclx_profile"]
    return options


def _write_tiff(img: LoadedImage, f: BinaryIO, slabs: Iterable[LoadedImage] | None = None, writer: Any = None) -> None:
    """The TIFF with the input's compression and predictor: without its horizontal differencing
    (image editors' usual "LZW with predictor"), a denoised 8-bit Kodak24 image took 1.47x the
    bytes in LZW and 1.25x in deflate (16-bit: 1.08x and 1.07x). A stack goes page by page, from
    ``slabs`` where it is streamed (``write_stacks``): it is never held whole in the file's type.
    ``writer``: a tifffile.TiffWriter this image goes into after others (``write_stacks``)."""
    import tifffile

    stack = img.info.get("stack")
    white = bool(img.info.get("miniswhite")) and img.channels == 1
    pages = (np.ascontiguousarray(page) for slab in (slabs or [img])
             for page in _as_pages(_pixels_as(_negative(slab) if white else slab, img.bits), stack))
    first = next(pages)
    lead = () if stack is None else stack["shape"][:-1] if stack.get("samples") else stack["shape"]
    shape = (*lead, *first.shape)
    # past 4 GB a classic TIFF's offsets overflow: BigTIFF, or ImageJ's own layout, one page header
    # before all the planes (tifffile falls back to it with a warning in the terminal); tifffile
    # cannot size a stream itself
    big = math.prod(shape) * first.dtype.itemsize > CLASSIC_TIFF_BYTES
    extra: dict[str, Any] = {}
    if "resolution" in img.info:
        x, y, unit = img.info["resolution"]
        extra.update(resolution=(x, y), resolutionunit=unit)
    elif "dpi" in img.info:
        extra.update(resolution=tuple(img.info["dpi"]), resolutionunit=2)
    if img.info.get("icc_profile"):
        extra["iccprofile"] = img.info["icc_profile"]
    extra["extratags"] = [(code, dtype, 0 if dtype == 2 else count, value, True) for code, dtype, count, value in img.info.get("tiff_tags", [])]
    if img.info.get("xmp"):
        extra["extratags"].append((700, 1, len(img.info["xmp"]), img.info["xmp"], True))
    if img.info.get("photoshop"):  # a JPEG's APP13 or a TIFF's resources; the IPTC among them in its own tag, where readers look
        iptc = next((data for rid, _, data in _resources(img.info["photoshop"]) if rid == 1028), b"")
        extra["extratags"] += [(34377, 7, len(img.info["photoshop"]), img.info["photoshop"], True)]
        extra["extratags"] += [(33723, 7, len(iptc), iptc, True)] if iptc else []
    # not into an ImageJ file past 4 GB, a classic TIFF whose offsets cannot reach past its data
    exif = _exif_directories(img.info.get("exif"))[0] if stack is None and writer is None and not (big and img.info.get("imagej") is not None) else {}
    # placeholders that ``_with_exif`` renumbers and points: tifffile refuses these tags' numbers, and
    # one less sorts where they go (no tag has it in a first directory)
    extra["extratags"] += [(code - 1, 16 if big else 4, 1, 0, True) for code in exif]
    comp = img.info.get("compression")
    comp = comp if comp in TIFF_COMPRESSIONS else None
    metadata: dict[str, Any] | None = None
    layout: dict[str, Any] = {"photometric": "rgb" if img.channels == 3 else "miniswhite" if white else "minisblack",
                              "extrasamples": (("unspecified" if img.info.get("extra_channel") else "assocalpha" if img.info.get("premultiplied")
                                                else "unassalpha"),)
                              if img.alpha is not None else None}
    if stack is not None and stack.get("samples"):  # grey channels back into each pixel, as they were
        layout.update(planarconfig="separate" if stack["separate"] else "contig", extrasamples=("unspecified",) * (stack["samples"] - 1))
    if img.info.get("ome"):
        # OME-XML describes the pages' order, which a stack keeps (its planes go back in the order
        # read), so the input's XML stays true: physical sizes, channels, the instrument
        extra["description"] = img.info["ome"].encode("utf-8")  # OME-XML is UTF-8 (units such as µm)
    elif img.info.get("description") and img.info.get("imagej") is None:
        extra["description"] = img.info["description"]  # ImageJ's description is its own
    imagej = img.info.get("imagej") is not None and img.alpha is None and first.dtype in (np.uint8, np.uint16, np.float32)
    if (stack is not None or imagej) and not img.info.get("ome"):
        lead_axes = stack["axes"] if stack is not None else ""
        axes = lead_axes + ("SYX" if stack and stack.get("separate") else "YXS" if img.channels == 3 or stack and stack.get("samples") else "YX")
        if imagej:
            extra["imagej"] = True
            metadata = {k: v for k, v in img.info["imagej"].items() if k not in IMAGEJ_LAYOUT} | {"axes": axes}
        else:
            metadata = {"axes": axes}
    colormap = img.info.get("colormap")
    if colormap is not None and img.channels == 1 and img.alpha is None and not white:
        if first.dtype.kind == "u" and colormap.shape[1] == 2 ** (8 * first.dtype.itemsize):
            layout["photometric"] = "palette"  # the LUT a palette TIFF showed its values through
            extra["colormap"] = colormap
        elif extra.get("imagej"):
            extra["colormap"] = colormap  # ImageJ's 16-bit or float image keeps its LUT in a ColorMap tag
    imagej = bool(extra.pop("imagej", False))
    tile = img.info.get("tile") if not imagej and layout.get("planarconfig") != "separate" else None
    data = itertools.chain([first], pages)
    args = dict(shape=shape, dtype=first.dtype, truncate=big and imagej and comp is None, **layout, compression=comp, tile=tile,
                predictor=img.info.get("predictor") if comp not in (None, "packbits") else None, metadata=metadata, maxworkers=TIFF_WORKERS, **extra)
    data = _tiles(data, tile) if tile else data
    if writer is not None:  # one of several images: a shape of its own, so a reader does not merge it with the next
        writer.write(data, **{**args, "metadata": {} if metadata is None and not img.info.get("ome") else metadata})
        return
    with tifffile.TiffWriter(f, bigtiff=big and not imagej, imagej=imagej) as tw:
        tw.write(data, **args)
    if exif:
        _with_exif(f, exif)


def _tiles(pages: Iterable[np.ndarray], tile: tuple[int, int]) -> Iterator[np.ndarray]:
    """Pages as the tiles tifffile takes from a stream, row by row (it pads those at the edges)."""
    for page in pages:
        for y in range(0, page.shape[0], tile[0]):
            for x in range(0, page.shape[1], tile[1]):
                yield page[y : y + tile[0], x : x + tile[1]]


def _negative(img: LoadedImage) -> LoadedImage:
    """The image as a MINISWHITE TIFF stores it: white at 0."""
    return LoadedImage(1 - img.pixels, img.format, img.bits, img.alpha, img.info)


def _as_pages(arr: np.ndarray, stack: dict[str, Any] | None) -> np.ndarray:
    """``_pixels_as``' planes as the file's pages: grey channels back side by side in each pixel
    (or each in a plane of its own page, where the file kept them separate)."""
    if stack is None:
        return arr[None]
    if stack.get("samples"):
        arr = arr.reshape(-1, stack["samples"], *arr.shape[1:])
        arr = arr if stack["separate"] else np.moveaxis(arr, 1, -1)
    return arr


def _pnm_bytes(img: LoadedImage) -> bytes:
    """A binary PGM or PPM at the image's own depth (``depth``, else 16 bits): Pillow writes 16-bit
    grey alone. Netpbm has no alpha, so alpha is laid on white, as for JPEG."""
    x = img.pixels.detach().float().clamp(0, 1).cpu()
    if img.alpha is not None:
        a = torch.from_numpy(_alpha_as(img.alpha, np.dtype(np.float32)))
        x = x * a + (1 - a)
    top = 2 ** img.info.get("depth", 16) - 1
    arr = np.round(np.moveaxis(x.numpy(), 0, -1) * top).astype(">u2")
    h, w = arr.shape[:2]
    return (b"P6" if img.channels == 3 else b"P5") + f"\n{w} {h}\n{top}\n".encode() + arr.tobytes()


def _png16_bytes(img: LoadedImage) -> bytes:
    """libpng's encoding via imagecodecs, with iCCP/pHYs/eXIf chunks put back after IHDR."""
    import imagecodecs

    data = imagecodecs.png_encode(_pixels_as(img, 16), strategy=PNG_STRATEGY)
    chunks = b"".join(_chunk(kind, body) for kind, body in img.info.get("png_colour", []))
    if img.info.get("icc_profile"):
        chunks += _chunk(b"iCCP", b"icc\x00\x00" + zlib.compress(img.info["icc_profile"]))
    if img.info.get("dpi"):
        ppm = [int(round(d / 0.0254)) for d in img.info["dpi"]]
        chunks += _chunk(b"pHYs", struct.pack(">IIB", ppm[0], ppm[1], 1))
    if img.info.get("exif"):
        exif = img.info["exif"]
        chunks += _chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\x00\x00") else exif)
    if img.info.get("xmp"):
        chunks += _chunk(b"iTXt", XMP_KEY.encode() + b"\x00\x00\x00\x00\x00" + img.info["xmp"])
    for key, value in img.info.get("png_text", {}).items():
        chunks += _chunk(b"iTXt", key.encode("latin-1", "replace") + b"\x00\x00\x00\x00\x00" + value.encode("utf-8"))
    cicp = _cicp(img.info)
    if cicp:
        chunks += _chunk(b"cICP", cicp)
    ihdr_end = 8 + 8 + 13 + 4
    return data[:ihdr_end] + chunks + data[ihdr_end:]


def _cicp(info: dict[str, Any]) -> bytes | None:
    """PNG's cICP chunk for an HDR HEIF's nclx description (PQ or HLG transfer, often BT.2020
    primaries), which no ICC profile carries: without it a PNG of an HDR photo is read as sRGB.
    PNG holds RGB, so its matrix is 0; SDR descriptions are left to the ICC profile."""
    nclx = info.get("nclx_profile") or {}
    if nclx.get("transfer_characteristics") not in (16, 18):
        return None
    return bytes([int(nclx.get("color_primaries", 9)), int(nclx["transfer_characteristics"]), 0, 1])


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

"""Which files are images, in which format, and what to make of the others: the names alone,
without torch, so the CLI answers a wrong name or a missing folder at once (2 s later with it)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from denoisecli.errors import DenoiseError, no_such_path

HEIF_SUFFIXES = {".heic", ".heif", ".hif"}  # .hif: Canon and Sony cameras' 10-bit HEIF
PNM_SUFFIXES = {".pgm", ".ppm", ".pnm"}  # netpbm's grey and colour images: ML datasets, raw converters' output
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp", ".avif", *HEIF_SUFFIXES, *PNM_SUFFIXES}
FORMAT_SUFFIX = {"PNG": ".png", "JPEG": ".jpg", "TIFF": ".tif", "WEBP": ".webp", "BMP": ".bmp", "HEIF": ".heic", "AVIF": ".avif",
                 "PPM": ".ppm"}
# what a user is told the tool reads, wherever a file or folder holds nothing it does
READABLE = ".png, .jpg, .tif, .webp, .bmp, .heic (.hif), .avif and .pgm/.ppm"
# what to make of files this tool does not read, by kind: said wherever a folder or a file holds them
CONVERSIONS = (
    ({".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".dng", ".raf", ".orf", ".rw2", ".pef", ".srw", ".x3f",
      ".3fr", ".iiq", ".erf", ".kdc", ".mrw", ".rwl", ".gpr", ".mos", ".mef", ".dcr"},
     "camera RAW: export a 16-bit TIFF with the converter's own noise reduction off (darktable, RawTherapee, "
     "Lightroom; dcraw -6 -T) and denoise that"),
    ({".czi", ".nd2", ".lif", ".lsm", ".oib", ".oif", ".oir", ".ims", ".vsi", ".lei", ".zvi", ".dv", ".sld", ".stk",
      ".dm3", ".dm4", ".mrc", ".emd", ".ser"},  # light microscopes', and electron microscopes' (Gatan, cryo-EM, Thermo Fisher)
     "microscope files: save them as OME-TIFF (Fiji: File > Save As > OME-TIFF, or Bio-Formats' bfconvert), which keeps "
     "stacks and calibration"),
    ({".exr", ".hdr", ".pfm"}, "HDR images: save them as 32-bit float TIFF"),
    ({".fits", ".fit", ".fts", ".xisf"}, "astronomy images: save them as 32-bit float or 16-bit TIFF (Siril, PixInsight)"),
    ({".dcm", ".dicom"}, "DICOM images: save them as 16-bit TIFF (Fiji opens DICOM: File > Save As > Tiff)"),
    ({".gif", ".jxl", ".jp2", ".j2k", ".psd", ".tga", ".ico", ".dds"}, "other images: save them as PNG or TIFF (16-bit where they are deeper)"),
    ({".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v"}, "video: extract its frames first (ffmpeg -i clip.mp4 frames/%05d.png)"),
)
# an iPhone export's Live Photos: the clip beside each photo, of the same name (``unread_files``)
LIVE_PHOTO_SUFFIXES = {".mov", ".mp4"}
# folders a batch does not look in, besides hidden ones: a Synology NAS's thumbnails (@eaDir, beside
# every photo folder of a share) and recycle bins, which hold copies of the photos
SKIPPED_FOLDERS = {"@eaDir", "#recycle", "#snapshot", "$RECYCLE.BIN"}


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def list_images(root: Path, exclude: Path | None = None) -> list[Path]:
    """Image files under ``root`` (recursive, sorted, any case of extension), never those inside ``exclude``."""
    root = Path(root)
    if root.is_file():
        return [root]
    return sorted(p for p in _files(root, exclude) if is_image_path(p))


def require_images(root: Path, exclude: Path | None = None) -> list[Path]:
    """``list_images``, but a folder without any is an error that says what it holds instead,
    so a user pointing at a folder of RAW or HEIC files learns why nothing happens."""
    found = list_images(root, exclude)
    if not found:
        others = unread_files(root, exclude)
        held = f"; it holds {describe_counts(others)}" if others else ""
        raise DenoiseError(f"{root}: no images found (it reads {READABLE}){held}{conversion_hints(others)}")
    return found


def unread_files(root: Path, exclude: Path | None = None) -> dict[str, int]:
    """Files under a folder that a batch leaves alone, counted by extension (``""``: none), so a
    user whose folder holds RAW, HEIC or GIF files learns they were not denoised. Hidden files
    and folders (``.DS_Store``, ``.git``) are not counted (see ``_files``); a single file has none."""
    root = Path(root)
    if root.is_file():
        return {}
    counts: dict[str, int] = {}
    files = _files(root, exclude)
    stills = {(p.parent, p.stem.lower()) for p in files if is_image_path(p)}
    for p in files:
        if is_image_path(p):
            continue
        kind = p.suffix.lower()
        if kind in LIVE_PHOTO_SUFFIXES and (p.parent, p.stem.lower()) in stills:
            kind += " of Live Photos"  # an iPhone's IMG_0001.MOV beside IMG_0001.HEIC: no video to extract frames from
        counts[kind] = counts.get(kind, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def describe_counts(counts: dict[str, int]) -> str:
    """``{".cr2": 10, "": 1}`` -> ``"10 .cr2, 1 without extension"``."""
    return ", ".join(f"{n} {ext or 'without extension'}" for ext, n in counts.items())


def conversion_hints(suffixes: Iterable[str]) -> str:
    """How to get files of these kinds into one this tool reads, as sentences to end a message
    with (". Camera RAW: ..."; "" where it knows none): a photographer's RAW files or a
    microscopist's CZI were left alone with no word of what to do."""
    present = {x.lower() for x in suffixes}
    return "".join(f". {hint[0].upper()}{hint[1:]}" for kinds, hint in CONVERSIONS if kinds & present)


def _files(root: Path, exclude: Path | None) -> list[Path]:
    """The files under a folder, not hidden ones nor those in hidden or system folders
    (``SKIPPED_FOLDERS``): macOS leaves an AppleDouble ``._IMG_0001.JPG`` beside each photo it
    copies to an SD card or a USB drive, which failed as "not an image file" and made the batch
    exit 1, and a ``.thumbnails`` folder was denoised with the photos (until 2026-11-29). A
    hidden file or folder named as the input itself is read."""
    if not root.is_dir():
        raise no_such_path(root)
    skip = exclude.resolve() if exclude is not None else None
    found = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [d for d in subfolders if not d.startswith(".") and d not in SKIPPED_FOLDERS]
        for name in files:
            p = Path(folder) / name
            if not name.startswith(".") and p.is_file() and (skip is None or not p.resolve().is_relative_to(skip)):
                found.append(p)
    return found


def format_of(path: Path) -> str | None:
    """The format a file name asks for (``clean.jpg`` -> JPEG), or None for a name that is no image."""
    try:
        return normalize_format(Path(path).suffix[1:]) if Path(path).suffix else None
    except DenoiseError:
        return None


def normalize_format(fmt: str | None) -> str | None:
    """'jpg' -> 'JPEG', 'tif' -> 'TIFF'; an unknown format is a clear error."""
    if fmt is None:
        return None
    name = {"JPG": "JPEG", "TIF": "TIFF", "HEIC": "HEIF", "HIF": "HEIF", "PGM": "PPM", "PNM": "PPM"}.get(fmt.upper(), fmt.upper())
    if name not in FORMAT_SUFFIX:
        raise DenoiseError(f"format {fmt}: unknown (choose png, jpeg, tiff, webp, bmp, heic or avif)")
    return name

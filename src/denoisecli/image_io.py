"""Reading and writing image files: float tensors in [0, 1] in, the same kind of file out, atomically."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageFile, UnidentifiedImageError

from denoisecli.atomic import atomic_write
from denoisecli.errors import DenoiseError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp"}
FORMAT_SUFFIX = {"PNG": ".png", "JPEG": ".jpg", "TIFF": ".tif", "WEBP": ".webp", "BMP": ".bmp"}
ImageFile.LOAD_TRUNCATED_IMAGES = False


@dataclass
class LoadedImage:
    """Pixels as a float CxHxW tensor in [0, 1], plus what is needed to write the same kind of file."""

    pixels: torch.Tensor
    format: str
    bits: int = 8
    alpha: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def channels(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def megapixels(self) -> float:
        return self.pixels.shape[-1] * self.pixels.shape[-2] / 1e6


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def list_images(root: Path, exclude: Path | None = None) -> list[Path]:
    """Image files under ``root`` (recursive, sorted), never those inside ``exclude``."""
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise DenoiseError(f"{root}: no such file or folder")
    skip = exclude.resolve() if exclude is not None else None
    found = []
    for p in root.rglob("*"):
        if not (p.is_file() and is_image_path(p)):
            continue
        if skip is not None and p.resolve().is_relative_to(skip):
            continue
        found.append(p)
    return sorted(found)


def read_image(path: Path) -> LoadedImage:
    """Decode fully (so a truncated file fails here, not later), keeping grey as one channel."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
                return _from_pil(im)
    except FileNotFoundError as exc:
        raise DenoiseError(f"{path}: file not found") from exc
    except PermissionError as exc:
        raise DenoiseError(f"{path}: permission denied") from exc
    except UnidentifiedImageError as exc:
        raise DenoiseError(f"{path}: not an image file (or a format this tool cannot read)") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DenoiseError(f"{path}: image too large to decode safely ({exc})") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise DenoiseError(f"{path}: cannot decode image ({exc})") from exc


def _from_pil(im: Image.Image) -> LoadedImage:
    fmt = im.format or "PNG"
    info: dict[str, Any] = {}
    for key in ("icc_profile", "exif", "dpi"):
        if im.info.get(key):
            info[key] = im.info[key]
    if fmt == "JPEG":
        from PIL import JpegImagePlugin

        sampling = JpegImagePlugin.get_sampling(im)
        if sampling >= 0:
            info["subsampling"] = sampling
    alpha = None
    mode = im.mode
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode == "CMYK":
        im = im.convert("RGB")
    elif mode in ("1", "I", "F"):
        im = im.convert("L") if mode == "1" else im
    if im.mode in ("RGBA", "LA"):
        alpha = np.asarray(im.getchannel("A")).copy()
        im = im.convert("RGB" if im.mode == "RGBA" else "L")
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float32) / 65535.0
        bits = 16
    elif im.mode == "F":
        arr, bits = np.asarray(im, dtype=np.float32), 32
    else:
        if im.mode not in ("L", "RGB"):
            im = im.convert("RGB")
        arr, bits = np.asarray(im, dtype=np.float32) / 255.0, 8
    if arr.ndim == 2:
        arr = arr[:, :, None]
    pixels = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))
    return LoadedImage(pixels=pixels, format=fmt, bits=bits, alpha=alpha, info=info)


def to_pil(img: LoadedImage) -> Image.Image:
    """Quantise back to the file's own bit depth and re-attach the alpha channel."""
    arr = img.pixels.detach().clamp(0, 1).cpu().numpy().transpose(1, 2, 0)
    if img.bits == 16 and img.channels == 1:
        im = Image.fromarray(np.round(arr[:, :, 0] * 65535.0).astype(np.uint16))
    elif img.bits == 32 and img.channels == 1:
        im = Image.fromarray(arr[:, :, 0].astype(np.float32))
    else:
        u8 = np.round(arr * 255.0).astype(np.uint8)
        im = Image.fromarray(u8[:, :, 0] if img.channels == 1 else u8)
    if img.alpha is not None and im.mode in ("L", "RGB"):
        im.putalpha(Image.fromarray(img.alpha))
    return im


def write_image(img: LoadedImage, path: Path, fmt: str | None = None, jpeg_quality: int = 95) -> None:
    """Write via a temp file and a rename, so an interrupted run never leaves half an image."""
    path = Path(path)
    fmt = (fmt or img.format).upper()
    im = to_pil(img)
    kwargs: dict[str, Any] = {k: v for k, v in img.info.items() if k in ("icc_profile", "exif", "dpi")}
    if fmt == "JPEG":
        if im.mode in ("RGBA", "LA"):
            im = im.convert("RGB" if im.mode == "RGBA" else "L")
        kwargs.update(quality=jpeg_quality, subsampling=img.info.get("subsampling", 0))
    elif fmt == "PNG":
        kwargs["compress_level"] = 6
    elif fmt == "WEBP":
        kwargs.update(lossless=True)
    atomic_write(path, lambda f: im.save(f, format=fmt, **kwargs))

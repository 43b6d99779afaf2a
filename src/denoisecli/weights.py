"""Checkpoints and model files: atomic saves, code-free loads, and the shipped weights."""

from __future__ import annotations

import pickle
import zipfile
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from denoisecli.atomic import atomic_write
from denoisecli.errors import DenoiseError, first_line, no_weights_file
from denoisecli.models import build_model, full_config

MODEL_FORMAT = "denoise-model/1"
SHIPPED = {1: "grey.pt", 3: "color.pt"}


def atomic_save(obj: Any, path: Path) -> None:
    """Save a checkpoint so that a crash mid-write never corrupts the previous one."""
    atomic_write(Path(path), lambda f: torch.save(obj, f))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load with ``weights_only=True``: a weights file can hold tensors, never code."""
    path = Path(path)
    if not path.is_file():
        raise no_weights_file(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise DenoiseError(f"{path}: refused, the file holds more than weights (possible code): {first_line(exc)}") from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise DenoiseError(f"{path}: not a readable weights file (truncated or corrupt)") from exc
    if not isinstance(obj, dict):
        raise DenoiseError(f"{path}: not a denoise weights file")
    return obj


def model_payload(model: nn.Module, config: dict[str, Any], meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a model file holds: the config that rebuilds it, its weights, and how it was made."""
    return {
        "format": MODEL_FORMAT,
        "config": dict(config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": dict(meta or {}),
    }


def load_model(path: Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from a model file (or a training checkpoint) alone; returns it in eval mode."""
    ckpt = load_checkpoint(path)
    if "generator" in ckpt and "state_dict" not in ckpt:
        ckpt = ckpt["generator"]
    if ckpt.get("format") != MODEL_FORMAT or "config" not in ckpt or "state_dict" not in ckpt:
        raise DenoiseError(f"{path}: not a denoise model file (no config or weights inside)")
    try:
        model = build_model(full_config(ckpt["config"]))
        model.load_state_dict(ckpt["state_dict"])
    except (ValueError, RuntimeError, TypeError) as exc:
        raise DenoiseError(f"{path}: weights do not match their config ({first_line(exc)})") from exc
    model.eval()
    return model, ckpt


def weights_dir() -> Path:
    """The shipped weights: inside the installed package, or ``weights/`` of a source checkout."""
    packaged = Path(str(resources.files("denoisecli"))) / "weights"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "weights"


def shipped_weights(channels: int) -> Path:
    """The shipped model for grey (1) or colour (3) images, falling back to the colour one."""
    folder = weights_dir()
    for name in (SHIPPED.get(channels), SHIPPED[3]):
        if name and (folder / name).is_file():
            return folder / name
    raise DenoiseError(f"{folder}: no shipped weights found (pass --weights FILE)")

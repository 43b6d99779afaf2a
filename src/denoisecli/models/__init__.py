"""Model registry: every architecture is built from a small config dict stored in each checkpoint."""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from denoisecli.models import dncnn, ffdnet, patchgan, unet

_REGISTRY: dict[str, Callable[[dict[str, Any]], nn.Module]] = {
    "unet": unet.build,
    "patchgan": patchgan.build,
    "dncnn": dncnn.build,
    "ffdnet": ffdnet.build,
}


def build_model(config: dict[str, Any]) -> nn.Module:
    """Build the architecture that ``config['arch']`` names; a checkpoint alone can rebuild its model."""
    arch = config.get("arch")
    if arch not in _REGISTRY:
        raise ValueError(f"unknown architecture {arch!r} (known: {', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[arch](config)


_DEFAULTS: dict[str, dict[str, Any]] = {"unet": unet.DEFAULTS, "patchgan": patchgan.DEFAULTS, "dncnn": dncnn.DEFAULTS, "ffdnet": ffdnet.DEFAULTS}


def full_config(config: dict[str, Any]) -> dict[str, Any]:
    """A config with every default filled in, so configs saved before an option existed still compare equal
    and rebuild the model they were saved from."""
    full = {**_DEFAULTS.get(config.get("arch", ""), {}), **config}
    if full.get("arch") == "unet" and full.get("noise_map") and "level" not in config:
        full["level"] = "clamped"  # saved before the level's meaning was recorded, when it was always this
    return full


def default_config(channels: int) -> dict[str, Any]:
    """The denoiser architecture `train` uses unless told otherwise."""
    return {"arch": "unet", **unet.DEFAULTS, "channels": channels}


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

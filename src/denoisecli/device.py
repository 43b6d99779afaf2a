"""Device selection: the one place that decides where tensors live."""

from __future__ import annotations

import torch

from denoisecli.errors import DenoiseError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str = "auto") -> torch.device:
    """Turn a user's choice into a device, refusing CUDA clearly when there is none."""
    name = name.lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DenoiseError(f"--device {name}: CUDA is not available on this machine (use --device cpu or auto)")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise DenoiseError(f"--device {name}: unknown device (choose auto, cpu or cuda)")

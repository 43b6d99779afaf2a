"""Device selection: the one place that decides where tensors live."""

from __future__ import annotations

import ctypes
import functools
import os
import platform
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

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


def memory_format(device: torch.device, training: bool = False) -> torch.memory_format:
    """Channels-last (NHWC) where it is faster: for inference everywhere (oneDNN on a CPU and
    cuDNN both run 3x3 convolutions faster in it: about 1.5x for the shipped UNet at 1024 px on
    a 2-core CPU, with outputs equal to float rounding), for training on CUDA only (on that CPU
    the backward pass gained nothing)."""
    return torch.channels_last if device.type == "cuda" or not training else torch.contiguous_format


def place_model(model: nn.Module, device: torch.device, training: bool = False) -> nn.Module:
    """Move a model to ``device`` in the memory layout chosen by ``memory_format``; for inference
    on a CPU, also keep freed memory in the process (``keep_freed_memory``)."""
    if device.type == "cpu" and not training:
        keep_freed_memory()
    return model.to(device=device, memory_format=memory_format(device, training))


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 128 << 20
TRIM_THRESHOLD = 512 << 20


@functools.cache
def keep_freed_memory() -> bool:
    """Have glibc's malloc reuse freed memory instead of handing it back to the kernel.

    glibc maps every block over 32 MB afresh and unmaps it on free, and a CPU inference pass of
    the UNet at 1024x1024 allocates many such blocks (32-channel activations of 512x512 are 32 MB):
    each pass then paid about 100,000 page faults, 10-20% of its time on a 2-core VM. Blocks up to
    MMAP_THRESHOLD now come from the heap and up to TRIM_THRESHOLD of free memory stays there for
    the next tensor: `denoise run` of a 12-megapixel JPEG took 14.6 s against 18.3 s, peak memory
    1.47 GB against 1.41 (with it a 3-megapixel PNG in the same folder: 1.76 GB; with no limits,
    2.2 GB for no further gain). Training allocates smaller blocks and gained about 1%, so it is
    left alone. Returns whether the setting took (False off glibc: macOS, Windows, musl)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter runs on
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def machine_name(device: torch.device) -> str:
    """The GPU, or the CPU model and its threads: what a speed or a score was measured on."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} threads"


def free_memory() -> int | None:
    """Bytes of memory this machine has free (Linux: MemAvailable; elsewhere its physical
    memory, the best the standard library says), or None where nothing says."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def format_bytes(n: float) -> str:
    """``36e9`` -> ``"36.0 GB"``, ``7.2e5`` -> ``"0.7 MB"``, ``1200`` -> ``"1 kB"``: memory or data in a user's message."""
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{max(1, round(n / 1e3))} kB"


def versions() -> dict[str, str]:
    """The package's and torch's versions, which a saved report or log records beside its figures."""
    from denoisecli import __version__

    return {"denoisecli": __version__, "torch": torch.__version__}


def provenance(device: torch.device) -> dict[str, Any]:
    """Where and when something ran, for a report or log to say itself: time, device, machine, versions."""
    return {"time": datetime.now().astimezone().isoformat(timespec="seconds"), "device": str(device),
            "machine": machine_name(device), "versions": versions()}

"""Speed on this machine: inference MP/s, peak memory and training patches/s, against reference networks.

A model with a noise-level input is timed with the noise estimator included, as `run` uses it.
The references (DnCNN-17 and an FFDNet-style network, untrained: speed does not depend
on the weights) are measured in the same process, so the ratios hold on any machine.
"""

from __future__ import annotations

import copy
import ctypes
import ctypes.util
import functools
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from denoisecli.device import machine_name, place_model, resolve_device, versions
from denoisecli.int8 import quantize
from denoisecli.models import build_model
from denoisecli.noise import noisy_photo
from denoisecli.weights import load_model, shipped_weights

REFERENCES = {"dncnn-17": {"arch": "dncnn"}, "ffdnet": {"arch": "ffdnet"}}
SIGMA_GIVEN = "denoise --sigma"
FLOAT32 = "denoise --no-int8"
SIGMA = 25 / 255  # the noise of the bench image, and the level given where none is estimated


@dataclass
class SpeedRow:
    model: str
    size: int
    dtype: str
    mps: float
    spread: tuple[float, float]
    seconds: float
    peak_mib: float


@dataclass
class TrainRow:
    model: str
    patches_per_s: float


@dataclass
class BenchReport:
    device: str
    machine: str
    date: str
    channels: int
    repeats: int
    int8: bool = False
    inference: list[SpeedRow] = field(default_factory=list)
    training: list[TrainRow] = field(default_factory=list)

    def ratio(self, ref: str, size: int, dtype: str = "float32") -> float:
        """How many times faster ours is than ``ref`` at ``size`` (above 1: ours is faster)."""
        ours = [r.mps for r in self.inference if r.model == "denoise" and r.size == size and r.dtype == dtype]
        theirs = [r.mps for r in self.inference if r.model == ref and r.size == size and r.dtype == dtype]
        return ours[0] / theirs[0] if ours and theirs else float("nan")

    def train_ratio(self, ref: str) -> float:
        rates = {r.model: r.patches_per_s for r in self.training}
        return rates.get("denoise", float("nan")) / rates.get(ref, float("nan"))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        sizes = sorted({r.size for r in self.inference})
        d["ratios"] = {ref: {str(s): self.ratio(ref, s) for s in sizes} for ref in REFERENCES}
        d["train_ratios"] = {ref: self.train_ratio(ref) for ref in REFERENCES}
        d["versions"] = versions()
        return d


class _AsRun(nn.Module):
    """A noise-level model timed as `run` uses it: each image's level estimated first, or the level
    ``sigma`` (0-1 scale) as given by `--sigma`, fed as `run` feeds it (a ``"map"`` model's map is
    made either way); training steps get a fixed level. With ``route``, what `run` measures with
    the shipped models to choose each image's route is measured too: a colour image's channel
    coupling (``Denoiser.split``), a grey one's decision to stabilise without a given sigma
    (``Denoiser.stabiliser``: the screen, the confirmation or the growth beyond clamping, and the
    fit where either test passes), and either's level read as the noise before clamping
    (``Denoiser.unclamp``), once for both, as `run` reads it; the model timed here takes the
    image whole, untransformed, either way."""

    def __init__(self, model: nn.Module, sigma: float | None = None, route: bool = False) -> None:
        super().__init__()
        self.model = model
        self.sigma = sigma
        self.route = route

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return self.model(x, torch.full((x.shape[0],), SIGMA, device=x.device, dtype=x.dtype))
        from denoisecli.noise_estimate import channel_coupling, level_input, model_level, plain_level
        from denoisecli.stabilise import default_stabiliser

        levels = []
        for im in x:
            # as ``Denoiser.levels``: a shipped model's level is read as the noise before clamping,
            # once for the decision to stabilise and the level; a given sigma skips both
            read = plain_level(im, self.route)
            if self.route and im.shape[0] == 3:
                channel_coupling(im)
            elif self.route and self.sigma is None:
                default_stabiliser(im, read)
            levels.append(model_level(im, self.sigma if self.sigma is not None else read(), self.model.level)[1])
        return self.model(x, level_input(levels, x.device, x.dtype))


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, looked up once (find_library runs ldconfig); None where there is none."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def _reset_peak(device: torch.device) -> None:
    """Start a model's peak from what the process really holds now.

    On CPU, glibc keeps freed heap memory mapped (after large frees it also raises its mmap
    threshold, so later buffers come from the heap), so without a trim the resident set at the
    reset carried whatever the previous model or size had freed, and a model's peak depended on
    what ran before it (978 or 1,237 MiB for the same network in two runs of the same bench).
    """
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_mib(device: torch.device) -> float:
    """Peak allocated memory on CUDA; peak resident set size of the process on CPU (which holds
    every model's weights, and the Python runtime, whatever runs)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _weight_bytes(model: nn.Module) -> dict[int, int]:
    """Bytes of each parameter and buffer, keyed by storage address so shared tensors count once."""
    return {t.data_ptr(): t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers())}


def _others_mib(models: dict[str, nn.Module], name: str) -> float:
    """Memory held by the weights of every model but ``name`` (and not shared with it): all the
    models stay on the device for the whole bench, so CUDA's peak counts their weights too."""
    own = _weight_bytes(models[name])
    others: dict[int, int] = {}
    for other, model in models.items():
        if other != name:
            others.update(_weight_bytes(model))
    return sum(size for ptr, size in others.items() if ptr not in own) / 2**20


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def _inference_seconds(model: nn.Module, x: torch.Tensor, dtype: torch.dtype | None) -> float:
    _sync(x.device)
    start = time.perf_counter()
    with torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
        model(x)
    _sync(x.device)
    return time.perf_counter() - start


def _train_rates(models: dict[str, nn.Module], channels: int, device: torch.device, patch: int, batch: int,
                 steps: int) -> dict[str, float]:
    """Patches/s of Adam + L1 steps on random patches (after one warm-up step each), the models
    taking turns step by step, so a machine that slows down mid-run slows them all alike."""
    x = torch.rand(batch, channels, patch, patch, device=device)
    opts, seconds = {}, dict.fromkeys(models, 0.0)
    for name, model in models.items():
        place_model(model, device, training=True).train()
        opts[name] = torch.optim.Adam(model.parameters(), lr=1e-4)
    for i in range(steps + 1):
        for name, model in models.items():
            _sync(device)
            start = time.perf_counter()
            loss = F.l1_loss(model(x), x)
            opts[name].zero_grad(set_to_none=True)
            loss.backward()
            opts[name].step()
            _sync(device)
            if i:
                seconds[name] += time.perf_counter() - start
    for model in models.values():
        place_model(model, device).eval()
    return {name: steps * batch / t for name, t in seconds.items()}


def bench(
    device: str = "auto",
    sizes: tuple[int, ...] = (256, 512, 1024),
    repeats: int = 5,
    warmup: int = 2,
    train_steps: int = 5,
    patch: int = 96,
    batch: int = 16,
    weights: Path | None = None,
    channels: int = 3,
    on_progress: Callable[[int, int], None] | None = None,
    int8: bool = True,
) -> BenchReport:
    """Median time of ``repeats`` runs for each model and size, after ``warmup`` runs (at least one,
    which also measures peak memory); spread is (min, max) MP/s. The models take turns run by run,
    so the ratios hold on a VM whose speed drifts during the bench (one timed model after model
    found the network alone 10% slower than the network with the noise estimate, minutes apart).
    ``denoise`` runs as `run` runs it: with its deep levels in int8 on a CPU where the model file
    allows it, and then the float32 network is timed beside it (``FLOAT32``). ``on_progress`` hears
    (done, total) in measurements: one model at one size and dtype, and the training rates."""
    dev = resolve_device(device)
    ours, ckpt = load_model(weights if weights is not None else shipped_weights(channels))
    channels = ours.channels
    route = weights is None
    ran = ours
    if int8:
        candidate = place_model(copy.deepcopy(ours), dev)
        ran = candidate if quantize(candidate, ckpt.get("int8")) else ours
    quantized = ran is not ours
    models: dict[str, nn.Module] = {"denoise": ran}
    if getattr(ours, "noise_map", False):
        models = {"denoise": _AsRun(ran, route=route), SIGMA_GIVEN: _AsRun(ran, SIGMA, route)}
    float_model = _AsRun(ours, route=route) if getattr(ours, "noise_map", False) else ours
    if quantized:
        models[FLOAT32] = float_model
    for name, config in REFERENCES.items():
        torch.manual_seed(0)
        models[name] = build_model({**config, "channels": channels}).eval()
    report = BenchReport(str(dev), machine_name(dev), date.today().isoformat(), channels, repeats, quantized)
    dtypes: dict[str, torch.dtype | None] = {"float32": None}
    if dev.type == "cuda":
        dtypes["float16"] = torch.float16
        if torch.cuda.is_bf16_supported():
            dtypes["bfloat16"] = torch.bfloat16
    for model in models.values():
        place_model(model, dev).eval()
    others = {name: _others_mib(models, name) if dev.type == "cuda" else 0.0 for name in models}
    done, total = 0, len(sizes) * len(dtypes) * len(models) + (train_steps > 0)

    def step(count: int = 0) -> None:
        nonlocal done
        done += count
        if on_progress:
            on_progress(done, total)

    step()
    for size in sizes:
        x = noisy_photo(channels, size, SIGMA).to(dev)
        mp = size * size / 1e6
        for dname, dtype in dtypes.items():
            peaks = {}
            for name, model in models.items():
                _reset_peak(dev)
                for _ in range(max(1, warmup)):
                    _inference_seconds(model, x, dtype)
                peaks[name] = _peak_mib(dev) - others[name]
            times: dict[str, list[float]] = {name: [] for name in models}
            for _ in range(repeats):
                for name, model in models.items():
                    times[name].append(_inference_seconds(model, x, dtype))
            for name, ts in times.items():
                med = statistics.median(ts)
                spread = (mp / max(ts), mp / min(ts))
                report.inference.append(SpeedRow(name, size, dname, mp / med, spread, med, peaks[name]))
                step(1)
    if train_steps > 0:
        trained = {"denoise": float_model, **{name: model for name, model in models.items() if name in REFERENCES}}
        for name, rate in _train_rates(trained, channels, dev, patch, batch, train_steps).items():
            report.training.append(TrainRow(name, rate))
        step(1)
    return report

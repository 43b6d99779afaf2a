"""Quality on a folder of clean images (or real pairs): the literature's protocol, or the user's files' one."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import torch

from denoisecli.device import machine_name, versions
from denoisecli.errors import DenoiseError
from denoisecli.files import pair_files, pair_key
from denoisecli.formats import require_images
from denoisecli.image_io import DEFAULT_MAX_PIXELS, LoadedImage, read_image
from denoisecli.inference import Denoiser, Level
from denoisecli.metrics import SSIM_WINDOW, psnr, quantize8, ssim, texture_ratio
from denoisecli.noise import DEFAULT_LEVELS, NOISE_MODELS, is_normal, seeded_generator

PROTOCOLS = {
    "standard": "y = x + N(0, sigma/255), not clipped nor quantised; output clipped and rounded to 8 bits; PSNR on 8-bit images",
    "clipped": "noise from the training layer (clamped to [0, 1]), noisy image rounded to 8 bits like a saved file; output rounded to 8 bits",
    "pairs": "real noisy/clean pairs matched by file name; output rounded to 8 bits",
}
HIGH_DEPTH = ("10-, 12- and 16-bit images are rounded to their own depth instead of 8 bits, float ones not at all, and all are scored on the "
              "clean image's own span (PSNR peak and SSIM range), as a microscope's 12-bit counts fill a sixteenth of "
              "the file's range")
BASELINES = ("noisy", "nlm", "wavelet", "bm3d")


@dataclass
class Score:
    image: str
    method: str
    level: str
    psnr: float
    ssim: float
    texture: float
    split: bool = False
    stabilised: bool = False
    bits: int = 8


@dataclass
class EvalReport:
    protocol: str
    noise: str
    seed: int
    weights: str
    scores: list[Score] = field(default_factory=list)
    oracle: bool = False
    ensemble: bool = False
    int8: bool = False
    strength: float = 1.0
    per_channel: bool | None = None
    stabilise: bool | None = None
    failed: list[str] = field(default_factory=list)  # one line per image that could not be scored, left out of the means
    device: str = ""  # where and when it was measured, so a saved report says so itself
    machine: str = ""
    date: str = ""

    def split_count(self) -> tuple[int, int]:
        """(split, all): how many of the model's denoised images went through the grey model channel by channel."""
        ours = [s for s in self.scores if s.method == "denoise"]
        return sum(s.split for s in ours), len(ours)

    def stabilised_count(self) -> tuple[int, int]:
        """(stabilised, all): how many of the model's denoised images had their noise stabilised (see ``Denoiser.stabiliser``)."""
        ours = [s for s in self.scores if s.method == "denoise"]
        return sum(s.stabilised for s in ours), len(ours)

    def methods(self) -> list[str]:
        return list(dict.fromkeys(s.method for s in self.scores))

    def levels(self) -> list[str]:
        return list(dict.fromkeys(s.level for s in self.scores))

    def mean(self, method: str, level: str, metric: str = "psnr") -> float:
        vals = [getattr(s, metric) for s in self.scores if s.method == method and s.level == level]
        return statistics.fmean(vals) if vals else float("nan")

    def to_dict(self) -> dict[str, Any]:
        means = [
            {"method": m, "level": lv, "psnr": self.mean(m, lv), "ssim": self.mean(m, lv, "ssim"), "texture": self.mean(m, lv, "texture")}
            for m in self.methods() for lv in self.levels()
        ]
        return {"protocol": self.protocol, "protocol_text": PROTOCOLS[self.protocol], "noise": self.noise, "seed": self.seed,
                "weights": self.weights, "oracle_sigma": self.oracle, "ensemble": self.ensemble, "int8": self.int8, "strength": self.strength, "per_channel": self.per_channel, "stabilise": self.stabilise, "means": means, "images": [asdict(s) for s in self.scores],
                "failed": self.failed, "device": self.device, "machine": self.machine, "date": self.date,
                "versions": versions()}


@dataclass
class Sample:
    """One evaluated image at one level: kept for the comparison sheet."""

    image: str
    level: str
    clean: torch.Tensor
    outputs: dict[str, torch.Tensor]


def _classical(name: str, noisy: torch.Tensor, sigma: float | None) -> torch.Tensor:
    """A classical denoiser from scikit-image or bm3d (the optional `baselines` extra)."""
    try:
        return _run_classical(name, noisy, sigma)
    except ImportError as exc:
        raise DenoiseError(f"--baseline {name} needs the optional extra: pip install 'denoisecli[baselines]' ({exc})") from exc


def _run_classical(name: str, noisy: torch.Tensor, sigma: float | None) -> torch.Tensor:
    if name == "bm3d":
        import bm3d
    else:
        from skimage import restoration
    img = noisy.permute(1, 2, 0).double().numpy()
    if name != "bm3d":
        img = img.clip(0, 1)  # scikit-image's colour conversions assume [0, 1]; BM3D, as published, takes y unclipped
    grey = img.shape[2] == 1
    if sigma is None:
        from skimage.restoration import estimate_sigma

        sigma = float(np.mean(estimate_sigma(img, channel_axis=-1)))
    if name == "nlm":
        out = restoration.denoise_nl_means(img, h=0.8 * sigma, sigma=sigma, patch_size=5, patch_distance=6,
                                           fast_mode=True, channel_axis=-1)
    elif name == "wavelet":
        out = restoration.denoise_wavelet(img, sigma=sigma, channel_axis=-1, convert2ycbcr=not grey,
                                          method="BayesShrink", mode="soft", rescale_sigma=True)
    else:
        out = bm3d.bm3d(img[:, :, 0], sigma) if grey else bm3d.bm3d_rgb(img, sigma)
    out = np.asarray(out, dtype=np.float32).reshape(img.shape)
    return torch.from_numpy(out).permute(2, 0, 1)


def evaluate(
    clean_dir: Path,
    sigmas: list[float] | None = None,
    weights: Path | None = None,
    device: str = "auto",
    seed: int = 0,
    protocol: str | None = None,
    noise: str = "gaussian",
    levels: list[float] | None = None,
    correlations: list[float] | None = None,
    noisy_dir: Path | None = None,
    baselines: tuple[str, ...] = (),
    keep_samples: int = 0,
    on_progress: Callable[[int, int], None] | None = None,
    oracle: bool = False,
    ensemble: bool = False,
    int8: bool = True,
    strength: float = 1.0,
    per_channel: bool | None = None,
    stabilise: bool | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> tuple[EvalReport, list[Sample]]:
    """Score the model (and baselines) on every image at every level.

    ``standard`` is the protocol of the published figures (gaussian noise only, and its default);
    ``clipped`` uses the training noise layers and an 8-bit noisy image (the default for every
    other noise, where there are no published figures to match); ``noisy_dir``
    switches to real pairs. The normal kinds take ``sigmas``, and ``gaussian-shared`` each of
    ``correlations`` at each (default 1, the same noise in every channel); other kinds the
    values of their first level, ``levels``. Each image's noise is seeded by (seed, file name, level),
    so the same command gives the same numbers. ``oracle`` gives a noise-level model the
    true sigma instead of its estimate, to tell estimator error from model error;
    ``ensemble`` scores the model's self-ensemble (as `run --ensemble`); ``int8`` lets the model
    run as `run` runs it on a CPU (the report says whether it did); ``strength`` scales the level a
    noise-level model is fed, as `run --strength` does; ``per_channel`` decides, as `run --per-channel`
    does, which colour images go through the grey model channel by channel (each score says whether it did);
    ``stabilise``, as `run --stabilise` does, where the noise is stabilised around the model (each score says).
    ``on_progress`` hears (done, total) in images at one level each, a failed one counted as done.
    """
    clean_dir = Path(clean_dir)
    paths, pairs = pair_files(clean_dir, Path(noisy_dir)) if noisy_dir is not None else (require_images(clean_dir), None)
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise DenoiseError(f"--baseline {unknown[0]}: unknown (choose {', '.join(BASELINES)})")
    if noisy_dir is not None:
        protocol = "pairs"
    elif protocol is None:
        protocol = "standard" if noise == "gaussian" else "clipped"
    elif protocol not in ("standard", "clipped"):
        raise DenoiseError(f"--protocol {protocol}: unknown (choose standard or clipped)")
    if protocol == "standard" and noise != "gaussian":
        raise DenoiseError("--protocol standard is defined for gaussian noise; use --protocol clipped for other noise")
    if oracle and (not is_normal(noise) or noisy_dir is not None):
        raise DenoiseError("--oracle-sigma needs synthetic gaussian noise (its sigma is the oracle)")
    if oracle and stabilise:
        raise DenoiseError("--oracle-sigma gives white noise's one true level; --stabilise reads a level that grows with brightness: choose one")
    points = _points(noise, sigmas, levels, correlations) if noisy_dir is None else [("real", {})]
    denoiser = Denoiser(weights, device, ensemble=ensemble, int8=int8, strength=strength, per_channel=per_channel, stabilise=stabilise)
    report = EvalReport(protocol, noise if noisy_dir is None else "real", seed, str(weights) if weights else "shipped", oracle=oracle,
                        ensemble=ensemble, strength=strength, per_channel=per_channel, stabilise=stabilise,
                        device=str(denoiser.device), machine=machine_name(denoiser.device), date=date.today().isoformat())
    samples: list[Sample] = []

    def score(name: str, path: Path, clean: torch.Tensor, noisy: torch.Tensor, label: str, level: dict[str, float],
              bits: int) -> dict[str, torch.Tensor]:
        """Every method's output for one image (or plane), its scores recorded."""
        span = 1.0 if bits == 8 else max(float(clean.max() - clean.min()), 1 / 65535)
        outputs = {"noisy": noisy} if "noisy" in baselines else {}
        sigma = level.get("std") if is_normal(noise) else None
        split = denoiser.split(noisy)
        given = _oracle_levels(denoiser, noisy, sigma, path, split) if oracle else denoiser.levels([noisy], splits=[split])
        outputs["denoise"] = denoiser.batch([noisy], name=str(path), levels=given, splits=[split])[0]
        stabilised = given is not None and any(lv.stabiliser for lv in given)
        for b in baselines:
            if b != "noisy":
                outputs[b] = _classical(b, noisy, sigma)
        for method, out in outputs.items():
            out_q = _rounded(out, bits)
            result = Score(name, method, label, psnr(out_q, clean, peak=span), ssim(out_q, clean, data_range=span),
                           texture_ratio(out_q, clean), split=split and method == "denoise",
                           stabilised=stabilised and method == "denoise", bits=bits)
            report.scores.append(result)
        return outputs

    def score_file(i: int, p: Path, label: str, level: dict[str, float]) -> None:
        """Every plane of one clean image scored at one level."""
        image = read_image(p, max_pixels, stacks=True)
        if min(image.pixels.shape[-2:]) < SSIM_WINDOW:
            h, w = image.pixels.shape[-2:]
            raise DenoiseError(f"{p}: {w}x{h} is smaller than SSIM's {SSIM_WINDOW}x{SSIM_WINDOW} window")
        pair = _pair(p, clean_dir, pairs, max_pixels) if pairs is not None else None
        cleans = (image if pair is None else image.on_scale_of(pair)).planes
        noisies = None if pair is None else pair.planes
        if noisies is not None and (len(noisies) != len(cleans) or noisies[0].shape != cleans[0].shape):
            raise DenoiseError(f"{p.relative_to(clean_dir)}: size, channels or planes differ between the clean and noisy image")
        stack = image.pixels.ndim == 4
        bits = image.info.get("depth", image.bits)  # a 10- or 12-bit HEIF or PGM is held as 16
        for k, plane in enumerate(cleans):
            clean = _rounded(plane, bits)
            noisy = (_rounded(noisies[k], bits) if noisies is not None else
                     _noisy_input(p, clean, label, level, protocol, noise, seed, bits, plane=k if stack else None))
            name = p.relative_to(clean_dir).as_posix() + (f"[{k}]" if stack else "")
            outputs = score(name, p, clean, noisy, label, level, bits)
            if k == 0 and i < keep_samples and label == points[0][0]:
                samples.append(Sample(p.name, label, clean, {m: quantize8(v) for m, v in outputs.items()}))

    broken: set[Path] = set()
    done, total = 0, len(points) * len(paths)
    for label, level in points:
        for i, p in enumerate(paths):
            if on_progress:
                on_progress(done, total)
            done += 1
            if p in broken:
                continue
            try:
                score_file(i, p, label, level)
            except DenoiseError as exc:  # one bad file is left out of the means, named, and the rest scored
                broken.add(p)
                report.failed.append(str(exc))
                name = p.relative_to(clean_dir).as_posix()  # and its other levels' and planes' scores with it
                report.scores = [s for s in report.scores if s.image != name and not s.image.startswith(name + "[")]
                samples[:] = [s for s in samples if s.image != p.name]
    if on_progress:
        on_progress(done, total)
    if not report.scores:
        raise DenoiseError(f"{clean_dir}: no image could be scored ({len(report.failed)} failed; the first: {report.failed[0]})")
    report.int8 = bool(denoiser.int8_used)
    return report, samples


def _oracle_levels(denoiser: Denoiser, noisy: torch.Tensor, sigma: float | None, path: Path,
                   split: bool) -> list[Level]:
    """The true sigma, fed the way `run` feeds an estimate."""
    model = denoiser.model_for(noisy.shape[0])
    if not getattr(model, "noise_map", False):
        raise DenoiseError(f"{path}: --oracle-sigma needs a model with a noise-level input; this one is blind")
    return denoiser.levels([noisy], sigma=sigma, splits=[split])


def _points(noise: str, sigmas: list[float] | None, levels: list[float] | None,
            correlations: list[float] | None = None) -> list[tuple[str, dict[str, float]]]:
    """The noise settings to evaluate: sigmas for the normal kinds (times correlations for
    gaussian-shared), else values of the model's first level."""
    if noise not in NOISE_MODELS:
        raise DenoiseError(f"--noise {noise}: unknown (choose {', '.join(NOISE_MODELS)})")
    names = NOISE_MODELS[noise].levels
    if correlations is not None and "correlation" not in names:
        raise DenoiseError(f"--correlation does not apply to --noise {noise} (only to gaussian-shared)")
    if not is_normal(noise):
        fixed = {k: (lo + hi) / 2 for k, (lo, hi) in DEFAULT_LEVELS[noise].items()}
        values = levels or [fixed[names[0]]]
        return [(f"{names[0]} {v:g}", {**fixed, names[0]: v}) for v in values]
    if levels is not None:
        raise DenoiseError(f"--level does not apply to --noise {noise}; give its levels with --sigma")
    sig = sigmas or [15.0, 25.0, 50.0]
    if any(not 0 <= s <= 255 for s in sig):
        raise DenoiseError(f"--sigma {sig}: each sigma must be within 0-255")
    if "correlation" not in names:
        return [(f"sigma {s:g}", {"std": s / 255}) for s in sig]
    rhos = correlations or [1.0]
    if any(not 0 <= r <= 1 for r in rhos):
        raise DenoiseError(f"--correlation {rhos}: each correlation must be within 0-1")
    return [(f"sigma {s:g} correlation {r:g}", {"std": s / 255, "correlation": r}) for s in sig for r in rhos]


def _rounded(x: torch.Tensor, bits: int) -> torch.Tensor:
    """``x`` clipped to [0, 1] and rounded as a file of ``bits`` holds it: the standard protocol's
    8 bits for the benchmark sets, 10, 12 or 16 for a deeper clean image, whose levels 8 bits would lose,
    and not at all for float data."""
    if bits == 8:
        return quantize8(x)
    if bits == 32:
        return x.clamp(0, 1)
    top = 2**bits - 1
    return (x.clamp(0, 1) * top).round() / top


def _pair(path: Path, clean_dir: Path, noisy_files: dict[str, Path], max_pixels: int | None) -> LoadedImage:
    """The noisy file of a real pair, matched by relative path without extension."""
    match = noisy_files.get(pair_key(path, clean_dir))
    if match is None:
        raise DenoiseError(f"no noisy image for {path.relative_to(clean_dir)} (pairs are matched by file name)")
    return read_image(match, max_pixels, stacks=True)


def _noisy_input(path: Path, clean: torch.Tensor, label: str, level: dict[str, float], protocol: str, noise: str,
                 seed: int, bits: int = 8, plane: int | None = None) -> torch.Tensor:
    """Synthetic noise on ``clean``, seeded by (seed, file name, a stack's plane, level), as ``protocol`` makes it."""
    g = seeded_generator(seed, f"{path.name}{'' if plane is None else f'[{plane}]'}\x00{label}")
    if protocol == "standard":
        return clean + torch.randn(clean.shape, generator=g) * level["std"]
    layer = NOISE_MODELS[noise]().train()
    tensors = {k: torch.tensor([v], dtype=torch.float64) for k, v in level.items()}
    with torch.no_grad():
        return _rounded(layer(clean[None], generator=g, **tensors)[0], bits)

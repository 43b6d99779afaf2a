"""Training a denoiser from clean images: L1, or L1 plus a scaled adversarial loss (``gan``)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from denoisecli.data import PatchSampler, load_training_images
from denoisecli.device import resolve_device
from denoisecli.errors import DenoiseError
from denoisecli.models import build_model, default_config
from denoisecli.noise import ClampedNormalNoise, seeded_generator
from denoisecli.weights import atomic_save, load_checkpoint, model_payload

TRAIN_FORMAT = "denoise-train/1"


@dataclass
class TrainOptions:
    """Everything a run depends on; saved in ``last.pt`` so a resume continues the same run."""

    data: str
    out: str
    steps: int | None = None
    epochs: float | None = None
    batch: int = 16
    patch: int = 96
    lr: float = 1e-3
    min_lr_ratio: float = 0.01
    warmup: int | None = None
    sigma: tuple[float, float] = (0.0, 55.0)
    channels: int | None = None
    model: dict[str, Any] = field(default_factory=dict)
    gan: bool = False
    gan_weight: float = 1e-3
    gan_warmup: int | None = None
    d_lr: float = 2e-4
    clip: float = 1.0
    device: str = "auto"
    seed: int = 0
    save_every: int = 500
    log_every: int = 50


@dataclass
class TrainResult:
    step: int
    total: int
    out: Path
    interrupted: bool = False
    skipped: list[str] = field(default_factory=list)


ProgressFn = Callable[[dict[str, Any]], None]

DEFAULT_STEPS = 10_000


def train(opts: TrainOptions, resume: bool = False, progress: ProgressFn | None = None) -> TrainResult:
    """Train (or continue) a run in ``opts.out``; a Ctrl-C saves a checkpoint and returns."""
    out = Path(opts.out)
    last_path = out / "last.pt"
    state = _load_state(last_path) if resume else None
    if state is not None:
        opts = TrainOptions(**{**state["options"], "sigma": tuple(state["options"]["sigma"]), "device": opts.device})
    if not resume and last_path.exists():
        raise DenoiseError(f"{out}: already holds a training run (last.pt); pass --resume to continue it or pick another --out")
    if opts.batch < 1 or opts.patch < 8:
        raise DenoiseError("--batch must be at least 1 and --patch at least 8")
    lo, hi = opts.sigma
    if not 0 <= lo <= hi <= 255:
        raise DenoiseError(f"--sigma range {lo}-{hi}: must satisfy 0 <= low <= high <= 255")
    device = resolve_device(opts.device)

    skipped: list[str] = []
    images = load_training_images(Path(opts.data), opts.channels, min_size=opts.patch, on_skip=skipped.append)
    sampler = PatchSampler(images, opts.patch, opts.seed)
    total = _total_steps(opts, images)
    config = {**default_config(sampler.channels), **opts.model}
    config["channels"] = sampler.channels
    if state is not None and state["generator"]["config"] != config:
        raise DenoiseError(f"{last_path}: was trained with {state['generator']['config']}, not {config}; refusing to resume")

    torch.manual_seed(opts.seed)
    gen = build_model(config).to(device)
    opt_g = torch.optim.Adam(gen.parameters(), lr=opts.lr)
    disc = opt_d = None
    if opts.gan:
        disc = build_model({"arch": "patchgan", "channels": sampler.channels}).to(device)
        opt_d = torch.optim.Adam(disc.parameters(), lr=opts.d_lr, betas=(0.5, 0.999))
    step = 0
    if state is not None:
        gen.load_state_dict(state["generator"]["state_dict"])
        opt_g.load_state_dict(state["opt_g"])
        if disc is not None and state.get("discriminator"):
            disc.load_state_dict(state["discriminator"])
            opt_d.load_state_dict(state["opt_d"])
        step = int(state["step"])

    warmup = opts.warmup if opts.warmup is not None else min(500, total // 20)
    gan_warmup = opts.gan_warmup if opts.gan_warmup is not None else total // 10
    noise = ClampedNormalNoise().train()
    out.mkdir(parents=True, exist_ok=True)
    log = (out / "metrics.jsonl").open("a")

    def save() -> None:
        meta = {"steps": step, "sigma": [lo, hi], "gan": opts.gan, "patch": opts.patch, "batch": opts.batch}
        payload = model_payload(gen, config, meta)
        atomic_save(
            {
                "format": TRAIN_FORMAT,
                "options": _options_dict(opts),
                "generator": payload,
                "discriminator": disc.state_dict() if disc is not None else None,
                "opt_g": opt_g.state_dict(),
                "opt_d": opt_d.state_dict() if opt_d is not None else None,
                "step": step,
            },
            last_path,
        )
        atomic_save(payload, out / "model.pt")

    gen.train()
    t0, seen = time.perf_counter(), 0
    try:
        while step < total:
            lr = opts.lr * _lr_factor(step, total, warmup, opts.min_lr_ratio)
            for group in opt_g.param_groups:
                group["lr"] = lr
            clean = sampler.batch(step, opts.batch).to(device, non_blocking=True)
            g = seeded_generator(opts.seed, f"sigma{step}")
            sigmas = (lo + (hi - lo) * torch.rand(opts.batch, generator=g)) / 255.0
            noisy = noise(clean, std=sigmas.to(device), generator=seeded_generator(opts.seed, f"noise{step}", device))
            stats: dict[str, float] = {}
            adversarial = disc is not None and step >= gan_warmup
            denoised = gen(noisy)
            if adversarial:
                d_loss = F.relu(1.0 - disc(clean)).mean() + F.relu(1.0 + disc(denoised.detach())).mean()
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()
                stats["d_loss"] = d_loss.item()
            l1 = F.l1_loss(denoised, clean)
            loss = l1
            if adversarial:
                adv = -disc(denoised).mean()
                loss = l1 + opts.gan_weight * adv
                stats["adv"] = adv.item()
            opt_g.zero_grad(set_to_none=True)
            loss.backward()
            if opts.clip > 0:
                stats["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(gen.parameters(), opts.clip))
            opt_g.step()
            if not math.isfinite(loss.item()):
                raise DenoiseError(f"training diverged at step {step} (loss {loss.item()}); lower --lr or --gan-weight")
            step += 1
            seen += opts.batch
            stats.update(step=step, total=total, loss=loss.item(), l1=l1.item(), lr=lr)
            stats["patches_per_s"] = seen / max(time.perf_counter() - t0, 1e-9)
            if step % opts.log_every == 0 or step == total:
                log.write(json.dumps({"event": "train", **stats}) + "\n")
                log.flush()
            if step % opts.save_every == 0 and step < total:
                save()
            if progress:
                progress(stats)
    except KeyboardInterrupt:
        save()
        log.close()
        return TrainResult(step, total, out, interrupted=True, skipped=skipped)
    save()
    log.close()
    return TrainResult(step, total, out, skipped=skipped)


def _lr_factor(step: int, total: int, warmup: int, floor: float) -> float:
    """Linear warm-up, then cosine decay to ``floor``: a pure function of the step, so resumes are exact."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _total_steps(opts: TrainOptions, images: list[torch.Tensor]) -> int:
    """``--steps`` wins; an epoch is as many patches as it takes to cover every pixel once on average."""
    if opts.steps is not None:
        if opts.steps < 1:
            raise DenoiseError("--steps must be at least 1")
        return opts.steps
    if opts.epochs is not None:
        pixels = sum(im.shape[-1] * im.shape[-2] for im in images)
        per_epoch = max(1, round(pixels / (opts.patch**2 * opts.batch)))
        return max(1, round(opts.epochs * per_epoch))
    return DEFAULT_STEPS


def _options_dict(opts: TrainOptions) -> dict[str, Any]:
    d = asdict(opts)
    d["sigma"] = list(opts.sigma)
    return d


def _load_state(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DenoiseError(f"{path}: nothing to resume (no last.pt)")
    state = load_checkpoint(path)
    if state.get("format") != TRAIN_FORMAT:
        raise DenoiseError(f"{path}: not a denoise training checkpoint")
    return state

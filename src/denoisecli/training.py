"""Training a denoiser from clean images (or real noisy/clean pairs): L1, or L1 plus a scaled adversarial loss."""

from __future__ import annotations

import functools
import json
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from denoisecli.atomic import atomic_write
from denoisecli.curves import plot_curves
from denoisecli.data import PatchSampler, TrainingSet, batch_loader, load_training_set
from denoisecli.device import memory_format, place_model, provenance, resolve_device
from denoisecli.distributed import setup_distributed, world_size
from denoisecli.errors import DenoiseError
from denoisecli.image_io import DEFAULT_MAX_PIXELS
from denoisecli.int8 import calibration_entry
from denoisecli.metrics import psnr, quantize8, ssim
from denoisecli.models import build_model, default_config, full_config
from denoisecli.models.unet import UNet, narrowed
from denoisecli.noise import DEFAULT_LEVELS, NOISE_MODELS, NoiseSampler, seeded_generator
from denoisecli.noise_estimate import estimate_sigma, level_map
from denoisecli.weights import atomic_save, load_checkpoint, load_model, model_payload

TRAIN_FORMAT = "denoise-train/1"
DEFAULT_STEPS = 10_000
VAL_SIGMAS = (15.0, 25.0, 50.0)


@dataclass
class TrainOptions:
    """Everything a run depends on; saved in ``last.pt`` and ``config.json``, so a resume continues the same run."""

    data: str
    out: str
    steps: int | None = None
    epochs: float | None = None
    batch: int = 16
    patch: int = 96
    lr: float = 1e-3
    min_lr_ratio: float = 0.01
    warmup: int | None = None
    noise: str = "gaussian"
    levels: dict[str, tuple[float, float]] | None = None
    mix: dict[str, float] | None = None
    downscale: float = 0.0
    max_megapixels: float | None = None
    max_pixels: int | None = DEFAULT_MAX_PIXELS  # the decompression-bomb guard of every read, as `run`'s
    independent_channels: float = 0.0
    overset: float = 0.0
    noisy: str | None = None
    val: str | None = None
    val_every: int = 1000
    channels: int | None = None
    model: dict[str, Any] = field(default_factory=dict)
    init: str | None = None
    edge_weight: float = 0.0
    gan: bool = False
    gan_weight: float = 1e-3
    gan_warmup: int | None = None
    gan_skip_white: bool = False
    d_lr: float = 2e-4
    clip: float = 1.0
    ema: float = 0.0
    workers: int | None = None
    device: str = "auto"
    amp: bool = True
    seed: int = 0
    save_every: int = 500
    log_every: int = 50


@dataclass
class TrainResult:
    step: int
    total: int
    out: Path
    interrupted: bool = False
    best_psnr: float | None = None
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


ProgressFn = Callable[[dict[str, Any]], None]


def train(opts: TrainOptions, resume: bool = False, progress: ProgressFn | None = None,
          on_read: Callable[[int, int], None] | None = None, on_note: Callable[[str], None] | None = None) -> TrainResult:
    """Train (or continue) the run in ``opts.out``; Ctrl-C saves a checkpoint and returns.
    ``progress`` hears each logged step's figures; ``on_read`` (files read, files) while the
    training folder is read before the first step, which for a folder of large photos takes minutes;
    ``on_note`` what a user should hear of the data before the first step (also in the result).

    Every random draw (patch, augmentation, noise level, noise) is keyed by the seed and
    the step, so a resumed run ends with the same weights as an uninterrupted one, and
    under torchrun each rank takes its slice of the same global batch.
    """
    out = Path(opts.out)
    last_path = out / "last.pt"
    state = _load_state(last_path) if resume else None
    if state is not None:
        opts = _resumed_options(state, opts, last_path)
    elif last_path.exists():
        raise DenoiseError(f"{out}: already holds a training run (last.pt); pass --resume to continue it or pick another --out")
    _check(opts)
    if opts.gan_skip_white and world_size() > 1:
        raise DenoiseError("--gan-skip-white: not under torchrun yet (the ranks' discriminators would judge different numbers of patches, and a rank with none would stall the others)")
    dist = setup_distributed(opts.device)
    device = dist.device if dist.enabled else resolve_device(opts.device)
    if opts.batch % dist.world:
        raise DenoiseError(f"--batch {opts.batch} must be divisible by the number of processes ({dist.world})")

    tset = load_training_set(opts, hold_out=opts.val is None and opts.noisy is None, on_read=on_read)
    for note in tset.notes if on_note else []:
        on_note(note)
    sampler = PatchSampler(tset.clean, opts.patch, opts.seed, noisy=tset.noisy, downscale=opts.downscale,
                           independent=opts.independent_channels)
    total = _total_steps(opts, tset.clean)
    config = {**default_config(sampler.channels), **opts.model, "channels": sampler.channels}
    if state is not None and full_config(state["generator"]["config"]) != config:
        raise DenoiseError(f"{last_path}: was trained with {state['generator']['config']}, not {config}; refusing to resume")
    takes_level = bool(config.get("noise_map"))
    if config.get("level") == "map" and not takes_level:
        raise DenoiseError("--level-map needs a model with a noise-level input (--noise-map)")
    if opts.overset and not (takes_level and config.get("level") in ("sigma", "estimate")):
        raise DenoiseError("--overset needs a model with a noise-level input (--noise-map) whose level is the noise's sigma")
    levels = {k: tuple(v) for k, v in {**DEFAULT_LEVELS[opts.noise], **(opts.levels or {})}.items()}
    noise = NoiseSampler(opts.noise, levels, mix=opts.mix)

    torch.manual_seed(opts.seed)
    gen = build_model(config)
    if opts.init and state is None:
        gen.load_state_dict(_initial_weights(Path(opts.init), config))
    gen = place_model(gen, device, training=True)
    layout = memory_format(device, training=True)
    amp_dtype, scaler = _amp(device, opts.amp)
    autocast = functools.partial(torch.autocast, device.type, dtype=amp_dtype, enabled=amp_dtype is not None)
    opt_g = torch.optim.Adam(gen.parameters(), lr=opts.lr)
    disc = opt_d = None
    if opts.gan:
        disc = build_model({"arch": "patchgan", "channels": sampler.channels}).to(device)
        opt_d = torch.optim.Adam(disc.parameters(), lr=opts.d_lr, betas=(0.5, 0.999))
    step, best = _restore(state, gen, opt_g, disc, opt_d, scaler) if state is not None else (0, None)
    ema = _ema(gen, opts.ema, state.get("ema") if state is not None else None) if opts.ema else None
    shipped = ema.module if ema is not None else gen
    gen_ddp, disc_ddp = dist.wrap(gen), dist.wrap(disc) if disc is not None else None

    warmup = opts.warmup if opts.warmup is not None else min(500, total // 20)
    gan_warmup = opts.gan_warmup if opts.gan_warmup is not None else total // 10
    meta = {"noise": opts.noise, "levels": {k: list(v) for k, v in levels.items()}, "mix": opts.mix, "downscale": opts.downscale, "independent_channels": opts.independent_channels, "gan": opts.gan, "gan_skip_white": opts.gan_skip_white,
            "overset": opts.overset, "edge_weight": opts.edge_weight, "patch": opts.patch, "batch": opts.batch, "pairs": opts.noisy is not None,
            "ema": opts.ema}
    writer = dist.is_main
    log = None
    if writer:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "config.json", lambda f: f.write(json.dumps(_options_dict(opts), indent=2).encode()))
        if state is not None:
            _trim_log(out / "metrics.jsonl", step)
        log = (out / "metrics.jsonl").open("a")

    def emit(record: dict[str, Any]) -> None:
        if log is not None:
            log.write(json.dumps(record) + "\n")
            log.flush()

    # where and when each start or resume ran, so the log says what hardware trained the model
    emit({"event": "start", "step": step, **provenance(device), "processes": dist.world, "images": len(tset.clean)})

    def save(final: bool = False) -> None:
        """``final``: model.pt also gets the int8 ranges (`int8.calibration_entry`), once, at the end."""
        if not writer:
            return
        payload = model_payload(gen, config, {**meta, "steps": step, "best_val_psnr": best})
        atomic_save(
            {
                "format": TRAIN_FORMAT, "options": _options_dict(opts), "generator": payload,
                "ema": ema.state_dict() if ema is not None else None,
                "discriminator": disc.state_dict() if disc is not None else None,
                "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict() if opt_d is not None else None,
                "scaler": scaler.state_dict() if scaler is not None else None,
                "step": step, "best_psnr": best,
            },
            last_path,
        )
        model_file = model_payload(shipped, config, payload["meta"]) if ema is not None else payload
        atomic_save({**model_file, **calibration_entry(shipped, tset.clean)} if final else model_file, out / "model.pt")

    def validate() -> dict[str, float]:
        nonlocal best
        figures = _validate(shipped, tset, noise, opts, device)
        if not figures:
            return {}
        if best is None or figures["val_psnr"] > best:
            best = figures["val_psnr"]
            atomic_save(model_payload(shipped, config, {**meta, "steps": step, "best_val_psnr": best}), out / "best.pt")
        emit({"event": "val", "step": step, **figures})
        return figures

    workers = opts.workers if opts.workers is not None else (min(8, (os.cpu_count() or 1) // 2) if device.type == "cuda" else 0)
    batches = iter(batch_loader(sampler, step, total, opts.batch, (dist.rank, dist.world), workers, device.type == "cuda",
                                _Noiser(noise, opts.seed, dist.rank, config.get("level", "sigma") if takes_level else None, opts.overset)))
    gen.train()
    t0, seen, latest = time.perf_counter(), 0, {}
    try:
        while step < total:
            lr = opts.lr * _lr_factor(step, total, warmup, opts.min_lr_ratio)
            for group in opt_g.param_groups:
                group["lr"] = lr
            clean, noisy, *extra = (t.to(device, non_blocking=True) for t in next(batches))
            nominal, white = (extra[0], extra[1]) if extra else (None, None)
            clean, noisy = clean.contiguous(memory_format=layout), noisy.contiguous(memory_format=layout)
            stats: dict[str, Any] = {}
            adversarial = disc is not None and step >= gan_warmup
            level = _noise_level(noisy, clean, nominal, config.get("level", "sigma")) if takes_level else None
            target = clean
            with autocast():
                if opts.overset:
                    level, target = _overset_targets(gen, level, clean, *extra[2:])
                denoised = gen_ddp(noisy, level) if takes_level else gen_ddp(noisy)
                l1 = F.l1_loss(denoised.float(), target)
            loss = l1
            if opts.edge_weight:
                edge = edge_l1(denoised.float(), target)
                loss = loss + opts.edge_weight * edge
                stats["edge"] = edge.item()
            judged = _adversarial_samples(white, len(clean), opts.gan_skip_white) if adversarial else []
            if judged:
                adv, stats["d_loss"] = _adversarial(disc, disc_ddp, opt_d, scaler, autocast, clean, denoised, judged)
                loss = loss + opts.gan_weight * adv
                stats["adv"] = adv.item()
            grad_norm = _update(gen, opt_g, loss, scaler, opts.clip)
            if grad_norm is not None:
                stats["grad_norm"] = grad_norm
            if ema is not None:
                ema.update_parameters(gen)
            if not math.isfinite(loss.item()):
                raise DenoiseError(f"training diverged at step {step} (loss {loss.item()}); lower --lr or --gan-weight")
            step += 1
            seen += opts.batch
            stats.update(step=step, total=total, loss=loss.item(), l1=l1.item(), lr=lr,
                         patches_per_s=seen / max(time.perf_counter() - t0, 1e-9))
            if writer and (step % opts.log_every == 0 or step == total):
                emit({"event": "train", **stats})
            if writer and (step % opts.val_every == 0 or step == total):
                latest = validate()
                plot_curves(out / "metrics.jsonl", out / "curves.png")
            if step % opts.save_every == 0 and step < total:
                save()
            if progress and writer:
                progress({**stats, **latest})
    except KeyboardInterrupt:
        save()
        return TrainResult(step, total, out, interrupted=True, best_psnr=best, skipped=tset.skipped, notes=tset.notes)
    finally:
        if log is not None:
            log.close()
    save(final=True)
    dist.close()
    return TrainResult(step, total, out, best_psnr=best, skipped=tset.skipped, notes=tset.notes)


def _restore(state: dict[str, Any], gen: torch.nn.Module, opt_g: torch.optim.Optimizer, disc: torch.nn.Module | None,
             opt_d: torch.optim.Optimizer | None, scaler: torch.amp.GradScaler | None) -> tuple[int, float | None]:
    """Load a run's ``last.pt`` into its networks and optimisers; (step, best validation PSNR) to go on from."""
    gen.load_state_dict(state["generator"]["state_dict"])
    opt_g.load_state_dict(state["opt_g"])
    if disc is not None and opt_d is not None:
        disc.load_state_dict(state["discriminator"])
        opt_d.load_state_dict(state["opt_d"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    return int(state["step"]), state.get("best_psnr")


def _adversarial(disc: torch.nn.Module, disc_ddp: torch.nn.Module, opt_d: torch.optim.Optimizer,
                 scaler: torch.amp.GradScaler | None, autocast: Callable[[], torch.autocast], clean: torch.Tensor,
                 denoised: torch.Tensor, judged: list[int]) -> tuple[torch.Tensor, float]:
    """One hinge-loss step of the discriminator on the ``judged`` samples, then the generator's
    adversarial term on them (to add to its loss, scaled by the judged share of the batch);
    returns (term, discriminator loss). The forward passes run under ``autocast``, the backward
    outside it, as PyTorch advises; scores are compared in float32."""
    real_in, fake_in = clean, denoised
    if len(judged) < len(clean):
        pick = torch.tensor(judged, device=clean.device)
        real_in, fake_in = clean.index_select(0, pick), denoised.index_select(0, pick)
    with autocast():
        real, fake = disc_ddp(torch.cat([real_in, fake_in.detach()])).float().chunk(2)
    d_loss = F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()
    opt_d.zero_grad(set_to_none=True)
    _backward(d_loss, scaler)
    _step(opt_d, scaler)
    with autocast():
        adv = -disc(fake_in).float().mean() * len(judged) / len(clean)
    return adv, d_loss.item()


def _update(gen: torch.nn.Module, opt_g: torch.optim.Optimizer, loss: torch.Tensor, scaler: torch.amp.GradScaler | None,
            clip: float) -> float | None:
    """The generator's step: backward (scaled under float16 autocast), gradient-norm clipping at
    ``clip`` (0: none), the optimiser step. Returns the norm before clipping, when clipped."""
    opt_g.zero_grad(set_to_none=True)
    _backward(loss, scaler)
    norm = None
    if clip > 0:
        if scaler is not None:
            scaler.unscale_(opt_g)
        norm = float(torch.nn.utils.clip_grad_norm_(gen.parameters(), clip))
    _step(opt_g, scaler)
    if scaler is not None:
        scaler.update()
    return norm


def _ema(gen: torch.nn.Module, decay: float, saved: dict[str, Any] | None) -> AveragedModel:
    """An exponential moving average of ``gen``'s weights (PyTorch's ``AveragedModel``), which
    ``model.pt``, ``best.pt`` and validation use: it averages out the noise of the last steps,
    as averaging the endpoints of earlier runs did (weights/HISTORY.md, phases 43-44). Seeded with the starting weights,
    so a short fine-tune averages from where it began; ``saved`` (from ``last.pt``) resumes it."""
    ema = AveragedModel(gen, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    if saved is not None:
        ema.load_state_dict(saved)
    else:
        ema.update_parameters(gen)
    return ema


def _adversarial_samples(white: torch.Tensor | None, batch: int, skip_white: bool) -> list[int]:
    """The samples the adversarial term judges: all, or with ``skip_white`` those whose noise is
    not white Gaussian (camera, JPEG, real pairs: ``white`` is None for pairs, so all of them).

    A discriminator pulls outputs towards looking like clean images, which keeps camera detail
    but moves white-noise outputs off the least-error estimate that PSNR rewards: over the whole
    batch, every adversarial fine-tune so far traded Gaussian PSNR for camera texture along one
    curve (weights/HISTORY.md, phases 20-21). White samples then train on L1 alone. The generator's term
    keeps each judged sample's weight of a whole-batch mean, so --gan-weight means the same."""
    if not skip_white or white is None:
        return list(range(batch))
    return (~white.bool()).nonzero().flatten().tolist()


class _Noiser:
    """Step ``step``'s noise for rank ``rank``: levels and noise keyed by (seed, step, rank), so a
    batch is the same whichever loader process makes it and a resumed run redraws it exactly.
    Returns (noisy, level, white, ...): ``white`` marks the samples whose noise is white Gaussian
    (they have a sigma), for ``_adversarial_samples``.

    ``level``: what the model's level input means; for ``"estimate"`` and ``"map"`` the estimator's
    reading fills in where a noise has no sigma, and ``"map"`` spreads it into ``level_map``'s
    per-pixel map, here in the loader processes rather than in the training loop (about 0.01 s
    and 0.002 s per 128x128 colour patch on a CPU core; a GPU loop would wait for them).
    ``overset``: also pick that fraction of the white-noise samples to be fed a level above their
    sigma, and draw each such sample's clean patch again at that level (see ``_overset_targets``):
    returns (noisy, sigma, white, over_level, over_noisy), over_level NaN where a sample keeps its own.
    Samples of a mixed-in noise without a sigma (camera, jpeg) are never picked: no level to raise.
    """

    def __init__(self, noise: NoiseSampler, seed: int, rank: int, level: str | None = None, overset: float = 0.0) -> None:
        self.noise, self.seed, self.rank, self.level, self.overset = noise, seed, rank, level, overset

    def __call__(self, step: int, clean: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with torch.no_grad():
            noisy, sigma = self.noise.draw(clean, seeded_generator(self.seed, f"levels{step}/{self.rank}"),
                                           seeded_generator(self.seed, f"noise{step}/{self.rank}"))
            white = ~torch.isnan(sigma)
            level = _estimated_where_missing(noisy, sigma) if self.level in ("estimate", "map") else sigma
            if self.level == "map":
                level = _spread(noisy, level)
            if not self.overset:
                return noisy, level, white
            return (noisy, level, white, *self._overset(step, clean, sigma))

    def _overset(self, step: int, clean: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g = seeded_generator(self.seed, f"overset{step}/{self.rank}")
        layer, (_, top) = self.noise.layer, self.noise.ranges["std"]
        top = float(layer.sigma(top))
        pick = (torch.rand(sigma.shape[0], generator=g, dtype=torch.float64) < self.overset) & (sigma < top)
        over = torch.full_like(sigma, float("nan"))
        over[pick] = sigma[pick] + (top - sigma[pick]) * torch.rand(int(pick.sum()), generator=g, dtype=torch.float64)
        again = torch.zeros_like(clean)
        if pick.any():
            again[pick] = layer(clean[pick], std=over[pick] / abs(layer.scale), generator=g)
        return over, again


def _overset_targets(gen: torch.nn.Module, level: torch.Tensor, clean: torch.Tensor, over_level: torch.Tensor,
                     over_noisy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Levels and targets where some samples are fed a level L above their noise's sigma.

    Such a sample's target is not the clean patch but what the model itself makes of the same
    patch with noise of level L (no gradient through it): so `--sigma` set above the noise
    really present smooths about as much as that level would. Trained on exact levels only, the
    grey model extrapolated there: at 3-4x the true level it left a pattern on the 2x2
    pixel-unshuffle grid, as rough as the clean image (weights/HISTORY.md, `grey.pt` phase 7).
    """
    pick = ~torch.isnan(over_level)
    if not pick.any():
        return level, clean
    with torch.no_grad():
        smoother = gen(over_noisy[pick], over_level[pick].to(level)).float()
    level, target = level.clone(), clean.clone()
    level[pick], target[pick] = over_level[pick].to(level), smoother
    return level, target


def edge_l1(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of the two images' Laplacians (each channel, 4 neighbours).

    L1 on pixels lets a network trade fine texture for a safe average where noise hides it;
    a term on second differences (the edge loss of MPRNet, Zamir et al. 2021) charges for detail
    lost as well as for noise left, and ignores smooth offsets the pixel term already covers. Like
    any distortion loss it still favours a central guess where noise hides the detail (measured:
    smoother at weight 0.3, weights/HISTORY.md, phases 25-26).
    """
    channels = output.shape[1]
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], dtype=output.dtype, device=output.device)
    kernel = kernel.expand(channels, 1, 3, 3)
    return F.l1_loss(F.conv2d(output, kernel, groups=channels), F.conv2d(target, kernel, groups=channels))


def _noise_level(noisy: torch.Tensor, clean: torch.Tensor, nominal: torch.Tensor | None = None,
                 meaning: str = "sigma") -> torch.Tensor:
    """The level a noise-level model is trained with, per sample (see ``UNet``'s ``level``).

    ``"estimate"``: the white noise's own sigma where the noise has one, so the level does not
    depend on how much of a patch clamping cut (the estimator does not see that either);
    elsewhere (camera noise, real pairs) what the estimator reads on the noisy sample, the level
    `run` will feed. ``"sigma"``: the same, but the std of the noise actually present where there
    is no sigma, which the estimator reads 15-20% lower on camera noise (CBSD68, peak 30 and
    100), so such models under-denoise it. ``"map"``: the ``"estimate"`` level spread into a
    [B, 1, H, W] map by ``level_map``, as `run` feeds it (a ``nominal`` the loader has already
    spread is kept). ``"clamped"``: always the measured std.
    """
    if meaning == "map" and nominal is not None and nominal.ndim == 4:
        return nominal.to(noisy.dtype)
    measured = (noisy - clean).flatten(1).float().std(dim=1)
    if meaning == "clamped":
        return measured
    nominal = torch.full_like(measured, float("nan")) if nominal is None else nominal.to(measured)
    if meaning in ("estimate", "map"):
        nominal = _estimated_where_missing(noisy, nominal)
    if meaning == "map":
        return _spread(noisy, nominal).to(measured)
    return torch.where(torch.isnan(nominal), measured, nominal)


def _spread(noisy: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Each sample's level as ``level_map`` spreads it over that sample: [B, 1, H, W]."""
    return torch.stack([level_map(im, float(s)) for im, s in zip(noisy, levels)])


def _estimated_where_missing(noisy: torch.Tensor, nominal: torch.Tensor) -> torch.Tensor:
    """``nominal`` with each NaN (a noise with no sigma) replaced by the estimator's reading of that sample."""
    missing = torch.isnan(nominal).nonzero().flatten().tolist()
    if not missing:
        return nominal
    filled = nominal.clone()
    for i in missing:
        filled[i] = estimate_sigma(noisy[i])
    return filled


def _initial_weights(path: Path, config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Weights of ``path`` for a model of ``config``: the same architecture, or a wider UNet
    narrowed to this run's width (its strongest channels, see ``narrowed``)."""
    model, ckpt = load_model(path)
    theirs, ours = _architecture(full_config(ckpt["config"])), _architecture(config)
    if theirs == ours:
        return model.state_dict()
    if isinstance(model, UNet) and {**theirs, "width": ours.get("width")} == ours and ours["width"] < theirs["width"]:
        return narrowed(model, ours["width"]).state_dict()
    raise DenoiseError(f"{path}: its config {ckpt['config']} differs from this run's {config} (only a narrower --width can start from it)")


def _architecture(config: dict[str, Any]) -> dict[str, Any]:
    """What weights must share to start from one another: all but what the level input means,
    which fine-tuning may change."""
    return {k: v for k, v in config.items() if k != "level"}


def _amp(device: torch.device, enabled: bool = True) -> tuple[torch.dtype | None, torch.amp.GradScaler | None]:
    """Mixed precision on CUDA: bf16 where supported (no scaler needed), else fp16 with a scaler.
    ``enabled=False`` keeps float32, to tell what reduced precision costs a model from what the data does."""
    if device.type != "cuda" or not enabled:
        return None, None
    if torch.cuda.is_bf16_supported():
        return torch.bfloat16, None
    return torch.float16, torch.amp.GradScaler("cuda")


def _backward(loss: torch.Tensor, scaler: torch.amp.GradScaler | None) -> None:
    (scaler.scale(loss) if scaler is not None else loss).backward()


def _step(opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None) -> None:
    if scaler is not None:
        scaler.step(opt)
    else:
        opt.step()


@torch.no_grad()
def _validate(gen: torch.nn.Module, tset: TrainingSet, noise: NoiseSampler, opts: TrainOptions, device: torch.device) -> dict[str, float]:
    """PSNR/SSIM on held-out images at fixed levels and a fixed seed, so figures compare across steps.

    ``val_psnr`` (which picks best.pt) is the mean over the main noise's levels. Each mixed-in
    noise is also scored at the middle of its range (``val_psnr_<noise>``): a run that gains on
    white noise while getting worse on camera noise shows it in its log (phase 9 of color.pt did,
    and only the test sets showed it)."""
    if not tset.val:
        return {}
    gen.eval()
    pairs = tset.val[0][1] is not None
    points = _val_levels(opts.noise, noise.ranges)
    main = _val_points(gen, tset, noise.layer, points[:1] if pairs else points, opts, device)
    figures = dict(main)
    figures["val_psnr"] = statistics.fmean(v for k, v in main if k.startswith("val_psnr_"))
    figures["val_ssim"] = statistics.fmean(v for k, v in main if k.startswith("val_ssim_"))
    if not pairs:
        for name, (layer, ranges) in zip(noise.mix, noise.parts[1:]):
            mid = {k: (lo + hi) / 2 for k, (lo, hi) in ranges.items()}
            figures.update(_val_points(gen, tset, layer, [(name, mid)], opts, device))
    gen.train()
    return figures


def _val_points(gen: torch.nn.Module, tset: TrainingSet, layer: torch.nn.Module, points: list[tuple[str, dict[str, float]]],
                opts: TrainOptions, device: torch.device) -> list[tuple[str, float]]:
    """(key, mean) pairs, PSNR then SSIM per point; noise made on the CPU (the JPEG of camera noise
    runs there) from a generator keyed by (seed, image, point)."""
    out: list[tuple[str, float]] = []
    for name, value in points:
        ps, ss = [], []
        for i, (clean, given) in enumerate(tset.val):
            nominal = None
            if given is not None:
                noisy = given
            else:
                levels = {k: torch.full((1,), v, dtype=torch.float64) for k, v in value.items()}
                noisy = layer(clean[None], generator=seeded_generator(opts.seed, f"val{i}/{name}"), **levels)[0]
                nominal = layer.sigma(**levels) if hasattr(layer, "sigma") else None
            clean, noisy = clean.to(device), noisy.to(device)
            kwargs = {}
            if getattr(gen, "noise_map", False):
                kwargs["sigma"] = _noise_level(noisy[None], clean[None], nominal, gen.level)
            den = quantize8(gen(noisy[None], **kwargs)[0].float())
            ps.append(psnr(den, clean))
            ss.append(ssim(den, clean))
        out += [(f"val_psnr_{name}", sum(ps) / len(ps)), (f"val_ssim_{name}", sum(ss) / len(ss))]
    return out


def _val_levels(kind: str, ranges: dict[str, tuple[float, float]]) -> list[tuple[str, dict[str, float]]]:
    """Gaussian: sigma 15/25/50 within the trained range; other noise: the middle of each range."""
    if kind == "gaussian":
        hi = ranges["std"][1] * 255
        sig = [s for s in VAL_SIGMAS if s <= hi + 1e-6] or [hi]
        return [(f"s{s:g}", {"std": s / 255}) for s in sig]
    return [("mid", {k: (lo + hi) / 2 for k, (lo, hi) in ranges.items()})]


def _lr_factor(step: int, total: int, warmup: int, floor: float) -> float:
    """Linear warm-up, then cosine decay to ``floor``: a pure function of the step, so resumes are exact."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _total_steps(opts: TrainOptions, images: list[torch.Tensor]) -> int:
    """``--steps`` wins; an epoch is as many patches as it takes to cover every pixel once on average."""
    if opts.steps is not None:
        return opts.steps
    if opts.epochs is not None:
        pixels = sum(im.shape[-1] * im.shape[-2] for im in images)
        per_epoch = max(1, round(pixels / (opts.patch**2 * opts.batch)))
        return max(1, round(opts.epochs * per_epoch))
    return DEFAULT_STEPS


def _all_white(noise: str, mix: dict[str, float] | None) -> bool:
    """Whether every noise that takes a share of the patches is white (has a sigma): then
    ``--gan-skip-white`` would judge nothing. The main noise takes what the mix leaves."""
    kinds = {kind for kind, share in (mix or {}).items() if share > 0}
    if sum((mix or {}).values()) < 1:
        kinds.add(noise)
    return all(hasattr(NOISE_MODELS[kind], "sigma") for kind in kinds)


def _check(opts: TrainOptions) -> None:
    if opts.batch < 1 or opts.patch < 8:
        raise DenoiseError("--batch must be at least 1 and --patch at least 8")
    if opts.steps is not None and opts.steps < 1:
        raise DenoiseError("--steps must be at least 1")
    if opts.noise not in DEFAULT_LEVELS:
        raise DenoiseError(f"--noise {opts.noise}: unknown (choose {', '.join(DEFAULT_LEVELS)})")
    for kind, frac in (opts.mix or {}).items():
        if kind not in DEFAULT_LEVELS or not 0 <= frac <= 1:
            raise DenoiseError(f"--mix {kind}:{frac}: needs a known noise and a fraction between 0 and 1")
    if sum((opts.mix or {}).values()) > 1:
        raise DenoiseError("--mix: the fractions add up to more than 1")
    if opts.gan_skip_white and not opts.gan:
        raise DenoiseError("--gan-skip-white needs --gan")
    if opts.gan_skip_white and opts.noisy is None and _all_white(opts.noise, opts.mix):
        raise DenoiseError("--gan-skip-white: every patch has white Gaussian noise, so none would be judged (add --mix camera:0.3, say)")
    if opts.edge_weight < 0:
        raise DenoiseError(f"--edge-weight {opts.edge_weight}: must not be negative")
    if not 0 <= opts.downscale <= 1:
        raise DenoiseError(f"--downscale {opts.downscale}: must be a fraction between 0 and 1")
    if not 0 <= opts.independent_channels <= 1:
        raise DenoiseError(f"--independent-channels {opts.independent_channels}: must be a fraction between 0 and 1")
    if not 0 <= opts.ema < 1:
        raise DenoiseError(f"--ema {opts.ema}: the decay per step must be at least 0 and below 1 (0 turns it off)")
    if not 0 <= opts.overset <= 1:
        raise DenoiseError(f"--overset {opts.overset}: must be a fraction between 0 and 1")
    if opts.overset and (opts.noise != "gaussian" or opts.noisy):
        raise DenoiseError("--overset needs white Gaussian noise as --noise (no --noisy): only it has a sigma to raise")
    for name, (lo, hi) in (opts.levels or {}).items():
        if not 0 <= lo <= hi:
            raise DenoiseError(f"noise {name} range {lo}-{hi}: must satisfy 0 <= low <= high")


def _options_dict(opts: TrainOptions) -> dict[str, Any]:
    d = asdict(opts)
    if opts.levels is not None:
        d["levels"] = {k: list(v) for k, v in opts.levels.items()}
    return d


def _trim_log(path: Path, step: int) -> None:
    """Drop records logged after the checkpoint we resume from: the steps after it are
    trained again, and their first records would otherwise stay as duplicates in the curves."""
    if not path.exists():
        return
    lines = path.read_text().splitlines()
    kept = [line for line in lines if json.loads(line).get("step", 0) <= step]
    if len(kept) < len(lines):
        atomic_write(path, lambda f: f.write("".join(line + "\n" for line in kept).encode()))


def _resumed_options(state: dict[str, Any], given: TrainOptions, path: Path) -> TrainOptions:
    """The run's own options, with the device and the read guard (--max-pixels) free to change; model
    options given now must agree."""
    saved = dict(state["options"])
    if saved.get("levels") is not None:
        saved["levels"] = {k: tuple(v) for k, v in saved["levels"].items()}
    for key, value in given.model.items():
        if saved["model"].get(key, value) != value:
            raise DenoiseError(f"{path}: the run has {key}={saved['model'][key]}, not {value}; refusing to resume with another architecture")
    if given.channels is not None and saved.get("channels") not in (None, given.channels):
        raise DenoiseError(f"{path}: the run has {saved['channels']} channels, not {given.channels}; refusing to resume")
    return TrainOptions(**{**saved, "device": given.device, "max_pixels": given.max_pixels})


def _load_state(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DenoiseError(f"{path}: nothing to resume (no last.pt)")
    state = load_checkpoint(path)
    if state.get("format") != TRAIN_FORMAT:
        raise DenoiseError(f"{path}: not a denoise training checkpoint")
    return state


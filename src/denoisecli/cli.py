"""The `denoise` command: parses options and calls one library function per command.

torch is imported inside the commands only, so `denoise --help` and option errors answer at once.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from denoisecli.errors import DenoiseError, no_such_path, no_weights_file

if TYPE_CHECKING:
    from denoisecli.files import BatchReport, FileResult

app = typer.Typer(
    name="denoise",
    help="Denoise images with a UNet, make noisy copies of images, and train your own denoiser.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the library's DenoiseError into one red line and exit code 1."""
    try:
        yield
    except DenoiseError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


def _existing(*paths: Path | None, weights: Path | None = None) -> None:
    """Inputs and a model file that are not there are said before torch is imported, which takes seconds."""
    for path in paths:
        if path is not None and not path.exists():
            raise no_such_path(path)
    if weights is not None and not weights.is_file():
        raise no_weights_file(weights)


@contextmanager
def _stoppable() -> Iterator[None]:
    """SIGTERM, and SIGINT even where it was ignored, stop a run as Ctrl-C does (checkpoint, then exit):
    a job started with `nohup ... &` inherits an ignored SIGINT, and `kill` sends SIGTERM."""
    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _is_main_process() -> bool:
    """Under torchrun only rank 0 talks to the user."""
    return os.environ.get("RANK", "0") == "0"


@contextmanager
def _progress(*extra: TextColumn) -> Iterator[Progress]:
    """The progress bar of a long job. One that fails before any work (no images, no CUDA, bad
    weights) leaves its error as the last word, not an empty bar with a loss of nan above it."""
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *extra,
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        disable=not _is_main_process(),
    )
    with bar:
        try:
            yield bar
        except DenoiseError:
            if not any(task.completed for task in bar.tasks):
                bar.live.transient = True
            raise


def _report_file(result: FileResult) -> None:
    if result.status == "failed":
        console.print(f"[red]failed:[/] {escape(result.reason)}", highlight=False, soft_wrap=True)


def _summary(report: BatchReport, done_word: str) -> None:
    table = Table(title="summary", show_header=True)
    for col in (done_word, "skipped", "failed"):
        table.add_column(col, justify="right")
    table.add_row(*(str(report.count(s)) for s in (done_word, "skipped", "failed")))
    console.print(table)
    if report.unread:
        from denoisecli.formats import READABLE, conversion_hints, describe_counts

        console.print(f"[yellow]left alone:[/] {escape(describe_counts(report.unread))} "
                      "(files this tool does not read; it reads " + READABLE + ")" + escape(conversion_hints(report.unread)),
                      highlight=False, soft_wrap=True)
    if report.stopped:
        console.print(f"[red]stopped:[/] {escape(report.stopped)}", highlight=False, soft_wrap=True)
    if report.failed:
        raise typer.Exit(1)


def _write_json(path: Path, data: dict) -> None:
    import json

    from denoisecli.atomic import atomic_write

    atomic_write(path, lambda f: f.write(json.dumps(data, indent=2).encode()))


def _parse_range(text: str, name: str, top: float) -> tuple[float, float]:
    """'25' -> (25, 25); '0-55' or '0,55' -> (0, 55), within [0, top]."""
    try:
        parts = [float(p) for p in text.replace(",", "-").split("-") if p.strip()]
    except ValueError:
        raise typer.BadParameter(f"{text!r}: expected a number or a range like 0-55", param_hint=name) from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or not 0 <= parts[0] <= parts[1] <= top:
        raise typer.BadParameter(f"{text!r}: expected 0 <= low <= high <= {top:g}", param_hint=name)
    return parts[0], parts[1]


class Noise(str, Enum):
    gaussian = "gaussian"
    gaussian_shared = "gaussian-shared"
    poisson = "poisson"
    poisson_gaussian = "poisson-gaussian"
    salt_pepper = "salt-pepper"
    speckle = "speckle"
    jpeg = "jpeg"
    camera = "camera"


INT8_HELP = ("On a CPU, run the network's deep levels in int8 where the model file allows it (the shipped ones do): "
             "about 1.25x as fast; the output differs from float32's by a few levels of 255 at most, PSNR by under 0.01 dB.")
STRENGTH_HELP = ("Multiply the noise level the model is given (estimated, or --sigma) by this: above 1 smooths more, below 1 "
                 "keeps more grain. About 2 suits noise that is the same in every colour channel, which the colour model "
                 "otherwise removes too little of.")
PER_CHANNEL_HELP = ("Denoise each channel of a colour image alone with the grey model, for images whose channels are "
                    "independent (fluorescence composites, false colour), where the colour model blurs edges only one channel has. "
                    "Default: the shipped models do so where the channels look independent; --no-per-channel: never.")
STABILISE_HELP = ("Noise that grows with brightness (shot noise: microscopes, telescopes, raw sensor data) goes through a "
                  "variance-stabilising transform around the model. Default: for images the shipped grey model denoises whose "
                  "noise grows with brightness (values outside 0-1, unclipped additive noise, never); "
                  "--stabilise: every image whose noise grows (models with a noise-level input); --no-stabilise: none.")
ENSEMBLE_HELP = "Average the outputs for the 8 flips and rotations of each image (self-ensemble): 8x the time, +0.1-0.2 dB PSNR on the benchmarks."
MAX_PIXELS_HELP = "Refuse images larger than this many megapixels (decompression-bomb guard)."
NOISE_HELP = ("Noise model: gaussian (the clamped normal layer), gaussian-shared (the same, shared between channels), "
              "poisson, poisson-gaussian, salt-pepper, speckle, jpeg, camera (poisson-gaussian then JPEG).")
SIGMA_HELP = "Noise level on the 0-255 scale, a value or a range like 0-55 (gaussian, poisson-gaussian read noise, speckle)."
PEAK_HELP = "Photon count at white for poisson / poisson-gaussian (lower is noisier), a value or range."
AMOUNT_HELP = "Fraction of pixels hit for salt-pepper, a value or range like 0-0.1."
QUALITY_HELP = "JPEG quality 1-100 for jpeg and camera, a value or range like 10-90."
CORRELATION_HELP = "How much of the noise gaussian-shared gives every channel alike, 0-1 (1: the same noise in each), a value or range."
NORMAL = ("gaussian", "gaussian-shared")


def _parse_mix(items: list[str] | None) -> dict[str, float] | None:
    """['camera:0.2', 'jpeg:0.1'] -> {'camera': 0.2, 'jpeg': 0.1}; fractions of each batch."""
    if not items:
        return None
    mix: dict[str, float] = {}
    for item in items:
        kind, _, frac = item.partition(":")
        if kind not in {n.value for n in Noise}:
            raise typer.BadParameter(f"{item!r}: unknown noise {kind!r} (choose {', '.join(n.value for n in Noise)})", param_hint="--mix")
        try:
            mix[kind] = float(frac)
        except ValueError:
            raise typer.BadParameter(f"{item!r}: expected KIND:FRACTION like camera:0.2", param_hint="--mix") from None
        if not 0 <= mix[kind] <= 1:
            raise typer.BadParameter(f"{item!r}: the fraction must be between 0 and 1", param_hint="--mix")
    if sum(mix.values()) > 1:
        raise typer.BadParameter("the fractions add up to more than 1", param_hint="--mix")
    return mix


def _levels(noise: Noise, sigma: str | None, peak: str | None, amount: str | None, quality: str | None,
            correlation: str | None = None) -> dict | None:
    ranges = {name: _parse_range(text, f"--{name}", top) if text else None  # a malformed range is said before torch is imported
              for name, text, top in (("sigma", sigma, 255), ("peak", peak, 1e9), ("amount", amount, 1), ("quality", quality, 100),
                                      ("correlation", correlation, 1))}
    from denoisecli.noise import user_levels

    return user_levels(noise.value, **ranges)


@app.command("add-noise")
def add_noise_cmd(
    input: Annotated[Path, typer.Argument(help="Image file or folder (searched recursively).")],
    output: Annotated[Path, typer.Argument(help="Output file or folder; the input tree is mirrored as PNG.")],
    noise: Annotated[Noise, typer.Option(help=NOISE_HELP)] = Noise.gaussian,
    sigma: Annotated[Optional[str], typer.Option(help=SIGMA_HELP + " Gaussian: std = sigma/255, scale 1.")] = None,
    std: Annotated[Optional[float], typer.Option(help="Gaussian: raw std of the normal noise on the 0-1 scale (default 0.2).", min=0)] = None,
    mean: Annotated[float, typer.Option(help="Gaussian: mean of the normal noise (0-1 scale).")] = 0.0,
    scale: Annotated[float, typer.Option(help="Gaussian: factor applied to the noise (the reference's noise_percentage).")] = 1.0,
    peak: Annotated[Optional[str], typer.Option(help=PEAK_HELP)] = None,
    amount: Annotated[Optional[str], typer.Option(help=AMOUNT_HELP)] = None,
    quality: Annotated[Optional[str], typer.Option(help=QUALITY_HELP)] = None,
    correlation: Annotated[Optional[str], typer.Option(help=CORRELATION_HELP + " Default 1.")] = None,
    seed: Annotated[int, typer.Option(help="Seed; each file's noise depends only on the seed and its relative path.")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Rewrite outputs that already exist.")] = False,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write each file's drawn levels (and sigma), the noise, ranges and seed as JSON: the truth for a noise estimate or a level-aware model.")] = None,
    max_pixels: Annotated[float, typer.Option(help=MAX_PIXELS_HELP + " A TIFF stack's: all its planes, held at once.", min=0)] = 120,
) -> None:
    """Make noisy copies of images with the training noise layers (lossless PNG; TIFF, PGM and PPM stay so)."""
    if sigma is not None and std is not None:
        raise typer.BadParameter("give --sigma or --std, not both", param_hint="--sigma")
    if std is not None and noise.value not in NORMAL:
        raise typer.BadParameter("--std applies to --noise gaussian and gaussian-shared", param_hint="--std")
    with user_errors():
        from denoisecli.files import plan_copies

        plan_copies(input, output)  # a wrong name, a folder without images or an output onto an input, said before torch is imported
        levels = _levels(noise, sigma, peak, amount, quality, correlation)
        from denoisecli.addnoise import add_noise

        if std is not None:
            levels = {**(levels or {}), "std": (std, std)}
        with _progress() as bar:
            task = bar.add_task("add-noise", total=None)

            def on_file(result: FileResult) -> None:
                _report_file(result)
                if result.status == "written" and input.is_file() and result.dst != output:  # noisy.jpg asked, noisy.png made
                    console.print(f"written: {result.dst} (noisy copies are lossless: PNG, or the same for TIFF, PGM and PPM)", highlight=False, markup=False)
                bar.advance(task)

            report = add_noise(input, output, noise=noise.value, levels=levels, mean=mean, scale=scale, seed=seed,
                               overwrite=overwrite, on_file=on_file, on_plan=lambda total: bar.update(task, total=total),
                               max_pixels=int(max_pixels * 1e6))
        if json_out:
            _write_json(json_out, report.to_dict())
    _summary(report, "written")


@app.command("train")
def train_cmd(
    data: Annotated[Path, typer.Argument(help="Folder of clean training images.")],
    out: Annotated[Path, typer.Option("--out", help="Run folder: last.pt (to resume), model.pt (for `run`), best.pt, metrics.jsonl, curves.png.")],
    steps: Annotated[Optional[int], typer.Option(help="Optimiser steps (default 10000 unless --epochs).", min=1)] = None,
    epochs: Annotated[Optional[float], typer.Option(help="Epochs; one epoch covers every training pixel once on average.", min=0)] = None,
    batch: Annotated[int, typer.Option(help="Patches per step (the global batch under torchrun).", min=1)] = 16,
    patch: Annotated[int, typer.Option(help="Patch size in pixels.", min=8)] = 96,
    lr: Annotated[float, typer.Option(help="Peak learning rate (Adam; warm-up then cosine decay).", min=0)] = 1e-3,
    noise: Annotated[Noise, typer.Option(help=NOISE_HELP)] = Noise.gaussian,
    sigma: Annotated[Optional[str], typer.Option(help=SIGMA_HELP + " Default 0-55: one blind model.")] = None,
    peak: Annotated[Optional[str], typer.Option(help=PEAK_HELP + " Default 5-100.")] = None,
    amount: Annotated[Optional[str], typer.Option(help=AMOUNT_HELP + " Default 0-0.1.")] = None,
    quality: Annotated[Optional[str], typer.Option(help=QUALITY_HELP + " Default 10-90.")] = None,
    correlation: Annotated[Optional[str], typer.Option(help=CORRELATION_HELP + " Default 0-1.")] = None,
    mix: Annotated[Optional[list[str]], typer.Option(help="Give a fraction of each batch another noise at its default levels, e.g. --mix camera:0.25 (repeatable).")] = None,
    downscale: Annotated[float, typer.Option(help="Fraction of patches cut at twice the size and averaged 2x2 down: sharper targets, full-resolution colour from 4:2:0 JPEGs.", min=0, max=1)] = 0.0,
    max_megapixels: Annotated[Optional[float], typer.Option(help="Scale each training image down to at most this many megapixels as it is read (real --noisy pairs: cut to their middle), so a folder of large photos fits in memory (a folder that would not fit is refused with a value that does).", min=0.01)] = None,
    independent_channels: Annotated[float, typer.Option(help="Fraction of colour patches whose three channels come from three different random patches, so the model keeps edges that only one channel has (fluorescence composites, false colour).", min=0, max=1)] = 0.0,
    overset: Annotated[float, typer.Option(help="Fraction of patches fed a noise level above their own, with the model's own output at that level as target, so an over-set --sigma smooths more instead of adding artifacts (with --noise gaussian; patches of a mixed-in noise without a sigma keep their own level).", min=0, max=1)] = 0.0,
    noisy: Annotated[Optional[Path], typer.Option(help="Folder of real noisy images matching DATA by file name: train on pairs, no synthetic noise. Names that say GT/NOISY (SIDD) or mean/real (PolyU) pair as they come, even in one folder (--noisy DATA).")] = None,
    val: Annotated[Optional[Path], typer.Option(help="Validation images (default: a few held out of DATA, never trained on).")] = None,
    val_every: Annotated[int, typer.Option(help="Validate (PSNR/SSIM, best.pt) every N steps.", min=1)] = 1000,
    channels: Annotated[Optional[int], typer.Option(help="1 (grey) or 3 (colour); default: grey only if every image is grey.")] = None,
    width: Annotated[Optional[int], typer.Option(help="UNet channels at the first level (default 32).", min=1)] = None,
    depth: Annotated[Optional[int], typer.Option(help="UNet resolution levels (default 4).", min=1)] = None,
    blocks: Annotated[Optional[int], typer.Option(help="Residual blocks per level (default 2).", min=0)] = None,
    noise_map: Annotated[Optional[bool], typer.Option("--noise-map/--blind", help="Give the model the noise level as an input (then `run --sigma` sets the strength).")] = None,
    level_map: Annotated[bool, typer.Option("--level-map", help="With --noise-map: feed the level as a per-pixel map that follows brightness where the noise does (camera noise); `run` feeds the same.")] = False,
    init: Annotated[Optional[Path], typer.Option(help="Start the denoiser from this model.pt (fine-tuning, e.g. a GAN from an L1 model; with a smaller --width, from its strongest channels).")] = None,
    edge_weight: Annotated[float, typer.Option(help="Add this weight times the L1 of the Laplacians (an edge loss: charges for lost detail as well as left noise).", min=0)] = 0.0,
    gan: Annotated[bool, typer.Option("--gan", help="Add a patch-discriminator adversarial loss to L1.")] = False,
    gan_weight: Annotated[float, typer.Option(help="Weight of the adversarial term in the denoiser's loss.", min=0)] = 1e-3,
    gan_warmup: Annotated[Optional[int], typer.Option(help="L1-only steps before the adversarial term (default 10% of steps).", min=0)] = None,
    gan_skip_white: Annotated[bool, typer.Option("--gan-skip-white", help="With --gan: judge only the patches whose noise is not white Gaussian (--mix camera, jpeg...); white-noise patches train on L1 alone.")] = False,
    ema: Annotated[float, typer.Option(help="Save an exponential moving average of the weights, with this decay per step, as model.pt and best.pt (0.999 averages about the last 1,000 steps; 0: off).", min=0, max=0.999999)] = 0.0,
    d_lr: Annotated[float, typer.Option(help="Discriminator learning rate (Adam, betas 0.5/0.999).", min=0)] = 2e-4,
    clip: Annotated[float, typer.Option(help="Gradient-norm clip for the denoiser (0: off).", min=0)] = 1.0,
    workers: Annotated[Optional[int], typer.Option(help="Patch-making processes (default: 0 on CPU, up to 8 on CUDA).", min=0)] = None,
    device: Annotated[Device, typer.Option(help="auto: CUDA when available, else CPU.")] = Device.auto,
    amp: Annotated[bool, typer.Option("--amp/--no-amp", help="On CUDA, train in mixed precision (bf16, else fp16); --no-amp: float32. No effect on CPU.")] = True,
    seed: Annotated[int, typer.Option(help="Seed for weights, patches and noise.")] = 0,
    save_every: Annotated[int, typer.Option(help="Checkpoint every N steps.", min=1)] = 500,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from last.pt, with its own options.")] = False,
    max_pixels: Annotated[float, typer.Option(help=MAX_PIXELS_HELP + " Before --max-megapixels scales it down; a TIFF stack's: all its planes.", min=0)] = 120,
) -> None:
    """Train a denoiser from clean images (L1 loss, or --gan: L1 + scaled adversarial loss)."""
    if channels not in (None, 1, 3):
        raise typer.BadParameter("must be 1 or 3", param_hint="--channels")
    mixed = _parse_mix(mix)
    with user_errors():
        _existing(data, weights=init)
        levels = _levels(noise, sigma, peak, amount, quality, correlation)
        from denoisecli.training import TrainOptions, train

        model = {k: v for k, v in {"width": width, "depth": depth, "blocks": blocks, "noise_map": noise_map}.items() if v is not None}
        if level_map:
            model["level"] = "map"
        opts = TrainOptions(
            data=str(data), out=str(out), steps=steps, epochs=epochs, batch=batch, patch=patch, lr=lr,
            noise=noise.value, levels=levels, mix=mixed, downscale=downscale, max_megapixels=max_megapixels,
            max_pixels=int(max_pixels * 1e6),
            independent_channels=independent_channels, overset=overset,
            noisy=str(noisy) if noisy else None, val=str(val) if val else None, val_every=val_every,
            channels=channels, model=model, init=str(init) if init else None,
            edge_weight=edge_weight, gan=gan, gan_weight=gan_weight, gan_warmup=gan_warmup, gan_skip_white=gan_skip_white, ema=ema, d_lr=d_lr, clip=clip, workers=workers, device=device.value,
            amp=amp, seed=seed, save_every=save_every,
        )
        columns = (TextColumn("loss {task.fields[loss]}"), TextColumn("val {task.fields[val]}"),
                   TextColumn("{task.fields[speed]:.0f} patches/s"))
        with _progress(*columns) as bar:
            task = bar.add_task("train", total=None, loss="-", speed=0.0, val="-")

            def on_read(done: int, files: int) -> None:  # the training images being read, before the first step
                bar.update(task, description="read", completed=done, total=files)

            def on_step(stats: dict) -> None:
                if bar.tasks[0].description == "read":  # the time left counts steps from here, not files
                    bar.reset(task, total=stats["total"], completed=stats["step"], description="train")
                val_text = f"{stats['val_psnr']:.2f} dB" if "val_psnr" in stats else "-"
                bar.update(task, description="train", completed=stats["step"], total=stats["total"], loss=f"{stats['loss']:.4f}",
                           speed=stats["patches_per_s"], val=val_text)

            with _stoppable():
                result = train(opts, resume=resume, progress=on_step, on_read=on_read,
                               on_note=lambda line: console.print(f"[yellow]note:[/] {escape(line)}", highlight=False, soft_wrap=True))
    if not _is_main_process():
        return
    for line in result.skipped:
        console.print(f"[yellow]skipped:[/] {escape(line)}", highlight=False, soft_wrap=True)
    if result.interrupted:
        console.print(f"interrupted at step {result.step}/{result.total}; checkpoint saved, continue with --resume --out {out}", markup=False)
        raise typer.Exit(130)
    best = f", best validation PSNR {result.best_psnr:.2f} dB (best.pt)" if result.best_psnr is not None else ""
    console.print(f"done: {result.step} steps{best}; model for `denoise run --weights`: {out / 'model.pt'}", markup=False)


class Format(str, Enum):
    png = "png"
    jpeg = "jpeg"
    tiff = "tiff"
    webp = "webp"
    bmp = "bmp"
    heic = "heic"
    avif = "avif"


@app.command("run")
def run_cmd(
    inputs: Annotated[list[Path], typer.Argument(help="Noisy image files or folders (folders searched recursively; several, e.g. a shell's IMG_*.JPG, go into one -o folder or each beside itself); a TIFF stack is denoised plane by plane.", show_default=False)],
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Output file or folder (default: a new sibling folder).")] = None,
    weights: Annotated[Optional[Path], typer.Option(help="Model file (default: the shipped model for grey or colour images).")] = None,
    device: Annotated[Device, typer.Option(help="auto: CUDA when available, else CPU.")] = Device.auto,
    tile: Annotated[Optional[int], typer.Option(help="Process images in overlapping tiles of N pixels (blended, no seams); automatic above 4 MP.", min=64)] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite/--skip-existing", help="Redo outputs that already exist, or skip them so a rerun finishes a stopped batch.")] = False,
    format: Annotated[Optional[Format], typer.Option("--format", help="Output format (default: each input's own).")] = None,
    jpeg_quality: Annotated[int, typer.Option(help="Quality of JPEG (and lossy WebP, HEIC and AVIF) outputs.", min=1, max=100)] = 95,
    max_pixels: Annotated[float, typer.Option(help=MAX_PIXELS_HELP + " A TIFF stack's: each plane, as it is streamed.", min=0)] = 120,
    batch: Annotated[int, typer.Option(help="Small images of one size denoised together.", min=1)] = 8,
    sigma: Annotated[Optional[float], typer.Option(help="Noise level (0-255 scale) for models with a noise-level input; default: estimated per image.", min=0, max=255)] = None,
    strength: Annotated[float, typer.Option(help=STRENGTH_HELP, min=0)] = 1.0,
    per_channel: Annotated[Optional[bool], typer.Option("--per-channel/--no-per-channel", help=PER_CHANNEL_HELP, show_default=False)] = None,
    stabilise: Annotated[Optional[bool], typer.Option("--stabilise/--no-stabilise", help=STABILISE_HELP, show_default=False)] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="One line per file, with the noise level used.")] = False,
    ensemble: Annotated[bool, typer.Option("--ensemble", help=ENSEMBLE_HELP)] = False,
    int8: Annotated[bool, typer.Option("--int8/--no-int8", help=INT8_HELP)] = True,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write what was done to each file (noise levels, routes, failures) and with what (options, weights, machine, versions) as JSON.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only estimate each file's noise level and route, as -v reports them (and --json records them); denoise and write nothing.")] = False,
) -> None:
    """Denoise image files or folders of images."""
    with user_errors():
        import time

        from denoisecli.files import plan_run

        plan_run(inputs, output, format.value if format else None)  # what a plan refuses, said before torch is imported
        _existing(weights=weights)
        from denoisecli.inference import RunOptions, denoise_files

        opts = RunOptions(weights=weights, device=device.value, tile=tile, overwrite=overwrite,
                          format=format.value if format else None, jpeg_quality=jpeg_quality,
                          max_pixels=int(max_pixels * 1e6), batch=batch, sigma=sigma, ensemble=ensemble, int8=int8,
                          strength=strength, per_channel=per_channel, stabilise=stabilise, dry_run=dry_run)
        with _progress(TextColumn("{task.fields[ips]:.1f} img/s"), TextColumn("{task.fields[mps]:.2f} MP/s")) as bar:
            task = bar.add_task("denoise", total=None, mps=0.0, ips=0.0)
            start, mp, n, done = time.perf_counter(), 0.0, 0, 0

            def on_file(result: FileResult) -> None:
                nonlocal mp, n, done
                _report_file(result)
                done += 1
                if result.status in ("denoised", "estimated"):
                    mp += result.megapixels
                    n += 1
                    if verbose or dry_run:  # a dry run says what it found of each file, which is all it does
                        console.print(f"{result.status}: {result.dst or result.src}" + (f" ({result.detail})" if result.detail else ""),
                                      highlight=False, soft_wrap=True, markup=False)
                elapsed = max(time.perf_counter() - start, 1e-9)
                bar.update(task, completed=done, mps=mp / elapsed, ips=n / elapsed)

            def on_share(share: float) -> None:
                # the share of the file under way (a stack's slabs, a large photo's windows); a file
                # read ahead may start before the one before it is written, so the bar only moves on
                bar.update(task, completed=max(done + share, bar.tasks[0].completed))

            report = denoise_files(inputs, output, opts, on_file=on_file, on_plan=lambda total: bar.update(task, total=total),
                                   on_share=on_share)
        if json_out:
            _write_json(json_out, report.to_dict())
    _summary(report, "estimated" if dry_run else "denoised")


class Protocol(str, Enum):
    standard = "standard"
    clipped = "clipped"


def _floats(text: str, name: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(f"{text!r}: expected comma-separated numbers", param_hint=name) from None


@app.command("eval")
def eval_cmd(
    clean_dir: Annotated[Path, typer.Argument(help="Folder of clean images.")],
    sigma: Annotated[str, typer.Option(help="Sigmas of the normal noise kinds (gaussian, gaussian-shared) on the 0-255 scale, comma-separated.")] = "15,25,50",
    protocol: Annotated[Optional[Protocol], typer.Option(help="standard: the literature's (unclipped noise); clipped: like users' 8-bit files. Default: standard for gaussian noise, clipped for the others.", show_default=False)] = None,
    noise: Annotated[Noise, typer.Option(help=NOISE_HELP + " Other noise than gaussian is evaluated with the clipped protocol.")] = Noise.gaussian,
    level: Annotated[Optional[str], typer.Option(help="For the other noise models: values of their first level (peak, amount or quality), comma-separated.")] = None,
    correlation: Annotated[Optional[str], typer.Option(help="For gaussian-shared: correlations between channels, 0-1, comma-separated; each at each --sigma. Default 1.")] = None,
    noisy: Annotated[Optional[Path], typer.Option(help="Real noisy images matching CLEAN_DIR by file name (no synthetic noise); names that say GT/NOISY (SIDD) or mean/real (PolyU) pair as they come, even in one folder (--noisy CLEAN_DIR).")] = None,
    weights: Annotated[Optional[Path], typer.Option(help="Model file (default: the shipped model for grey or colour).")] = None,
    baseline: Annotated[Optional[list[str]], typer.Option(help="Also score: noisy (the input itself), nlm, wavelet (scikit-image), bm3d. Repeatable.")] = None,
    seed: Annotated[int, typer.Option(help="Noise seed (same seed, same numbers).")] = 0,
    device: Annotated[Device, typer.Option(help="auto: CUDA when available, else CPU.")] = Device.auto,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the report as JSON.")] = None,
    sheet: Annotated[Optional[Path], typer.Option(help="Write a PNG sheet of crops (clean, noisy, each method) labelled with PSNR.")] = None,
    per_image: Annotated[bool, typer.Option(help="Print the per-image table too.")] = True,
    oracle_sigma: Annotated[bool, typer.Option("--oracle-sigma", help="Give a noise-level model the true sigma instead of its estimate.")] = False,
    strength: Annotated[float, typer.Option(help=STRENGTH_HELP, min=0)] = 1.0,
    per_channel: Annotated[Optional[bool], typer.Option("--per-channel/--no-per-channel", help=PER_CHANNEL_HELP, show_default=False)] = None,
    stabilise: Annotated[Optional[bool], typer.Option("--stabilise/--no-stabilise", help=STABILISE_HELP, show_default=False)] = None,
    ensemble: Annotated[bool, typer.Option("--ensemble", help=ENSEMBLE_HELP)] = False,
    int8: Annotated[bool, typer.Option("--int8/--no-int8", help=INT8_HELP)] = True,
    max_pixels: Annotated[float, typer.Option(help=MAX_PIXELS_HELP + " A TIFF stack's: all its planes, held at once.", min=0)] = 120,
) -> None:
    """Measure PSNR and SSIM: add noise to clean images, denoise, compare."""
    sigmas = _floats(sigma, "--sigma")
    if any(not 0 <= s <= 255 for s in sigmas):
        raise typer.BadParameter(f"{sigma!r}: each sigma must be within 0-255", param_hint="--sigma")
    levels = _floats(level, "--level") if level else None
    correlations = _floats(correlation, "--correlation") if correlation else None
    with user_errors():
        _existing(clean_dir, noisy, weights=weights)
        from denoisecli.evaluation import HIGH_DEPTH, PROTOCOLS, evaluate

        baselines = tuple(baseline or ())
        with _progress() as bar:
            task = bar.add_task("eval", total=None)
            report, samples = evaluate(
                clean_dir, sigmas, weights=weights, device=device.value, seed=seed, protocol=protocol.value if protocol else None,
                noise=noise.value, levels=levels, correlations=correlations, noisy_dir=noisy, baselines=baselines, keep_samples=3 if sheet else 0,
                on_progress=lambda done, total: bar.update(task, completed=done, total=total), oracle=oracle_sigma,
                ensemble=ensemble, int8=int8, strength=strength, per_channel=per_channel, stabilise=stabilise,
                max_pixels=int(max_pixels * 1e6),
            )
        if sheet:
            from denoisecli.sheet import make_sheet

            make_sheet(samples, report, sheet)
        if json_out:
            _write_json(json_out, report.to_dict())
    out = Console()
    if per_image:
        table = Table(title="per image: PSNR dB / SSIM")
        table.add_column("image")
        table.add_column("level")
        for m in report.methods():
            table.add_column(m, justify="right")
        cells = {(s.image, s.level, s.method): f"{s.psnr:.2f} / {s.ssim:.4f}" for s in report.scores}
        for lv in report.levels():
            for name in dict.fromkeys(s.image for s in report.scores):
                table.add_row(escape(name), lv, *(cells.get((name, lv, m), "") for m in report.methods()))
        out.print(table)
    table = Table(title=f"mean over {len({s.image for s in report.scores})} images, protocol {report.protocol}, seed {seed}")
    for name in ("level", "method", "PSNR", "SSIM", "texture"):
        table.add_column(name, justify="left" if name in ("level", "method") else "right")
    for lv in report.levels():
        for i, m in enumerate(report.methods()):
            table.add_row(lv if i == 0 else "", m, f"{report.mean(m, lv):.2f}", f"{report.mean(m, lv, 'ssim'):.4f}",
                          f"{report.mean(m, lv, 'texture'):.3f}", end_section=i == len(report.methods()) - 1)
    out.print(table)
    out.print("texture: high-frequency energy of the output over that of the clean image (1 = as much fine detail; below 1 = smoothed)")
    level_note = "; noise level: the true sigma (--oracle-sigma)" if report.oracle else ""
    level_note += "; self-ensemble of 8 flips and rotations (--ensemble)" if report.ensemble else ""
    level_note += f"; noise level fed x{report.strength:g} (--strength)" if report.strength != 1 else ""
    split, denoised = report.split_count()
    if report.per_channel:
        level_note += "; each channel alone through the grey model (--per-channel)"
    elif split:
        level_note += f"; {split} of {denoised} images each channel alone through the grey model, their channels looking independent (--no-per-channel: none)"
    stabilised, _ = report.stabilised_count()
    if stabilised:
        level_note += f"; {stabilised} of {denoised} images' noise stabilised, as it grows with brightness (--no-stabilise: none)"
    level_note += "; deep levels in int8 (--no-int8 for float32)" if report.int8 else ""
    deep = sum(s.bits > 8 for s in report.scores if s.method == "denoise")
    level_note += f"; {deep} of {denoised} images deeper than 8 bits or float: {HIGH_DEPTH}" if deep else ""
    out.print(f"protocol {report.protocol}: {PROTOCOLS[report.protocol]}; weights: {escape(report.weights)}{level_note}", highlight=False)
    out.print(f"measured on {report.device} ({report.machine}), {report.date}", highlight=False, markup=False)
    if report.failed:
        for line in report.failed:
            console.print(f"failed: {line}", highlight=False, markup=False)
        console.print(f"{len(report.failed)} image(s) could not be scored and are not in the means")
        raise typer.Exit(1)


@app.command("bench")
def bench_cmd(
    device: Annotated[Device, typer.Option(help="auto: CUDA when available, else CPU.")] = Device.auto,
    sizes: Annotated[str, typer.Option(help="Square image sizes in pixels, comma-separated.")] = "256,512,1024",
    repeats: Annotated[int, typer.Option(help="Timed runs per measurement (the median is reported).", min=1)] = 5,
    warmup: Annotated[int, typer.Option(help="Untimed runs first.", min=0)] = 2,
    train_steps: Annotated[int, typer.Option(help="Timed training steps per model (0: skip training).", min=0)] = 5,
    weights: Annotated[Optional[Path], typer.Option(help="Model file (default: the shipped colour model).")] = None,
    grey: Annotated[bool, typer.Option("--grey", help="Benchmark the grey models.")] = False,
    int8: Annotated[bool, typer.Option("--int8/--no-int8", help="Time the model as `run` runs it (int8 deep levels on a CPU, float32 beside it), or in float32 alone.")] = True,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the report as JSON.")] = None,
) -> None:
    """Measure speed (MP/s), peak memory and training patches/s against DnCNN-17 and FFDNet."""
    size_list = [int(v) for v in _floats(sizes, "--sizes")]
    with user_errors():
        _existing(weights=weights)
        from denoisecli.benchmark import FLOAT32, REFERENCES, bench

        with _progress() as bar:
            task = bar.add_task("bench", total=None)
            report = bench(device.value, tuple(size_list), repeats, warmup, train_steps, weights=weights,
                           channels=1 if grey else 3, on_progress=lambda done, total: bar.update(task, completed=done, total=total),
                           int8=int8)
        if json_out:
            _write_json(json_out, report.to_dict())
    out = Console()
    table = Table(title=f"inference on {report.device} ({report.machine}), {report.date}, median of {report.repeats}")
    for col in ("model", "size", "dtype", "MP/s", "spread (min-max)", "peak MiB"):
        table.add_column(col, justify="left" if col in ("model", "dtype") else "right")
    for r in report.inference:
        table.add_row(r.model, f"{r.size}", r.dtype, f"{r.mps:.3f}", f"{r.spread[0]:.3f}-{r.spread[1]:.3f}", f"{r.peak_mib:.0f}")
    out.print(table)
    ratios = Table(title="ours / reference (above 1: ours is faster)")
    ratios.add_column("reference")
    for s in size_list:
        ratios.add_column(f"{s}px", justify="right")
    if report.training:
        ratios.add_column("training", justify="right")
    for ref in REFERENCES:
        cells = [f"{report.ratio(ref, s):.2f}x" for s in size_list]
        if report.training:
            cells.append(f"{report.train_ratio(ref):.2f}x")
        ratios.add_row(ref, *cells)
    out.print(ratios)
    if report.int8:
        out.print("denoise with its deep levels in int8, against float32 (--no-int8): "
                  + ", ".join(f"{report.ratio(FLOAT32, s):.2f}x at {s}px" for s in size_list))
    if report.training:
        out.print("training patches/s (96px, batch 16): " + ", ".join(f"{r.model} {r.patches_per_s:.1f}" for r in report.training))


def main() -> None:
    # tifffile logs, as errors, what it works around as it reads (a stack whose last page headers
    # were cut, its data intact); each file still reads or fails in one line of ours, and `run -v`
    # names the repairs (image_io._Repairs), so its own log lines stay off the terminal
    tifffile_log = logging.getLogger("tifffile")
    tifffile_log.propagate = False
    tifffile_log.addHandler(logging.NullHandler())
    try:
        app()
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)

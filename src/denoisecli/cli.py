"""The `denoise` command: parses options and calls one library function per command.

torch is imported inside the commands only, so `denoise --help` and option errors answer at once.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from denoisecli.errors import DenoiseError

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
        console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


def _progress(*extra: TextColumn) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *extra,
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def _report_file(result: object) -> None:
    if getattr(result, "status") == "failed":
        console.print(f"[red]failed:[/] {getattr(result, 'reason')}", highlight=False, soft_wrap=True)


def _summary(report: object, done_word: str) -> None:
    table = Table(title="summary", show_header=True)
    for col in (done_word, "skipped", "failed"):
        table.add_column(col, justify="right")
    table.add_row(*(str(report.count(s)) for s in (done_word, "skipped", "failed")))  # type: ignore[attr-defined]
    console.print(table)
    if report.failed:  # type: ignore[attr-defined]
        raise typer.Exit(1)


def _parse_range(text: str, name: str) -> tuple[float, float]:
    try:
        parts = [float(p) for p in text.replace(",", "-").split("-") if p.strip()]
    except ValueError:
        raise typer.BadParameter(f"{text!r}: expected a number or a range like 0-55", param_hint=name) from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or not 0 <= parts[0] <= parts[1] <= 255:
        raise typer.BadParameter(f"{text!r}: expected 0 <= low <= high <= 255", param_hint=name)
    return parts[0], parts[1]


@app.command("add-noise")
def add_noise_cmd(
    input: Annotated[Path, typer.Argument(help="Image file or folder (searched recursively).")],
    output: Annotated[Path, typer.Argument(help="Output file or folder; the input tree is mirrored as PNG.")],
    sigma: Annotated[Optional[float], typer.Option(help="Noise level on the 0-255 scale (std = sigma/255, scale 1).", min=0, max=255)] = None,
    std: Annotated[Optional[float], typer.Option(help="Raw std of the normal noise on the 0-1 scale.", min=0)] = None,
    mean: Annotated[float, typer.Option(help="Mean of the normal noise (0-1 scale).")] = 0.0,
    scale: Annotated[float, typer.Option(help="Factor applied to the noise (the reference's noise_percentage).")] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed; each file's noise depends only on the seed and its relative path.")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Rewrite outputs that already exist.")] = False,
) -> None:
    """Make noisy copies of images with the clamped normal-noise layer (lossless PNG)."""
    if sigma is not None and std is not None:
        raise typer.BadParameter("give --sigma or --std, not both", param_hint="--sigma")
    level = sigma / 255.0 if sigma is not None else (std if std is not None else 0.2)
    with user_errors():
        from denoisecli.addnoise import add_noise

        with _progress() as bar:
            task = bar.add_task("add-noise", total=None)

            def on_file(result: object) -> None:
                _report_file(result)
                bar.advance(task)

            report = add_noise(input, output, std=level, mean=mean, scale=scale, seed=seed, overwrite=overwrite, on_file=on_file)
    _summary(report, "written")


@app.command("train")
def train_cmd(
    data: Annotated[Path, typer.Argument(help="Folder of clean training images.")],
    out: Annotated[Path, typer.Option("--out", help="Run folder: last.pt (to resume), model.pt (for `run`), metrics.jsonl.")],
    steps: Annotated[Optional[int], typer.Option(help="Optimiser steps (default 10000 unless --epochs).", min=1)] = None,
    epochs: Annotated[Optional[float], typer.Option(help="Epochs; one epoch covers every training pixel once on average.", min=0)] = None,
    batch: Annotated[int, typer.Option(help="Patches per step.", min=1)] = 16,
    patch: Annotated[int, typer.Option(help="Patch size in pixels.", min=8)] = 96,
    lr: Annotated[float, typer.Option(help="Peak learning rate (Adam; warm-up then cosine decay).", min=0)] = 1e-3,
    sigma: Annotated[str, typer.Option(help="Noise level range on the 0-255 scale, drawn per patch: a blind model.")] = "0-55",
    channels: Annotated[Optional[int], typer.Option(help="1 (grey) or 3 (colour); default: grey only if every image is grey.")] = None,
    width: Annotated[int, typer.Option(help="UNet channels at the first level.", min=1)] = 32,
    depth: Annotated[int, typer.Option(help="UNet resolution levels.", min=1)] = 4,
    blocks: Annotated[int, typer.Option(help="Residual blocks per level.", min=0)] = 2,
    gan: Annotated[bool, typer.Option("--gan", help="Add a patch-discriminator adversarial loss to L1.")] = False,
    gan_weight: Annotated[float, typer.Option(help="Weight of the adversarial term in the generator loss.", min=0)] = 1e-3,
    gan_warmup: Annotated[Optional[int], typer.Option(help="L1-only steps before the adversarial term (default 10% of steps).", min=0)] = None,
    clip: Annotated[float, typer.Option(help="Gradient-norm clip for the denoiser (0: off).", min=0)] = 1.0,
    device: Annotated[Device, typer.Option(help="auto: CUDA when available, else CPU.")] = Device.auto,
    seed: Annotated[int, typer.Option(help="Seed for weights, patches and noise.")] = 0,
    save_every: Annotated[int, typer.Option(help="Checkpoint every N steps.", min=1)] = 500,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from last.pt.")] = False,
) -> None:
    """Train a denoiser from clean images (L1 loss, or --gan: L1 + scaled adversarial loss)."""
    if channels not in (None, 1, 3):
        raise typer.BadParameter("must be 1 or 3", param_hint="--channels")
    sigma_range = _parse_range(sigma, "--sigma")
    with user_errors():
        from denoisecli.training import TrainOptions, train

        opts = TrainOptions(
            data=str(data), out=str(out), steps=steps, epochs=epochs, batch=batch, patch=patch, lr=lr,
            sigma=sigma_range, channels=channels, model={"width": width, "depth": depth, "blocks": blocks},
            gan=gan, gan_weight=gan_weight, gan_warmup=gan_warmup, clip=clip, device=device.value,
            seed=seed, save_every=save_every,
        )
        with _progress(TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[speed]:.0f} patches/s")) as bar:
            task = bar.add_task("train", total=None, loss=float("nan"), speed=0.0)

            def on_step(stats: dict) -> None:
                bar.update(task, completed=stats["step"], total=stats["total"], loss=stats["loss"], speed=stats["patches_per_s"])

            result = train(opts, resume=resume, progress=on_step)
    for line in result.skipped:
        console.print(f"[yellow]skipped:[/] {line}", highlight=False, soft_wrap=True)
    if result.interrupted:
        console.print(f"interrupted at step {result.step}/{result.total}; checkpoint saved, continue with --resume --out {out}")
        raise typer.Exit(130)
    console.print(f"done: {result.step} steps; model for `denoise run --weights`: {out / 'model.pt'}")


@app.command("run")
def run_cmd(
    input: Annotated[Path, typer.Argument(help="Noisy image file or folder (searched recursively).")],
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Output file or folder (default: a new sibling folder).")] = None,
    weights: Annotated[Optional[Path], typer.Option(help="Model file (default: the shipped model for grey or colour images).")] = None,
    device: Annotated[Device, typer.Option(help="auto: CUDA when available, else CPU.")] = Device.auto,
    tile: Annotated[Optional[int], typer.Option(help="Process large images in overlapping tiles of N pixels (blended, no seams).", min=32)] = None,
    overwrite: Annotated[bool, typer.Option(help="Redo outputs that already exist (default: skip them).")] = False,
) -> None:
    """Denoise an image file or a folder of images."""
    with user_errors():
        from denoisecli.inference import denoise_files

        with _progress(TextColumn("{task.fields[mps]:.2f} MP/s")) as bar:
            task = bar.add_task("denoise", total=None, mps=0.0)
            import time

            start, mp = time.perf_counter(), 0.0

            def on_file(result: object) -> None:
                nonlocal mp
                _report_file(result)
                mp += getattr(result, "megapixels")
                bar.update(task, advance=1, mps=mp / max(time.perf_counter() - start, 1e-9))

            def on_plan(n: int) -> None:
                bar.update(task, total=n)

            report = denoise_files(
                input, output, weights=weights, device=device.value, tile=tile, overwrite=overwrite,
                on_file=on_file, on_plan=on_plan,
            )
    _summary(report, "denoised")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)

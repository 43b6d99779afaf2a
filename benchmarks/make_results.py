"""Regenerate the results section of README.md from measurements, never by hand.

usage: python benchmarks/make_results.py --data ../shared/data [--weights FILE] [--grey-weights FILE] [--skip-bench]

Runs the standard protocol of DATA/README.md on CBSD68, Kodak24 (colour) and BSD68,
Set12 (grey) at sigma 15/25/50 with `denoisecli.evaluation.evaluate` (what `denoise eval`
runs), reads the published figures from DATA/README.md, runs `denoisecli.benchmark.bench`
(what `denoise bench` runs), and rewrites the block between the results markers in README.md.
"""

from __future__ import annotations

import argparse
import platform
import re
import sys
from datetime import date
from pathlib import Path

from denoisecli.benchmark import FLOAT32, REFERENCES, bench
from denoisecli.device import machine_name
from denoisecli.device import resolve_device
from denoisecli.evaluation import evaluate

SETS = [("CBSD68", "colour"), ("Kodak24", "colour"), ("BSD68", "grey"), ("Set12", "grey")]
SIGMAS = [15.0, 25.0, 50.0]
START, END = "<!-- results:start -->", "<!-- results:end -->"


def published(readme: Path) -> dict[str, dict[str, list[str]]]:
    """{method: {set: [psnr at 15, 25, 50]}} from the data README's table."""
    rows: dict[str, dict[str, list[str]]] = {}
    header: list[str] = []
    for line in readme.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == "method":
            header = cells
            continue
        if header and len(cells) == len(header) and re.match(r"[\d.]+ / ", cells[1]):
            rows[cells[0]] = {re.sub(r" \(grey\)", "", h): c.split(" / ") for h, c in zip(header[1:], cells[1:])}
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--weights", type=Path, default=None)
    ap.add_argument("--grey-weights", type=Path, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--skip-bench", action="store_true")
    ap.add_argument("--readme", type=Path, default=Path(__file__).resolve().parents[1] / "README.md")
    args = ap.parse_args()
    dev = resolve_device(args.device)
    today = date.today().isoformat()
    cmd = "python " + " ".join(sys.argv)
    lines = [START, "", f"Measured {today} on {machine_name(dev)} ({platform.system()}), by `{cmd}`.", ""]
    lines += [
        "**Quality**, standard protocol (noise not clipped nor quantised, seed 0, output rounded to 8 bits; "
        "the same as `denoise eval DIR --sigma 15,25,50 --protocol standard`). PSNR dB / SSIM; published PSNR from "
        "`../shared/data/README.md`.",
        "",
        "| set | sigma | ours PSNR | ours SSIM | CBM3D/BM3D | CDnCNN-B/DnCNN | FFDNet | DRUNet |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    # The bench runs first: on CPU its peak memory is the process's resident set, which the quality
    # runs would otherwise have raised (freed memory stays mapped), so it would not match `denoise bench`.
    rep = None if args.skip_bench else bench(args.device, (256, 512, 1024), repeats=5, warmup=2, train_steps=5,
                                             weights=args.weights)
    pub = published(args.data / "README.md")
    used_int8 = False
    for name, kind in SETS:
        weights = args.grey_weights if kind == "grey" and args.grey_weights else args.weights
        report, _ = evaluate(args.data / "test" / name, SIGMAS, weights=weights, device=args.device)
        for i, s in enumerate(SIGMAS):
            label = f"sigma {s:g}"
            refs = [pub.get(m, {}).get(name, ["-"] * 3)[i] for m in ("CBM3D / BM3D", "CDnCNN-B / DnCNN", "FFDNet", "DRUNet")]
            lines.append(f"| {name} | {s:g} | {report.mean('denoise', label):.3f} | {report.mean('denoise', label, 'ssim'):.4f} | "
                         + " | ".join(refs) + " |")
        print(f"{name} done", flush=True)
        used_int8 = used_int8 or report.int8
    lines.append("")
    if used_int8:
        lines += ["Ours ran as `run` runs on a CPU: the network's deep levels in int8 (`--no-int8` for float32).", ""]
    lines.append("Grey sets are denoised " + ("with the grey model." if args.grey_weights or _has_grey() else
                                              "with the colour model on three equal channels (no grey model is shipped yet)."))
    if rep is not None:
        lines += ["", f"**Speed** on {rep.device} ({rep.machine}), median of {rep.repeats} runs after 2 warm-up runs "
                  "(the same as `denoise bench`):", "",
                  "| model | 256 px MP/s | 512 px MP/s | 1024 px MP/s | peak MiB (1024 px) | training patches/s (96 px, batch 16) |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for model in dict.fromkeys(r.model for r in rep.inference):
            rows = {r.size: r for r in rep.inference if r.model == model and r.dtype == "float32"}
            tr = next((f"{t.patches_per_s:.1f}" for t in rep.training if t.model == model), "(same network)")
            lines.append(f"| `{model}` | " + " | ".join(f"{rows[s].mps:.2f}" for s in (256, 512, 1024))
                         + f" | {rows[1024].peak_mib:.0f} | {tr} |")
        lines += ["", "`denoise` is what `denoise run` does by default (estimate each image's noise level, then "
                  "denoise it); `denoise --sigma` is the same network with the level given. The references are "
                  "networks alone. The input is a smooth random image with sigma-25 noise, its colour channels "
                  "sharing most of their shapes as a photo's do (so `run` denoises it whole, as timed here)."
                  + (" On a CPU both run the network's deep levels in int8, as `run` does by default; `denoise "
                     "--no-int8` is `denoise` in float32 (int8 / float32: "
                     + ", ".join(f"{rep.ratio(FLOAT32, s):.2f}x at {s} px" for s in (256, 512, 1024)) + ")."
                     if rep.int8 else ""),
                  "", "Ours (`denoise`) relative to the references in the same run (above 1: ours is faster): "
                  + "; ".join(f"{ref}: " + ", ".join(f"{rep.ratio(ref, s):.1f}x at {s} px" for s in (256, 512, 1024))
                              + f", {rep.train_ratio(ref):.1f}x in training" for ref in REFERENCES) + "."]
    lines += ["", END]
    text = args.readme.read_text()
    block = "\n".join(lines)
    if START in text:
        text = text[: text.index(START)] + block + text[text.index(END) + len(END):]
    else:
        text += "\n" + block + "\n"
    args.readme.write_text(text)


def _has_grey() -> bool:
    from denoisecli.weights import weights_dir

    return (weights_dir() / "grey.pt").is_file()


if __name__ == "__main__":
    main()

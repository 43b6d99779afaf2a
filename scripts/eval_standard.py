"""Mean PSNR of a model on benchmark folders, standard protocol (until `denoise eval` exists).

usage: python scripts/eval_standard.py WEIGHTS DIR [DIR ...] [--sigma 15,25,50]
"""

import argparse
import platform
import statistics
from datetime import date
from pathlib import Path

from denoisecli.evaluation import evaluate

ap = argparse.ArgumentParser()
ap.add_argument("weights", type=Path)
ap.add_argument("dirs", type=Path, nargs="+")
ap.add_argument("--sigma", default="15,25,50")
ap.add_argument("--seed", type=int, default=0)
args = ap.parse_args()
sigmas = [float(s) for s in args.sigma.split(",")]
print(f"# {date.today()} {platform.machine()} {platform.processor() or ''} seed={args.seed} weights={args.weights}")
print("| set | " + " | ".join(f"sigma {s:g}" for s in sigmas) + " |")
print("| --- |" + " --- |" * len(sigmas))
for d in args.dirs:
    scores = evaluate(d, sigmas, weights=args.weights, device="auto", seed=args.seed)
    means = [statistics.fmean(s.psnr for s in scores if s.sigma == sig) for sig in sigmas]
    print(f"| {d.name} | " + " | ".join(f"{m:.2f}" for m in means) + " |", flush=True)

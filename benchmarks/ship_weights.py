"""Copy a trained model file into weights/ with how it was made recorded inside it.

    python benchmarks/ship_weights.py runs/colorft/model.pt weights/color.pt --history history.json

The history (a JSON list of training phases: command, steps, hardware) goes into the
file's ``meta`` with the parameter count, so the shipped file describes itself.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from denoisecli.models import count_parameters
from denoisecli.weights import atomic_save, load_checkpoint, load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("dest", type=Path)
    ap.add_argument("--history", type=Path, required=True)
    args = ap.parse_args()
    ckpt = load_checkpoint(args.model)
    model, _ = load_model(args.model)
    history = json.loads(args.history.read_text())
    ckpt["meta"] = {**ckpt["meta"], "history": history, "parameters": count_parameters(model),
                    "steps": sum(int(p["steps"]) for p in history)}
    atomic_save(ckpt, args.dest)
    print(f"{args.dest}: {args.dest.stat().st_size / 1e6:.1f} MB, {ckpt['meta']['parameters']} parameters, "
          f"{ckpt['meta']['steps']} steps in {len(history)} phases")


if __name__ == "__main__":
    main()

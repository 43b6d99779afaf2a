"""Blend two model files of one architecture weight by weight: (1 - alpha) * A + alpha * B.

    python benchmarks/blend_weights.py runs/color21/model.pt runs/color21gB/model.pt --alpha 0.5 --out runs/blend/model.pt

Network interpolation (ESRGAN, Wang et al. 2018): between an L1 model (A) and an adversarial
fine-tune of it (B), alpha trades Gaussian PSNR for kept detail without training again. It only
makes sense for B fine-tuned from A (one basin): weights of separately trained models do not
average into a working model (weights/HISTORY.md, phases 5 and 9).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from denoisecli.errors import DenoiseError
from denoisecli.weights import atomic_save, load_model


def blend(a: dict, b: dict, alpha: float) -> dict:
    """A model payload whose floating-point weights are (1 - alpha) * a + alpha * b; a's config and meta, plus where it came from."""
    if a["config"] != b["config"] or a["state_dict"].keys() != b["state_dict"].keys():
        raise DenoiseError(f"cannot blend models of different configs: {a['config']} and {b['config']}")
    mixed = {k: torch.lerp(v, b["state_dict"][k].to(v.dtype), alpha) if v.is_floating_point() else v
             for k, v in a["state_dict"].items()}
    return {**a, "state_dict": mixed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--alpha", type=float, required=True, help="share of B, 0 to 1")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if not 0.0 <= args.alpha <= 1.0:
        raise SystemExit(f"--alpha must be in [0, 1], got {args.alpha}")
    (_, a), (_, b) = load_model(args.a), load_model(args.b)
    out = blend(a, b, args.alpha)
    out["meta"] = {**a.get("meta", {}), "blend": {"a": str(args.a), "b": str(args.b), "alpha": args.alpha,
                                                  "a_steps": a.get("meta", {}).get("steps"), "b_steps": b.get("meta", {}).get("steps")}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_save(out, args.out)
    print(f"{args.out}: {1 - args.alpha:g} x {args.a} + {args.alpha:g} x {args.b}")


if __name__ == "__main__":
    main()

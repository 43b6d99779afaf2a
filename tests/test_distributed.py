"""torchrun with two CPU processes (gloo) on tiny data: trains, only rank 0 writes, the model loads."""

import json
import os
import subprocess
import sys

import torch

from denoisecli.weights import load_checkpoint, load_model


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_run(clean_dir, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           "-m", "denoisecli", "train", str(clean_dir), "--out", str(out), "--steps", "4", "--batch", "4",
           "--patch", "24", "--width", "8", "--depth", "2", "--blocks", "1", "--device", "cpu", "--gan", "--gan-warmup", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("done: 4 steps") == 1
    model, ckpt = load_model(out / "model.pt")
    assert ckpt["meta"]["steps"] == 4
    assert load_checkpoint(out / "last.pt")["discriminator"]
    assert torch.isfinite(model(torch.rand(1, 3, 37, 31))).all()
    train_lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines() if '"train"' in l]
    assert [l["step"] for l in train_lines] == [4]
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "curves.png", "last.pt", "metrics.jsonl", "model.pt"]

import pytest
import torch

from denoisecli.errors import DenoiseError
from denoisecli.models import build_model
from denoisecli.weights import atomic_save, load_model, model_payload


def test_model_file_rebuilds_model_from_config_alone(tmp_path, tiny_model_file):
    model, ckpt = load_model(tiny_model_file)
    assert ckpt["config"]["arch"] == "unet"
    x = torch.rand(1, 3, 37, 31)
    again, _ = load_model(tiny_model_file)
    assert torch.equal(model(x), again(x))


def test_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    p = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, p)
    with pytest.raises(DenoiseError, match="refused"):
        load_model(p)


def test_truncated_and_missing_files(tmp_path, tiny_model_file):
    p = tmp_path / "cut.pt"
    p.write_bytes(tiny_model_file.read_bytes()[:500])
    with pytest.raises(DenoiseError, match="truncated or corrupt"):
        load_model(p)
    with pytest.raises(DenoiseError, match="not found"):
        load_model(tmp_path / "none.pt")


def test_weights_not_matching_config_are_refused(tmp_path):
    config = {"arch": "unet", "channels": 3, "width": 8, "depth": 2, "blocks": 1}
    payload = model_payload(build_model(config), config)
    payload["config"] = {**config, "width": 16}
    atomic_save(payload, tmp_path / "bad.pt")
    with pytest.raises(DenoiseError, match="do not match"):
        load_model(tmp_path / "bad.pt")


def test_atomic_save_keeps_old_file_when_save_fails(tmp_path, monkeypatch):
    target = tmp_path / "last.pt"
    atomic_save({"step": 1}, target)

    def boom(obj, f):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(DenoiseError, match="No space left"):
        atomic_save({"step": 2}, target)
    assert torch.load(target, weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def _benchmark_script(name: str):
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_blended_weights_interpolate_and_rebuild(tmp_path):
    """benchmarks/blend_weights.py (network interpolation): alpha 0 and 1 give back A and B, and the blend
    is a model file that loads and runs; models of different configs are refused."""
    blend = _benchmark_script("blend_weights").blend
    config = {"arch": "unet", "channels": 3, "width": 8, "depth": 2, "blocks": 1}
    torch.manual_seed(0)
    a, b = (model_payload(build_model(config), config, {"steps": s}) for s in (10, 20))
    assert all(torch.equal(blend(a, b, 0.0)["state_dict"][k], v) for k, v in a["state_dict"].items())
    assert all(torch.allclose(blend(a, b, 1.0)["state_dict"][k], v) for k, v in b["state_dict"].items())
    half = blend(a, b, 0.5)
    name = next(k for k, v in a["state_dict"].items() if v.is_floating_point() and not torch.equal(v, b["state_dict"][k]))
    assert torch.allclose(half["state_dict"][name], (a["state_dict"][name] + b["state_dict"][name]) / 2)
    atomic_save(half, tmp_path / "half.pt")
    model, _ = load_model(tmp_path / "half.pt")
    out = model(torch.rand(1, 3, 37, 31))
    assert out.shape == (1, 3, 37, 31) and torch.isfinite(out).all()
    other = {**config, "width": 16}
    with pytest.raises(DenoiseError, match="different configs"):
        blend(a, model_payload(build_model(other), other), 0.5)


def test_ensemble_subsets_narrow_the_ensemble_and_restore_it(clean_dir, tiny_model_file):
    """benchmarks/ensemble_subsets.py: its one-transform subset scores as a single pass, all 8 as
    `--ensemble`, a pair differs from both, and `--ensemble`'s 8 transforms are back afterwards."""
    from denoisecli import inference
    from denoisecli.evaluation import evaluate

    script = _benchmark_script("ensemble_subsets")
    scores = script.score_subsets(clean_dir, 25.0, tiny_model_file)
    assert list(scores) == list(script.SUBSETS)
    single, _ = evaluate(clean_dir, [25.0], weights=tiny_model_file, device="cpu")
    full, _ = evaluate(clean_dir, [25.0], weights=tiny_model_file, device="cpu", ensemble=True)
    assert scores["one pass"][0] == pytest.approx(single.mean("denoise", "sigma 25"), abs=1e-9)
    assert scores["all 8 (--ensemble)"][0] == pytest.approx(full.mean("denoise", "sigma 25"), abs=1e-9)
    pair = scores["identity + rotation by 180"][0]
    assert pair not in (scores["one pass"][0], scores["all 8 (--ensemble)"][0])
    assert len(inference.DIHEDRAL) == 8 and len(set(inference.DIHEDRAL)) == 8


def test_roofline_counts_the_networks_multiply_adds():
    """benchmarks/roofline.py: a convolution's and a transposed one's multiply-adds by hand, the shipped
    colour model's 69.4 k per pixel (the card's figure) from one pass at 592 px, and a timing."""
    from torch import nn

    from denoisecli.weights import shipped_weights

    script = _benchmark_script("roofline")
    net = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.Conv2d(5, 4, 2, stride=2), nn.ConvTranspose2d(4, 2, 2, stride=2))
    shapes = script.conv_inventory(net, torch.rand(1, 3, 8, 10))
    assert sorted(s.macs() * n for s, n in shapes.items()) == sorted([8 * 10 * 5 * 3 * 9, 4 * 5 * 4 * 5 * 4, 4 * 5 * 4 * 2 * 4])
    assert not any(h._forward_hooks for h in net)
    model, _ = load_model(shipped_weights(3))
    size = 37 * 16  # a multiple of the network's stride, so padding adds no pixels
    shapes = script.conv_inventory(model, torch.rand(1, 3, size, size), torch.tensor([0.1]))
    assert sum(s.macs() * n for s, n in shapes.items()) / size**2 == pytest.approx(69_400, abs=50)
    assert script.conv_seconds(next(iter(shapes)), repeats=1) > 0


def test_roofline_swaps_convolutions_for_nnpack_without_changing_the_output():
    """benchmarks/roofline.py --winograd: only the chosen 3x3 shapes are swapped (not the 2x2 one, not
    the head at another width), the output stays the network's to float rounding, and a shape NNPACK
    does not take is refused rather than timed."""
    from torch import nn

    if not torch.backends.nnpack.is_available():
        pytest.skip("this torch has no NNPACK")
    script = _benchmark_script("roofline")

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head, self.body = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
            self.down = nn.Conv2d(8, 8, 2, stride=2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.down(torch.relu(self.body(self.head(x))))

    net, x = Net().eval(), torch.rand(1, 3, 31, 37)
    with torch.inference_mode():
        expected = net(x)
    shapes = script.conv_inventory(net, x)
    body = next(s for s in shapes if s.in_ch == 8 and s.kernel == (3, 3))
    assert script.nnpack_seconds(body, repeats=1) > 0
    assert script.nnpack_seconds(next(s for s in shapes if s.kernel == (2, 2)), repeats=1) is None
    assert script.with_nnpack(net, x, {body}) == 1
    assert isinstance(net.body, script._NNPACKConv) and type(net.head) is nn.Conv2d and type(net.down) is nn.Conv2d
    with torch.inference_mode():
        torch.testing.assert_close(net(x), expected, atol=1e-5, rtol=1e-4)

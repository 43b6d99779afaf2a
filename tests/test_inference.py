import pytest
import torch
from torch import nn

from denoisecli import device
from denoisecli.device import (
    M_MMAP_THRESHOLD,
    M_TRIM_THRESHOLD,
    MMAP_THRESHOLD,
    TRIM_THRESHOLD,
    memory_format,
    place_model,
)
from denoisecli.errors import DenoiseError
from denoisecli.inference import DIHEDRAL, Denoiser, _windows, denoise_tensor, dihedral, value_range
from denoisecli.weights import load_model


class Pointwise(nn.Module):
    """A per-pixel model: tiled and whole outputs must agree exactly for it."""

    def forward(self, x):
        return x * 0.5 + 0.25


@pytest.mark.parametrize("tile,context,blend", [(32, 4, 4), (40, 8, 8), (64, 16, 5)])
def test_tiles_blend_to_the_whole_image_for_pointwise_model(tile, context, blend):
    x = torch.rand(1, 3, 101, 77)
    whole = denoise_tensor(Pointwise(), x)
    tiled = denoise_tensor(Pointwise(), x, tile=tile, context=context, blend=blend)
    assert torch.allclose(whole, tiled, atol=1e-6)


@pytest.mark.parametrize("size,tile", [((97, 83), 80), ((131, 67), 96)])
def test_tiled_unet_matches_whole_within_one_level(tiny_model_file, size, tile):
    model, _ = load_model(tiny_model_file)
    torch.manual_seed(0)
    x = torch.rand(1, 3, *size)
    whole = denoise_tensor(model, x)
    tiled = denoise_tensor(model, x, tile=tile, context=24, blend=8)
    assert (whole - tiled).abs().max() < 1 / 255


@pytest.mark.parametrize("size", [1025, 2048, 3000, 4000, 97, 301, 5000])
@pytest.mark.parametrize("tile,overlap,align", [(1024, 128, 16), (80, 56, 8), (64, 28, 16), (200, 45, 1)])
def test_windows_cover_the_image_on_the_stride_grid_with_little_waste(size, tile, overlap, align):
    windows = _windows(size, tile, overlap, align)
    starts = [s for s, _ in windows]
    ends = [s + n for s, n in windows]
    assert starts[0] == 0 and ends[-1] == size and starts == sorted(starts)
    assert all(s % align == 0 and 0 < n <= tile for s, n in windows)
    assert all(end - nxt >= overlap for end, nxt in zip(ends, starts[1:]))  # each seam can blend
    if size > tile:
        assert sum(n for _, n in windows) <= size + (len(windows) - 1) * (overlap + align)


def test_a_photo_goes_through_the_network_once_plus_the_seams():
    work = sum(n for _, n in _windows(4000, 1024, 128, 16)) * sum(n for _, n in _windows(3000, 1024, 128, 16))
    assert work < 1.35 * 4000 * 3000  # full-length windows pushed back to the end made it 1.75x


def test_tile_smaller_than_overlap_is_refused(tiny_model_file):
    model, _ = load_model(tiny_model_file)
    with pytest.raises(DenoiseError, match="too small"):
        denoise_tensor(model, torch.rand(1, 3, 300, 300), tile=64)


def test_grey_image_through_colour_model(tiny_model_file):
    d = Denoiser(tiny_model_file, device="cpu")
    y = d(torch.rand(1, 37, 31))
    assert y.shape == (1, 37, 31) and 0 <= y.min() and y.max() <= 1


def test_colour_image_through_grey_model_is_a_clear_error(tmp_path):
    from denoisecli.models import build_model
    from denoisecli.weights import atomic_save, model_payload

    config = {"arch": "unet", "channels": 1, "width": 8, "depth": 2, "blocks": 1}
    atomic_save(model_payload(build_model(config), config), tmp_path / "g.pt")
    with pytest.raises(DenoiseError, match="grey images, this image is colour"):
        Denoiser(tmp_path / "g.pt", device="cpu")(torch.rand(3, 8, 8), name="x.png")


def test_cuda_without_cuda_is_a_clear_error(monkeypatch, tiny_model_file):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DenoiseError, match="CUDA is not available"):
        Denoiser(tiny_model_file, device="cuda")


def test_auto_device_falls_back_to_cpu(monkeypatch, tiny_model_file):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert Denoiser(tiny_model_file, device="auto").device.type == "cpu"


def test_input_outside_unit_range_is_clamped_like_training_data(tiny_model_file):
    d = Denoiser(tiny_model_file, device="cpu")
    x = torch.rand(3, 40, 36) * 1.6 - 0.3
    assert torch.equal(d(x), d(x.clamp(0, 1)))


def test_the_eight_flips_and_rotations_are_distinct_and_invert():
    x = torch.rand(2, 3, 37, 31)
    seen = [dihedral(x, k, f) for k, f in DIHEDRAL]
    assert len({t.shape for t in seen}) == 2 and len(seen) == 8
    assert all(not torch.equal(a, b) for i, a in enumerate(seen) for b in seen[i + 1 :] if a.shape == b.shape)
    assert all(torch.equal(dihedral(t, k, f, inverse=True), x) for t, (k, f) in zip(seen, DIHEDRAL))


class PointwiseColour(Pointwise):
    channels = 3


def test_ensemble_maps_each_output_back_before_averaging(tiny_model_file):
    """A per-pixel model commutes with every flip and rotation, so its ensemble is itself."""
    d = Denoiser(tiny_model_file, device="cpu", ensemble=True)
    d._models[d.weights] = PointwiseColour()
    x = torch.rand(3, 37, 31)
    x[0, 0, :2] = torch.tensor([0.0, 1.0])  # fills the range, so it is not stretched (see value_range)
    assert torch.allclose(d(x), x * 0.5 + 0.25, atol=1e-6)


def test_an_image_filling_part_of_the_range_is_denoised_stretched_and_mapped_back(tiny_model_file):
    """Dim data (a microscope's 12-bit counts in a 16-bit file) goes through the model as if it
    filled the range, and comes back within its own range; a full-range or flat image is untouched."""
    d = Denoiser(tiny_model_file, device="cpu")
    full = torch.rand(3, 37, 31)
    full[0, 0, :2] = torch.tensor([0.0, 1.0])
    dim = full * (4095 / 65535) + 100 / 65535
    lo, span = value_range(dim)
    assert lo == pytest.approx(100 / 65535) and span == pytest.approx(4095 / 65535)
    out = d(dim)
    assert torch.allclose(out, d(full) * span + lo, atol=1e-6)
    assert lo - 1e-6 <= float(out.min()) and float(out.max()) <= lo + span + 1e-6
    assert value_range(full) == (0.0, 1.0) and value_range(torch.full((1, 9, 9), 0.3)) == (0.0, 1.0)
    assert torch.isfinite(d(torch.full((3, 9, 9), 0.3))).all()


def test_channels_last_layout_for_inference_gives_the_same_output(tiny_model_file):
    model, _ = load_model(tiny_model_file)
    x = torch.rand(2, 3, 37, 31)
    reference = denoise_tensor(model, x)
    placed = place_model(model, torch.device("cpu"))
    assert placed.head.weight.is_contiguous(memory_format=torch.channels_last)
    out = denoise_tensor(placed, x)
    assert out.shape == x.shape and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert (out - reference).abs().max() < 1e-5


def test_denoiser_places_its_model_channels_last(tiny_model_file):
    d = Denoiser(tiny_model_file, device="cpu")
    assert d.model_for(3).head.weight.is_contiguous(memory_format=torch.channels_last)


class FakeLibc:
    """Records mallopt calls, answering each with ``answer`` (glibc returns 1 when it takes)."""

    def __init__(self, answer=1):
        self.answer, self.calls = answer, []

    def mallopt(self, param, value):
        self.calls.append((param, value))
        return self.answer


def test_keep_freed_memory_raises_both_glibc_thresholds(monkeypatch):
    """The setting itself (uncached); whether the host then keeps the memory mapped is
    measured by benchmarks/freed_memory_faults.py."""
    libc = FakeLibc()
    monkeypatch.setattr(device.ctypes, "CDLL", lambda name: libc)
    assert device.keep_freed_memory.__wrapped__() is True
    assert libc.calls == [(M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD)]
    assert MMAP_THRESHOLD >= 64 << 20  # a 32-channel activation of 1024x512 must come from the heap
    assert TRIM_THRESHOLD >= MMAP_THRESHOLD  # freeing one such block must not hand it back


def test_keep_freed_memory_says_false_where_there_is_no_glibc(monkeypatch):
    monkeypatch.setattr(device.ctypes, "CDLL", lambda name: object())  # no mallopt: macOS, Windows
    assert device.keep_freed_memory.__wrapped__() is False
    monkeypatch.setattr(device.ctypes, "CDLL", lambda name: FakeLibc(answer=0))  # a refusal
    assert device.keep_freed_memory.__wrapped__() is False


@pytest.mark.parametrize("training,asked", [(False, True), (True, False)])
def test_only_cpu_inference_asks_to_keep_freed_memory(monkeypatch, training, asked):
    calls = []
    monkeypatch.setattr(device, "keep_freed_memory", lambda: calls.append(1) or True)
    place_model(nn.Conv2d(1, 1, 3), torch.device("cpu"), training=training)
    assert bool(calls) is asked


def test_training_on_a_cpu_keeps_the_default_layout():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert memory_format(cpu, training=True) == torch.contiguous_format
    assert memory_format(cpu) == memory_format(cuda) == memory_format(cuda, training=True) == torch.channels_last


def test_a_stacks_levels_read_as_one_value_where_they_agree():
    """`-v` gave a stack whose planes read alike as "sigma 0.4-0.4"."""
    from denoisecli.inference import Level, RunOptions, _detail

    same = [Level(0.41 / 255, 0.0), Level(0.38 / 255, 0.0)]
    assert _detail(same, RunOptions(), False, False, 2, []) == "2 planes, sigma 0.4, estimated"
    spread = [Level(0.4 / 255, 0.0), Level(2.0 / 255, 0.0)]
    assert _detail(spread, RunOptions(), False, False, 2, []) == "2 planes, sigma 0.4-2.0, estimated"

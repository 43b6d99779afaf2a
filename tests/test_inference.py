import subprocess
import sys

import pytest
import torch
from torch import nn

from denoisecli.device import memory_format, place_model
from denoisecli.errors import DenoiseError
from denoisecli.inference import DIHEDRAL, Denoiser, _windows, denoise_tensor, dihedral
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
    assert torch.allclose(d(x), x * 0.5 + 0.25, atol=1e-6)


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


FAULTS_PER_LARGE_TENSOR = """
import resource, torch
from denoisecli.device import keep_freed_memory, place_model

# One thread: with two, an intra-op worker sometimes holds glibc's main arena while the main thread
# allocates, which then lands in another arena whose freed heap goes back to the kernel (2 of 4
# blocks faulted again in 4 of 30 runs on the 2-core VM, 0 of 30 with one thread).
torch.set_num_threads(1)

def faults():
    torch.ones(12 << 20)  # 48 MB, over glibc's largest default mmap threshold (32 MB)
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(4):
        torch.ones(12 << 20)  # freed at once
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start

before = faults()
place_model(torch.nn.Conv2d(1, 1, 3), torch.device("cpu"))
faults()  # the heap grows to hold the block once
print(before, faults(), keep_freed_memory())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
def test_cpu_inference_reuses_freed_memory_instead_of_faulting_it_in_again():
    out = subprocess.run([sys.executable, "-c", FAULTS_PER_LARGE_TENSOR], capture_output=True, text=True, check=True)
    before, after, took = out.stdout.split()
    if took != "True":
        pytest.skip("not glibc: mallopt is not available")
    assert int(before) >= 4 * 24  # each fresh 48 MB block faults every page in: 12,288 of 4 KiB, 24 if huge
    assert int(after) < int(before) / 10


def test_training_on_a_cpu_keeps_the_default_layout():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert memory_format(cpu, training=True) == torch.contiguous_format
    assert memory_format(cpu) == memory_format(cuda) == memory_format(cuda, training=True) == torch.channels_last

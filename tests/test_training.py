import json

import pytest
import torch

from denoisecli.data import PatchSampler, load_training_images
from denoisecli.errors import DenoiseError
from denoisecli.training import TrainOptions, train
from denoisecli.weights import load_checkpoint, load_model

from conftest import TINY_MODEL


def opts(clean_dir, out, **kw):
    base = dict(data=str(clean_dir), out=str(out), steps=6, batch=3, patch=24, model=TINY_MODEL, device="cpu", save_every=100)
    return TrainOptions(**{**base, **kw})


def test_patches_are_reproducible_augmented_and_sized(clean_dir):
    images = load_training_images(clean_dir)
    assert all(im.shape[0] == 3 and im.dtype == torch.uint8 for im in images)
    sampler = PatchSampler(images, patch=24, seed=1)
    a, b = sampler.batch(5, 4), sampler.batch(5, 4)
    assert a.shape == (4, 3, 24, 24) and torch.equal(a, b)
    assert not torch.equal(a, sampler.batch(6, 4))
    assert 0 <= a.min() and a.max() <= 1


def test_l1_training_writes_checkpoint_and_model(clean_dir, tmp_path):
    out = tmp_path / "run"
    result = train(opts(clean_dir, out))
    assert result.step == 6 and not result.interrupted
    model, ckpt = load_model(out / "model.pt")
    assert ckpt["config"]["channels"] == 3 and ckpt["meta"]["steps"] == 6
    last = load_checkpoint(out / "last.pt")
    assert last["step"] == 6 and last["opt_g"]["state"]
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert lines and all(torch.isfinite(torch.tensor(l["loss"])) for l in lines)


def test_gan_training_has_finite_losses_and_changes_the_output(clean_dir, tmp_path):
    seen = []
    train(opts(clean_dir, tmp_path / "gan", steps=8, gan=True, gan_warmup=2, gan_weight=0.1), progress=seen.append)
    adv = [s for s in seen if "d_loss" in s]
    assert len(adv) == 6
    assert all(torch.isfinite(torch.tensor([s["d_loss"], s["adv"], s["loss"]])).all() for s in adv)
    ckpt = load_checkpoint(tmp_path / "gan" / "last.pt")
    assert ckpt["discriminator"] and ckpt["opt_d"]["state"]
    model, _ = load_model(tmp_path / "gan" / "model.pt")
    x = torch.rand(1, 3, 37, 31)
    assert not torch.equal(model(x), x)


def test_interrupt_saves_and_resume_matches_uninterrupted_run(clean_dir, tmp_path):
    train(opts(clean_dir, tmp_path / "straight", gan=True, gan_warmup=2))

    def stop_at_3(stats):
        if stats["step"] == 3:
            raise KeyboardInterrupt

    result = train(opts(clean_dir, tmp_path / "split", gan=True, gan_warmup=2), progress=stop_at_3)
    assert result.interrupted and result.step == 3
    assert load_checkpoint(tmp_path / "split" / "last.pt")["step"] == 3
    resumed = train(opts(clean_dir, tmp_path / "split", device="cpu"), resume=True)
    assert resumed.step == 6
    a = load_checkpoint(tmp_path / "straight" / "model.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "split" / "model.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_existing_run_is_not_overwritten(clean_dir, tmp_path):
    train(opts(clean_dir, tmp_path / "run", steps=1))
    with pytest.raises(DenoiseError, match="--resume"):
        train(opts(clean_dir, tmp_path / "run", steps=1))


def test_empty_and_too_small_data_are_clear_errors(tmp_path, clean_dir):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DenoiseError, match="no images found"):
        train(opts(tmp_path / "empty", tmp_path / "r1"))
    with pytest.raises(DenoiseError, match="smaller than"):
        train(opts(clean_dir, tmp_path / "r2", patch=64))


def test_grey_data_trains_a_grey_model(tmp_path):
    from conftest import save, smooth_image

    for i in range(2):
        save(tmp_path / "g" / f"{i}.png", smooth_image(33, 35, channels=1, seed=i))
    train(opts(tmp_path / "g", tmp_path / "run", steps=2))
    _, ckpt = load_model(tmp_path / "run" / "model.pt")
    assert ckpt["config"]["channels"] == 1


def test_epochs_count_steps_from_pixels(clean_dir, tmp_path):
    result = train(opts(clean_dir, tmp_path / "run", steps=None, epochs=1))
    pixels = 37 * 31 + 48 * 53 + 41 * 45 + 40 * 40 + 33 * 39
    assert result.total == round(pixels / (24 * 24 * 3))

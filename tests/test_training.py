import json

import pytest
import torch

from denoisecli.data import PatchSampler, load_training_set
from denoisecli.errors import DenoiseError
from denoisecli.training import TrainOptions, train
from denoisecli.weights import load_checkpoint, load_model

from conftest import TINY_MODEL


def opts(clean_dir, out, **kw):
    base = dict(data=str(clean_dir), out=str(out), steps=6, batch=3, patch=24, model=TINY_MODEL, device="cpu", save_every=100)
    return TrainOptions(**{**base, **kw})


def test_patches_are_reproducible_augmented_and_sized(clean_dir):
    images = load_training_set(opts(clean_dir, clean_dir / "unused"), hold_out=False).clean
    assert all(im.shape[0] == 3 and im.dtype == torch.uint8 for im in images)
    sampler = PatchSampler(images, patch=24, seed=1)
    (a, none), (b, _) = sampler.batch(5, 4), sampler.batch(5, 4)
    assert none is None
    assert a.shape == (4, 3, 24, 24) and torch.equal(a, b)
    assert not torch.equal(a, sampler.batch(6, 4)[0])
    assert 0 <= a.min() and a.max() <= 1
    halves = [sampler.batch(5, 4, shard=(r, 2))[0] for r in range(2)]
    assert torch.equal(torch.cat(halves), a)


def test_l1_training_writes_checkpoint_and_model(clean_dir, tmp_path):
    out = tmp_path / "run"
    result = train(opts(clean_dir, out))
    assert result.step == 6 and not result.interrupted
    model, ckpt = load_model(out / "model.pt")
    assert ckpt["config"]["channels"] == 3 and ckpt["meta"]["steps"] == 6
    last = load_checkpoint(out / "last.pt")
    assert last["step"] == 6 and last["opt_g"]["state"]
    start, *lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert start["event"] == "start" and all(l["event"] == "train" for l in lines)
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


def test_noiser_marks_the_white_noise_samples_of_a_mix():
    from denoisecli.noise import NoiseSampler
    from denoisecli.training import _Noiser

    sampler = NoiseSampler("gaussian", {"std": (0.05, 0.2)}, mix={"camera": 0.5})
    clean = torch.rand(32, 3, 37, 31)
    noisy, level, white = _Noiser(sampler, seed=3, rank=0, level="estimate")(0, clean)
    assert white.dtype == torch.bool and 4 < int(white.sum()) < 28
    _, raw, _ = _Noiser(sampler, seed=3, rank=0)(0, clean)
    assert torch.equal(white, ~raw.isnan()), "white: exactly the samples that have a sigma"
    assert torch.isfinite(level).all()


def test_adversarial_samples_skip_white_noise_only_when_asked():
    from denoisecli.training import _adversarial_samples

    white = torch.tensor([True, False, True, False, False])
    assert _adversarial_samples(white, 5, skip_white=False) == [0, 1, 2, 3, 4]
    assert _adversarial_samples(white, 5, skip_white=True) == [1, 3, 4]
    assert _adversarial_samples(None, 3, skip_white=True) == [0, 1, 2], "real pairs: all judged"
    assert _adversarial_samples(torch.ones(4, dtype=torch.bool), 4, skip_white=True) == []


def test_gan_skip_white_judges_only_the_mixed_noise(clean_dir, tmp_path, monkeypatch):
    from denoisecli.models.patchgan import PatchDiscriminator

    sizes = []
    forward = PatchDiscriminator.forward
    monkeypatch.setattr(PatchDiscriminator, "forward", lambda self, x: sizes.append(len(x)) or forward(self, x))
    seen = []
    run = opts(clean_dir, tmp_path / "skip", steps=8, batch=6, gan=True, gan_warmup=0, gan_weight=0.1,
               gan_skip_white=True, mix={"camera": 0.5})
    train(run, progress=seen.append)
    judged = [s for s in seen if "adv" in s]
    assert judged and all(torch.isfinite(torch.tensor([s["d_loss"], s["adv"]])).all() for s in judged)
    # per judged step: the discriminator's real+fake batch (2n), then the generator's (n), n < 6
    pairs = list(zip(sizes[::2], sizes[1::2]))
    assert len(pairs) == len(judged) and all(d == 2 * g and 0 < g < 6 for d, g in pairs)
    sizes.clear()
    train(opts(clean_dir, tmp_path / "all", steps=3, batch=6, gan=True, gan_warmup=0, mix={"camera": 0.5}))
    assert sizes == [12, 6] * 3, "without the option every sample is judged"


@pytest.mark.parametrize("kw,message", [
    (dict(gan_skip_white=True), "needs --gan"),
    (dict(gan=True, gan_skip_white=True), "none would be judged"),
    (dict(gan=True, gan_skip_white=True, mix={"gaussian": 0.5}), "none would be judged"),
    (dict(gan=True, gan_skip_white=True, noise="camera", mix={"gaussian": 1.0}), "none would be judged"),
])
def test_gan_skip_white_refuses_what_it_cannot_do(clean_dir, tmp_path, kw, message):
    with pytest.raises(DenoiseError, match=message):
        train(opts(clean_dir, tmp_path / "bad", **kw))


def test_all_white_counts_only_noises_that_take_a_share():
    from denoisecli.training import _all_white
    assert _all_white("gaussian", None) and _all_white("gaussian", {"gaussian": 0.3, "camera": 0.0})
    assert not _all_white("gaussian", {"camera": 0.3})
    assert not _all_white("camera", {"gaussian": 0.5}), "camera keeps half the patches"
    assert _all_white("camera", {"gaussian": 1.0}), "the mix leaves camera nothing"
    assert not _all_white("jpeg", None)


def test_gan_skip_white_is_refused_under_torchrun(clean_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(DenoiseError, match="not under torchrun"):
        train(opts(clean_dir, tmp_path / "ddp", gan=True, gan_skip_white=True, mix={"camera": 0.5}))
    assert not (tmp_path / "ddp").exists()


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


def test_resume_after_a_crash_logs_each_step_once(clean_dir, tmp_path):
    def steps_and_losses(out):
        lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
        return [(l["event"], l["step"], round(l.get("loss", 0.0), 6)) for l in lines if l["event"] != "start"]

    train(opts(clean_dir, tmp_path / "straight", save_every=2, log_every=1))

    def crash_at_5(stats):
        if stats["step"] == 5:
            raise RuntimeError("power cut")

    with pytest.raises(RuntimeError):
        train(opts(clean_dir, tmp_path / "crashed", save_every=2, log_every=1), progress=crash_at_5)
    assert load_checkpoint(tmp_path / "crashed" / "last.pt")["step"] == 4
    assert [s for _, s, _ in steps_and_losses(tmp_path / "crashed")] == [1, 2, 3, 4, 5]
    train(opts(clean_dir, tmp_path / "crashed", save_every=2, log_every=1), resume=True)
    assert steps_and_losses(tmp_path / "crashed") == steps_and_losses(tmp_path / "straight")


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


def test_validation_keeps_best_and_writes_metrics_and_curves(clean_dir, tmp_path):
    from PIL import Image

    result = train(opts(clean_dir, tmp_path / "run", steps=4, val=str(clean_dir), val_every=2))
    out = tmp_path / "run"
    records = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    vals = [r for r in records if r["event"] == "val"]
    assert [v["step"] for v in vals] == [2, 4]
    assert {"val_psnr", "val_ssim", "val_psnr_s15", "val_psnr_s25", "val_psnr_s50"} <= set(vals[0])
    assert result.best_psnr == max(v["val_psnr"] for v in vals)
    assert load_checkpoint(out / "best.pt")["meta"]["best_val_psnr"] == result.best_psnr
    assert Image.open(out / "curves.png").size[0] > 400
    config = json.loads((out / "config.json").read_text())
    assert config["steps"] == 4 and config["val_every"] == 2 and config["noise"] == "gaussian"


def test_validation_also_scores_mixed_in_noise(clean_dir, tmp_path):
    """Camera noise mixed into training is validated too, at the middle of its range; it does not
    enter val_psnr, which picks best.pt from the main noise alone."""
    result = train(opts(clean_dir, tmp_path / "run", steps=2, val=str(clean_dir), val_every=2,
                        model={**TINY_MODEL, "noise_map": True}, mix={"camera": 0.5}))
    records = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    (val,) = [r for r in records if r["event"] == "val"]
    assert 5 < val["val_psnr_camera"] < 60 and 0 < val["val_ssim_camera"] <= 1
    gaussian = [val[f"val_psnr_s{s}"] for s in (15, 25, 50)]
    assert val["val_psnr"] == pytest.approx(sum(gaussian) / 3)
    assert result.best_psnr == val["val_psnr"]


def test_held_out_images_are_never_trained_on(tmp_path):
    from denoisecli.data import load_training_set

    from conftest import save, smooth_image

    for i in range(12):
        save(tmp_path / "d" / f"{i:02d}.png", smooth_image(30, 30, seed=i))
    tset = load_training_set(opts(tmp_path / "d", tmp_path / "r"), hold_out=True)
    assert len(tset.val) == 1 and len(tset.clean) == 11
    held = (tset.val[0][0] * 255).round().to(torch.uint8)
    assert not any(torch.equal(held, im) for im in tset.clean)


def test_resume_refuses_another_architecture(clean_dir, tmp_path):
    train(opts(clean_dir, tmp_path / "run", steps=2))
    with pytest.raises(DenoiseError, match="another architecture"):
        train(opts(clean_dir, tmp_path / "run", model={"width": 16}), resume=True)
    with pytest.raises(DenoiseError, match="nothing to resume"):
        train(opts(clean_dir, tmp_path / "none"), resume=True)


def test_learning_rate_warms_up_then_decays():
    from denoisecli.training import _lr_factor

    f = [_lr_factor(s, 100, 10, 0.01) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:])) and f[-1] < 0.02


@pytest.mark.parametrize("kind", ["gaussian-shared", "poisson", "poisson-gaussian", "salt-pepper", "speckle", "jpeg"])
def test_other_noise_models_train(clean_dir, tmp_path, kind):
    result = train(opts(clean_dir, tmp_path / kind, steps=2, noise=kind))
    assert result.step == 2
    _, ckpt = load_model(tmp_path / kind / "model.pt")
    assert ckpt["meta"]["noise"] == kind


def test_real_pairs_train_and_mismatches_are_refused(clean_dir, tmp_path):
    from denoisecli.addnoise import add_noise

    add_noise(clean_dir, tmp_path / "noisy", levels={"std": (0.1, 0.1)})
    result = train(opts(clean_dir, tmp_path / "run", steps=3, noisy=str(tmp_path / "noisy")))
    assert result.step == 3
    (tmp_path / "noisy" / "a.png").unlink()
    with pytest.raises(DenoiseError, match="no noisy image for a.png"):
        train(opts(clean_dir, tmp_path / "run2", noisy=str(tmp_path / "noisy")))
    from conftest import save, smooth_image

    save(tmp_path / "noisy" / "a.png", smooth_image(20, 20))
    with pytest.raises(DenoiseError, match="does not match"):
        train(opts(clean_dir, tmp_path / "run3", noisy=str(tmp_path / "noisy")))


def test_pair_patches_are_cut_at_the_same_place():
    clean = [torch.arange(3 * 40 * 50, dtype=torch.int64).reshape(3, 40, 50).remainder(251).to(torch.uint8)]
    sampler = PatchSampler(clean, patch=16, seed=0, noisy=[clean[0].clone()])
    c, n = sampler.batch(0, 6)
    assert torch.equal(c, n)


def test_downscaled_patches_average_twice_the_area():
    """A pixel checkerboard averages to flat grey over any 2x2 block, so a downscaled patch is flat."""
    board = ((torch.arange(60)[:, None] + torch.arange(70)[None, :]) % 2 * 255).to(torch.uint8).expand(3, 60, 70)
    plain = PatchSampler([board], patch=16, seed=0)
    assert torch.equal(plain.batch(0, 8)[0], PatchSampler([board], patch=16, seed=0, downscale=0.0).batch(0, 8)[0])
    flat = PatchSampler([board], patch=16, seed=0, downscale=1.0).batch(0, 8)[0]
    assert flat.shape == (8, 3, 16, 16) and torch.all(flat == 128 / 255)
    half = PatchSampler([board], patch=16, seed=0, downscale=0.5).batch(0, 200)[0]
    downscaled = (half == 128 / 255).flatten(1).all(1).float().mean()
    assert 0.35 < downscaled < 0.65
    assert torch.equal(half, PatchSampler([board], patch=16, seed=0, downscale=0.5).batch(0, 200)[0])
    small = PatchSampler([board[:, :20, :20]], patch=16, seed=0, downscale=1.0).batch(0, 4)[0]
    assert small.shape == (4, 3, 16, 16) and not torch.all(small == 128 / 255), "too small to downscale: cut as is"
    with pytest.raises(DenoiseError, match="--noisy"):
        PatchSampler([board], patch=16, noisy=[board], downscale=0.5)


def test_independent_channel_patches_take_each_channel_from_its_own_patch():
    """Grey content as RGB has equal channels; a patch of independent channels does not, and its
    channel c is channel c of the c-th patch drawn for it."""
    grey = torch.randint(0, 256, (1, 50, 60), generator=torch.Generator().manual_seed(3), dtype=torch.uint8).expand(3, 50, 60)
    same = PatchSampler([grey], patch=16, seed=0).batch(0, 8)[0]
    assert torch.equal(same, PatchSampler([grey], patch=16, seed=0, independent=0.0).batch(0, 8)[0])
    assert torch.equal(same[:, 0], same[:, 1]) and torch.equal(same[:, 1], same[:, 2])
    split = PatchSampler([grey], patch=16, seed=0, independent=1.0)
    patches = split.batch(0, 8)[0]
    assert patches.shape == (8, 3, 16, 16) and patches.dtype == torch.float32
    for i, p in enumerate(patches):
        assert not torch.equal(p[0], p[1]) and not torch.equal(p[1], p[2])
        for c in range(3):
            assert torch.equal(p[c], split._cut(f"{i}/c{c}")[0][c].float() / 255)
    half = PatchSampler([grey], patch=16, seed=0, independent=0.5).batch(0, 200)[0]
    mixed = (half[:, 0] != half[:, 1]).flatten(1).any(1).float().mean()
    assert 0.35 < mixed < 0.65
    assert torch.equal(half, PatchSampler([grey], patch=16, seed=0, independent=0.5).batch(0, 200)[0])
    with pytest.raises(DenoiseError, match="--noisy"):
        PatchSampler([grey], patch=16, noisy=[grey], independent=0.5)
    with pytest.raises(DenoiseError, match="grey"):
        PatchSampler([grey[:1]], patch=16, independent=0.5)


def test_failed_checkpoint_write_keeps_the_previous_one(clean_dir, tmp_path, monkeypatch):
    import denoisecli.weights as w

    train(opts(clean_dir, tmp_path / "run", steps=2))
    before = (tmp_path / "run" / "last.pt").read_bytes()

    def full_disk(obj, f):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(w.torch, "save", full_disk)
    with pytest.raises(DenoiseError, match="No space left"):
        train(opts(clean_dir, tmp_path / "run", steps=4), resume=True)
    assert (tmp_path / "run" / "last.pt").read_bytes() == before


@pytest.mark.parametrize("extra", [{}, {"model": {**TINY_MODEL, "noise_map": True}, "mix": {"camera": 0.5}},
                                   {"model": {**TINY_MODEL, "noise_map": True}, "overset": 0.5}])
def test_worker_processes_give_the_same_run(clean_dir, tmp_path, extra):
    """Patches, noise (JPEG included) and levels made in loader processes are those made in-process."""
    train(opts(clean_dir, tmp_path / "w0", steps=3, workers=0, **extra))
    train(opts(clean_dir, tmp_path / "w2", steps=3, workers=2, **extra))
    a = load_checkpoint(tmp_path / "w0" / "model.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "w2" / "model.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_init_starts_from_a_model_and_may_change_what_its_level_means(clean_dir, tmp_path):
    """Fine-tuning an older "clamped"-level model into an "estimate" one is allowed; another shape is not."""
    from denoisecli.models import build_model
    from denoisecli.weights import atomic_save, model_payload

    config = {"arch": "unet", "channels": 3, **TINY_MODEL, "noise_map": True, "level": "clamped"}
    torch.manual_seed(1)
    start = build_model(config)
    torch.nn.init.normal_(start.tail.weight, std=0.1)
    atomic_save(model_payload(start, config), tmp_path / "start.pt")
    model_opts = {**TINY_MODEL, "noise_map": True}
    train(opts(clean_dir, tmp_path / "ft", init=str(tmp_path / "start.pt"), model=model_opts, lr=0.0, steps=2))
    tuned, ckpt = load_model(tmp_path / "ft" / "model.pt")
    assert ckpt["config"]["level"] == "estimate" and tuned.level == "estimate"
    assert all(torch.equal(a, b) for a, b in zip(start.state_dict().values(), tuned.state_dict().values()))
    for other in ({"width": 16}, {"depth": 3}):
        with pytest.raises(DenoiseError, match="differs from this run"):
            train(opts(clean_dir, tmp_path / "bad", init=str(tmp_path / "start.pt"), model={**model_opts, **other}))


def test_init_from_a_wider_model_starts_from_its_strongest_channels(clean_dir, tmp_path):
    """A narrower --width is a faster network that starts from what the wider one learned."""
    from denoisecli.models import build_model
    from denoisecli.models.unet import narrowed
    from denoisecli.weights import atomic_save, model_payload

    config = {"arch": "unet", "channels": 3, **TINY_MODEL, "noise_map": True}
    torch.manual_seed(2)
    start = build_model(config)
    for p in start.parameters():
        torch.nn.init.normal_(p, std=0.1)
    atomic_save(model_payload(start, config), tmp_path / "wide.pt")
    train(opts(clean_dir, tmp_path / "narrow", init=str(tmp_path / "wide.pt"), model={**TINY_MODEL, "noise_map": True, "width": 4}, lr=0.0, steps=2))
    tuned, ckpt = load_model(tmp_path / "narrow" / "model.pt")
    assert ckpt["config"]["width"] == 4
    expected = narrowed(start, 4).state_dict()
    assert all(torch.equal(expected[k], v) for k, v in tuned.state_dict().items())


def test_mixed_precision_only_on_cuda_and_only_when_asked():
    from denoisecli.training import _amp

    assert _amp(torch.device("cpu")) == (None, None)
    assert _amp(torch.device("cuda"), enabled=False) == (None, None), "--no-amp trains in float32"


def test_overset_samples_get_a_higher_level_and_their_own_noisier_copy():
    """A picked sample's level lies between its sigma and the top of the range, its copy carries noise of that level."""
    from denoisecli.noise import NoiseSampler
    from denoisecli.training import _Noiser

    sampler = NoiseSampler("gaussian", {"std": (0.0, 0.3)})
    clean = torch.full((64, 1, 37, 31), 0.5)
    noisy, sigma, white, over, again = _Noiser(sampler, seed=2, rank=0, overset=0.5)(7, clean)
    picked = ~torch.isnan(over)
    assert 16 < int(picked.sum()) < 48
    assert (over[picked] >= sigma[picked]).all() and (over[picked] <= 0.3 + 1e-9).all()
    measured = (again[picked] - clean[picked]).flatten(1).std(1).double()
    assert torch.allclose(measured, over[picked], rtol=0.15, atol=0.01), (measured, over[picked])
    assert (again[~picked] == 0).all()
    same = _Noiser(sampler, seed=2, rank=0, overset=0.5)(7, clean)
    assert white.all(), "white Gaussian noise alone: every sample has a sigma"
    assert all(torch.equal(a, b) for a, b in zip((noisy, sigma, again), (same[0], same[1], same[4])))
    assert torch.equal(over.isnan(), same[3].isnan()) and torch.equal(over[picked], same[3][picked])
    assert len(_Noiser(sampler, seed=2, rank=0)(7, clean)) == 3, "without --overset: noisy, level, white"


def test_overset_picks_only_samples_whose_noise_has_a_sigma():
    """With camera noise mixed in, only white-noise samples are over-set: camera noise has no level to raise."""
    from denoisecli.noise import NoiseSampler
    from denoisecli.training import _Noiser

    sampler = NoiseSampler("gaussian", {"std": (0.0, 0.25)}, mix={"camera": 0.5})
    clean = torch.full((48, 3, 37, 31), 0.5)
    noisy, sigma, white, over, again = _Noiser(sampler, seed=5, rank=0, overset=1.0)(3, clean)
    picked = ~torch.isnan(over)
    assert 8 < int((~white).sum()) < 40, "both noises present"
    assert torch.equal(picked, white), "every white sample is picked at --overset 1, no camera sample is"
    assert (again[~white] == 0).all() and torch.isfinite(noisy).all()


def test_overset_targets_are_the_models_own_output_at_the_raised_level():
    from denoisecli.models import build_model
    from denoisecli.training import _overset_targets

    torch.manual_seed(3)
    gen = build_model({"arch": "unet", "channels": 1, **TINY_MODEL, "noise_map": True})
    for p in gen.parameters():
        torch.nn.init.normal_(p, std=0.1)
    clean, again = torch.rand(4, 1, 37, 31), torch.rand(4, 1, 37, 31)
    level = torch.tensor([0.1, 0.2, 0.05, 0.0])
    over = torch.tensor([float("nan"), 0.25, float("nan"), 0.3], dtype=torch.float64)
    new_level, target = _overset_targets(gen, level, clean, over, again)
    assert torch.equal(new_level, torch.tensor([0.1, 0.25, 0.05, 0.3]))
    assert torch.equal(target[[0, 2]], clean[[0, 2]])
    with torch.no_grad():
        expected = gen(again[[1, 3]], torch.tensor([0.25, 0.3]))
    assert torch.allclose(target[[1, 3]], expected) and not target.requires_grad
    assert torch.isfinite(target).all()


def test_overset_training_runs_and_is_refused_where_it_has_no_meaning(clean_dir, tmp_path):
    model = {**TINY_MODEL, "noise_map": True}
    result = train(opts(clean_dir, tmp_path / "o", model=model, overset=0.5, steps=4))
    assert result.step == 4
    _, ckpt = load_model(tmp_path / "o" / "model.pt")
    assert ckpt["meta"]["overset"] == 0.5
    lines = [json.loads(l) for l in (tmp_path / "o" / "metrics.jsonl").read_text().splitlines() if '"train"' in l]
    assert lines and all(torch.isfinite(torch.tensor(l["loss"])) for l in lines)
    mixed = train(opts(clean_dir, tmp_path / "m", model=model, overset=0.5, mix={"camera": 0.5}, steps=2))
    assert mixed.step == 2, "camera patches mixed in keep their own level; the white ones can be over-set"
    with pytest.raises(DenoiseError, match="--overset needs white Gaussian noise"):
        train(opts(clean_dir, tmp_path / "c", model=model, overset=0.5, noise="camera", levels=None))
    with pytest.raises(DenoiseError, match="--overset needs a model with a noise-level input"):
        train(opts(clean_dir, tmp_path / "b", overset=0.5))
    assert not (tmp_path / "b").exists(), "a refused run writes nothing (it used to leave config.json and an empty log)"
    with pytest.raises(DenoiseError, match="--overset 1.5"):
        train(opts(clean_dir, tmp_path / "r", model=model, overset=1.5))


def test_edge_l1_charges_lost_detail_not_offsets_and_passes_gradients():
    from denoisecli.training import edge_l1

    sharp = torch.rand(2, 3, 37, 31)
    assert float(edge_l1(sharp, sharp)) == 0.0
    assert float(edge_l1(sharp + 0.1, sharp)) == pytest.approx(0.0, abs=1e-6)
    blurred = torch.nn.functional.avg_pool2d(sharp, 3, 1, 1, count_include_pad=False).requires_grad_()
    loss = edge_l1(blurred, sharp)
    loss.backward()
    assert loss.item() > 0.1 and torch.isfinite(blurred.grad).all() and blurred.grad.abs().sum() > 0


def test_edge_weight_adds_the_edge_term_to_the_loss(clean_dir, tmp_path):
    seen = []
    train(opts(clean_dir, tmp_path / "edge", edge_weight=0.5), progress=seen.append)
    steps = [s for s in seen if "edge" in s]
    assert len(steps) == 6
    assert all(s["loss"] == pytest.approx(s["l1"] + 0.5 * s["edge"], rel=1e-5) for s in steps)
    with pytest.raises(DenoiseError, match="edge-weight"):
        train(opts(clean_dir, tmp_path / "bad", edge_weight=-1.0))


def test_ema_saves_the_average_of_the_start_and_the_trained_weights(clean_dir, tmp_path):
    """One step at decay 0.25: model.pt is 0.25 x the starting weights + 0.75 x the trained ones;
    last.pt keeps the raw weights that training continues from."""
    from denoisecli.models import build_model
    from denoisecli.weights import atomic_save, model_payload

    config = {"arch": "unet", "channels": 3, **TINY_MODEL}
    torch.manual_seed(2)
    start = build_model(config)
    atomic_save(model_payload(start, config), tmp_path / "start.pt")
    train(opts(clean_dir, tmp_path / "ema", init=str(tmp_path / "start.pt"), steps=1, lr=1e-2, warmup=0, ema=0.25))
    saved = load_checkpoint(tmp_path / "ema" / "model.pt")
    raw = load_checkpoint(tmp_path / "ema" / "last.pt")["generator"]["state_dict"]
    assert saved["meta"]["ema"] == 0.25
    begin = start.state_dict()
    moved = [k for k in begin if begin[k].is_floating_point() and not torch.equal(begin[k], raw[k])]
    assert moved, "the step changed the weights"
    for k in begin:
        assert torch.allclose(saved["state_dict"][k], 0.25 * begin[k] + 0.75 * raw[k], atol=1e-6), k
    model, _ = load_model(tmp_path / "ema" / "model.pt")
    out = model(torch.rand(1, 3, 37, 31))
    assert out.shape == (1, 3, 37, 31) and torch.isfinite(out).all()


def test_ema_resumes_exactly_and_bad_decays_are_refused(clean_dir, tmp_path):
    train(opts(clean_dir, tmp_path / "straight", ema=0.5))

    def stop_at_3(stats):
        if stats["step"] == 3:
            raise KeyboardInterrupt

    train(opts(clean_dir, tmp_path / "split", ema=0.5), progress=stop_at_3)
    train(opts(clean_dir, tmp_path / "split"), resume=True)
    a = load_checkpoint(tmp_path / "straight" / "model.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "split" / "model.pt")["state_dict"]
    raw = load_checkpoint(tmp_path / "split" / "last.pt")["generator"]["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], raw[k]) for k in a), "model.pt holds the average, not the raw weights"
    for bad in (1.0, -0.1):
        with pytest.raises(DenoiseError, match="--ema"):
            train(opts(clean_dir, tmp_path / "bad", ema=bad))


def test_sixteen_bit_training_data_is_stretched_as_run_stretches_it(tmp_path):
    """A microscope's 12-bit counts in a 16-bit file train as a full-range image, as `run` will
    denoise it (stretched to its range), not as 17 levels of 256; 8-bit images load as before; a
    TIFF stack gives one training image per plane."""
    import numpy as np
    import tifffile
    from PIL import Image

    from conftest import save, smooth_image

    plane = smooth_image(40, 44, channels=1)
    counts = (plane.astype(np.float64) / 255 * 4000 + 90).round().astype(np.uint16)
    (tmp_path / "d").mkdir()
    Image.fromarray(counts).save(tmp_path / "d" / "cells.png")
    save(tmp_path / "d" / "photo.png", smooth_image(40, 44, channels=1, seed=3))
    tifffile.imwrite(tmp_path / "d" / "z.tif", np.stack([counts, counts // 2, counts // 3]), imagej=True, metadata={"axes": "ZYX"})
    images = load_training_set(opts(tmp_path / "d", tmp_path / "r"), hold_out=False).clean
    assert len(images) == 1 + 1 + 3
    cells, photo = images[0][0], images[1][0]
    assert int(cells.min()) == 0 and int(cells.max()) == 255
    expected = np.round((counts - counts.min()) / (counts.max() - counts.min()) * 255)
    assert np.abs(cells.numpy().astype(int) - expected).max() <= 1
    assert torch.equal(photo, torch.from_numpy(smooth_image(40, 44, channels=1, seed=3)))
    assert all(int(im.max()) == 255 for im in images[2:])  # each plane its own range
    hot = counts.copy()
    hot[5, 7] = 65535  # a camera's hot pixel: the rest stretched as without it (inference.value_range), it clipped at 255
    Image.fromarray(hot).save(tmp_path / "d" / "cells.png")
    hot_cells = load_training_set(opts(tmp_path / "d", tmp_path / "r"), hold_out=False).clean[0][0].numpy().astype(int)
    assert hot_cells[5, 7] == 255 and np.abs(np.delete(hot_cells.ravel(), 5 * 44 + 7) - np.delete(expected.ravel(), 5 * 44 + 7)).max() <= 1


def test_sixteen_bit_pairs_take_the_noisy_images_stretch(tmp_path):
    """Real 16-bit pairs: `run` stretches the noisy image to its range, so the clean target is
    stretched by that same range, and the two stay aligned level for level."""
    import numpy as np
    import tifffile

    from conftest import smooth_image

    rng = np.random.default_rng(0)
    clean = np.stack([smooth_image(40, 44, channels=1, seed=s).astype(np.float64) / 255 * 3000 + 200 for s in range(2)])
    noisy = (clean + rng.normal(0, 60, clean.shape)).round().clip(0, 65535).astype(np.uint16)
    for folder, arr in (("clean", clean.round().astype(np.uint16)), ("noisy", noisy)):
        (tmp_path / folder).mkdir()
        tifffile.imwrite(tmp_path / folder / "z.tif", arr, imagej=True, metadata={"axes": "ZYX"})
    tset = load_training_set(opts(tmp_path / "clean", tmp_path / "r", noisy=str(tmp_path / "noisy")), hold_out=False)
    assert len(tset.clean) == len(tset.noisy) == 2
    for i in range(2):
        lo, hi = float(noisy[i].min()), float(noisy[i].max())
        target = np.round((clean[i].round() - lo) / (hi - lo) * 255)
        assert np.abs(tset.clean[i][0].numpy().astype(int) - target).max() <= 1
        assert int(tset.noisy[i].min()) == 0 and int(tset.noisy[i].max()) == 255
        residual = tset.noisy[i].float() - tset.clean[i].float()
        assert abs(float(residual.mean())) < 0.5 and abs(float(residual.std()) - 60 / (hi - lo) * 255) < 1


def test_float_pairs_share_one_scale(tmp_path):
    """Float files are each read onto [0, 1] by their own range, so a clean/noisy pair of them
    lands on two scales: the clean target is put on the noisy one's before the stretch."""
    from conftest import float_pair

    clean, noisy = float_pair(tmp_path, 40, 44, noise=15, seed=0)
    tset = load_training_set(opts(tmp_path / "clean", tmp_path / "r", noisy=str(tmp_path / "noisy")), hold_out=False)
    residual = tset.noisy[0].float() - tset.clean[0].float()
    scale = 255 / (noisy.max() - noisy.min())
    assert abs(float(residual.mean())) < 0.5 and abs(float(residual.std()) - 15 * scale) < 1


def test_a_sixteen_bit_clean_image_with_an_eight_bit_noisy_one_shares_its_scale(tmp_path):
    """A 16-bit clean image is stretched to its own range when read; beside an 8-bit noisy image,
    which is not stretched, the target is read again on the noisy image's plain 0-255 scale."""
    import numpy as np
    import tifffile
    from PIL import Image

    from conftest import smooth_image

    clean = smooth_image(40, 44, channels=1).astype(np.float64) / 255 * 0.5 + 0.25  # a quarter to three quarters
    noisy = (clean * 255 + np.random.default_rng(0).normal(0, 10, clean.shape)).round().clip(0, 255).astype(np.uint8)
    (tmp_path / "clean").mkdir()
    (tmp_path / "noisy").mkdir()
    tifffile.imwrite(tmp_path / "clean" / "a.tif", (clean * 65535).round().astype(np.uint16))
    Image.fromarray(noisy).save(tmp_path / "noisy" / "a.png")
    tset = load_training_set(opts(tmp_path / "clean", tmp_path / "r", noisy=str(tmp_path / "noisy")), hold_out=False)
    assert np.abs(tset.clean[0][0].numpy().astype(int) - np.round(clean * 255)).max() <= 1
    residual = tset.noisy[0].float() - tset.clean[0].float()
    assert abs(float(residual.mean())) < 0.5 and abs(float(residual.std()) - 10) < 1


def test_large_images_are_scaled_down_to_max_megapixels_as_they_are_read(tmp_path):
    """A folder of large photos trains in the memory it has: each image over --max-megapixels is
    scaled down to it, antialiased, keeping its shape; smaller ones are kept as they are."""
    import numpy as np

    from conftest import save, smooth_image

    save(tmp_path / "d" / "big.png", smooth_image(120, 160, seed=1))
    save(tmp_path / "d" / "small.png", smooth_image(40, 50, seed=2))
    images = load_training_set(opts(tmp_path / "d", tmp_path / "r", max_megapixels=0.004), hold_out=False).clean
    shapes = sorted(tuple(im.shape) for im in images)
    assert shapes == [(3, 40, 50), (3, 54, 73)]  # 120x160 x sqrt(4000 / 19200)
    # real pairs are cut to their middle instead, both alike: scaling would average their noise away
    save(tmp_path / "n" / "big.png", smooth_image(120, 160, seed=3))
    save(tmp_path / "n" / "small.png", smooth_image(40, 50, seed=4))
    tset = load_training_set(opts(tmp_path / "d", tmp_path / "r", max_megapixels=0.004, noisy=str(tmp_path / "n")), hold_out=False)
    big = [i for i, im in enumerate(tset.clean) if im.shape[-1] == 73]
    assert len(big) == 1 and tset.noisy[big[0]].shape == (3, 54, 73)
    from PIL import Image

    middle = np.asarray(Image.open(tmp_path / "n" / "big.png"))[33:87, 44:117]  # torchvision rounds 43.5 to 44
    assert np.array_equal(np.moveaxis(tset.noisy[big[0]].numpy(), 0, -1), middle)


def test_a_folder_that_would_not_fit_in_memory_is_refused_before_decoding_with_a_cap_that_fits(tmp_path, monkeypatch):
    """500 photos of 24 MP are 36 GB as uint8, and the kernel ends such a run without a word:
    the folder is refused in one line, from the files' headers alone, with a --max-megapixels
    that fits; with that cap it trains."""
    import denoisecli.data as data
    from conftest import save, smooth_image

    for i in range(4):
        save(tmp_path / "d" / f"{i}.png", smooth_image(200, 300, seed=i))  # 0.06 MP, 180 kB each as uint8
    decoded = []
    monkeypatch.setattr(data, "_read_u8", lambda p, *_: decoded.append(p))
    monkeypatch.setattr(data, "free_memory", lambda: 1_000_000)  # 1 MB free: 0.6 MB may be taken
    with pytest.raises(DenoiseError, match=r"d: its 4 images take 0.7 MB as training data, more than this machine can spare "
                                           r"\(1.0 MB free\); read each at most 0.04 megapixels with --max-megapixels 0.04 "
                                           r"\(0.5 MB\), or train on fewer images"):
        load_training_set(opts(tmp_path / "d", tmp_path / "r"), hold_out=False)
    assert not decoded
    monkeypatch.undo()
    monkeypatch.setattr(data, "free_memory", lambda: 1_000_000)
    images = load_training_set(opts(tmp_path / "d", tmp_path / "r", max_megapixels=0.04), hold_out=False).clean
    assert len(images) == 4 and all(im.shape[-2] * im.shape[-1] <= 40_000 for im in images)


def test_reading_the_training_folder_is_reported_before_the_first_step(clean_dir, tmp_path):
    """A folder of large photos takes minutes to read, which the bar showed as a frozen 0/?."""
    seen = []
    train(opts(clean_dir, tmp_path / "r", steps=2), progress=seen.append, on_read=lambda *done: seen.append(done))
    assert seen[:6] == [(i, 5) for i in range(6)] and all("step" in s for s in seen[6:])


def test_the_log_says_where_and_when_each_start_and_resume_ran(clean_dir, tmp_path):
    """A model card gives the hardware that trained a model: the run's log records it at each start."""
    run = opts(clean_dir, tmp_path / "r", steps=4, save_every=2)
    train(run, progress=lambda s: (_ for _ in ()).throw(KeyboardInterrupt) if s["step"] == 3 else None)
    train(run, resume=True)
    starts = [json.loads(l) for l in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines() if '"start"' in l]
    assert [s["step"] for s in starts] == [0, 3] and all(s["device"] == "cpu" and "threads" in s["machine"] for s in starts)
    assert starts[0]["images"] == 5 and starts[0]["versions"]["torch"] == torch.__version__ and starts[0]["processes"] == 1


def test_real_noise_datasets_pair_as_they_come(tmp_path):
    """SIDD keeps each scene's GT_SRGB_010 and NOISY_SRGB_010 side by side in one folder; PolyU
    and Nam name their pairs ..._mean and ..._real. Such datasets pair as they come, for training
    (--noisy naming the same folder) as for eval; two noisy images for one clean one are refused."""
    import numpy as np

    from conftest import save, smooth_image
    from denoisecli.evaluation import evaluate

    rng = np.random.default_rng(0)
    for scene in ("0001_001_S6", "0002_001_S6"):
        for shot in ("010", "011"):
            clean = smooth_image(40, 44, seed=int(shot) + len(scene))
            save(tmp_path / "sidd" / scene / f"GT_SRGB_{shot}.PNG", clean)
            save(tmp_path / "sidd" / scene / f"NOISY_SRGB_{shot}.PNG",
                 np.clip(clean + rng.normal(0, 12, clean.shape), 0, 255).astype(np.uint8))
    tset = load_training_set(opts(tmp_path / "sidd", tmp_path / "r", noisy=str(tmp_path / "sidd")), hold_out=False)
    assert len(tset.clean) == len(tset.noisy) == 4 and not tset.notes
    heard = []
    result = train(opts(tmp_path / "sidd", tmp_path / "plain", steps=1), on_note=heard.append)  # without --noisy: said, not refused
    assert result.notes == heard == [f"{tmp_path / 'sidd'}: 4 files are named as noisy (noisy, noise, real) beside 4 named as clean "
                                     f"(GT, clean, mean), and all are trained on as clean images; if they are real pairs, train on them "
                                     f"with --noisy {tmp_path / 'sidd'}"]
    assert all(float((c.float() - n.float()).abs().mean()) > 5 for c, n in zip(tset.clean, tset.noisy))
    report, _ = evaluate(tmp_path / "sidd", noisy_dir=tmp_path / "sidd", baselines=("noisy",), device="cpu")
    assert sorted({s.image for s in report.scores}) == [f"{s}/GT_SRGB_{k}.PNG" for s in ("0001_001_S6", "0002_001_S6") for k in ("010", "011")]
    assert report.mean("denoise", "real") > report.mean("noisy", "real")

    save(tmp_path / "polyu" / "mean" / "Canon5D2_bag_mean.JPG", smooth_image(40, 44, seed=1))
    save(tmp_path / "polyu" / "real" / "Canon5D2_bag_real.JPG", smooth_image(40, 44, seed=1))
    report, _ = evaluate(tmp_path / "polyu" / "mean", noisy_dir=tmp_path / "polyu" / "real", device="cpu")
    assert [s.image for s in report.scores] == ["Canon5D2_bag_mean.JPG"]

    save(tmp_path / "sidd" / "0001_001_S6" / "NOISY_SRGB_010.jpg", smooth_image(40, 44))
    with pytest.raises(DenoiseError, match=r"pairs with the same clean image as .*NOISY_SRGB_010.PNG; keep one noisy image per clean one"):
        evaluate(tmp_path / "sidd", noisy_dir=tmp_path / "sidd", device="cpu")

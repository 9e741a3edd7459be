"""--masked_loss: masks from alpha_mask / conditioning_data_dir follow their image (resize, crop, flip,
cache) and a zero half of a mask gives no gradient from that half."""

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from library.data.cache import LatentCache
from library.data.dataset import TrainDataset
from library.errors import UserError
from library.options import namespace_from
from library.train.entry import train
from library.train.setup_data import build_dataset, prepare_data
from library.train.setup_model import load_for_training
from library.train.step import StepConfig, batch_loss, loss_options, noise_options
from tests.train.conftest import base_values

SIZES = [(128, 96), (96, 128), (64, 64), (80, 64)]


def _striped(w, h, seed):
    """Random vertical/horizontal stripes of 0/255: the same pattern in R, G, B and alpha."""
    rng = np.random.default_rng(seed)
    cols = rng.integers(0, 2, w)[None, :] * 255
    rows = rng.integers(0, 2, h)[:, None] * 255
    return np.maximum(cols, rows).astype(np.uint8).repeat(1, 0)


def _alpha_folder(root, n=4):
    """Images whose alpha equals their red channel, so a mask that follows its image equals the image."""
    folder = root / "img" / "5_sks shape"
    folder.mkdir(parents=True)
    for i in range(n):
        w, h = SIZES[i % len(SIZES)]
        a = _striped(w, h, i)
        Image.fromarray(np.stack([a, a, a, a], axis=-1), "RGBA").save(folder / f"{i:02d}.png")
        (folder / f"{i:02d}.txt").write_text("sks shape", encoding="utf-8")
    return root


def _masks_follow_images(ds, epochs=(1, 2)):
    flips = set()
    for epoch in epochs:
        for i in range(len(ds)):
            batch = ds[(epoch, i)]
            red = (batch["images"][:, :1] + 1) / 2
            assert batch["masks"].shape == red.shape
            torch.testing.assert_close(batch["masks"], red, atol=1e-5, rtol=0)
            flips |= set(batch["flipped"])
    return flips


@pytest.mark.parametrize("extra", [{}, {"random_crop": True}, {"enable_bucket": True, "min_bucket_reso": 32,
                                                                "bucket_reso_steps": 32}], ids=["centre", "random_crop", "buckets"])
def test_alpha_mask_is_resized_cropped_and_flipped_with_its_image(extra, tmp_path):
    data = _alpha_folder(tmp_path)
    args = namespace_from(dict(pretrained_model_name_or_path="x", train_data_dir=str(data / "img"), resolution=64,
                               caption_extension=".txt", output_dir=str(tmp_path), train_batch_size=2, seed=3,
                               masked_loss=True, alpha_mask=True, flip_aug=True, **extra))
    ds = build_dataset(args, 3)
    assert _masks_follow_images(ds) == {True, False}


def test_cached_masks_equal_decoded_ones_and_a_changed_mask_is_not_reused(tmp_path):
    data = _alpha_folder(tmp_path)
    cond = tmp_path / "masks"
    cond.mkdir()
    for i in range(4):
        w, h = SIZES[i]
        Image.fromarray(_striped(w, h, 10 + i)).convert("RGB").save(cond / f"{i:02d}.png")
    args = namespace_from(dict(pretrained_model_name_or_path="x", train_data_dir=str(data / "img"), resolution=64,
                               caption_extension=".txt", output_dir=str(tmp_path), train_batch_size=2, seed=3,
                               masked_loss=True, conditioning_data_dir=str(cond), flip_aug=True,
                               cache_latents_to_disk=True))
    prepared = prepare_data(args)
    decoded = TrainDataset(prepared, seed=3, masks=True)
    cache = LatentCache(lambda px: px[:, :, ::8, ::8].float(), {"model": "fake"}, to_disk=True, masks=True, progress=False)
    cached = TrainDataset(prepared, seed=3, masks=True, latent_cache=cache)
    records = cached.records()
    assert cache.cache(records).encoded == 4
    for i in range(len(decoded)):
        a, b = decoded[(1, i)], cached[(1, i)]
        assert torch.equal(a["masks"], b["masks"]) and a["flipped"] == b["flipped"]
        # the mask file's red channel, not the image's alpha
        assert not torch.allclose(a["masks"], (a["images"][:, :1] + 1) / 2)
    with np.load(cache.disk_path(records[0])) as npz:
        assert npz["alpha_mask"].shape == (64, 64)
    w, h = SIZES[0]
    Image.fromarray(255 - _striped(w, h, 10)).convert("RGB").save(cond / "00.png")  # the user edits one mask
    stats = cache.cache(records)
    assert stats.stale == 1 and stats.encoded == 1 and stats.reused == 3


def test_mask_problems_are_clear_errors_before_training(tiny_ckpt, demo_data, tmp_path):
    values = base_values(tiny_ckpt("sd1"), demo_data, tmp_path / "out", masked_loss=True)
    with pytest.raises(UserError, match="masked_loss is set but no subset has masks"):
        train(namespace_from(values))
    cond = tmp_path / "masks"
    cond.mkdir()
    Image.new("RGB", (64, 64), "white").save(cond / "00.png")
    Image.new("RGB", (32, 32), "white").save(cond / "01.png")
    with pytest.raises(UserError, match=r"has no mask for 6 images \(02.png.*same file stem") as e:
        train(namespace_from({**values, "conditioning_data_dir": str(cond)}))
    assert "01.png is 32x32, its image 64x80" in str(e.value)
    with pytest.raises(UserError, match="conditioning_data_dir .*nowhere does not exist"):
        train(namespace_from({**values, "conditioning_data_dir": str(tmp_path / "nowhere")}))
    assert not (tmp_path / "out").exists()


def test_zero_half_of_the_mask_gives_zero_gradient_from_that_half(tiny_ckpt, demo_data, tmp_path):
    cond = tmp_path / "masks"
    cond.mkdir()
    folder = demo_data / "img" / "10_sks shape"
    for img in folder.glob("*.png"):
        w, h = Image.open(img).size
        mask = np.full((h, w), 255, np.uint8)
        mask[:, : w // 2] = 0  # left half ignored
        Image.fromarray(mask).convert("RGB").save(cond / img.name)
    args = namespace_from(base_values(tiny_ckpt("sd1"), demo_data, tmp_path / "out", masked_loss=True,
                                      conditioning_data_dir=str(cond), flip_aug=False))
    model = load_for_training(args, "train_network")
    ds = build_dataset(args, 1)
    batch = ds[(1, 0)]
    captured = {}

    def keep_output(module, inputs, output):
        output.sample.retain_grad()
        captured["pred"] = output.sample

    handle = model.base.unet.register_forward_hook(keep_output)
    try:
        loss = batch_loss(model, batch, StepConfig(noise_options(args), loss_options(args, False)), torch.Generator().manual_seed(0))
        loss.backward()
    finally:
        handle.remove()
    grad = captured["pred"].grad  # [B, 4, 8, 8]: latent columns 0..3 come from the masked half
    assert torch.count_nonzero(grad[..., :4]) == 0
    assert torch.count_nonzero(grad[..., 4:]) == grad[..., 4:].numel()
    lora_grads = [p.grad for p in model.network.parameters() if p.grad is not None]
    assert lora_grads and any(torch.count_nonzero(g) for g in lora_grads)


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_masked_training_runs_with_cached_latents_and_alpha(family, tiny_ckpt, tmp_path):
    """Everything of this scope at once: masks, held-out images with their masks, weighted captions, caches."""
    script = "sdxl_train_network" if family == "sdxl" else "train_network"
    data = _alpha_folder(tmp_path / "d")
    extra = {"network_train_unet_only": True, "cache_text_encoder_outputs": True} if family == "sdxl" else {}
    values = base_values(tiny_ckpt(family), data, tmp_path / "out", masked_loss=True, alpha_mask=True, cache_latents=True,
                         flip_aug=True, max_train_steps=3, validation_split=0.25, validate_every_n_steps=2,
                         weighted_captions=True, **extra)
    result = train(namespace_from(values, script), script)
    assert result.steps == 3 and all(np.isfinite(result.losses))
    with safe_open(result.lora, "pt") as f:
        assert f.metadata()["ss_num_validation_images"] == "1"

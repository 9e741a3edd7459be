"""Does a LoRA trained with our CLI make the trained shapes base draw a concept it never saw?

``sks`` = a purple five-pointed star with a white outline (the base saw stars, never purple,
never outlines), in a kohya folder ``10_sks star``, with a reg folder ``1_star`` that
tools/make_class_images.py fills from the base model (library/eval/concept_run.py).
Images are generated through library.inference and read by the pixel scorer.

The option matrix trains the same concept with each option that changes the training maths;
a case that fails is a bug in that option's maths, not a threshold to lower.
"""

import json

import numpy as np
import pytest
from PIL import Image

from library.eval.concept_run import (
    CONCEPT_PROMPT, GEN, concept_rates, draws_the_concept_without_lora, misses_the_bar, prepare_concept_data,
    preset_optimizer, train_concept_lora,
)
from library.eval.sample_score import sample_readings
from library.eval.shapes_score import is_concept
from library.inference.generate import LoraStack, LoraUse
from library.models import load_base_model

pytestmark = pytest.mark.quality

N = 12  # images per prompt and setting


def _check(base_path, model, data, tmp_path, gen_clip_skip=None, **options):
    lora = train_concept_lora(base_path, data, tmp_path / "out", **options)
    rates = concept_rates(model, lora, N, tmp_path / "gen_lora", clip_skip=gen_clip_skip)
    (tmp_path / "rates.json").write_text(json.dumps(rates, indent=1))
    print("with the LoRA:", rates["concept"], rates["class_base_colour"], rates["seen_sks"], rates["seen_class"])
    assert not misses_the_bar(rates), misses_the_bar(rates)
    return rates


def test_lora_teaches_an_unseen_concept_and_keeps_the_class(shapes_model_path, shapes_model, concept_data, tmp_path):
    """The issue's bar on the shipped base: >= 80 % concept with the LoRA, <= 10 % without, >= 80 % of the class
    in a base colour with it. Measured with 24 images per prompt (docs/quality.md, Option matrix): concept 22/24,
    class 23/24 with LoRA seed 3 (the test's 12: 10 and 11), 0/24 without."""
    without = concept_rates(shapes_model, None, N, tmp_path / "gen_base")
    print("without the LoRA:", without["concept"], without["seen_sks"])
    assert not draws_the_concept_without_lora(without), draws_the_concept_without_lora(without)
    _check(shapes_model_path, shapes_model, concept_data, tmp_path)


# Each option that changes the training maths, on the same concept (docs/quality.md, "Option matrix").
OPTION_CASES = {
    "noise_offset": {"noise_offset": "0.05"},
    "min_snr_gamma": {"min_snr_gamma": "5"},
    "debiased_estimation": {"debiased_estimation_loss": None},
    "huber_loss": {"loss_type": "huber", "huber_schedule": "snr", "huber_c": "0.1"},
    "clip_skip_2": {"clip_skip": "2"},
    "locon_conv_dim": {"network_args": ["conv_dim=4", "conv_alpha=4"]},
    "uncached_latents": {"cache_latents": False},
    "adamw8bit": {"optimizer_type": "AdamW8bit"},
    # Prodigy as presets/sdxl_lora_prodigy.toml runs it (its optimizer_args, a cosine schedule): with a constant
    # schedule and Prodigy's default args the adapted step overwrote the class (docs/quality.md, Option matrix).
    "prodigy": preset_optimizer("sdxl_lora_prodigy"),
    "adafactor": {"optimizer_type": "Adafactor",
                  "optimizer_args": ["relative_step=False", "scale_parameter=False", "warmup_init=False"]},
    # 2 steps of 4 per optimizer step: the plain run's batch of 8, accumulated
    "grad_accum_2": {"gradient_accumulation_steps": "2", "train_batch_size": "4"},
}


@pytest.mark.parametrize("case", sorted(OPTION_CASES))
def test_concept_across_training_options(case, shapes_model_path, shapes_model, concept_data, tmp_path):
    options = OPTION_CASES[case]
    if options.get("optimizer_type") == "AdamW8bit":
        pytest.importorskip("bitsandbytes")
    if options.get("optimizer_type") == "Prodigy":
        pytest.importorskip("prodigyopt")
    gen_clip_skip = int(options["clip_skip"]) if "clip_skip" in options else None  # generate as trained
    _check(shapes_model_path, shapes_model, concept_data, tmp_path, gen_clip_skip=gen_clip_skip, **options)


def _pixels(folder):
    return [np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))]


def test_lora_at_multiplier_zero_gives_the_base_images_exactly(shapes_model_path, tmp_path):
    data = prepare_concept_data(shapes_model_path, tmp_path / "data", concept_images=4, class_images=2)
    lora = train_concept_lora(shapes_model_path, data, tmp_path / "out", max_train_steps=10, learning_rate=1e-2)
    model = load_base_model(shapes_model_path)
    sample_readings(model, CONCEPT_PROMPT, 3, tmp_path / "base", **GEN)
    sample_readings(model, CONCEPT_PROMPT, 3, tmp_path / "lora1", loras=[LoraUse(lora, 1.0, 1.0)], **GEN)
    sample_readings(model, CONCEPT_PROMPT, 3, tmp_path / "hooked0", loras=[LoraUse(lora, 0.0, 0.0)], **GEN)
    stack = LoraStack(model)
    stack.merge(LoraUse(lora, 0.0, 0.0))
    sample_readings(model, CONCEPT_PROMPT, 3, tmp_path / "merged0", stack=stack, **GEN)
    want = _pixels(tmp_path / "base")
    assert len(want) == 3
    assert not all(np.array_equal(a, b) for a, b in zip(_pixels(tmp_path / "lora1"), want))  # the LoRA does act
    for name in ("hooked0", "merged0"):
        got = _pixels(tmp_path / name)
        assert len(got) == 3 and all(np.array_equal(a, b) for a, b in zip(got, want)), name


def _round_trip(vae, specs):
    """What the scorer reads in each image after the base VAE encodes and decodes it."""
    import torch

    from library.eval.shapes_model import _pixels
    from library.eval.shapes_score import read_image

    with torch.no_grad():
        x = _pixels(specs).to(vae.dtype)
        y = vae.decode(vae.encode(x).latent_dist.mean).sample.float()
    return [read_image(((im.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()) for im in y]


def test_the_base_vae_round_trips_the_concept(shapes_model, tmp_path):
    """The LoRA trains on the VAE's latents of the concept: a VAE that decodes purple as blue (one built on a
    blue-heavy world did) would fail the concept test for a reason that is no trainer's fault."""
    from library.eval.concept_run import CONCEPT_SEED
    from library.eval.shapes_data import concept_specs

    readings = _round_trip(shapes_model.vae, concept_specs(12, seed=CONCEPT_SEED))
    assert sum(is_concept(r) for r in readings) >= 11, [(r.shape, r.colour) for r in readings]


@pytest.mark.parametrize("colour", ["red", "yellow", "green", "blue"])
def test_the_base_vae_round_trips_the_class_stars(shapes_model, colour):
    """The class images and the world's stars reach the UNet through the VAE: one that blurred green stars into
    circles (docs/quality.md, round 4) made the base draw green stars as triangles, whatever the UNet learnt."""
    import random

    from library.eval.shapes_data import random_spec

    rng = random.Random(5)
    readings = _round_trip(shapes_model.vae, [random_spec(rng, shapes=("star",), colours=(colour,)) for _ in range(12)])
    assert sum((r.shape, r.colour) == ("star", colour) for r in readings) >= 11, [(r.shape, r.colour) for r in readings]


def test_the_base_vae_keeps_every_hue(shapes_model):
    """Around the hue circle (plain and outlined stars), not only at the palette: a VAE that learnt the world's
    palette pulled purple 30-110 deg toward blue or red (docs/quality.md, rounds 4 and 5)."""
    import colorsys
    import math
    import random

    from library.eval.shapes_data import ShapeSpec, random_spec

    rng = random.Random(7)
    errors = {}
    for hue in range(0, 360, 30):
        rgb = tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(hue / 360, 0.78, 0.8))
        specs = [ShapeSpec("star", rgb, s.position, s.x, s.y, s.radius, "white" if i % 2 else None)
                 for i, s in enumerate(random_spec(rng, shapes=("star",)) for _ in range(6))]
        read = [r.features.get("hue", math.nan) for r in _round_trip(shapes_model.vae, specs)]
        errors[hue] = max(180.0 if math.isnan(h) else abs((h - hue + 180) % 360 - 180) for h in read)
    assert max(errors.values()) <= 20, errors

"""Does a LoRA trained with our CLI make the trained shapes base draw a concept it never saw?

``sks`` = a purple five-pointed star with a white outline (the base saw stars, never purple,
never outlines), in a kohya folder ``10_sks star``, with a reg folder ``1_star`` that
tools/make_class_images.py fills from the base model. Images are generated through
library.inference and read by the pixel scorer (library/eval/shapes_score.py).
"""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from library.eval.sample_score import sample_readings
from library.eval.shapes_data import COLOURS, concept_specs
from library.eval.shapes_score import is_concept, rate
from library.inference.generate import LoraStack, LoraUse
from library.models import load_base_model
from library.train.entry import main as train_main
from tools.make_class_images import main as class_images_main

pytestmark = pytest.mark.quality

N = 12  # images per prompt and setting
GEN = dict(steps=20, scale=5.0)
CONCEPT_IMAGES = 12
REG_IMAGES = 12


def _write_concept(folder: Path) -> None:
    folder.mkdir(parents=True)
    for i, spec in enumerate(concept_specs(CONCEPT_IMAGES, seed=11)):
        from library.eval.shapes_data import render

        render(spec).save(folder / f"sks_{i:03d}.png")


def _train(base: str, tmp: Path, **extra) -> Path:
    _write_concept(tmp / "img" / "10_sks star")
    rc = class_images_main([
        "--model", base, "--class_prompt", "a star", "--num_class_images", str(REG_IMAGES),
        "--out", str(tmp / "reg" / "1_star"), "--W", "64", "--H", "64", "--steps", "20", "--scale", "5",
    ])
    assert rc == 0
    args = {
        "pretrained_model_name_or_path": base, "train_data_dir": str(tmp / "img"),
        "reg_data_dir": str(tmp / "reg"), "caption_extension": ".txt", "resolution": "64",
        "network_module": "networks.lora", "network_dim": "8", "network_alpha": "8",
        "learning_rate": "2e-3", "max_train_steps": "150", "train_batch_size": "4", "seed": "3",
        "optimizer_type": "AdamW", "cache_latents": None, "max_data_loader_n_workers": "0",
        "output_dir": str(tmp / "out"), "output_name": "sks", "save_model_as": "safetensors",
        **extra,
    }
    argv = []
    for k, v in args.items():
        argv += [f"--{k}"] + ([] if v is None else [v])
    assert train_main(argv, "train_network") in (0, None)
    lora = tmp / "out" / "sks.safetensors"
    assert lora.is_file()
    return lora


def _pixels(paths):
    return [np.asarray(Image.open(p)) for p in sorted(paths)]


def test_lora_teaches_an_unseen_concept_and_keeps_the_class(shapes_model_path, tmp_path):
    lora = _train(shapes_model_path, tmp_path)
    model = load_base_model(shapes_model_path)
    use = [LoraUse(lora, 1.0, 1.0)]
    base_sks = sample_readings(model, "sks star", N, tmp_path / "gen" / "base_sks", **GEN)
    lora_sks = sample_readings(model, "sks star", N, tmp_path / "gen" / "lora_sks", loras=use, **GEN)
    lora_class = sample_readings(model, "a star", N, tmp_path / "gen" / "lora_class", loras=use, **GEN)
    rates = {
        "concept_with_lora": rate(lora_sks, is_concept),
        "concept_without_lora": rate(base_sks, is_concept),
        "class_keeps_base_colour": rate(lora_class, lambda r: r.shape == "star" and r.colour in COLOURS),
    }
    seen = {k: [(r.shape, r.colour) for r in v] for k, v in
            (("lora_sks", lora_sks), ("base_sks", base_sks), ("lora_class", lora_class))}
    (tmp_path / "rates.json").write_text(json.dumps({"rates": rates, "seen": seen}, indent=1))
    print("concept rates:", rates)
    assert rates["concept_with_lora"] >= 0.8, (rates, seen)
    assert rates["concept_without_lora"] <= 0.1, (rates, seen)
    assert rates["class_keeps_base_colour"] >= 0.8, (rates, seen)


def test_lora_at_multiplier_zero_gives_the_base_images_exactly(shapes_model_path, tmp_path):
    lora = _train(shapes_model_path, tmp_path, max_train_steps="10")
    model = load_base_model(shapes_model_path)
    base = tmp_path / "base"
    sample_readings(model, "sks star", 3, base, **GEN)
    sample_readings(model, "sks star", 3, tmp_path / "hooked0", loras=[LoraUse(lora, 0.0, 0.0)], **GEN)
    stack = LoraStack(model)
    stack.merge(LoraUse(lora, 0.0, 0.0))
    sample_readings(model, "sks star", 3, tmp_path / "merged0", stack=stack, **GEN)
    want = _pixels(base.glob("*.png"))
    for name in ("hooked0", "merged0"):
        got = _pixels((tmp_path / name).glob("*.png"))
        assert len(got) == len(want) == 3
        assert all(np.array_equal(a, b) for a, b in zip(got, want)), name

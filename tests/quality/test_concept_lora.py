"""Does a LoRA trained with our CLI make the trained shapes base draw a concept it never saw?

``sks`` = a purple five-pointed star with a white outline (the base saw stars, never purple,
never outlines), in a kohya folder ``10_sks star``, with a reg folder ``1_star`` that
tools/make_class_images.py fills from the base model (library/eval/concept_run.py).
Images are generated through library.inference and read by the pixel scorer.
"""

import json

import numpy as np
import pytest
from PIL import Image

from library.eval.concept_run import CONCEPT_PROMPT, GEN, concept_rates, prepare_concept_data, train_concept_lora
from library.eval.sample_score import sample_readings
from library.inference.generate import LoraStack, LoraUse
from library.models import load_base_model

pytestmark = pytest.mark.quality

N = 12  # images per prompt and setting


# Known failure, not a lowered threshold: the shapes base is not yet good enough for the concept
# (measured rates in docs/quality.md, "Status"). Remove this mark when the builder passes it.
@pytest.mark.xfail(reason="shapes base model too weak yet: purple star 25 % with the LoRA (docs/quality.md, Status)",
                   strict=False)
def test_lora_teaches_an_unseen_concept_and_keeps_the_class(shapes_model_path, tmp_path):
    data = prepare_concept_data(shapes_model_path, tmp_path / "data")
    lora = train_concept_lora(shapes_model_path, data, tmp_path / "out")
    model = load_base_model(shapes_model_path)
    with_lora = concept_rates(model, lora, N, tmp_path / "gen_lora")
    without = concept_rates(model, None, N, tmp_path / "gen_base")
    report = {"with_lora": with_lora, "without_lora": without}
    (tmp_path / "rates.json").write_text(json.dumps(report, indent=1))
    print("concept rates:", {k: (v["concept"], v["class_base_colour"]) for k, v in report.items()})
    assert with_lora["concept"] >= 0.8, report
    assert without["concept"] <= 0.1, report
    assert with_lora["class_base_colour"] >= 0.8, report


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

"""The concept test in the cases that need their own base model or their own launch (issue 14):
v-prediction (a v-pred shapes base), SDXL (the SDXL-layout shapes base: two text encoders,
size/crop conditioning) and 2-process training (``accelerate launch --multi_gpu --num_processes 2``).

Same concept, same thresholds as tests/quality/test_concept_lora.py. Each base also gets a
quick check that it draws what a caption says, which catches a wrong v target or a wrong SDXL
conditioning in the builder before any LoRA is blamed. A case that fails is a bug to find, not a
threshold to lower; measured rates are in docs/quality.md ("Option matrix").

Opt-in (``LORASMITH_QUALITY_MATRIX=1``), like the option matrix: the v-pred and SDXL bases are
builds of their own (10-25 CPU minutes each, once per source hash), and each case trains the main
test's 1800 steps.
"""

import json
import os

import pytest
import torch

from library.eval.base_check import caption_rates
from library.eval.concept_processes import train_concept_lora_processes
from library.eval.concept_run import GEN, TRAIN_DEFAULTS, concept_rates, prepare_concept_data, train_concept_lora
from library.eval.shapes_model import cached_shapes_model
from library.eval.shapes_model_sdxl import cached_sdxl_shapes_model
from library.models import load_base_model

pytestmark = [
    pytest.mark.quality,
    pytest.mark.skipif(os.environ.get("LORASMITH_QUALITY_MATRIX") != "1",
                       reason="needs its own base build or launch: opt-in with LORASMITH_QUALITY_MATRIX=1 "
                              "(docs/quality.md, Option matrix)"),
]

N = 12  # images per prompt and setting, as the main test
N_BASE = 8  # images per caption for a base's sanity check


def _record(tmp_path, name, rates):
    (tmp_path / f"{name}.json").write_text(json.dumps(rates, indent=1))
    print(name, {k: v for k, v in rates.items() if not k.startswith("seen")}, rates.get("seen_sks"),
          rates.get("seen_class"))


def _assert_concept(rates):
    assert rates["concept"] >= 0.8, rates
    assert rates["class_base_colour"] >= 0.8, rates


def _assert_base_draws(model, tmp_path):
    rates = caption_rates(model, N_BASE, tmp_path / "base_check", **GEN)
    _record(tmp_path, "base_check", rates)
    # every caption drawn right in most images: a wrong v target or a swapped conditioning draws noise or blobs
    assert min(rates.values()) >= 0.5 and sum(rates.values()) / len(rates) >= 0.75, rates


# ---- v-prediction -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def v_model_path():
    return str(cached_shapes_model(seed=0, prediction_type="v_prediction"))


@pytest.fixture(scope="module")
def v_data(v_model_path, tmp_path_factory):
    return prepare_concept_data(v_model_path, tmp_path_factory.mktemp("concept_v") / "data")


# Measured on round 4's v base at guidance 5 (docs/quality.md; round 5's builder and guidance 3 not measured yet):
# the v base draws its captions at guidance 1 (red circle 5/6, yellow triangle 6/6)
# but over-shoots at the suite's guidance 5 (red -> orange triangles, blue -> cyan), and the green star is weak
# at every scale. Not a sampler bug: the pipeline's images equal a hand-written DDIM loop's, and the v UNet's
# x0 error is at or below the epsilon base's at every timestep. A v-pred base from the SD1 builder.
@pytest.mark.xfail(reason="v-pred shapes base over-guided at scale 5: 31 % of captions right (62 % at scale 1)",
                   strict=False)
def test_v_prediction_base_draws_the_caption(v_model_path, tmp_path):
    model = load_base_model(v_model_path)
    assert model.prediction_type == "v_prediction"
    _assert_base_draws(model, tmp_path)


@pytest.mark.xfail(reason="the v base of round 5's builder is not built and measured yet (docs/quality.md)",
                   strict=False)
def test_concept_with_v_parameterization(v_model_path, v_data, tmp_path):
    model = load_base_model(v_model_path)
    without = concept_rates(model, None, N, tmp_path / "gen_base")
    _record(tmp_path, "without", without)
    assert without["concept"] <= 0.1, without
    lora = train_concept_lora(v_model_path, v_data, tmp_path / "out", v_parameterization=None)
    rates = concept_rates(model, lora, N, tmp_path / "gen_lora")
    _record(tmp_path, "with", rates)
    _assert_concept(rates)


# ---- 2-process training -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sd1_data(shapes_model_path, tmp_path_factory):
    return prepare_concept_data(shapes_model_path, tmp_path_factory.mktemp("concept_mp") / "data")


@pytest.mark.xfail(reason="not yet measured on round 5's base, which passes the main test (docs/quality.md)",
                   strict=False)
def test_concept_with_two_processes(shapes_model_path, sd1_data, tmp_path):
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("this torch build has no gloo backend")
    # the same global batch as the single-process run: 2 processes x (batch / 2)
    per_process = str(int(TRAIN_DEFAULTS["train_batch_size"]) // 2)
    lora = train_concept_lora_processes(shapes_model_path, sd1_data, tmp_path / "out", processes=2,
                                        train_batch_size=per_process)
    rates = concept_rates(load_base_model(shapes_model_path), lora, N, tmp_path / "gen_lora")
    _record(tmp_path, "with", rates)
    _assert_concept(rates)


# ---- SDXL -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sdxl_model_path():
    return str(cached_sdxl_shapes_model(seed=0))


@pytest.fixture(scope="module")
def sdxl_data(sdxl_model_path, tmp_path_factory):
    return prepare_concept_data(sdxl_model_path, tmp_path_factory.mktemp("concept_sdxl") / "data")


# Measured (docs/quality.md): at guidance 5 the SDXL base over-shoots (circles turn to diamonds, squares pinch):
# 50 % of captions right; at guidance 2-3 75 % (red circle, blue square, yellow triangle 83-100 %), the green
# star weak at every scale -- as the SD1 epsilon base (29 % at 5, 71 % at 2), so a shapes-builder limit.
@pytest.mark.xfail(reason="shapes bases over-guided at scale 5: SDXL 50 % of captions right (75 % at 2-3)",
                   strict=False)
def test_sdxl_base_draws_the_caption(sdxl_model_path, tmp_path):
    model = load_base_model(sdxl_model_path)
    assert model.family == "sdxl"
    _assert_base_draws(model, tmp_path)


# Measured: seed 3 concept 10/12 (passes), class 3/12 -- the LoRA shifts "a star" from red to orange (11/12 still
# stars); seed 4 concept 0/12 (red/magenta stars), class 9/12: the hue swings with the seed, as on SD1;
# the base alone keeps a base colour in only 7/12, so the prior check waits on a better base.
@pytest.mark.xfail(reason="SDXL: concept 10/12 (seed 3) / 0/12 (seed 4), class 3/12 (base alone 7/12; docs/quality.md)",
                   strict=False)
def test_concept_sdxl(sdxl_model_path, sdxl_data, tmp_path):
    model = load_base_model(sdxl_model_path)
    without = concept_rates(model, None, N, tmp_path / "gen_base")
    _record(tmp_path, "without", without)
    assert without["concept"] <= 0.1, without
    lora = train_concept_lora(sdxl_model_path, sdxl_data, tmp_path / "out", script="sdxl_train_network")
    rates = concept_rates(model, lora, N, tmp_path / "gen_lora")
    _record(tmp_path, "with", rates)
    _assert_concept(rates)

"""The concept test in the cases that need their own base model or their own launch (issue 14):
v-prediction (a v-pred shapes base), SDXL (the SDXL-layout shapes base: two text encoders,
size/crop conditioning) and 2-process training (``accelerate launch --multi_gpu --num_processes 2``).

Same concept, same thresholds as tests/quality/test_concept_lora.py. Each base also gets a
quick check that it draws what a caption says, which catches a wrong v target or a wrong SDXL
conditioning in the builder before any LoRA is blamed. A case that fails is a bug to find, not a
threshold to lower; measured rates are in docs/quality.md ("Option matrix").

CI runs the v-prediction base check, its concept case with each v loss (the v-pred base ships in models/shapes/
beside the epsilon one) and 2-process training. Opt-in (``LORASMITH_QUALITY_MATRIX=1``, tests/quality/opt_in.py):
SDXL (its base is a build of its own, 18 CPU minutes on one thread, once per source hash, into the cache; its
cases keep round 5's recipe, with which they were measured). Each SD1 case trains the main test's recipe; the tests
that share a base run in one xdist worker (``xdist_group``), so a base and its class images are made once.
"""

import json

import pytest
import torch

from library.eval.base_check import caption_rates
from library.eval.concept_processes import train_concept_lora_processes
from library.eval.concept_run import (
    GEN, ROUND5_RECIPE, TRAIN_DEFAULTS, concept_rates, prepare_concept_data, train_concept_lora,
)
from library.eval.shapes_model import cached_shapes_model
from library.eval.shapes_model_sdxl import cached_sdxl_shapes_model
from library.models import load_base_model
from tests.quality.opt_in import opt_in

pytestmark = pytest.mark.quality
v_group = pytest.mark.xdist_group("v_prediction")
sdxl_group = pytest.mark.xdist_group("sdxl")

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


def _concept_case(model_path, data, tmp_path, **train_options):
    """The main test's checks on another base: nothing draws the concept without the LoRA, the LoRA trained with
    ``train_options`` (train_concept_lora's: a script, training flags) draws it and keeps the class."""
    model = load_base_model(model_path)
    without = concept_rates(model, None, N, tmp_path / "gen_base")
    _record(tmp_path, "without", without)
    assert without["concept"] <= 0.1, without
    lora = train_concept_lora(model_path, data, tmp_path / "out", **train_options)
    rates = concept_rates(model, lora, N, tmp_path / "gen_lora")
    _record(tmp_path, "with", rates)
    _assert_concept(rates)


# ---- v-prediction -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def v_model_path():
    return str(cached_shapes_model(seed=0, prediction_type="v_prediction"))


@pytest.fixture(scope="module")
def v_data(v_model_path, tmp_path_factory):
    return prepare_concept_data(v_model_path, tmp_path_factory.mktemp("concept_v") / "data")


@v_group
def test_v_prediction_base_draws_the_caption(v_model_path, tmp_path):
    """Round 5's builder with --v_parameterization, guidance 3 (docs/quality.md): red circle 5/6, blue square 5/6,
    yellow triangle 6/6, green star 6/6; its own `a star` a base-colour star 24/24."""
    model = load_base_model(v_model_path)
    assert model.prediction_type == "v_prediction"
    _assert_base_draws(model, tmp_path)


@v_group
def test_concept_with_v_parameterization(v_model_path, v_data, tmp_path):
    """v target with min_snr_gamma 5: for v, kohya's min-SNR weight is min(SNR, 5) / (SNR + 1), the epsilon case's
    min-SNR weighting, so the result reads the v target alone (docs/quality.md, "v-prediction").
    Measured, N = 24: concept 24/24, class 24/24, 0/24 without."""
    _concept_case(v_model_path, v_data, tmp_path, v_parameterization=None, min_snr_gamma="5")


@v_group
def test_concept_with_v_parameterization_scaled_loss(v_model_path, v_data, tmp_path):
    """v target with kohya's --scale_v_pred_loss_like_noise_pred: the v loss weighed by alpha^2 = SNR / (SNR + 1),
    so each timestep counts as in the epsilon case. Measured, N = 24: concept 24/24, class 24/24 (18/23 with a
    cosine from 3e-3: the alpha^2 weights shrink every step; docs/quality.md, Option matrix)."""
    _concept_case(v_model_path, v_data, tmp_path, v_parameterization=None, scale_v_pred_loss_like_noise_pred=None)


@v_group
def test_concept_with_v_parameterization_plain_loss(v_model_path, v_data, tmp_path):
    """The plain v loss: the epsilon loss times (SNR + 1) / SNR, up to 200x more weight on the high-noise steps
    (layout and colour) than on the low-noise ones that draw a star's notches. Measured, N = 24: concept 24/24, class
    24/24 (round 5's recipe and scorer: 14/24, its stars with filled notches read as triangles; docs/quality.md)."""
    _concept_case(v_model_path, v_data, tmp_path, v_parameterization=None)


# ---- 2-process training -----------------------------------------------------------------------------

def test_concept_with_two_processes(shapes_model_path, shapes_model, concept_data, tmp_path):
    """``accelerate launch --multi_gpu --num_processes 2`` (gloo), batch 4 a process = the single run's 8.
    Measured, N = 24: concept 23/24, class 21/24 (the test's 12: 11 and 10; docs/quality.md, Option matrix)."""
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("this torch build has no gloo backend")
    # the same global batch as the single-process run: 2 processes x (batch / 2)
    per_process = str(int(TRAIN_DEFAULTS["train_batch_size"]) // 2)
    lora = train_concept_lora_processes(shapes_model_path, concept_data, tmp_path / "out", processes=2,
                                        train_batch_size=per_process)
    rates = concept_rates(shapes_model, lora, N, tmp_path / "gen_lora")
    _record(tmp_path, "with", rates)
    _assert_concept(rates)


# ---- SDXL -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sdxl_model_path():
    return str(cached_sdxl_shapes_model(seed=0))


@pytest.fixture(scope="module")
def sdxl_data(sdxl_model_path, tmp_path_factory):
    return prepare_concept_data(sdxl_model_path, tmp_path_factory.mktemp("concept_sdxl") / "data")


# Measured on round 5's SDXL builder (docs/quality.md), guidance 3, 6 images a caption: red circle 6/6, yellow
# triangle 6/6, green star 6/6, blue square 0/6 -- squares with pinched sides (solidity 0.84-0.89, read as circles);
# the SD1 epsilon base pinches some too (blue square 4/6). The base's own `a star` is a base-colour star 24/24.
# Not re-measured since the scorer reads shapes by their corners (library/eval/shapes_score.py), which reads pinched
# squares as squares; the SDXL base is an 18-minute build.
@pytest.mark.xfail(reason="SDXL shapes base draws blue squares with pinched sides at guidance 3 (0/6 read as "
                          "squares; the other captions 6/6)", strict=False)
@opt_in
@sdxl_group
def test_sdxl_base_draws_the_caption(sdxl_model_path, tmp_path):
    model = load_base_model(sdxl_model_path)
    assert model.family == "sdxl"
    _assert_base_draws(model, tmp_path)


@opt_in
@sdxl_group
def test_concept_sdxl(sdxl_model_path, sdxl_data, tmp_path):
    """SDXL through both text encoders, the pooled vector and the size/crop ids, with LoCon (conv_dim 4): at 64 px
    the SDXL layout's top level (8x8 latents, where a star's notches are) has no attention, so only LoCon puts a
    module there. Measured, N = 24: concept 24/24 with LoRA seeds 3 and 4, class 24/24, 0/24 without."""
    _concept_case(sdxl_model_path, sdxl_data, tmp_path, script="sdxl_train_network",
                  network_args=["conv_dim=4", "conv_alpha=4"], **ROUND5_RECIPE)


# Attention-only LoRA (kohya's default for networks.lora) on the SDXL layout: nothing at the 8x8 level. Measured,
# N = 24: purple 23-24/24 (colour learnt through both encoders), but the notches filled -- seed 3 19/24 stars,
# seed 4 11/24; class 23/24 both. Real SDXL draws shapes at 32-64 latent px, where its attention levels are.
# Measured with round 5's scorer (solidity), which read such stars as triangles; not re-measured since.
@pytest.mark.xfail(reason="SDXL, attention-only LoRA: concept 19/24 (seed 3) / 11/24 (seed 4), fattened purple "
                          "stars; docs/quality.md, SDXL", strict=False)
@opt_in
@sdxl_group
def test_concept_sdxl_attention_only_lora(sdxl_model_path, sdxl_data, tmp_path):
    _concept_case(sdxl_model_path, sdxl_data, tmp_path, script="sdxl_train_network", **ROUND5_RECIPE)

"""The concept test in the cases that need their own base model or their own launch (issue 14):
v-prediction (a v-pred shapes base), SDXL (the SDXL-layout shapes base: two text encoders,
size/crop conditioning) and 2-process training (``accelerate launch --multi_gpu --num_processes 2``).

Same concept and the same bar as tests/quality/test_concept_lora.py (concept_run.misses_the_bar). Each base also gets a
quick check that it draws what a caption says, which catches a wrong v target or a wrong SDXL
conditioning in the builder before any LoRA is blamed. A case that fails is a bug to find, not a
threshold to lower; measured rates are in docs/quality.md ("Option matrix").

CI runs every case here: the v-prediction base and the SDXL base (both ship in models/shapes/ beside the epsilon
one, built by tools/make_shapes_model.py), each checked, then each v loss, SDXL with and without LoCon, and 2-process
training. Every case trains the main test's recipe (concept_run.TRAIN_DEFAULTS); the tests that share a base run in
one xdist worker (``xdist_group``), so a base, its class images and its images without a LoRA are made once.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from library.eval.base_check import caption_rates
from library.eval.concept_processes import train_concept_lora_processes
from library.eval.concept_run import (
    GEN, TRAIN_DEFAULTS, concept_rates, draws_the_concept_without_lora, misses_the_bar,
    prepare_concept_data, train_concept_lora,
)
from library.eval.shapes_model import cached_shapes_model
from library.eval.shapes_model_sdxl import cached_sdxl_shapes_model
from library.models import load_base_model

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
    assert not misses_the_bar(rates), misses_the_bar(rates)


def _assert_base_draws(model, tmp_path):
    rates = caption_rates(model, N_BASE, tmp_path / "base_check", **GEN)
    _record(tmp_path, "base_check", rates)
    # every caption drawn right in most images: a wrong v target or a swapped conditioning draws noise or blobs
    assert min(rates.values()) >= 0.5 and sum(rates.values()) / len(rates) >= 0.75, rates


@dataclass(frozen=True)
class ConceptBase:
    """A base model with what every concept case on it shares, made once per xdist worker (session scope: a module
    fixture would be made again each time the worker comes back from another module's test): its concept data (the
    class images come from the base) and its own concept rates without a LoRA (same seeds, same images every case)."""

    path: str
    model: object
    data: Path
    without: dict


def _concept_base(path, model, tmp_path_factory, name) -> ConceptBase:
    root = tmp_path_factory.mktemp(name)
    data = prepare_concept_data(path, root / "data")
    return ConceptBase(path, model, data, concept_rates(model, None, N, root / "gen_base"))


def _concept_case(base: ConceptBase, tmp_path, **train_options):
    """The main test's checks on another base: nothing draws the concept without the LoRA, the LoRA trained with
    ``train_options`` (train_concept_lora's: a script, training flags) draws it and keeps the class."""
    _record(tmp_path, "without", base.without)
    assert not draws_the_concept_without_lora(base.without), draws_the_concept_without_lora(base.without)
    lora = train_concept_lora(base.path, base.data, tmp_path / "out", **train_options)
    rates = concept_rates(base.model, lora, N, tmp_path / "gen_lora")
    _record(tmp_path, "with", rates)
    _assert_concept(rates)


# ---- v-prediction -----------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def v_model_path():
    return str(cached_shapes_model(seed=0, prediction_type="v_prediction"))


@pytest.fixture(scope="session")
def v_model(v_model_path):
    return load_base_model(v_model_path)


@pytest.fixture(scope="session")
def v_base(v_model_path, v_model, tmp_path_factory):
    return _concept_base(v_model_path, v_model, tmp_path_factory, "concept_v")


@v_group
def test_v_prediction_base_draws_the_caption(v_model, tmp_path):
    """Round 5's builder with --v_parameterization, guidance 3 (docs/quality.md): red circle 5/6, blue square 5/6,
    yellow triangle 6/6, green star 6/6; its own `a star` a base-colour star 24/24."""
    assert v_model.prediction_type == "v_prediction"
    _assert_base_draws(v_model, tmp_path)


@v_group
def test_concept_with_v_parameterization(v_base, tmp_path):
    """v target with min_snr_gamma 5: for v, kohya's min-SNR weight is min(SNR, 5) / (SNR + 1), the epsilon case's
    min-SNR weighting, so the result reads the v target alone (docs/quality.md, "v-prediction").
    Measured, N = 24: concept 24/24, class 24/24, 0/24 without."""
    _concept_case(v_base, tmp_path, v_parameterization=None, min_snr_gamma="5")


@v_group
def test_concept_with_v_parameterization_scaled_loss(v_base, tmp_path):
    """v target with kohya's --scale_v_pred_loss_like_noise_pred: the v loss weighed by alpha^2 = SNR / (SNR + 1),
    so each timestep counts as in the epsilon case. Measured, N = 24: concept 24/24, class 24/24 (18/23 with a
    cosine from 3e-3: the alpha^2 weights shrink every step; docs/quality.md, Option matrix)."""
    _concept_case(v_base, tmp_path, v_parameterization=None, scale_v_pred_loss_like_noise_pred=None)


@v_group
def test_concept_with_v_parameterization_plain_loss(v_base, tmp_path):
    """The plain v loss: the epsilon loss times (SNR + 1) / SNR, up to 200x more weight on the high-noise steps
    (layout and colour) than on the low-noise ones that draw a star's notches. Measured, N = 24: concept 24/24, class
    24/24 (round 5's recipe and scorer: 14/24, its stars with filled notches read as triangles; docs/quality.md)."""
    _concept_case(v_base, tmp_path, v_parameterization=None)


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

@pytest.fixture(scope="session")
def sdxl_model_path():
    return str(cached_sdxl_shapes_model(seed=0))


@pytest.fixture(scope="session")
def sdxl_model(sdxl_model_path):
    return load_base_model(sdxl_model_path)


@pytest.fixture(scope="session")
def sdxl_base(sdxl_model_path, sdxl_model, tmp_path_factory):
    return _concept_base(sdxl_model_path, sdxl_model, tmp_path_factory, "concept_sdxl")


# Measured on the shipped fp16 SDXL base (source 88b0c40420d64c49), guidance 3, 8 images a caption: red circle 7/8,
# blue square 8/8, yellow triangle 8/8, green star 8/8; its own `a star` a base-colour star 24/24, `sks star` never the
# concept (0/24). Round 5's base read 0/6 blue squares: pinched squares, which the solidity rule read as circles.
@sdxl_group
def test_sdxl_base_draws_the_caption(sdxl_model, tmp_path):
    assert sdxl_model.family == "sdxl"
    _assert_base_draws(sdxl_model, tmp_path)


@sdxl_group
def test_concept_sdxl(sdxl_base, tmp_path):
    """SDXL through both text encoders, the pooled vector and the size/crop ids, with LoCon (conv_dim 4): at 64 px
    the SDXL layout's top level (8x8 latents, where a star's notches are) has no attention, and LoCon's convolution
    modules are the only ones there. Measured, N = 24: concept 24/24 and class 24/24 with LoRA seeds 3 and 4; 0/24
    without."""
    _concept_case(sdxl_base, tmp_path, script="sdxl_train_network", network_args=["conv_dim=4", "conv_alpha=4"])


@sdxl_group
def test_concept_sdxl_attention_only_lora(sdxl_base, tmp_path):
    """kohya's default networks.lora (attention and projections only) on the SDXL layout: no module at the 8x8 level,
    so the star's notches are drawn by what the attention levels learn. Measured, N = 24: concept 23/24 (one
    white-outlined star read magenta) and class 24/24 with LoRA seed 3; 24/24 and 23/24 with seed 4. Round 5's
    recipe and scorer gave 19/24: its stars with filled notches read as triangles (docs/quality.md, SDXL)."""
    _concept_case(sdxl_base, tmp_path, script="sdxl_train_network")

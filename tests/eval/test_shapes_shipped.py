"""The shapes model kept in the repository (models/shapes/) is the one the present builder makes.

The quality suite and the demo take the shipped file instead of building (minutes of CPU)
while its recorded source hash matches the builder's; a builder change without a rebuild
must fail here, in the fast default suite, not silently fall back to a slow build in CI.
"""

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from library.eval import shapes_model, shapes_model_sdxl
from library.eval.shapes_model import built_from, cached_shapes_model, shipped_path, source_hash
from tools.make_shapes_model import SHIP_LIMIT_MB, main as make_shapes

REBUILD = "run python tools/make_shapes_model.py --ship"


# The demo (scripts/demo.sh) and the quality suite take the shipped models (the epsilon one; the v-prediction one
# for the v case); a fresh clone must never find one missing or stale (a stale one would send the demo or CI
# into a build of many CPU minutes).
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_the_shipped_shapes_model_is_current_and_small(prediction_type):
    path = shipped_path(seed=0, prediction_type=prediction_type)
    rebuild = REBUILD + (" --v_parameterization" if prediction_type == "v_prediction" else "")
    assert path.is_file(), f"no shapes model in {path.parent}: {rebuild}"
    assert built_from(path) == source_hash(), f"the shipped {prediction_type} shapes model is stale: {rebuild}"
    assert path.stat().st_size < SHIP_LIMIT_MB * 1e6
    # taken as is, no build
    assert cached_shapes_model(seed=0, prediction_type=prediction_type, cache_dir="/nonexistent-cache-unused") == path


# The SDXL quality cases take the shipped SDXL base (fp16, 14 MB): stale, CI would spend 18 CPU minutes building it.
def test_the_shipped_sdxl_shapes_model_is_current_and_small():
    path = shapes_model_sdxl.shipped_sdxl_path(seed=0)
    rebuild = REBUILD + " --sdxl"
    assert path.is_file(), f"no SDXL shapes model in {path.parent}: {rebuild}"
    assert built_from(path) == shapes_model_sdxl.source_hash(), f"the shipped SDXL shapes model is stale: {rebuild}"
    assert path.stat().st_size < SHIP_LIMIT_MB * 1e6
    assert shapes_model_sdxl.cached_sdxl_shapes_model(seed=0, cache_dir="/nonexistent-cache-unused") == path


def _fake_model(path: Path, source: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"x": torch.zeros(1)}, str(path), metadata={"lorasmith.shapes": f"seed=0 source={source} budget={{}}"})


def test_a_stale_shipped_model_is_not_used(tmp_path, monkeypatch):
    monkeypatch.setattr(shapes_model, "SHIPPED_DIR", tmp_path / "shipped")
    _fake_model(shipped_path(), "0123456789abcdef")
    assert built_from(shipped_path()) == "0123456789abcdef"
    cached = tmp_path / "cache" / f"shapes-{source_hash()}" / "shapes_epsilon_seed0.safetensors"
    _fake_model(cached, source_hash())  # stands for an earlier build of the present builder
    assert cached_shapes_model(seed=0, cache_dir=tmp_path / "cache") == cached


def test_a_stale_shipped_sdxl_model_is_not_used(tmp_path, monkeypatch):
    monkeypatch.setattr(shapes_model, "SHIPPED_DIR", tmp_path / "shipped")
    _fake_model(shapes_model_sdxl.shipped_sdxl_path(), "0123456789abcdef")
    folder = tmp_path / "cache" / f"shapes-sdxl-{shapes_model_sdxl.source_hash()}"
    cached = folder / "shapes_sdxl_epsilon_seed0.safetensors"
    _fake_model(cached, shapes_model_sdxl.source_hash())
    assert shapes_model_sdxl.cached_sdxl_shapes_model(seed=0, cache_dir=tmp_path / "cache") == cached


def test_ship_takes_no_other_budget_or_out(tmp_path, capsys):
    for argv in (["--ship", "--budget", "smoke"], ["--ship", "--out", str(tmp_path / "x.safetensors")],
                 ["--sdxl", "--ship", "--budget", "smoke"]):
        try:
            make_shapes(argv)
        except SystemExit as e:
            assert e.code == 2
        else:
            raise AssertionError(f"{argv} was accepted")
    assert not list(tmp_path.iterdir())

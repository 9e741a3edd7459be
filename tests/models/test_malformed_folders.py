"""A diffusers folder whose JSON files hold the wrong types ends in one ModelLoadError naming the file,
never an AttributeError/TypeError from deep inside diffusers."""

import json

import pytest

from library.models import ModelLoadError, load_base_model

from .test_diffusers_folder import _save_folder


@pytest.fixture(scope="module")
def folder(tiny_path, tmp_path_factory):
    return _save_folder(load_base_model(tiny_path("sd1")), tmp_path_factory.mktemp("sd1_folder"), with_tokenizers=False)


def _copy(folder, tmp_path):
    import shutil

    return shutil.copytree(folder, tmp_path / "model")


@pytest.mark.parametrize("part, change, words", [
    ("unet/config.json", lambda cfg: [cfg], r"unet/config.json: must be a JSON object"),
    ("text_encoder/config.json", lambda cfg: "text", r"text_encoder/config.json: must be a JSON object"),
    ("text_encoder/config.json", lambda cfg: {**cfg, "hidden_act": ["gelu"]}, r"config.json: hidden_act has the wrong type"),
    ("unet/config.json", lambda cfg: {**cfg, "addition_embed_type": 5}, r"config.json: addition_embed_type has the wrong type"),
    ("unet/config.json", lambda cfg: {**cfg, "block_out_channels": "wide"}, r"cannot load unet/ .*unet/config.json"),
    ("scheduler/scheduler_config.json", lambda cfg: {"prediction_type": {"a": 1}}, r"prediction_type has the wrong type"),
])
def test_wrong_json_types_are_one_error_naming_the_file(folder, tmp_path, part, change, words):
    root = _copy(folder, tmp_path)
    path = root / part
    path.parent.mkdir(exist_ok=True)
    config = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps(change(config)))
    with pytest.raises(ModelLoadError, match=words) as e:
        load_base_model(root)
    assert "\n" not in str(e.value)

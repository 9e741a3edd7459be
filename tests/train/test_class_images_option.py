"""--num_class_images: the trainer fills the reg folder from the base model before it scans the data
(prior preservation as diffusers' DreamBooth does it), resumably, and refuses what it cannot fill up front."""

import os

import pytest
from PIL import Image
from safetensors import safe_open

from library.errors import UserError
from library.options import namespace_from
from library.options.validate import check_paths
from library.train.entry import main as train_main
from library.train.entry import train
from library.train.class_images import check_fill_target
from tests.train.conftest import base_values


def _values(tiny_ckpt, demo_data, tmp_path, **extra):
    values = dict(max_train_steps=2, reg_data_dir=str(tmp_path / "reg"), class_prompt="shape", num_class_images=2,
                  class_image_steps=2)
    return base_values(tiny_ckpt("sd1"), demo_data, tmp_path / "out", **{**values, **extra})


def test_the_reg_folder_is_filled_before_training_and_a_second_run_only_adds_what_is_missing(
        tiny_ckpt, demo_data, tmp_path):
    reg = tmp_path / "reg"
    assert not reg.exists()
    result = train(namespace_from(_values(tiny_ckpt, demo_data, tmp_path)))
    assert os.path.isfile(result.lora)
    made = sorted(p.name for p in reg.iterdir())
    assert made == ["class_00000.png", "class_00000.txt", "class_00001.png", "class_00001.txt"]
    assert (reg / "class_00000.txt").read_text() == "shape\n"
    assert Image.open(reg / "class_00000.png").size == (64, 64)
    with safe_open(str(result.lora), "pt") as f:  # the filled folder was trained on as the reg set
        assert f.metadata()["ss_num_reg_images"] == "2"
    first = (reg / "class_00000.png").read_bytes()
    (reg / "class_00001.png").unlink()  # an interrupted fill: one image missing, and one more asked for
    train(namespace_from(_values(tiny_ckpt, demo_data, tmp_path, num_class_images=3, output_name="t2")))
    assert (reg / "class_00000.png").read_bytes() == first  # kept, not redrawn
    assert sorted(p.name for p in reg.glob("*.png")) == ["class_00000.png", "class_00001.png", "class_00002.png"]


def test_a_full_reg_folder_loads_no_model_for_class_images(tiny_ckpt, demo_data, tmp_path, monkeypatch):
    train(namespace_from(_values(tiny_ckpt, demo_data, tmp_path)))
    import library.train.setup_model as setup_model

    calls = []
    real = setup_model.load_base
    monkeypatch.setattr(setup_model, "load_base", lambda *a, **k: calls.append(1) or real(*a, **k))
    train(namespace_from(_values(tiny_ckpt, demo_data, tmp_path, output_name="again")))
    assert len(calls) == 1  # the training load only


@pytest.mark.parametrize("drop, says", [
    ({"reg_data_dir": None}, "needs --reg_data_dir"),
    ({"class_prompt": None}, "needs --class_prompt"),
    ({"class_prompt": "  "}, "needs --class_prompt"),
])
def test_what_the_fill_needs_is_checked_before_anything_loads(tiny_ckpt, demo_data, tmp_path, drop, says):
    values = _values(tiny_ckpt, demo_data, tmp_path)
    values.update(drop)
    values = {k: v for k, v in values.items() if v is not None}
    with pytest.raises(UserError, match=says) as e:
        namespace_from(values)
    assert "num_class_images" in str(e.value)


def test_dataset_config_and_a_kohya_reg_root_are_refused_with_the_fix(tiny_ckpt, demo_data, tmp_path):
    cfg = tmp_path / "data.toml"
    cfg.write_text("[[datasets]]\n[[datasets.subsets]]\nimage_dir = 'x'\n")
    values = _values(tiny_ckpt, demo_data, tmp_path, dataset_config=str(cfg))
    with pytest.raises(UserError, match="make_class_images.py"):
        namespace_from(values)
    # a kohya root (NN_name folders) is not one flat folder: refused, naming the folder, before any model loads
    with pytest.raises(UserError, match=r"reg.*kohya.*1_<class>"):
        check_fill_target(str(demo_data / "reg"))
    (tmp_path / "afile").write_text("x")
    args = namespace_from(_values(tiny_ckpt, demo_data, tmp_path, reg_data_dir=str(tmp_path / "afile")))
    with pytest.raises(UserError, match="is a file"):
        check_paths(args)
    check_paths(namespace_from(_values(tiny_ckpt, demo_data, tmp_path)))  # a missing folder is fine: it is made


def test_the_command_line_refuses_a_kohya_reg_root_without_touching_it(tiny_ckpt, demo_data, tmp_path, capsys):
    before = sorted(p.name for p in (demo_data / "reg").rglob("*"))
    argv = ["--pretrained_model_name_or_path", tiny_ckpt("sd1"), "--train_data_dir", str(demo_data / "img"),
            "--reg_data_dir", str(demo_data / "reg"), "--class_prompt", "shape", "--num_class_images", "3",
            "--resolution", "64", "--output_dir", str(tmp_path / "out"), "--max_train_steps", "1"]
    assert train_main(argv) != 0
    assert "1_<class>" in capsys.readouterr().err
    assert sorted(p.name for p in (demo_data / "reg").rglob("*")) == before
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())

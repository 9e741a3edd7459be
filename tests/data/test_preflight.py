"""Preflight report and tools/check_dataset.py: counts, reg balance, buckets, steps, exit codes."""

import importlib.util
import json
import os

import pytest

from library.data.params import DataOptions
from library.data.preflight import compute_steps, run_preflight

from .helpers import make_folder, make_image, write

_TOOL = os.path.join(os.path.dirname(__file__), "..", "..", "tools", "check_dataset.py")
_spec = importlib.util.spec_from_file_location("check_dataset_tool", _TOOL)
check_dataset = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_dataset)


@pytest.fixture
def kohya_tree(tmp_path):
    img, reg = tmp_path / "img", tmp_path / "reg"
    f = make_folder(img, "25_Li4mG4ll4gher man", 30, size=(16, 16), caption="tag", ext=".txt")
    os.remove(os.path.join(f, "003.txt"))
    write(os.path.join(f, "004.txt"), "")
    make_folder(img, "abc", 1, size=(16, 16))
    make_image(img / "stray.png", (16, 16))
    make_folder(reg, "1_man", 752, size=(16, 16))
    return img, reg


def test_report_numbers(kohya_tree):
    img, reg = kohya_tree
    opts = DataOptions(train_data_dir=str(img), reg_data_dir=str(reg), resolution=64, train_batch_size=4, caption_extension=".txt")
    r = run_preflight(opts, max_train_epochs=10, gradient_accumulation_steps=2, num_processes=2)
    assert not r.fatal and r.seconds < 10
    train, regrow = r.folders
    assert (train.kind, train.repeats, train.images, train.samples, train.captions_missing, train.captions_empty) == ("train", 25, 30, 750, 1, 1)
    assert (regrow.kind, regrow.images, regrow.samples, regrow.reg_unused) == ("reg", 752, 750, 2)
    assert (r.num_train_images, r.num_reg_images, r.reg_samples_used, r.samples_per_epoch) == (750, 752, 750, 1500)
    assert [(b.width, b.height, b.samples, b.batches) for b in r.buckets] == [(64, 64, 1500, 375)]
    assert r.batches_per_epoch == 375 and r.steps_per_epoch == 94 and r.total_steps == 940  # ceil(375 / 2 / 2) x 10
    codes = {i.code for i in r.issues}
    assert {"folder_without_repeats", "images_in_root", "caption_missing", "caption_empty"} <= codes
    text = r.to_text()
    for needle in ["25_Li4mG4ll4gher man", "2 reg images unused", "64x64", "940 total steps", "NOT used", "Result: OK"]:
        assert needle in text
    json.dumps(r.to_dict())


def test_steps_arithmetic():
    assert compute_steps(375, 2, 2, max_train_epochs=10) == (94, 10, 940)
    assert compute_steps(100, 1, 1) == (100, 16, 1600)  # kohya's default max_train_steps
    assert compute_steps(100, 3, 4, max_train_steps=50) == (9, 6, 50)


def test_cli_exit_codes(kohya_tree, tmp_path, capsys):
    img, reg = kohya_tree
    assert check_dataset.main(["--train_data_dir", str(img), "--reg_data_dir", str(reg), "--resolution", "64", "--caption_extension", ".txt"]) == 0
    out = capsys.readouterr().out
    assert "Result: OK" in out and "Regularisation" in out
    flat = tmp_path / "flat"
    make_image(flat / "a.png")
    assert check_dataset.main(["--train_data_dir", str(flat), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["fatal"] and "images directly inside" in report["issues"][-1]["message"]


def test_fatal_cases_never_raise(tmp_path):
    cases = [
        DataOptions(train_data_dir=str(tmp_path / "missing"), resolution=64),
        DataOptions(dataset_config=str(tmp_path / "missing.toml")),
        DataOptions(train_data_dir=str(tmp_path)),  # empty folder
    ]
    for opts in cases:
        r = run_preflight(opts)
        assert r.fatal and r.issues[-1].level == "error"


def test_verify_images_finds_truncated_files(tmp_path):
    folder = make_folder(tmp_path / "img", "1_a", 2, size=(32, 32))
    path = os.path.join(folder, "001.png")
    write(path, open(path, "rb").read()[:70])
    r = run_preflight(DataOptions(train_data_dir=str(tmp_path / "img"), resolution=64), verify_images=True)
    (bad,) = [i for i in r.issues if i.code == "image_corrupt"]
    assert "001.png" in bad.message and bad.level == "warning" and not r.fatal
    r = run_preflight(DataOptions(train_data_dir=str(tmp_path / "img"), resolution=64, stop_on_bad_image=True), verify_images=True)
    assert r.fatal


def test_caching_notices(tmp_path):
    make_folder(tmp_path / "img", "1_a", 1, size=(32, 32))
    r = run_preflight(DataOptions(train_data_dir=str(tmp_path / "img"), resolution=64, cache_latents=True, color_aug=True))
    assert not r.fatal and any(i.code == "latent_cache_off" and "1_a" in i.message for i in r.issues)
    r = run_preflight(DataOptions(train_data_dir=str(tmp_path / "img"), resolution=64, cache_text_encoder_outputs=True, shuffle_caption=True))
    assert r.fatal and any(i.code == "text_cache_impossible" and "1_a" in i.message for i in r.issues)


def test_check_dataset_shows_the_training_split_and_mask_problems(kohya_tree, capsys):
    img, _ = kohya_tree
    base = ["--train_data_dir", str(img), "--resolution", "64", "--caption_extension", ".txt"]
    assert check_dataset.main(base + ["--validation_split", "0.5", "--validation_seed", "1"]) == 0
    assert "held out by validation_split (never trained)" in capsys.readouterr().out
    assert check_dataset.main(base + ["--masked_loss"]) == 1
    assert "no subset has masks" in capsys.readouterr().out

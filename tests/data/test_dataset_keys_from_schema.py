"""Dataset values follow the option schema whichever way they arrive: the trainer's command line (parse_args),
a dataset_config TOML, or tools/check_dataset.py. Each case here is a copy of a rule that had drifted from the
schema (issue 11) and failed before the data layer took its keys, types and ranges from it."""

import json
import re

import pytest

from library.errors import UserError
from library.options import parse_args
from tools import check_dataset

from .helpers import make_folder

ARGV = ["--pretrained_model_name_or_path", "m.safetensors", "--train_data_dir", "data", "--resolution", "64"]


def check(*argv, capsys):
    code = check_dataset.main([*argv, "--json"])
    out = capsys.readouterr().out
    report = json.loads(out)
    return code, " ".join(i["message"] for i in report["issues"] if i["level"] == "error")


def toml(tmp_path, text):
    path = tmp_path / "ds.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_validation_split_of_one_is_refused_on_the_command_line_and_in_a_file(tmp_path, capsys):
    """The schema said at most 1 while the data layer wanted below 1: the trainer's parse passed, the scan failed."""
    with pytest.raises(UserError, match="validation_split must be below 1"):
        parse_args([*ARGV, "--validation_split", "1"], check_files=False)
    parse_args([*ARGV, "--validation_split", "0.5"], check_files=False)
    img = make_folder(tmp_path, "img", 2)
    path = toml(tmp_path, f"[[datasets]]\nresolution = 64\nvalidation_split = 1.0\n[[datasets.subsets]]\nimage_dir = '{img}'\n")
    code, errors = check("--dataset_config", path, capsys=capsys)
    assert code == 1 and "validation_split must be below 1" in errors and "ds.toml" in errors


def test_choices_are_case_insensitive_in_a_file_as_on_the_command_line(tmp_path, capsys):
    assert parse_args([*ARGV, "--resize_interpolation", "Lanczos"], check_files=False).resize_interpolation == "lanczos"
    img = make_folder(tmp_path, "img", 2)
    path = toml(tmp_path, f"[general]\nresize_interpolation = 'Lanczos'\n[[datasets]]\nresolution = 64\n"
                          f"[[datasets.subsets]]\nimage_dir = '{img}'\ninstance_prompt = 'a cat'\n")
    assert check("--dataset_config", path, capsys=capsys) == (0, "")
    path = toml(tmp_path, f"[[datasets]]\nresolution = 64\n[[datasets.subsets]]\nimage_dir = '{img}'\n"
                          "resize_interpolation = 'lanczoz'\n")
    code, errors = check("--dataset_config", path, capsys=capsys)
    assert code == 1 and "did you mean 'lanczos'" in errors


def test_a_dataset_wide_key_in_a_subset_says_where_it_goes(tmp_path, capsys):
    img = make_folder(tmp_path, "img", 2)
    path = toml(tmp_path, f"[[datasets]]\n[[datasets.subsets]]\nimage_dir = '{img}'\nresolution = 64\n")
    code, errors = check("--dataset_config", path, capsys=capsys)
    assert code == 1 and "resolution is a dataset-level key" in errors and "[[datasets]] table" in errors


@pytest.mark.parametrize("extra, words", [
    (("--min_bucket_reso", "0", "--enable_bucket"), "min_bucket_reso must be greater than 0"),  # was ZeroDivisionError
    (("--prior_loss_weight", "-1"), "prior_loss_weight must be at least 0"),  # was accepted
    (("--train_batch_size", "0"), "batch_size must be at least 1"),  # refused before too, in words of its own
])
def test_check_dataset_refuses_what_the_trainer_refuses(tmp_path, capsys, extra, words):
    root = tmp_path / "data"
    make_folder(root, "1_cat", 2)
    with pytest.raises(UserError, match=words.split()[0]):
        parse_args([*ARGV[:2], "--train_data_dir", str(root), "--resolution", "64", *extra], check_files=False)
    code, errors = check("--train_data_dir", str(root), "--resolution", "64", *extra, capsys=capsys)
    assert code == 1 and words in errors


def test_check_dataset_reads_values_as_the_trainer_does(tmp_path, capsys):
    """check_dataset had its own argument types: "Kohya" (the trainer takes it) was an error there."""
    root = tmp_path / "data"
    make_folder(root, "1_cat", 2)
    assert parse_args([*ARGV[:2], "--train_data_dir", str(root), "--resolution", "64", "--data_layout", "Kohya"],
                      check_files=False).data_layout == "kohya"
    assert check("--train_data_dir", str(root), "--resolution", "64", "--data_layout", "Kohya", capsys=capsys) == (0, "")


@pytest.mark.parametrize("table, words", [
    ("resolution = 1000\nenable_bucket = true", "resolution 1000.* must be a multiple of bucket_reso_steps 64.*use 960"),
    ("resolution = 512\nenable_bucket = true\nmin_bucket_reso = 250", "min_bucket_reso 250.* must be a multiple of .*use 192"),
])
def test_a_dataset_table_meets_the_command_lines_bucket_rules(tmp_path, capsys, table, words):
    """The resolution/bucket rules were written twice; a dataset_config passed what the command line refused."""
    cli = ["--" + part.replace(" = true", "").replace(" = ", "=") for part in table.split("\n")]
    with pytest.raises(UserError, match=words):
        parse_args([*ARGV[:4], *cli], check_files=False)
    img = make_folder(tmp_path, "img", 2)
    path = toml(tmp_path, f"[[datasets]]\n{table}\n[[datasets.subsets]]\nimage_dir = '{img}'\ninstance_prompt = 'a cat'\n")
    code, errors = check("--dataset_config", path, capsys=capsys)
    assert code == 1 and re.search(words, errors) and "ds.toml" in errors

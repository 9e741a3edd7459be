"""The TOML files we write read back to the same values, in our reader (tomllib) and in kohya's (toml).

Every writable option of both scripts gets a non-default value of its type (lists, sizes, Windows
paths, strings with quotes, newlines, tabs, control characters and non-ASCII text), goes through
``config_text`` (what --output_config, the GUI and the ComfyUI node write) and ``read_config_file``
and must come back equal. kohya loads --config_file with the ``toml`` package and flattens the
sections into argparse's namespace, so the same text must parse there too, with ``resolution`` a
string (kohya splits it on ",").
"""

import math
import tomllib

import pytest

from library.errors import UserError
from library.options import OPTIONS, config_text, parse_args, read_config_file
from library.options.config_file import NEVER_WRITTEN
from library.options.toml_text import dumps

NASTY = 'say "hi" \\ there\nsecond line\tü 漢字 \x01 # [not a section] \'single\''
WINDOWS_PATH = r"C:\Users\Zoë\LoRA data\img"


def _number(option, candidates):
    for x in candidates:
        if x != option.default and option.range_error(x) is None:
            return x
    raise AssertionError(f"no sample value for {option.name}")


def _element(option):
    if option.choices:
        return next(c for c in option.choices if c != option.default)
    kind = option.type
    if kind == "bool":
        return True
    if kind == "int":
        return _number(option, [3, 1, 2, 0, 7, 100, 1024, -1])
    if kind == "float":
        return _number(option, [0.25, 0.5, 1.5, 1e-4, 0.0, 2.0, 10.0, 100.0, -0.5])
    if kind == "int_or_float":
        return 0.25
    if kind == "size":
        return (512, 768)
    if kind == "path":
        return WINDOWS_PATH
    return NASTY


def _sample(option):
    if option.nargs:
        if option.choices:
            return [c for c in option.choices if c != option.default][:2]
        first = _element(option)
        second = WINDOWS_PATH + "2" if option.type == "path" else ("b=2" if option.type == "str" else first)
        return [first, second]
    return _element(option)


def _writable(script):
    return [o for o in OPTIONS if o.for_script(script) and not o.cli_only and not o.alias_of and o.name not in NEVER_WRITTEN]


def _kohya_flatten(text):
    """What kohya's read_config_from_file puts into argparse's namespace (toml.load, sections merged)."""
    toml = pytest.importorskip("toml")  # kohya's reader (pinned in requirements.lock; lycoris-lora needs it)
    flat = {}
    for key, value in toml.loads(text).items():
        flat.update(value if isinstance(value, dict) else {key: value})
    return flat


@pytest.mark.parametrize("script", ["train_network", "sdxl_train_network"])
def test_every_option_type_round_trips_through_our_reader_and_kohyas(script, tmp_path):
    values = {o.name: _sample(o) for o in _writable(script)}
    text = config_text(values, header="written by a test\nsecond header line")
    path = tmp_path / "all.toml"
    path.write_text(text, encoding="utf-8")

    back, sources = read_config_file(str(path), script)
    expected = {name: (list(v) if isinstance(v, list) else v) for name, v in values.items()}
    assert back == expected
    assert sources["network_dim"].endswith("[network_arguments]")
    assert text.startswith("# written by a test\n# second header line\n")

    flat = _kohya_flatten(text)
    assert flat == {k: v for k, v in tomllib.loads(text)["dataset_arguments"].items()} | {
        k: v for section in tomllib.loads(text).values() for k, v in section.items()}
    assert flat["resolution"] == "512,768" and flat["caption_prefix"] == NASTY


def test_none_and_default_values_are_left_out_and_a_square_size_is_one_kohya_string(tmp_path):
    text = config_text({"network_dim": None, "seed": 3, "learning_rate": 1e-4, "network_args": None, "resolution": (640, 640)})
    assert tomllib.loads(text) == {"dataset_arguments": {"resolution": "640"}, "training_arguments": {"seed": 3}}
    assert _kohya_flatten(text)["resolution"] == "640"  # kohya: tuple(int(r) for r in "640".split(","))


def test_paths_given_as_path_objects_are_written_as_text(tmp_path):
    out = tmp_path / "out dir"
    text = config_text({"output_dir": out, "base_weights": [tmp_path / "a.safetensors"]})
    data = {k: v for section in tomllib.loads(text).values() for k, v in section.items()}
    assert data == {"output_dir": str(out), "base_weights": [str(tmp_path / "a.safetensors")]}


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_special_floats_are_refused_naming_the_option(bad):
    with pytest.raises(UserError, match=r"cannot write learning_rate: .*finite"):
        config_text({"learning_rate": bad})
    with pytest.raises(UserError, match=r"cannot write text_encoder_lr: .*finite"):
        config_text({"text_encoder_lr": [1e-4, bad]})
    with pytest.raises(UserError, match=r"datasets\[0\]\.subsets\[0\]\.caption_dropout_rate is .*finite"):
        dumps({"datasets": [{"subsets": [{"image_dir": "x", "caption_dropout_rate": bad}]}]})


def test_a_value_of_the_wrong_type_is_refused_before_anything_is_written():
    with pytest.raises(UserError, match=r"cannot write network_dim: it must be an integer"):
        config_text({"network_dim": "eight"})


def test_nested_dataset_tables_round_trip_in_both_readers():
    data = {
        "general": {"caption_extension": ".txt", "shuffle_caption": True},
        "datasets": [
            {"resolution": [512, 768], "batch_size": 2, "subsets": [
                {"image_dir": WINDOWS_PATH, "num_repeats": 10, "class_tokens": NASTY},
                {"image_dir": "reg", "is_reg": True, "caption_dropout_rate": 0.05}]},
            {"resolution": 1024, "subsets": [{"image_dir": "/data/ü"}]},
        ],
    }
    text = dumps(data, header="a dataset config")
    assert tomllib.loads(text) == data
    pytest.importorskip("toml")
    import toml

    assert toml.loads(text) == data


def test_output_config_round_trips_through_the_command_line(paths, tmp_path):
    argv, _ = paths
    out = tmp_path / "kohya.toml"
    given = argv + ["--resolution", "768", "--caption_prefix", NASTY, "--output_dir", WINDOWS_PATH,
                    "--network_args", "conv_dim=4", "conv_alpha=1", "--text_encoder_lr", "1e-5",
                    "--lr_warmup_steps", "0.1", "--lr_scheduler", "cosine", "--max_train_steps", "1200", "--cache_latents"]
    with pytest.raises(SystemExit):
        parse_args(given + ["--config_file", str(out), "--output_config"])
    again, direct = parse_args(["--config_file", str(out)]), parse_args(given)
    for name in ("resolution", "caption_prefix", "output_dir", "network_args", "text_encoder_lr", "lr_warmup_steps",
                 "max_train_steps", "cache_latents", "pretrained_model_name_or_path", "train_data_dir"):
        assert getattr(again, name) == getattr(direct, name), name
    flat = _kohya_flatten(out.read_text(encoding="utf-8"))
    assert flat["resolution"] == "768" and flat["output_dir"] == WINDOWS_PATH and flat["text_encoder_lr"] == [1e-5]

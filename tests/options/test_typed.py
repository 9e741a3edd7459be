"""The layers' option objects are made from the schema (library/options/typed.py): their defaults are the schema's,
a parsed namespace fills them by name, they are frozen and survive pickling (DataLoader workers under spawn)."""

import dataclasses
import pickle

import pytest

from library.options import BY_NAME, parse_args
from library.options.typed import DataOptions, from_args

ARGV = ["--pretrained_model_name_or_path", "m.safetensors", "--train_data_dir", "data", "--resolution", "512"]


def _layer_configs():
    noise = pytest.importorskip("library.train.noise")
    losses = pytest.importorskip("library.train.losses")
    return noise.NoiseOptions, losses.LossOptions


def test_defaults_are_the_schemas():
    derived = {"min_timestep": 0, "max_timestep": 1000}  # resolved from None against the model's schedule
    for cls in (DataOptions, *_layer_configs()):
        for f in dataclasses.fields(cls):
            assert f.default == derived.get(f.name, BY_NAME[f.name].default), (cls.__name__, f.name)


def test_a_parsed_command_line_fills_them_by_name():
    from library.train.step import loss_options, noise_options

    args = parse_args([*ARGV, "--noise_offset", "0.05", "--huber_c", "0.2", "--loss_type", "HUBER",
                       "--max_timestep", "900", "--caption_extension", ".txt"], check_files=False)
    noise, loss = noise_options(args, 1000), loss_options(args, v_parameterization=True)
    assert (noise.noise_offset, noise.min_timestep, noise.max_timestep) == (0.05, 0, 900)
    assert (loss.loss_type, loss.huber_c, loss.prediction_type) == ("huber", 0.2, "v_prediction")
    data = from_args(DataOptions, args)
    assert (data.caption_extension, data.resolution) == (".txt", (512, 512))


def test_they_are_frozen_and_pickle():
    for cls in (DataOptions, *_layer_configs()):
        value = cls()
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, dataclasses.fields(cls)[0].name, None)
        assert pickle.loads(pickle.dumps(value)) == value

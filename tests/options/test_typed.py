"""The layers' option objects are made from the schema (library/options/typed.py): their defaults are the schema's,
a parsed namespace fills them by name, they are frozen and survive pickling (DataLoader workers under spawn)."""

import dataclasses
import pickle

import pytest

from library.options import BY_NAME, parse_args
from library.options.definitions import OPTIONS
from library.options.typed import DataOptions, NetworkOptions, SamplingOptions, SavingOptions, from_args, python_type

ARGV = ["--pretrained_model_name_or_path", "m.safetensors", "--train_data_dir", "data", "--resolution", "512"]


def _layer_configs():
    noise = pytest.importorskip("library.train.noise")
    losses = pytest.importorskip("library.train.losses")
    return noise.NoiseOptions, losses.LossOptions


def test_defaults_are_the_schemas():
    derived = {"min_timestep": 0, "max_timestep": 1000}  # resolved from None against the model's schedule
    for cls in (DataOptions, NetworkOptions, SavingOptions, SamplingOptions, *_layer_configs()):
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
    for cls in (DataOptions, NetworkOptions, SavingOptions, SamplingOptions, *_layer_configs()):
        value = cls()
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, dataclasses.fields(cls)[0].name, None)
        assert pickle.loads(pickle.dumps(value)) == value


def _group(name):
    return [o.name for o in OPTIONS if o.group == name and o.status == "supported"]


def test_network_saving_sampling_are_the_schemas_groups():
    """A supported option added to the network, saving or sampling group reaches its layer with no second edit."""
    names = {cls: [f.name for f in dataclasses.fields(cls)] for cls in (NetworkOptions, SavingOptions, SamplingOptions)}
    assert names[NetworkOptions] == _group("network")
    assert names[SavingOptions] == _group("saving") + ["metadata_title", "no_metadata"]
    assert names[SamplingOptions] == _group("sampling") + ["clip_skip", "seed"]
    for cls in names:
        for f in dataclasses.fields(cls):
            assert f.type == python_type(BY_NAME[f.name]), (cls.__name__, f.name)


def test_network_saving_sampling_come_from_the_command_line():
    args = parse_args([*ARGV, "--network_dim", "8", "--network_alpha", "4", "--network_args", "conv_dim=4",
                       "--scale_weight_norms", "1.5", "--output_name", "run", "--save_every_n_steps", "5",
                       "--save_precision", "fp16", "--no_metadata", "--sample_sampler", "euler_a",
                       "--sample_every_n_epochs", "2", "--seed", "7", "--clip_skip", "2"], check_files=False)
    network, saving, sampling = (from_args(c, args) for c in (NetworkOptions, SavingOptions, SamplingOptions))
    assert (network.network_module, network.network_dim, network.network_alpha) == ("networks.lora", 8, 4.0)
    assert (network.network_args, network.scale_weight_norms) == (["conv_dim=4"], 1.5)
    assert (saving.output_dir, saving.output_name, saving.save_every_n_steps) == ("output", "run", 5)
    assert (saving.save_precision, saving.no_metadata, saving.save_state) == ("fp16", True, False)
    assert (sampling.sample_sampler, sampling.sample_every_n_epochs, sampling.seed, sampling.clip_skip) == (
        "euler_a", 2, 7, 2)


def test_save_and_sample_intervals_follow_kohya_from_a_parsed_command_line():
    from library.train.intervals import epochs_between_saves, samples_due_after_step, samples_due_at_end

    def opts(*words):
        args = parse_args([*ARGV, *words], check_files=False)
        return from_args(SavingOptions, args), from_args(SamplingOptions, args)

    saving, _ = opts("--save_every_n_epochs", "2", "--save_n_epoch_ratio", "3")
    assert epochs_between_saves(saving, 10) == 3  # the ratio wins: floor(10 / 3)
    saving, _ = opts("--save_every_n_epochs", "2")
    assert epochs_between_saves(saving, 10) == 2
    _, sampling = opts("--sample_every_n_steps", "5", "--sample_every_n_epochs", "2")
    assert not samples_due_after_step(sampling, 5)  # the epoch interval wins
    assert samples_due_at_end(sampling, 4, 7) and not samples_due_at_end(sampling, 3, 10)
    _, sampling = opts("--sample_every_n_steps", "5", "--sample_at_end")
    assert samples_due_after_step(sampling, 10) and samples_due_at_end(sampling, 1, 7)

"""kohya options that used to be accepted and silently ignored: each works or prints its notice (issue 12 items 6, 7)."""

import logging
import os

import pytest
import torch
from safetensors import safe_open

from library.errors import UserError
from library.options import OPTIONS, namespace_from, parse_args
from library.train.entry import main, train
from library.train.tracking import accelerator_kwargs, log_dir, logged_config
from tests.train.conftest import base_values

_SET = {"bool": True, "int": 3, "float": 0.5, "str": "x", "path": "x", "int_or_float": 3, "size": "64"}


def _set_value(option):
    if option.choices:
        return [option.choices[-1]] if option.nargs else option.choices[-1]
    value = _SET[option.type]
    return [value] if option.nargs else value


@pytest.mark.parametrize("option", [o for o in OPTIONS if o.status == "ignored"], ids=lambda o: o.name)
def test_every_ignored_option_prints_its_notice(option, tmp_path, caplog):
    caplog.set_level(logging.WARNING, "lorasmith.options")
    model, data = tmp_path / "m.safetensors", tmp_path / "img"
    model.write_bytes(b"")
    data.mkdir()
    argv = ["--pretrained_model_name_or_path", str(model), "--train_data_dir", str(data), "--resolution", "64"]
    value = _set_value(option)
    words = [f"--{option.name}"] + ([] if option.is_flag else [str(v) for v in (value if option.nargs else [value])])
    script = option.scripts[-1]
    parse_args(argv + words, script, check_files=False)
    assert f"{option.name} is accepted for kohya compatibility but does nothing here" in caplog.text


@pytest.mark.parametrize("name,says", [
    ("mem_eff_attn", "PyTorch SDPA attention is used"),
    ("ddp_static_graph", "averages the LoRA gradients with one all-reduce"),
])
def test_kohya_memory_and_ddp_switches_say_what_they_mean_here(name, says, paths_argv, caplog):
    caplog.set_level(logging.WARNING, "lorasmith.options")
    parse_args(paths_argv + [f"--{name}"], check_files=False)
    assert says in caplog.text


@pytest.mark.parametrize("name,says", [("highvram", "changes nothing"), ("lowram", "only freeing the VAE")])
def test_lowram_and_highvram_say_what_they_cannot_do_on_the_cpu(name, says):
    import argparse

    import torch

    from library.train.memory import device_notices

    args = argparse.Namespace(lowram=name == "lowram", highvram=name == "highvram")
    assert any(says in note for note in device_notices(args, torch.device("cpu")))
    assert device_notices(args, torch.device("cuda")) == []


@pytest.fixture
def paths_argv(tmp_path):
    return ["--pretrained_model_name_or_path", str(tmp_path / "m.safetensors"), "--train_data_dir", str(tmp_path),
            "--resolution", "64"]


def test_zero_means_off_as_in_kohya(paths_argv):
    args = parse_args(paths_argv + ["--min_snr_gamma", "0", "--multires_noise_iterations", "0",
                                    "--scale_weight_norms", "0", "--huber_c", "0"], check_files=False)
    assert (args.min_snr_gamma, args.multires_noise_iterations, args.scale_weight_norms) == (None, None, None)
    assert args.huber_c == 0  # unused by loss_type l2, as in kohya
    with pytest.raises(UserError, match=r"huber_c must be greater than 0 with loss_type huber"):
        parse_args(paths_argv + ["--huber_c", "0", "--loss_type", "huber"], check_files=False)


def test_gui_defaults_min_snr_gamma_0_and_huber_c_train_like_no_weighting(tiny_ckpt, demo_data, tmp_path):
    values = base_values(tiny_ckpt("sd1"), demo_data, tmp_path / "a", max_train_steps=2)
    plain = train(namespace_from(values)).losses
    gui = train(namespace_from({**values, "output_dir": str(tmp_path / "b"), "min_snr_gamma": 0, "huber_c": 0,
                                "huber_schedule": "snr"})).losses
    assert gui == plain


def test_ddp_options_become_accelerate_kwargs_handlers(paths_argv):
    from accelerate import DistributedDataParallelKwargs, InitProcessGroupKwargs

    args = parse_args(paths_argv + ["--ddp_timeout", "90", "--ddp_gradient_as_bucket_view", "--ddp_static_graph"],
                      check_files=False)
    init, ddp = accelerator_kwargs(args)["kwargs_handlers"]
    assert isinstance(init, InitProcessGroupKwargs) and init.timeout.total_seconds() == 90 * 60
    assert isinstance(ddp, DistributedDataParallelKwargs) and ddp.gradient_as_bucket_view and ddp.static_graph
    assert accelerator_kwargs(parse_args(paths_argv, check_files=False))["kwargs_handlers"] is None


def test_log_prefix_timestamped_folder_tracker_config_and_log_config(tiny_ckpt, demo_data, tmp_path):
    tracker = tmp_path / "tracker.toml"
    tracker.write_text("[tensorboard]\n", encoding="utf-8")
    values = base_values(tiny_ckpt("sd1"), demo_data, tmp_path / "out", max_train_steps=1, logging_dir=str(tmp_path / "logs"),
                         log_prefix="run1_", log_tracker_name="mine", log_tracker_config=str(tracker), log_config=True,
                         wandb_api_key="secret")
    args = namespace_from(values)
    assert os.path.dirname(log_dir(args)) == str(tmp_path / "logs")
    config = logged_config(args)
    assert config["network_dim"] == 8 and "wandb_api_key" not in config and "output_dir" not in config
    train(args)
    (folder,) = os.listdir(tmp_path / "logs")
    assert folder.startswith("run1_") and len(folder) == len("run1_") + 14  # kohya: <prefix><YYYYmmddHHMMSS>
    assert os.listdir(tmp_path / "logs" / folder) == ["mine"]


def test_save_n_epoch_ratio_sets_the_epoch_interval(tiny_ckpt, demo_data, tmp_path):
    values = base_values(tiny_ckpt("sd1"), demo_data, tmp_path / "out", max_train_epochs=4, train_batch_size=8,
                         save_n_epoch_ratio=2, train_data_dir=str(demo_data / "reg"))  # 8 images: one step an epoch
    train(namespace_from(values))
    files = sorted(f for f in os.listdir(tmp_path / "out") if f.endswith(".safetensors"))
    assert files == ["t-000002.safetensors", "t.safetensors"]  # floor(4 epochs / 2) = every 2nd epoch, then the last


def test_final_samples_only_when_kohya_would_make_them(tiny_ckpt, demo_data, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("sks shape --w 32 --h 32 --s 1 --d 1\n", encoding="utf-8")
    values = base_values(tiny_ckpt("sd1"), demo_data, tmp_path / "out", max_train_steps=3, sample_prompts=str(prompts),
                         sample_every_n_steps=2)
    train(namespace_from(values))
    assert sorted(os.listdir(tmp_path / "out" / "sample")) == ["t_000002_00_1.png"]  # not at step 3 (kohya neither)


def test_epoch_sampling_wins_over_step_sampling(tiny_ckpt, demo_data, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("sks shape --w 32 --h 32 --s 1 --d 1\n", encoding="utf-8")
    values = base_values(tiny_ckpt("sd1"), demo_data, tmp_path / "out", max_train_epochs=2, train_batch_size=4,
                         train_data_dir=str(demo_data / "reg"), sample_prompts=str(prompts), sample_every_n_steps=1,
                         sample_every_n_epochs=1)
    train(namespace_from(values))
    # kohya: with sample_every_n_epochs, sample_every_n_steps is ignored; epochs 1 and 2 end at steps 2 and 4
    assert sorted(os.listdir(tmp_path / "out" / "sample")) == ["t_000004_00_1.png", "t_e000001_00_1.png"]


def test_fp8_base_unet_stores_only_the_unet_in_fp8(tiny_ckpt, demo_data, tmp_path):
    from library.train.setup_model import load_for_training

    args = namespace_from(base_values(tiny_ckpt("sd1"), demo_data, tmp_path / "out", mixed_precision="bf16",
                                      fp8_base_unet=True))
    model = load_for_training(args, "train_network")
    dtypes = {p.dtype for m in model.base.unet.modules() if isinstance(m, torch.nn.Linear) for p in m.parameters(False)}
    assert torch.float8_e4m3fn in dtypes
    assert {p.dtype for p in model.base.text_encoders[0].parameters()} == {torch.bfloat16}
    with pytest.raises(UserError, match="fp8_base_unet needs mixed_precision fp16 or bf16"):
        namespace_from(base_values(tiny_ckpt("sd1"), demo_data, tmp_path / "out", fp8_base_unet=True))


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a CUDA machine fp16 is allowed (see the GPU test below)")
def test_fp16_on_cpu_is_a_clear_error_before_loading(tiny_ckpt, demo_data, tmp_path, capsys):
    argv = ["--pretrained_model_name_or_path", tiny_ckpt("sd1"), "--train_data_dir", str(demo_data / "img"),
            "--resolution", "64", "--output_dir", str(tmp_path / "out"), "--mixed_precision", "fp16"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--mixed_precision fp16 needs a CUDA GPU" in err and "Traceback" not in err and "Half" not in err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 training needs a CUDA GPU; run on the device machine")
def test_fp16_trains_on_cuda(tiny_ckpt, demo_data, tmp_path):
    values = base_values(tiny_ckpt("sd1"), demo_data, tmp_path / "out", max_train_steps=3, mixed_precision="fp16")
    result = train(namespace_from(values))
    assert result.steps == 3 and all(torch.isfinite(torch.tensor(result.losses)))
    with safe_open(result.lora, "pt") as f:
        assert f.metadata()["ss_mixed_precision"] == "fp16"


def test_wandb_api_key_logs_in_and_run_name_reaches_the_tracker(paths_argv, monkeypatch):
    """wandb is an optional package: a stand-in records what kohya's W&B options hand to it."""
    import sys
    import types

    from library.train.tracking import init_trackers, wandb_login

    logins = []
    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(login=lambda key: logins.append(key)))
    args = parse_args(paths_argv + ["--log_with", "wandb", "--wandb_api_key", "k123", "--wandb_run_name", "night run",
                                    "--log_tracker_name", "proj"], check_files=False)
    wandb_login(args)
    assert logins == ["k123"]

    class Recorder:
        def init_trackers(self, name, config=None, init_kwargs=None):
            self.seen = (name, config, init_kwargs)

    acc = Recorder()
    init_trackers(acc, args)
    assert acc.seen == ("proj", None, {"wandb": {"name": "night run"}})

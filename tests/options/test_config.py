import os

import pytest

from library.errors import UserError
from library.options import BY_NAME, config_text, namespace_from, parse_args, read_config_file


def test_file_overrides_defaults(paths, write_toml):
    argv, _ = paths
    config = write_toml("[training_arguments]\nlearning_rate = 5e-5\ntrain_batch_size = 4\nenable_bucket = true\n"
                        "resolution = \"512,768\"\n")
    args = parse_args(["--config_file", config] + argv)
    assert args.learning_rate == 5e-5 and args.train_batch_size == 4 and args.enable_bucket is True
    assert args.resolution == (512, 768)
    assert args.max_train_steps == BY_NAME["max_train_steps"].default
    assert args.config_file == config


def test_command_line_overrides_file_but_defaults_do_not(paths, write_toml):
    argv, _ = paths
    config = write_toml("[a]\nlearning_rate = 5e-5\nnetwork_dim = 8\nresolution = 768\n[b]\nmixed_precision = \"bf16\"\n")
    args = parse_args(argv + ["--config_file", config, "--network_dim", "32", "--resolution", "512"])
    assert args.network_dim == 32 and args.resolution == (512, 512)  # typed: command line wins
    assert args.learning_rate == 5e-5 and args.mixed_precision == "bf16"  # not typed: file wins over defaults


def test_file_without_sections_and_kohya_name_without_extension(paths, write_toml):
    argv, _ = paths
    config = write_toml("resolution = 512\nnetwork_args = [\"conv_dim=4\", \"conv_alpha=1\"]\n")
    args = parse_args(["--config_file", config[: -len(".toml")]] + argv)
    assert args.network_args == ["conv_dim=4", "conv_alpha=1"]


def test_unknown_key_suggests_the_nearest_name(write_toml):
    config = write_toml("[training_arguments]\nlearning_rat = 1e-4\n", name="x.toml")
    with pytest.raises(UserError) as e:
        read_config_file(config, "train_network")
    assert str(e.value) == f"unknown key 'learning_rat' in {config} [training_arguments]; did you mean 'learning_rate'?"


def test_unknown_key_far_from_any_option_is_ignored_with_a_warning(write_toml, caplog):
    config = write_toml("zzz_qqq = 1\nlearning_rate = 0.5\n")
    values, _ = read_config_file(config, "train_network")
    assert values == {"learning_rate": 0.5}  # kohya ignores keys it does not know
    assert f"unknown key 'zzz_qqq' in {config} (top level) is ignored" in caplog.text


@pytest.mark.parametrize(
    "line,expected",
    [
        ('network_dim = "four"',
         r"network_dim in .*config.toml \[net\] must be an integer \(like network_dim = 10\), got 'four'"),
        ("learning_rate = true", r"learning_rate in .* must be a number"),
        ("enable_bucket = 2", r"enable_bucket in .* must be true or false"),
        ('mixed_precision = "fp32"', r"mixed_precision in .* must be one of no, fp16, bf16, got 'fp32'"),
        ("caption_extension = 1", r"caption_extension in .* must be a string"),
    ],
)
def test_wrong_type_names_key_file_section_and_expected_type(write_toml, line, expected):
    config = write_toml(f"[net]\n{line}\n")
    with pytest.raises(UserError, match=expected):
        read_config_file(config, "train_network")


def test_key_in_two_sections_is_an_error(write_toml):
    config = write_toml("[a]\nseed = 1\n[b]\nseed = 2\n")
    with pytest.raises(UserError, match=r"seed is set twice .*\[a\].*\[b\]; keep one"):
        read_config_file(config, "train_network")


def test_broken_and_missing_files(write_toml, tmp_path):
    with pytest.raises(UserError, match="not valid TOML"):
        read_config_file(write_toml("learning_rate = \n"), "train_network")
    with pytest.raises(UserError, match="not found; check the --config_file path"):
        read_config_file(str(tmp_path / "nope.toml"), "train_network")
    with pytest.raises(UserError, match="dataset config.*--dataset_config"):
        read_config_file(write_toml("[general]\nbatch_size = 2\n[[datasets]]\nresolution = 512\n"), "train_network")
    with pytest.raises(UserError, match="only works on the command line"):
        read_config_file(write_toml("config_file = \"a.toml\"\n"), "train_network")
    with pytest.raises(UserError, match="nested too deep"):
        read_config_file(write_toml("[a.b]\nseed = 1\n"), "train_network")


def test_utf8_bom_is_accepted(tmp_path):
    path = tmp_path / "bom.toml"
    path.write_bytes("\ufeffcaption_prefix = \"ü\"\n".encode("utf-8"))
    values, sources = read_config_file(str(path), "train_network")
    assert values == {"caption_prefix": "ü"} and sources["caption_prefix"].endswith("(top level)")


def test_other_scripts_keys_pass_at_default_and_fail_when_set(write_toml):
    config = write_toml("cache_text_encoder_outputs = false\nv2 = false\n")
    assert read_config_file(config, "train_network")[0] == {"v2": False}
    assert read_config_file(config, "sdxl_train_network")[0] == {"cache_text_encoder_outputs": False}
    with pytest.raises(UserError, match="works only with sdxl_train_network.py"):
        read_config_file(write_toml("cache_text_encoder_outputs = true\n"), "train_network")
    with pytest.raises(UserError, match="works only with train_network.py"):
        read_config_file(write_toml("v2 = true\n"), "sdxl_train_network")


def test_gui_style_empty_strings_mean_unset(paths, write_toml):
    argv, _ = paths
    config = write_toml('resolution = "512,512"\nvae = ""\nreg_data_dir = ""\nhuggingface_repo_id = ""\n'
                        "lr_scheduler_args = []\nmax_token_length = 75\n")
    args = parse_args(["--config_file", config] + argv)
    assert args.vae is None and args.reg_data_dir is None and args.lr_scheduler_args is None
    assert args.max_token_length is None


@pytest.mark.parametrize("where", ["file", "cli"])
def test_caption_extention_alias(paths, write_toml, where):
    argv, _ = paths
    if where == "file":
        argv = argv + ["--config_file", write_toml("resolution = 512\ncaption_extention = \".txt\"\n")]
    else:
        argv = argv + ["--resolution", "512", "--caption_extention", ".txt"]
    assert parse_args(argv).caption_extension == ".txt"


def test_caption_extention_conflict(paths):
    _, values = paths
    with pytest.raises(UserError, match="disagree; keep caption_extension"):
        namespace_from({**values, "resolution": 512, "caption_extension": ".caption", "caption_extention": ".txt"})


def test_kohya_derived_values(paths):
    _, values = paths
    args = namespace_from({**values, "resolution": 512, "use_8bit_adam": True, "cache_latents_to_disk": True,
                           "save_every_n_epochs": 0, "optimizer_args": [], "text_encoder_lr": []})
    assert args.optimizer_type == "AdamW8bit" and args.cache_latents is True
    assert args.save_every_n_epochs is None and args.optimizer_args is None and args.text_encoder_lr is None
    assert namespace_from({**values, "resolution": 512, "optimizer_type": ""}).optimizer_type == "AdamW"
    with pytest.raises(UserError, match="drop use_8bit_adam"):
        namespace_from({**values, "resolution": 512, "use_8bit_adam": True, "optimizer_type": "Lion"})


def test_command_line_errors_are_user_errors_with_suggestions(paths):
    argv, _ = paths
    with pytest.raises(UserError, match=r"unknown option --netwrk_dim; did you mean --network_dim\?"):
        parse_args(argv + ["--netwrk_dim", "4"])
    with pytest.raises(UserError, match="argument --network_dim: must be an integer, got 'four'"):
        parse_args(argv + ["--network_dim", "four"])
    with pytest.raises(UserError, match=r"--cache_text_encoder_outputs; it works only with sdxl_train_network.py"):
        parse_args(argv + ["--cache_text_encoder_outputs"])
    with pytest.raises(UserError, match=r"unexpected word 'x.toml'.*--config_file"):
        parse_args(argv + ["x.toml"])


def test_output_config_writes_a_loadable_file(paths, tmp_path):
    argv, _ = paths
    out = tmp_path / "saved.toml"
    cli = argv + ["--resolution", "512,768", "--network_dim", "8", "--enable_bucket", "--optimizer_args",
                  "weight_decay=0.01", "--caption_prefix", 'say "hi"', "--learning_rate", "2e-4"]
    with pytest.raises(SystemExit) as e:
        parse_args(cli + ["--config_file", str(out), "--output_config"])
    assert e.value.code == 0
    text = out.read_text(encoding="utf-8")
    assert "[network_arguments]" in text and "network_dim = 8" in text
    again = parse_args(["--config_file", str(out)])
    assert again.resolution == (512, 768) and again.network_dim == 8 and again.enable_bucket is True
    assert again.optimizer_args == ["weight_decay=0.01"] and again.caption_prefix == 'say "hi"'
    assert again.learning_rate == 2e-4
    with pytest.raises(UserError, match="already exists"):
        parse_args(cli + ["--config_file", str(out), "--output_config"])
    with pytest.raises(UserError, match="add --config_file"):
        parse_args(cli + ["--output_config"])


def test_config_text_skips_defaults_and_none():
    assert config_text({"network_dim": None, "learning_rate": 1e-4, "seed": 3}) == "[training_arguments]\nseed = 3\n"


def test_namespace_from_rejects_unknown_names(paths):
    _, values = paths
    with pytest.raises(UserError, match=r"unknown option 'netwrk_dim' in the given values; did you mean 'network_dim'\?"):
        namespace_from({**values, "netwrk_dim": 4})
    assert os.path.basename(namespace_from({**values, "resolution": 512}).train_data_dir) == "data"


def test_output_config_leaves_the_wandb_key_out(tmp_path):
    target = tmp_path / "new.toml"
    with pytest.raises(SystemExit):
        parse_args(["--config_file", str(target), "--output_config", "--wandb_api_key", "secret", "--network_dim", "8"])
    text = target.read_text(encoding="utf-8")
    assert "network_dim = 8" in text and "secret" not in text


@pytest.mark.parametrize("bad, words", [
    (["--text_encoder_lr", "1e-4", "2e-4"], "text_encoder_lr"),
    (["--min_timestep", "500", "--max_timestep", "100"], "min_timestep"),
    (["--bucket_reso_steps", "60"], "bucket_reso_steps 60"),
])
def test_output_config_refuses_settings_training_would_refuse_and_writes_nothing(tmp_path, bad, words):
    target = tmp_path / "new.toml"
    with pytest.raises(UserError, match=words):
        parse_args(["--config_file", str(target), "--output_config", "--network_dim", "8", *bad])
    assert not target.exists()

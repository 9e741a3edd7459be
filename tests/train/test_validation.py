"""Validation loss (kohya's --validation_split): held-out images are never trained, the number is
reproducible, it does not disturb training or resume, dataset_config keys and metadata follow kohya."""

import os
import random

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import library.train.loop as loop_module
from library.data.validation_split import split_counts, split_records
from library.errors import UserError
from library.options import namespace_from
from library.train.entry import train
from library.train.loop import Interrupted
from library.train.setup_data import prepare_data
from library.train.setup_model import load_for_training
from library.train.step import StepConfig, loss_options, noise_options
from library.train.validation import build_validation_dataset, validation_losses, validation_timesteps
from tests.train.conftest import base_values
from tests.train.test_training import StopAfter, _stress


def test_split_counts_follow_kohya_and_never_overlap():
    assert split_counts(10, 0.2) == (8, 2)
    assert split_counts(8, 0.25) == (6, 2)
    assert split_counts(7, 0.1) == (7, 0)  # ceil(6.3) = 7 train, round(0.7) = 1 would overlap: none held out
    assert split_counts(3, 0.5) == (2, 1)  # kohya: 2 + round(1.5) = 2; we keep them disjoint
    assert split_counts(5, 0.0) == (5, 0)
    for n in range(1, 40):
        for split in (0.05, 0.1, 0.3, 0.5, 0.9):
            train_n, val_n = split_counts(n, split)
            assert train_n >= 1 and train_n + val_n <= n


def test_split_is_kohyas_shuffle_with_the_validation_seed():
    class Rec:
        def __init__(self, key):
            self.key, self.num_repeats = key, 10

    recs = [Rec(f"{i:02d}") for i in range(10)]
    train_part, val_part = split_records(recs, 0.2, seed=42)
    expected = list(recs)
    random.seed(42)  # what kohya's split_train_val does with validation_seed
    random.shuffle(expected)
    assert [r.key for r in train_part] == [r.key for r in expected[:8]]
    assert [r.key for r in val_part] == [r.key for r in expected[8:]]
    assert all(r.num_repeats == 1 for r in val_part) and all(r.num_repeats == 10 for r in train_part)


def _spy_training_batches(monkeypatch):
    """Every batch the training loop computes a loss on (the validation module has its own batch_loss)."""
    seen = []
    original = loop_module.batch_loss

    def spy(model, batch, cfg, gen, *a, **k):
        seen.extend(batch["image_keys"])
        return original(model, batch, cfg, gen, *a, **k)

    monkeypatch.setattr(loop_module, "batch_loss", spy)
    return seen


def test_validation_images_are_never_trained_and_metadata_says_so(tiny_ckpt, demo_data, tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    seen = _spy_training_batches(monkeypatch)
    # 8 images x 10 repeats, 2 held out: (6 x 10 + 60 reg) / batch 8 = 15 steps per epoch; 2 epochs, validation every 10 steps
    values = base_values(tiny_ckpt("sd1"), demo_data, tmp_path / "out", validation_split=0.25, validation_seed=3,
                         validate_every_n_steps=10, max_train_steps=None, max_train_epochs=2, train_batch_size=8,
                         cache_latents=True, reg_data_dir=str(demo_data / "reg"), logging_dir=str(tmp_path / "logs"))
    args = namespace_from(values)
    shown = []
    prepared = prepare_data(args, show=shown.append)
    assert "Validation: 2 images held out by validation_split (never trained)" in shown[0]
    held_out = {r.key for p in prepared for r in p.validation}
    trained = {r.key for p in prepared for r in p.records}
    assert len(held_out) == 2 and not held_out & trained
    assert all(not r.is_reg for p in prepared for r in p.validation)  # reg subsets are never split

    result = train(args)
    assert result.steps == 30
    assert seen and not held_out & set(seen), "a validation image reached a training batch"
    assert {k for k in seen if "reg" not in k} == {k for k in trained if "reg" not in k}

    with safe_open(result.lora, "pt") as f:
        md = f.metadata()
    assert md["ss_num_validation_images"] == "2" and md["ss_validation_split"] == "0.25"
    assert md["ss_validation_seed"] == "3" and md["ss_validate_every_n_steps"] == "10"
    assert md["ss_validate_every_n_epochs"] == "None" and md["ss_max_validation_steps"] == "None"
    assert md["ss_num_train_images"] == "60"  # reg balance sees the 6 training images x 10 only

    runs = [root for root, _, files in os.walk(tmp_path / "logs") if any(f.startswith("events") for f in files)]
    acc = EventAccumulator(runs[0])
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"loss/validation/step_average", "loss/validation/step_divergence",
            "loss/validation/epoch_average", "loss/validation/epoch_divergence"} <= tags, tags
    assert [e.step for e in acc.Scalars("loss/validation/step_average")] == [10, 20, 30]
    assert [e.step for e in acc.Scalars("loss/validation/epoch_average")] == [1, 2]
    report = (tmp_path / "out" / "t_report.html").read_text(encoding="utf-8")
    assert "Validation loss" in report


def test_same_weights_give_the_same_validation_loss_and_leave_rng_alone(tiny_ckpt, demo_data, tmp_path):
    args = namespace_from(base_values(tiny_ckpt("sd1"), demo_data, tmp_path / "out", validation_split=0.25,
                                      network_dropout=0.5, noise_offset=0.05,
                                      network_args=["rank_dropout=0.3", "module_dropout=0.3"]))
    held_out = build_validation_dataset(prepare_data(args), args.seed)
    model = load_for_training(args, "train_network")
    model.network.train()
    cfg = StepConfig(noise_options(args), loss_options(args, False))
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = validation_losses(model, held_out, cfg, seed=5)
    assert torch.equal(torch.get_rng_state(), before) and model.network.training
    second = validation_losses(model, held_out, cfg, seed=5)
    assert len(first) == len(held_out) * 4 and first == second
    shards = validation_losses(model, held_out, cfg, seed=5, rank=0, world=2) + \
        validation_losses(model, held_out, cfg, seed=5, rank=1, world=2)
    assert sorted(shards) == sorted(first)  # processes share the work without changing the numbers
    assert validation_losses(model, held_out, cfg, seed=5, max_batches=1) == first[:4]
    # LoRA dropout is off: the same weights without any dropout give the same numbers
    with torch.no_grad():
        for name, p in model.network.named_parameters():
            if "lora_up" in name:
                p.copy_(torch.randn_like(p) * 0.2)
    with_dropout = validation_losses(model, held_out, cfg, seed=5)
    for m in model.network.modules():
        if hasattr(m, "rank_dropout"):
            m.dropout = m.rank_dropout = m.module_dropout = None
    assert validation_losses(model, held_out, cfg, seed=5) == with_dropout != first
    assert validation_timesteps(0, 1000) == [200, 400, 600, 800]
    assert validation_timesteps(100, 900) == [260, 420, 580, 740]


def test_validation_changes_nothing_in_training_and_resume_stays_bit_identical(tiny_ckpt, demo_data, tmp_path):
    split = {"validation_split": 0.25}
    quiet = namespace_from(_stress(base_values(tiny_ckpt("sd1"), demo_data, tmp_path / "q", **split,
                                               validate_every_n_epochs=1000)))
    expected = load_file(train(quiet).lora)

    values = _stress(base_values(tiny_ckpt("sd1"), demo_data, tmp_path / "b", **split, validate_every_n_steps=2))
    with pytest.raises(Interrupted) as first:
        train(namespace_from(values), stop_flag=StopAfter(3))
    with pytest.raises(UserError, match="other settings.*validation: state"):  # another split trains other images
        train(namespace_from({**values, "validation_split": 0.5, "resume": first.value.state_dir}))
    result = train(namespace_from({**values, "resume": first.value.state_dir}))
    assert result.steps == 10
    got = load_file(result.lora)
    assert got.keys() == expected.keys()
    for k in expected:
        assert torch.equal(got[k], expected[k]), k
    report = (tmp_path / "b" / "t_report.html").read_text(encoding="utf-8")
    assert report.count("<td>step</td>") == 5  # steps 2, 4 (before the interrupt), 6, 8, 10


def _config(tmp_path, demo_data, dataset_lines, subset_lines=""):
    path = tmp_path / "ds.toml"
    path.write_text(
        f"[[datasets]]\nresolution = 64\nbatch_size = 2\n{dataset_lines}\n"
        f"[[datasets.subsets]]\nimage_dir = '{(demo_data / 'img' / '10_sks shape').as_posix()}'\n"
        f"num_repeats = 2\ncaption_extension = '.txt'\n{subset_lines}\n", encoding="utf-8")
    return str(path)


def test_dataset_config_split_is_dataset_level(tiny_ckpt, demo_data, tmp_path):
    values = base_values(tiny_ckpt("sd1"), demo_data, tmp_path / "out", train_data_dir=None)
    refused = _config(tmp_path, demo_data, "", "validation_split = 0.25")
    with pytest.raises(UserError, match=r"validation_split is a dataset-level key.*\[\[datasets\]\]"):
        train(namespace_from({**values, "dataset_config": refused}))
    ok = _config(tmp_path, demo_data, "validation_split = 0.5\nvalidation_seed = 1")
    prepared = prepare_data(namespace_from({**values, "dataset_config": ok}))
    assert len(prepared[0].validation) == 4 and len(prepared[0].records) == 4
    with pytest.raises(UserError, match="validation_split must be below 1"):
        prepare_data(namespace_from({**values, "dataset_config": _config(tmp_path, demo_data, "validation_split = 1.0")}))


def test_two_processes_share_the_validation_and_get_the_one_process_number(tiny_ckpt, demo_data, tmp_path):
    import re

    from tests.train.test_multiprocess import _launch

    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("this torch build has no gloo backend")
    out = _launch(tmp_path, tiny_ckpt("sd1"), demo_data, 2, ["--validation_split", "0.25", "--validation_seed", "2"])
    rows = re.findall(r"<tr><td>(\d+)</td><td>(\d+)</td><td>(step|epoch)</td><td>([0-9.]+)</td></tr>",
                      (out / "mp_report.html").read_text(encoding="utf-8"))
    assert [r[:3] for r in rows] == [("15", "1", "epoch")]  # 6 images x 10 / batch 2 / 2 processes = 15 steps
    args = namespace_from(base_values(tiny_ckpt("sd1"), demo_data, tmp_path / "x", validation_split=0.25,
                                      validation_seed=2, seed=3, network_dim=4))
    model = load_for_training(args, "train_network")
    model.network.load_weights(str(out / "mp.safetensors"))
    held_out = build_validation_dataset(prepare_data(args), args.seed)
    losses = validation_losses(model, held_out, StepConfig(noise_options(args), loss_options(args, False)), seed=2)
    assert float(rows[0][3]) == pytest.approx(sum(losses) / len(losses), abs=2e-5)

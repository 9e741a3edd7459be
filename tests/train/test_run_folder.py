"""The run folder through the CLI: status.json, metrics.jsonl, samples.jsonl and the control files."""

import json
import os

from library.train.entry import EXIT_INTERRUPTED, EXIT_OK, EXIT_USER, main
from library.train.run_folder import read_status


def _argv(ckpt, data, out, steps=3, **extra):
    values = {"pretrained_model_name_or_path": ckpt, "train_data_dir": str(data / "img"), "resolution": 64,
              "caption_extension": ".txt", "network_dim": 4, "network_alpha": 4, "learning_rate": 1e-3,
              "max_train_steps": steps, "train_batch_size": 2, "seed": 3, "output_dir": str(out), "output_name": "t",
              "max_data_loader_n_workers": 0, "optimizer_type": "AdamW", **extra}
    argv = []
    for k, v in values.items():
        argv += [f"--{k}"] + ([] if v is True else [str(v)])
    return argv


def _lines(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_status_metrics_samples_and_save_now_sample_now(tiny_ckpt, demo_data, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a sks shape --w 64 --h 64 --s 2\n")
    (out / "save-now").touch()
    (out / "sample-now").touch()
    code = main(_argv(tiny_ckpt("sd1"), demo_data, out, sample_prompts=prompts, sample_sampler="euler",
                       sample_every_n_steps=2, sample_at_end=True))
    assert code == EXIT_OK
    status = read_status(str(out))
    assert status["phase"] == "done" and status["step"] == 3 and status["total"] == 3 and status["error"] is None
    assert status["epoch"] >= 1 and status["it_s"] > 0
    metrics = _lines(out / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert all(isinstance(m["loss"], float) and m["lr/unet"] > 0 and "lr/textencoder" in m for m in metrics)
    samples = _lines(out / "samples.jsonl")
    assert [s["step"] for s in samples] == [1, 2, 3]  # sample-now after step 1, every 2 steps, --sample_at_end
    assert all(s["prompt"] == "a sks shape" and (out / s["file"]).is_file() for s in samples)
    assert (out / "t-step00000001-state").is_dir() and (out / "t-step00000001.safetensors").is_file()  # save-now
    assert not any((out / n).exists() for n in ("save-now", "sample-now", "stop"))  # acted on once, then removed


def test_stop_file_is_the_ctrl_c_path_and_resume_finishes(tiny_ckpt, demo_data, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stop").touch()
    argv = _argv(tiny_ckpt("sd1"), demo_data, out, steps=4)
    assert main(argv) == EXIT_INTERRUPTED
    status = read_status(str(out))
    assert status["phase"] == "interrupted" and status["step"] == 1
    assert (out / "t-step00000001-state").is_dir() and not (out / "stop").exists()
    assert main(argv + ["--resume", str(out)]) == EXIT_OK
    status = read_status(str(out))
    assert status["phase"] == "done" and status["step"] == 4
    assert [m["step"] for m in _lines(out / "metrics.jsonl")] == [1, 2, 3, 4]


def test_input_refused_before_training_leaves_the_folder_as_found(tiny_ckpt, tmp_path, capsys):
    empty = tmp_path / "data"
    (empty / "img" / "5_x").mkdir(parents=True)
    out = tmp_path / "out"
    assert main(_argv(tiny_ckpt("sd1"), empty, out)) == EXIT_USER
    assert not out.exists()  # no folder, no status.json: the one error line is the report
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: ")
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert main(_argv(tiny_ckpt("sd1"), empty, out)) == EXIT_USER
    assert os.listdir(out) == ["keep.txt"]


def test_a_failure_during_training_is_the_status_error(tiny_ckpt, demo_data, tmp_path, monkeypatch):
    from library.errors import UserError
    from library.train import loop

    def broken(*a, **k):
        raise UserError("disk went away (test)")

    monkeypatch.setattr(loop.Trainer, "_after_step", broken)
    out = tmp_path / "out"
    assert main(_argv(tiny_ckpt("sd1"), demo_data, out)) == EXIT_USER
    status = read_status(str(out))
    assert status["phase"] == "failed" and status["error"] == "disk went away (test)"


def test_a_failing_run_folder_write_never_stops_the_run(tmp_path, caplog):
    from library.train.run_folder import RunFolder

    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")  # every write below it fails with an OSError
    rf = RunFolder(str(blocker / "run"), interval=0)
    rf.training(0, 10, 1, 1)
    rf.record_step(1, 10, 1, 0.5, {"lr/unet": 1e-4})
    rf.record_samples(1, ["p"], [str(blocker / "run" / "a.png")])
    rf.finish("done")
    assert sum("could not write the run folder" in r.message for r in caplog.records) == 1


def test_validation_loss_lands_in_metrics(tiny_ckpt, demo_data, tmp_path):
    out = tmp_path / "out"
    assert main(_argv(tiny_ckpt("sd1"), demo_data, out, steps=4, validation_split=0.2, validate_every_n_steps=2)) == EXIT_OK
    rows = _lines(out / "metrics.jsonl")
    validation = {r["step"]: r["loss/validation/step_average"] for r in rows if "loss/validation/step_average" in r}
    assert sorted(validation) == [2, 4] and all(v > 0 for v in validation.values())


def test_per_image_losses_are_one_line_per_optimizer_step(tiny_ckpt, demo_data, tmp_path):
    """With gradient accumulation a step's line holds every micro-batch's images; their mean is the logged loss."""
    import pytest

    out = tmp_path / "out"
    argv = _argv(tiny_ckpt("sd1"), demo_data, out, steps=2, train_batch_size=1, gradient_accumulation_steps=3)
    assert main(argv) == EXIT_OK
    items = _lines(out / "item_losses.jsonl")
    losses = {m["step"]: m["loss"] for m in _lines(out / "metrics.jsonl")}
    assert [line["step"] for line in items] == [1, 2] and all(len(line["items"]) == 3 for line in items)
    for line in items:
        assert sum(v for _, v in line["items"]) / 3 == pytest.approx(losses[line["step"]], rel=1e-4)


def test_two_processes_obey_the_stop_file_together(tiny_ckpt, demo_data, tmp_path):
    """Only the main process reads the control files; both ranks stop at the same step (accelerate, gloo)."""
    import subprocess
    import sys

    import pytest
    import torch

    from tests.train.conftest import REPO

    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("this torch build has no gloo backend")
    out = tmp_path / "out"
    out.mkdir()
    (out / "stop").touch()
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "--main_process_port", str(29700 + os.getpid() % 1000), "--multi_gpu",
           "--num_processes", "2", str(REPO / "train_network.py"), *_argv(tiny_ckpt("sd1"), demo_data, out, steps=6)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "interrupted (stop file): saved" in proc.stderr, proc.stderr[-3000:]
    status = read_status(str(out))
    assert status["phase"] == "interrupted" and status["step"] == 1
    assert (out / "t-step00000001-state").is_dir() and not (out / "stop").exists()
    assert [m["step"] for m in _lines(out / "metrics.jsonl")] == [1]  # one writer: the main process
    # the step's per-image losses come from both processes (gathered to the main one): 2 ranks x batch 2
    items = _lines(out / "item_losses.jsonl")
    assert [line["step"] for line in items] == [1] and len(items[0]["items"]) == 4
    images = sorted(str(p) for p in (demo_data / "img").rglob("*.png"))
    assert all(key in images and loss > 0 for key, loss in items[0]["items"])
    loss = _lines(out / "metrics.jsonl")[0]["loss"]  # the mean over both ranks' batches
    assert sum(v for _, v in items[0]["items"]) / 4 == pytest.approx(loss, rel=1e-4)


def test_peak_memory_without_the_resource_module_is_none_not_a_crash(monkeypatch):
    """Windows has no ``resource`` module: the trainer and its status.json must still work there."""
    import builtins

    from library.train import peak_memory

    real_import = builtins.__import__

    def no_resource(name, *args, **kwargs):
        if name == "resource":
            raise ImportError("No module named 'resource'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_resource)
    measured = peak_memory.peak_memory(start_resident=123)
    assert measured == {"device": "cpu", "peak_rss_bytes": None, "start_rss_bytes": 123}
    from webui.memory_check import compare

    assert compare({"total_bytes": 10, "parts": {}}, measured) is None

"""A non-finite loss stops the run (exit 3) or skips the step per --nonfinite_loss, says at which step,
and never touches the last good LoRA (docs/reliability.md)."""

import pytest
import torch
from safetensors.torch import load_file

import library.train.loop as loop
from library.train.entry import EXIT_NONFINITE, EXIT_OK, main
from tests.faults.harness import cli_args


def poison(monkeypatch, micro_batches):
    """Make the loss NaN at the given (1-based) micro-batches of this process, as a poisoned batch would."""
    real, calls = loop.batch_loss, {"n": 0}

    def batch_loss(*a, **kw):
        calls["n"] += 1
        loss = real(*a, **kw)
        return loss * float("nan") if calls["n"] in micro_batches else loss

    monkeypatch.setattr(loop, "batch_loss", batch_loss)


@pytest.fixture
def run(tiny_ckpt, session_data, tmp_path, capsys):
    def go(**extra):
        code = main(cli_args(tiny_ckpt("sd1"), session_data, tmp_path / "out", **{"max_train_steps": 6, **extra}))
        return code, capsys.readouterr().err

    return go


def test_nan_stops_at_the_step_and_leaves_the_last_good_lora_untouched(run, monkeypatch, tmp_path):
    code, err = run(max_train_steps=2)  # an earlier, good run: t.safetensors
    assert code == EXIT_OK, err
    final = tmp_path / "out" / "t.safetensors"
    before = final.read_bytes()

    poison(monkeypatch, {4})
    code, err = run(save_every_n_steps=1)
    assert code == EXIT_NONFINITE, err
    assert "Traceback" not in err
    error = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "step 4 (epoch 1): the loss is not finite" in error[0], err[-2000:]
    assert "t-step00000003.safetensors is intact" in error[0] and "--nonfinite_loss skip" in error[0]
    assert final.read_bytes() == before  # the last good final LoRA: same bytes
    assert not (tmp_path / "out" / "t-step00000004.safetensors").exists()
    good = load_file(tmp_path / "out" / "t-step00000003.safetensors")
    assert all(torch.isfinite(v).all() for v in good.values())


def test_skip_mode_skips_the_bad_step_and_finishes(run, monkeypatch, caplog, tmp_path):
    poison(monkeypatch, {3})
    code, err = run(nonfinite_loss="skip")
    assert code == EXIT_OK, err
    assert any("step 3 (epoch 1): the loss is not finite" in r.getMessage() and "skipped" in r.getMessage()
               for r in caplog.records)
    final = load_file(tmp_path / "out" / "t.safetensors")
    assert all(torch.isfinite(v).all() for v in final.values())


def test_skip_mode_still_stops_after_ten_bad_steps_in_a_row(run, monkeypatch):
    poison(monkeypatch, set(range(2, 14)))
    code, err = run(nonfinite_loss="skip", max_train_steps=16)
    assert code == EXIT_NONFINITE, err
    assert "step 11 (epoch 1)" in err and "10 steps in a row" in err


def test_a_huge_learning_rate_is_caught_without_any_hook(run):
    code, err = run(learning_rate=1e30, lr_scheduler="constant", lr_warmup_steps=0)
    assert code == EXIT_NONFINITE, err
    step = int(err.split("error: step ")[1].split()[0])
    assert 2 <= step <= 6

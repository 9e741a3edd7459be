"""Choosing the state to resume from after a crash (library/train/checkpoints.py), on hand-made folders."""

import json
import os

import pytest

from library import atomic
from library.train import checkpoints as ck
from library.train.ownership import prune_own


def make_state(path, step, complete=True, run_id=None):
    os.makedirs(path)
    for name in ck.STATE_FILES[:3]:
        (path / name).write_bytes(b"x")
    if complete:
        data = {"global_step": step, **({"run_id": run_id} if run_id else {})}
        (path / ck.STATE_FILES[3]).write_text(json.dumps(data))
    return path


def test_latest_state_is_the_highest_complete_step_of_this_output_name(tmp_path):
    make_state(tmp_path / "t-step00000004-state", 4)
    make_state(tmp_path / "t-000001-state", 5)  # an epoch state, later in steps than the step-4 state
    make_state(tmp_path / "t-step00000006-state", 6, complete=False)
    make_state(tmp_path / "t-step00000009-state.tmp", 9, complete=False)
    make_state(tmp_path / "t-step00000007-state.deleting", 7)
    make_state(tmp_path / "other-step00000008-state", 8)
    assert ck.latest_state(str(tmp_path), "t") == str(tmp_path / "t-000001-state")
    assert ck.latest_state(str(tmp_path)) == str(tmp_path / "other-step00000008-state")
    assert ck.latest_state(str(tmp_path / "missing"), "t") is None


def test_the_final_state_counts_and_wins_by_step(tmp_path):
    make_state(tmp_path / "t-step00000009-state", 9)
    make_state(tmp_path / "t-state", 10)
    assert ck.latest_state(str(tmp_path), "t") == str(tmp_path / "t-state")


def test_a_swap_cut_short_is_finished_with_the_newer_complete_copy(tmp_path):
    make_state(tmp_path / "t-state.old", 3)
    make_state(tmp_path / "t-state.tmp", 5)  # complete: the kill came between the two renames
    assert ck.latest_state(str(tmp_path), "t") == str(tmp_path / "t-state")
    assert json.loads((tmp_path / "t-state" / "train_state.json").read_text())["global_step"] == 5


def test_a_swap_cut_short_falls_back_to_the_previous_copy(tmp_path):
    make_state(tmp_path / "t-state.old", 3)
    make_state(tmp_path / "t-state.tmp", 5, complete=False)
    assert ck.latest_state(str(tmp_path), "t") == str(tmp_path / "t-state")
    assert json.loads((tmp_path / "t-state" / "train_state.json").read_text())["global_step"] == 3


def test_save_state_never_deletes_the_only_previous_copy(tmp_path):
    """A kill between the renames left only t-state.old; the next save must not wipe it before writing."""
    import torch

    make_state(tmp_path / "t-state.old", 3)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    calls = []

    def failing(event, src, dst):  # library.atomic's public fault hook: the optimizer file hits a full disk
        if event == "written" and dst.endswith(".pt"):
            calls.append(dst)
            raise OSError(28, "No space left on device", dst)

    atomic.set_fault_hook(failing)
    try:
        with pytest.raises(ck.CheckpointError, match="the disk is full.*--resume"):
            ck.save_state(str(tmp_path / "t-state"), {"w": torch.zeros(1)}, opt, sched, {"global_step": 4})
    finally:
        atomic.set_fault_hook(None)
    assert calls and ck.is_complete_state(str(tmp_path / "t-state"))  # the old copy was put back, then kept
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]  # the writer cleaned up its temp files
    assert json.loads((tmp_path / "t-state" / "train_state.json").read_text())["global_step"] == 3


def test_resume_accepts_a_state_or_an_output_folder(tmp_path):
    state = make_state(tmp_path / "out" / "t-step00000002-state", 2)
    assert ck.resolve_resume(str(state), "t") == str(state)
    assert ck.resolve_resume(str(tmp_path / "out"), "t") == str(state)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ck.CheckpointError, match="no complete training state of output_name t"):
        ck.resolve_resume(str(tmp_path / "empty"), "t")


def test_prune_renames_before_deleting_and_sweeps_half_deleted_states(tmp_path):
    for step in (1, 2, 3):
        make_state(tmp_path / f"t-step{step:08d}-state", step, run_id="mine")
    make_state(tmp_path / "t-step00000000-state.deleting", 0)
    removed = prune_own(str(tmp_path), "t", "step", 2, "mine", state=True)
    assert removed == [str(tmp_path / "t-step00000001-state")]
    assert sorted(os.listdir(tmp_path)) == ["t-step00000002-state", "t-step00000003-state"]


def test_prune_never_touches_another_runs_states(tmp_path):
    make_state(tmp_path / "t-step00000001-state", 1, run_id="other")
    make_state(tmp_path / "t-step00000002-state", 2)  # written before run ids existed
    make_state(tmp_path / "t-step00000003-state", 3, run_id="mine")
    assert prune_own(str(tmp_path), "t", "step", 10, "mine", state=True) == [str(tmp_path / "t-step00000003-state")]
    assert sorted(os.listdir(tmp_path)) == ["t-step00000001-state", "t-step00000002-state"]


def test_epoch_finished_is_a_true_or_false_field_of_the_state(tmp_path):
    state = make_state(tmp_path / "t-state", 10)
    base = {"global_step": 10, "epoch": 1, "position": 10}
    (state / "train_state.json").write_text(json.dumps({**base, "epoch_finished": False}))
    assert ck.epoch_finished(ck.read_train_state(str(state)), 10) is False  # the field wins over the position
    (state / "train_state.json").write_text(json.dumps(base))
    assert ck.epoch_finished(ck.read_train_state(str(state)), 10) is True  # older states: position at the end
    assert ck.epoch_finished({**base, "position": 4}, 10) is False
    (state / "train_state.json").write_text(json.dumps({**base, "epoch_finished": 1}))
    with pytest.raises(ck.CheckpointError, match="'epoch_finished' is int"):
        ck.read_train_state(str(state))

"""Output ownership (docs/reliability.md): a run prunes only its own files, one run at a time per
output_dir/output_name, --resume picks this run's states and refuses changed settings, kohya's saving
rules and default names, files with the umask's mode."""

import json
import os
import socket

import pytest
from safetensors import safe_open

from library.errors import UserError
from library.options import namespace_from, parse_args
from library.train.entry import train
from library.train.ownership import RUN_ID_KEY, RunLock
from tests.train.conftest import base_values


def _short_epochs(demo_data, tmp_path):
    """The demo images with 1 repeat: 8 images, so one step per epoch at batch 8."""
    import shutil

    src = next((demo_data / "img").iterdir())
    dst = tmp_path / "data1"
    shutil.copytree(src, dst / "img" / ("1_" + src.name.split("_", 1)[1]))
    return dst


def _run_id(path):
    with safe_open(str(path), framework="pt") as f:
        return f.metadata()[RUN_ID_KEY]


def _names(folder, suffix=".safetensors"):
    return sorted(n for n in os.listdir(folder) if n.endswith(suffix))



def test_save_last_n_steps_counts_steps_and_the_final_step_gets_its_file(tiny_ckpt, demo_data, tmp_path):
    out = tmp_path / "out"
    values = base_values(tiny_ckpt("sd1"), demo_data, out, resolution=32, max_train_steps=6, save_every_n_steps=2,
                         save_last_n_steps=3, save_state=True)
    train(namespace_from(values))
    # kohya: at step 6, the files of steps 3..6 stay (step 2 goes); step 6 is saved though it is the last step
    assert _names(out) == ["t-step00000004.safetensors", "t-step00000006.safetensors", "t.safetensors"]
    assert sorted(n for n in os.listdir(out) if n.endswith("-state")) == [
        "t-state", "t-step00000004-state", "t-step00000006-state"]


def test_files_of_another_run_under_the_same_name_survive_pruning(tiny_ckpt, demo_data, tmp_path):
    out = tmp_path / "out"
    values = base_values(tiny_ckpt("sd1"), demo_data, out, resolution=32, max_train_steps=4, save_every_n_steps=1)
    train(namespace_from({**values, "max_train_steps": 12, "save_every_n_steps": 6, "output_name": "x"}))
    for n in _names(out):  # another run's checkpoints at higher step numbers, renamed to this output_name
        os.rename(out / n, out / n.replace("x", "t", 1))
    theirs = {n: (out / n).read_bytes() for n in _names(out)}
    result = train(namespace_from({**values, "save_last_n_steps": 1}))
    for n, data in theirs.items():
        if n != "t.safetensors":
            assert (out / n).read_bytes() == data, n
    names = _names(out)
    assert "t-step00000001.safetensors" not in names and "t-step00000002.safetensors" not in names
    assert {"t-step00000003.safetensors", "t-step00000004.safetensors"} <= set(names)
    assert _run_id(result.lora) == _run_id(out / "t-step00000004.safetensors")


def test_default_names_without_output_name_are_kohyas(tiny_ckpt, demo_data, tmp_path):
    out = tmp_path / "out"
    values = base_values(tiny_ckpt("sd1"), demo_data, out, output_name=None, train_batch_size=8, max_train_steps=None,
                         resolution=32,
                         max_train_epochs=2, save_every_n_epochs=1, save_every_n_steps=5, save_state=True)
    train(namespace_from(values))
    assert _names(out) == ["at-step00000005.safetensors", "at-step00000010.safetensors", "at-step00000015.safetensors",
                           "at-step00000020.safetensors", "epoch-000001.safetensors", "last.safetensors"]
    assert {"at-step00000020-state", "epoch-000001-state", "last-state"} <= set(os.listdir(out))
    state = json.loads((out / "last-state" / "train_state.json").read_text())
    assert state["run_id"] == _run_id(out / "last.safetensors") and state["script"] == "train_network"


def test_a_held_lock_refuses_a_second_run_and_a_dead_ones_lock_is_taken_over(tiny_ckpt, demo_data, tmp_path):
    out = tmp_path / "out"
    values = base_values(tiny_ckpt("sd1"), demo_data, out, max_train_steps=1)
    other = RunLock(str(out), "t").acquire()  # another run training into out/t right now
    try:
        with pytest.raises(UserError, match=rf"in use by another training run \(pid {os.getpid()} on "
                                            rf"{socket.gethostname()}, started .*\)"):
            train(namespace_from(values))
        assert not (out / "t.safetensors").exists()
        train(namespace_from({**values, "output_name": "u"}))  # another output_name is free
    finally:
        other.release()
    (out / ".t.lock").write_text(json.dumps({"pid": 999999999, "host": socket.gethostname(), "started": "x"}))
    assert train(namespace_from(values)).steps == 1  # a killed run's lock: nobody holds it any more
    assert not (out / ".t.lock").exists()


def test_resume_from_the_folder_picks_this_output_names_state(tiny_ckpt, demo_data, tmp_path):
    out = tmp_path / "out"
    values = base_values(tiny_ckpt("sd1"), demo_data, out, resolution=32, max_train_steps=3, save_state=True)
    train(namespace_from({**values, "output_name": "other", "max_train_steps": 5}))
    with pytest.raises(UserError, match="no complete training state of output_name t"):
        train(namespace_from({**values, "resume": str(out)}))
    train(namespace_from({**values, "max_train_steps": 2}))
    result = train(namespace_from({**values, "resume": str(out)}))
    assert result.steps == 3


def test_resume_with_changed_settings_is_refused_unless_listed(tiny_ckpt, demo_data, tmp_path):
    out = tmp_path / "out"
    values = base_values(tiny_ckpt("sd1"), demo_data, out, max_train_steps=2, save_state=True)
    train(namespace_from(values))
    state = str(out / "t-state")
    changed = {**values, "max_train_steps": 3, "resolution": 32, "learning_rate": 1e-3, "resume": state}
    with pytest.raises(UserError, match=r"other settings \(learning_rate: state 0.005 vs now 0.001; resolution: .*"
                                        r"--resume_with_changes learning_rate resolution"):
        train(namespace_from(changed))
    with pytest.raises(UserError, match="--resume_with_changes learning_rate"):
        train(namespace_from({**changed, "resume_with_changes": ["resolution"]}))
    result = train(namespace_from({**changed, "resume_with_changes": ["resolution", "learning_rate"]}))
    assert result.steps == 3
    run_id = json.loads((out / "t-state" / "train_state.json").read_text())["run_id"]
    assert _run_id(out / "t.safetensors") == run_id  # a resumed run keeps its id


def test_resume_with_changes_accepts_only_known_keys(tiny_ckpt, demo_data, tmp_path):
    argv = ["--pretrained_model_name_or_path", str(tiny_ckpt("sd1")), "--train_data_dir", str(demo_data / "img"),
            "--resume_with_changes", "resolution", "resolutoin"]
    with pytest.raises(UserError, match="resume_with_changes: must be one of .*got 'resolutoin'"):
        parse_args(argv)


def test_lora_files_and_states_get_the_umasks_mode(tiny_ckpt, demo_data, tmp_path):
    out = tmp_path / "out"
    old = os.umask(0o022)
    try:
        train(namespace_from(base_values(tiny_ckpt("sd1"), demo_data, out, max_train_steps=1, save_state=True)))
    finally:
        os.umask(old)
    for path in (out / "t.safetensors", out / "t-state" / "network.safetensors", out / "t-state" / "optimizer.pt",
                 out / "t_report.html"):
        assert oct(os.stat(path).st_mode & 0o777) == oct(0o644), path


def test_save_last_n_epochs_keeps_the_last_saved_epochs(tiny_ckpt, demo_data, tmp_path):
    out = tmp_path / "out"
    values = base_values(tiny_ckpt("sd1"), _short_epochs(demo_data, tmp_path), out, train_batch_size=8,
                         max_train_steps=None, max_train_epochs=4, save_every_n_epochs=1, save_last_n_epochs=2,
                         save_state=True, save_last_n_epochs_state=1)
    train(namespace_from(values))
    assert _names(out) == ["t-000002.safetensors", "t-000003.safetensors", "t.safetensors"]  # kohya: epoch 4 is the final file
    assert sorted(n for n in os.listdir(out) if n.endswith("-state")) == ["t-000003-state", "t-state"]

"""Writes fail part-way (RLIMIT_FSIZE: write() gets EFBIG, as on a full disk): the run stops with exit 2
and a message naming the file, and the previous checkpoint and state stay intact (docs/reliability.md)."""

import os

import pytest
from safetensors.torch import load_file

from library.train.checkpoints import is_complete_state, read_train_state
from library.train.entry import EXIT_USER
from tests.faults.harness import check_no_partial_files


@pytest.fixture
def first_run(fork_server, reference, tmp_path):
    """Two steps saved normally: t-step00000001.safetensors, t.safetensors and t-state (step 2)."""
    options, expected = reference
    out = tmp_path / "out"
    status, log = fork_server.run(options(out, max_train_steps=2, save_every_n_steps=1, save_state=True))
    assert status == 0, log[-3000:]
    files = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    state = {p.name: p.read_bytes() for p in (out / "t-state").iterdir()}
    return options, set(expected), out, files, state


def _assert_previous_intact(out, files, state, keys):
    for name, data in files.items():
        if name.endswith(".safetensors"):
            assert (out / name).read_bytes() == data, f"{name} changed"
    assert {p.name: p.read_bytes() for p in (out / "t-state").iterdir()} == state
    assert is_complete_state(str(out / "t-state")) and read_train_state(str(out / "t-state"))["global_step"] == 2
    assert set(load_file(out / "t.safetensors")) == keys
    check_no_partial_files(out, keys)


@pytest.mark.parametrize("fails", ["lora", "state"])
def test_full_disk_stops_cleanly_and_keeps_the_previous_files(fork_server, first_run, fails):
    options, keys, out, files, state = first_run
    lora_size = len(files["t-step00000001.safetensors"])
    # "lora": even the next LoRA does not fit; "state": the LoRA fits, the optimizer state (2x larger) does not
    limit = lora_size // 2 if fails == "lora" else lora_size + 4096
    argv = options(out, max_train_steps=6, save_every_n_steps=1, save_state=True) + ["--resume", str(out)]
    status, log = fork_server.run(argv, faults={"fsize": limit})
    assert status == EXIT_USER, log[-3000:]
    assert "Traceback" not in log
    error = [line for line in log.splitlines() if line.startswith("error:")]
    assert len(error) == 1, log[-3000:]
    assert "disk is full" in error[0] or "disk full" in error[0]
    if fails == "lora":
        assert "t-step00000003.safetensors" in error[0]
        assert not (out / "t-step00000003.safetensors").exists()
    else:
        assert "t-step00000003-state" in error[0] and "--resume" in error[0]
        assert not (out / "t-step00000003-state").exists()
    _assert_previous_intact(out, files, state, keys)


def test_full_disk_before_any_state_says_so_and_names_the_disk(fork_server, reference, tmp_path):
    """No state was ever saved: the message must not send the user to a --resume that does not exist."""
    options, expected = reference
    out = tmp_path / "out"
    lora_bytes = sum(t.numel() * t.element_size() for t in expected.values())
    status, log = fork_server.run(options(out, max_train_steps=3, save_every_n_steps=1), faults={"fsize": lora_bytes // 2})
    assert status == EXIT_USER, log[-3000:]
    error = [line for line in log.splitlines() if line.startswith("error:")]
    assert len(error) == 1, log[-3000:]
    assert "t-step00000001.safetensors" in error[0] and "the disk mounted at" in error[0] and "MB free" in error[0]
    assert "no resumable state was saved" in error[0] and "--resume" not in error[0]
    assert not [n for n in os.listdir(out) if n.endswith((".safetensors", ".tmp"))]

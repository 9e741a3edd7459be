"""SIGTERM (docker stop, Slurm, ``timeout``) does what Ctrl-C does: state + LoRA saved, exit 143, a message
naming only files that are complete; a second signal during that save does not cut it
(library/train/stopping.py, docs/reliability.md). Signals come from inside the run (forkserver.py
``signal_at``), so they land at exact points."""

import os

import torch
from safetensors.torch import load_file

from library.train.checkpoints import is_complete_state
from library.train.stopping import EXIT_TERMINATED
from tests.faults.harness import check_no_partial_files


def _stopped_state(out):
    states = [n for n in os.listdir(out) if n.endswith("-state")]
    assert len(states) == 1, os.listdir(out)
    return out / states[0]


def test_sigterm_saves_a_resumable_state_and_a_lora_and_exits_143(fork_server, reference, tmp_path):
    options, expected = reference
    out = tmp_path / "out"
    status, log = fork_server.run(options(out), faults={"signal_at": [["step", 4, "SIGTERM"]]})
    assert status == EXIT_TERMINATED, log[-3000:]
    assert "Traceback" not in log
    state = _stopped_state(out)
    assert state.name == "t-step00000004-state" and is_complete_state(str(state))
    assert (out / "t-step00000004.safetensors").is_file()
    assert f"interrupted (SIGTERM): saved {out / 't-step00000004.safetensors'} and the state {state}; " \
           f"continue with --resume {state}" in log
    check_no_partial_files(out, set(expected))
    status, log = fork_server.run(options(out) + ["--resume", str(out)])
    assert status == 0, log[-3000:]
    got = load_file(out / "t.safetensors")
    assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in expected)


def test_a_second_signal_during_the_stop_save_does_not_cut_it(fork_server, reference, tmp_path):
    options, expected = reference
    out = tmp_path / "out"
    # the first SIGTERM asks for a stop; the second lands while the stop save writes the LoRA
    faults = {"signal_at": [["step", 3, "SIGTERM"], ["safetensors_write", 1, "SIGTERM"]]}
    status, log = fork_server.run(options(out), faults=faults)
    assert status == EXIT_TERMINATED, log[-3000:]
    assert "still saving the state and the LoRA" in log
    state = _stopped_state(out)
    assert is_complete_state(str(state)) and "continue with --resume" in log
    assert set(load_file(out / "t-step00000003.safetensors")) == set(expected)
    check_no_partial_files(out, set(expected))


def test_sigterm_before_training_quits_at_once_with_a_message_and_leaves_no_files(fork_server, reference, tmp_path):
    options, expected = reference
    out = tmp_path / "out"
    status, log = fork_server.run(options(out), faults={"signal_at": [["load", 1, "SIGTERM"]]})
    assert status == EXIT_TERMINATED, log[-3000:]
    assert "Traceback" not in log
    assert "stopped at once (SIGTERM) without saving; no resumable state was saved" in log, log[-3000:]
    assert not any(n.endswith(".safetensors") or n.endswith("-state") for n in os.listdir(out)) if out.exists() else True

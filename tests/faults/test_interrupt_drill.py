"""Ctrl-C (SIGINT) to a real ``python train_network.py`` mid-epoch: state + LoRA saved, exit 130, and
resuming finishes bit-identical to the uninterrupted run (docs/reliability.md)."""

import os
import signal
import subprocess
import sys

import torch
from safetensors.torch import load_file

from library.train.entry import EXIT_INTERRUPTED
from tests.faults.harness import REPO, check_no_partial_files, child_env, wait_for


def test_ctrl_c_saves_a_resumable_state_and_a_lora_then_resume_is_identical(fork_server, reference, tmp_path):
    options, expected = reference
    out = tmp_path / "out"
    err_path = tmp_path / "stderr.txt"
    with open(err_path, "w") as err:
        proc = subprocess.Popen([sys.executable, str(REPO / "train_network.py"), *options(out)], cwd=REPO,
                                env=child_env(), stdout=subprocess.PIPE, stderr=err, text=True)
        # "training:" is logged once the Ctrl-C handler is installed and the loop is about to start
        assert wait_for(lambda: "training:" in err_path.read_text(errors="replace"), timeout=240, interval=0.05)
        wait_for(lambda: False, timeout=1.0)  # a few steps in, mid-epoch (24 steps of an 80-batch epoch)
        proc.send_signal(signal.SIGINT)
        stdout, _ = proc.communicate(timeout=240)
    stderr = err_path.read_text(errors="replace")
    assert proc.returncode == EXIT_INTERRUPTED, stderr[-3000:]
    assert "Traceback" not in stderr
    states = [n for n in os.listdir(out) if n.endswith("-state")]
    assert len(states) == 1 and states[0].startswith("t-step"), os.listdir(out)
    step = int(states[0][len("t-step"):-len("-state")])
    assert 1 <= step < 24
    assert (out / f"t-step{step:08d}.safetensors").is_file()
    assert f"continue with --resume {out / states[0]}" in stderr
    check_no_partial_files(out, set(expected))

    status, log = fork_server.run(options(out) + ["--resume", str(out / states[0])])
    assert status == 0, log[-3000:]
    assert f"at step {step}" in log
    got = load_file(out / "t.safetensors")
    assert all(torch.equal(got[k], expected[k]) for k in expected) and got.keys() == expected.keys()

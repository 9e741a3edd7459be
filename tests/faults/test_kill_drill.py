"""SIGKILL a training run at a dozen points, resume each time: the result is bit-identical and no
file under a final name is ever partial (docs/reliability.md)."""

import os
import random
import signal

import pytest
import torch
from safetensors.torch import load_file

from library.train.checkpoints import is_complete_state, latest_state
from tests.faults.harness import check_no_partial_files, snapshot, wait_for

# Kill points inside the saves (the child kills itself in the middle of the named write; see
# forkserver.py), then kills from outside at random moments just after a save began.
PLANNED = [("replace", 1), ("safetensors_write", 2), ("torch_save", 3), ("json_write", 2), ("replaced", 3),
           ("step", 3), ("replace", 4), ("rmtree", 3), ("safetensors_write", 5)]
RANDOM_KILLS = 4


# What a run writes for watchers and for its lock from its first second (docs/gui.md, ownership.py):
# a change there says nothing about a save having begun.
WATCH_FILES = ("status.json", "metrics.jsonl", "samples.jsonl")


def _saves(out):
    return {k: v for k, v in snapshot(out).items() if k not in WATCH_FILES and not k.endswith(".lock")}


def _complete_states(out):
    """Names of the complete state folders in ``out``, read only (``latest_state`` would finish an
    interrupted swap, racing the live run's own rename)."""
    if not out.exists():
        return set()
    return {n for n in os.listdir(out) if n.endswith("-state") and is_complete_state(str(out / n))}


def _kill_soon_after_a_write(fork_server, argv, out, rng):
    """Start a run; once it has saved a state it did not start with (so every random kill moves the
    drill on, however slow the machine), wait for its next save to change ``out`` and SIGKILL it as
    soon as a ``.tmp`` shows (a write in progress, within 0.5 s) or after a random 0-0.4 s."""
    had = _complete_states(out)
    pid, log = fork_server.start(argv)
    wait_for(lambda: bool(_complete_states(out) - had), timeout=120)
    before = _saves(out)
    wait_for(lambda: _saves(out) != before, timeout=120)
    if rng.random() < 0.5:
        wait_for(lambda: any(n.endswith(".tmp") for n in os.listdir(out)), timeout=0.5, interval=0.001)
    else:
        wait_for(lambda: False, timeout=rng.uniform(0, 0.4))
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return fork_server.wait(), log.read_text(errors="replace")


@pytest.mark.slow
def test_sigkill_at_a_dozen_points_then_resume_is_bit_identical(fork_server, reference, tmp_path):
    options, expected = reference
    out = tmp_path / "out"
    base = options(out, save_every_n_steps=1, save_state=True, save_last_n_steps=3)
    rng = random.Random(1)
    kills, leftovers, resumed_from = 0, set(), []
    plan = [("planned", p) for p in PLANNED] + [("random", None)] * RANDOM_KILLS
    for kind, point in plan + [("finish", None)]:
        state = latest_state(str(out), "t") if out.exists() else None
        argv = base + (["--resume", str(out)] if state else [])
        resumed_from.append(os.path.basename(state) if state else None)
        if kind == "planned":
            status, log = fork_server.run(argv, faults={"kill_at": list(point)})
        elif kind == "random":
            status, log = _kill_soon_after_a_write(fork_server, argv, out, rng)
        else:
            status, log = fork_server.run(argv)
        if kind == "finish":
            assert status == 0, log[-3000:]
            break
        if status == 0:
            pytest.fail(f"the run finished before kill {kills + 1} ({point}); lengthen it")
        assert status == -signal.SIGKILL, (point, log[-3000:])
        kills += 1
        leftovers.update(check_no_partial_files(out, set(expected)) if out.exists() else [])

    assert kills >= 10
    assert any(n.endswith(".safetensors.tmp") for n in leftovers), leftovers  # killed while a LoRA was written
    assert any(n.endswith("-state.tmp") for n in leftovers), leftovers  # ... and while a state was written
    assert any(n.endswith("-state.deleting") for n in leftovers), leftovers  # ... and while one was pruned
    assert len({s for s in resumed_from if s}) >= 5, resumed_from  # resumed from many different states
    check_no_partial_files(out, set(expected))
    got = load_file(out / "t.safetensors")
    assert got.keys() == expected.keys()
    for k in expected:
        assert torch.equal(got[k], expected[k]), k

"""The benches' --clock option (bench/clock.py), through bench/optimizer_step.py's command line: the CPU clock pins
torch to one thread and reports both clocks; it refuses the settings where CPU time is not a sound measure."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def bench(*extra):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    return subprocess.run([sys.executable, "bench/optimizer_step.py", "--tensors", "12", "--rounds", "3", *extra],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def rows(stdout):
    """variant -> (cpu ms, x cpu, wall ms, x wall)."""
    found = {}
    for m in re.finditer(r"^ +(loop|foreach|fused) +([\d.]+) +([\d.]+) +[\d.]+-[\d.]+ +([\d.]+) +([\d.]+) +[\d.]+-[\d.]+$",
                         stdout, re.M):
        found[m[1]] = tuple(float(x) for x in m.group(2, 3, 4, 5))
    return found


def test_cpu_clock_is_the_default_on_one_thread_and_prints_both_clocks():
    out = bench()
    assert out.returncode == 0, out.stdout + out.stderr
    assert re.search(r"^clock: cpu \(CPU time of this process\), torch threads 1, ", out.stdout, re.M), out.stdout
    assert re.search(r"load average \(1 min\) during the run [\d.]+-[\d.]+", out.stdout), out.stdout
    found = rows(out.stdout)
    assert set(found) == {"loop", "foreach", "fused"}, out.stdout
    assert found["loop"][1] == 1.0 and found["loop"][3] == 1.0  # the baseline's own ratio, on both clocks
    for cpu_ms, _, wall_ms, _ in found.values():
        # one thread: the process cannot use more CPU time than time passed (waiting for a core only adds wall time)
        assert 0 < cpu_ms <= wall_ms * 1.05 + 0.05, out.stdout


def test_wall_clock_keeps_torchs_threads():
    out = bench("--clock", "wall", "--threads", "2")
    assert out.returncode == 0, out.stdout + out.stderr
    assert re.search(r"^clock: wall \(wall time\), torch threads 2, ", out.stdout, re.M), out.stdout
    assert set(rows(out.stdout)) == {"loop", "foreach", "fused"}, out.stdout


def test_cpu_clock_refuses_several_threads_and_a_gpu():
    out = bench("--clock", "cpu", "--threads", "2")
    assert out.returncode != 0 and "spin-wait" in out.stderr and "--threads 1 or --clock wall" in out.stderr, out.stderr
    out = bench("--clock", "cpu", "--device", "cuda")
    assert out.returncode != 0 and "--clock cpu on cuda" in out.stderr and "use --clock wall" in out.stderr, out.stderr


def test_interleaved_rounds_measure_each_variant_once_per_round_after_the_warmup():
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))  # as test_learning_bench does
    from clock import Clocks

    calls = []
    steps = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    samples = Clocks("wall", 1).interleaved(steps, rounds=3, warmup=2)
    assert calls == ["a", "b"] * 5  # 2 warm-up rounds, then 3 timed ones, interleaved
    assert {name: len(got) for name, got in samples.items()} == {"a": 3, "b": 3}
    assert all(s.wall >= 0 and s.cpu >= 0 for got in samples.values() for s in got)

"""bench/startup.py runs end to end on a tiny checkpoint: every variant reaches step 0 with its phases stamped
(it drives the trainer through its phase functions, so a rename there must show up here, not on the quiet rerun)."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_startup_bench_times_every_variant_to_step_0(tiny_ckpt):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "bench/startup.py", "--file", tiny_ckpt("sd1"), "--rounds", "1", "--images", "2",
                          "--resolution", "64", "--variants", "serial", "overlap"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    for variant in ("serial", "overlap"):
        assert re.search(rf"^  {variant} +median +\d+\.\d+ s", out.stdout, re.M), out.stdout
    phases = {m[1]: m[2] for m in re.finditer(r"^  (serial|overlap) +(imports .*step0 \d+\.\d+)$", out.stdout, re.M)}
    assert "caching_thread" in phases["overlap"] and "caching_thread" not in phases["serial"], phases
    assert all(name in phases["serial"] for name in ("load", "attach_caches", "trainer", "hash")), phases

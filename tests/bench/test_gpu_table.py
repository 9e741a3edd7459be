"""bench/gpu_table.py's CPU dry run: every lever row either measures a real step or says why it is skipped."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_dry_run_measures_every_cpu_row_and_names_why_the_others_need_cuda():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "bench/gpu_table.py", "--dry_run"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rows = {}
    for line in out.stdout.splitlines():
        m = re.match(r"(sd1|sdxl)\s+64px\s+(\w+)\s+(.*)$", line)
        if m:
            rows[(m[1], m[2])] = m[3]
    for family in ("sd1", "sdxl"):
        for row in ("base", "grad_ckpt", "adamw8bit"):
            assert re.match(r"\d+\.\d+ it/s", rows[(family, row)]), (family, row, rows)
        for row in ("fp16", "xformers", "fp8_base"):
            assert rows[(family, row)].startswith("skipped: needs CUDA"), (family, row, rows)
    assert re.match(r"\d+\.\d+ it/s", rows[("sdxl", "cached_te")])
    assert rows[("sd1", "cached_te")].startswith("skipped: SDXL only")

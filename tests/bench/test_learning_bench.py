"""bench/learning.py runs end to end on a tiny checkpoint: trains with checkpoints, scores each one and
prints its table row (the real numbers need the trained shapes base; docs/benchmarks.md)."""

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import learning  # noqa: E402


def test_learning_bench_prints_a_steps_to_concept_row_per_checkpoint(tiny_ckpt, capsys):
    rc = learning.main(["--base", tiny_ckpt("sd1"), "--variant", "rank 4", "--max_steps", "4", "--every", "2",
                        "--images", "1", "--class_images", "1"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "| variant | steps to concept (>= 80%) |" in out
    # a random tiny model never draws the purple star: both checkpoints scored, none reaches 80 %
    assert re.search(r"^\| rank 4 \| > 4 \| 2:0\.00 4:0\.00 \| \d+ \|$", out, re.M), out

"""--help and option errors answer before torch, diffusers or accelerate are imported (they take seconds)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "diffusers", "transformers", "accelerate", "bitsandbytes")
PROBE = """
import sys
sys.argv = [{script!r}] + {argv!r}
from library.train.entry import main
try:
    rc = main(sys.argv[1:], {name!r})
except SystemExit as e:
    rc = e.code
heavy = [m for m in {heavy!r} if m in sys.modules]
print("RC", rc, "HEAVY", ",".join(heavy) or "-")
"""


@pytest.mark.parametrize("script", ["train_network", "sdxl_train_network"])
@pytest.mark.parametrize("argv, rc", [(["--help"], 0), (["--learning_rate", "abc"], 2), (["--no_such_option"], 2)])
def test_help_and_option_errors_import_no_heavy_library(script, argv, rc):
    code = PROBE.format(script=f"{script}.py", argv=argv, name=script, heavy=HEAVY)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    last = out.stdout.strip().splitlines()[-1]
    assert last == f"RC {rc} HEAVY -", out.stdout[-2000:] + out.stderr[-2000:]

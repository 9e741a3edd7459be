"""docs/kohya.md covers every option of kohya's train_network.py and sdxl_train_network.py, and is generated."""

import os
import subprocess
import sys

from library.options import BY_NAME
from library.options.kohya_doc import read_kohya_options, render_kohya_markdown, verdict

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KOHYA_LIST = os.path.join(ROOT, "tests", "options", "data", "kohya_options.txt")


def _kohya():
    with open(KOHYA_LIST, encoding="utf-8") as f:
        return read_kohya_options(f)


def test_kohya_list_is_complete_and_every_option_is_accepted():
    kohya = _kohya()
    assert sum("train_network" in s for _, s in kohya) == 193  # kohya's parser, train_network.py
    assert sum("sdxl_train_network" in s for _, s in kohya) == 196  # and sdxl_train_network.py
    missing = [name for name, _ in kohya if name not in BY_NAME]
    assert not missing, f"kohya options lorasmith does not accept: {missing}"
    not_kohya = sorted(o.name for o in BY_NAME.values() if not o.ours and o.name not in dict(kohya))
    assert not not_kohya, f"options not marked ours=True that kohya does not have: {not_kohya}"


def test_table_has_one_row_per_kohya_option_with_a_verdict():
    kohya = _kohya()
    with open(os.path.join(ROOT, "docs", "kohya.md"), encoding="utf-8") as f:
        rows = [line for line in f if line.startswith("| `--")]
    table = {row.split("`")[1][2:]: row for row in rows}
    for name, scripts in kohya:
        assert name in table, name
        cell = table[name].rstrip(" |\n").rsplit("| ", 1)[1]
        assert cell.startswith(("same", "ours differs: ", "notice: ")), table[name]
        assert cell == verdict(name, scripts).replace("|", "\\|").replace("*", "\\*")
    assert verdict("huggingface_token", ("train_network", "sdxl_train_network")).startswith("notice: ")
    assert verdict("deepspeed", ("train_network", "sdxl_train_network")).startswith("ours differs: ")


def test_docs_kohya_md_is_up_to_date(tmp_path):
    with open(os.path.join(ROOT, "docs", "kohya.md"), encoding="utf-8") as f:
        assert f.read() == render_kohya_markdown(_kohya()), "docs/kohya.md is stale: run python tools/gen_kohya_doc.py"
    out = tmp_path / "kohya.md"
    tool = os.path.join(ROOT, "tools", "gen_kohya_doc.py")
    run = lambda *a: subprocess.run([sys.executable, tool, "--output", str(out), *a], capture_output=True, text=True)
    assert run("--check").returncode == 1
    assert run().returncode == 0 and run("--check").returncode == 0

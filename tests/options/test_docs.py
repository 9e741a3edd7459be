import os
import subprocess
import sys

from library.options import render_markdown

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_docs_options_md_is_generated_from_the_schema():
    with open(os.path.join(ROOT, "docs", "options.md"), encoding="utf-8") as f:
        committed = f.read()
    assert committed == render_markdown(), "docs/options.md is stale: run python tools/gen_options_doc.py"


def test_generator_check_mode(tmp_path):
    out = tmp_path / "options.md"
    tool = os.path.join(ROOT, "tools", "gen_options_doc.py")
    run = lambda *a: subprocess.run([sys.executable, tool, "--output", str(out), *a], capture_output=True, text=True)
    assert run("--check").returncode == 1
    assert run().returncode == 0
    assert run("--check").returncode == 0
    assert out.read_text(encoding="utf-8") == render_markdown()

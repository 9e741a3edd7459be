"""Write docs/options.md from the option schema (library/options/definitions.py).

    python tools/gen_options_doc.py           # rewrite docs/options.md
    python tools/gen_options_doc.py --check   # exit 1 if docs/options.md is out of date

tests/options/test_docs.py fails when the committed file differs from what this writes.
"""

from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from library.options import render_markdown  # noqa: E402
from library.options.docs import write_or_check  # noqa: E402

DOC_PATH = os.path.join(ROOT, "docs", "options.md")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that docs/options.md is up to date")
    parser.add_argument("--output", default=DOC_PATH, help="where to write (default: docs/options.md)")
    args = parser.parse_args(argv)
    return write_or_check(args.output, render_markdown(), args.check, "python tools/gen_options_doc.py")


if __name__ == "__main__":
    sys.exit(main())

"""Write docs/options.md from the option schema (library/options/definitions.py).

    python tools/gen_options_doc.py           # rewrite docs/options.md
    python tools/gen_options_doc.py --check   # exit 1 if docs/options.md is out of date

tests/options/test_docs.py fails when the committed file differs from what this writes.
"""

from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from library.options import render_markdown  # noqa: E402
from library.options.docs import doc_tool_main  # noqa: E402

DOC_PATH = os.path.join(ROOT, "docs", "options.md")


def main(argv=None) -> int:
    return doc_tool_main(argv, __doc__, DOC_PATH, render_markdown, "python tools/gen_options_doc.py")


if __name__ == "__main__":
    sys.exit(main())

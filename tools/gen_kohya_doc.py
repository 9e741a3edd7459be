"""Write docs/kohya.md (every kohya option and what lorasmith does with it) from the option schema.

    python tools/gen_kohya_doc.py           # rewrite docs/kohya.md
    python tools/gen_kohya_doc.py --check   # exit 1 if docs/kohya.md is out of date

kohya's option list is tests/options/data/kohya_options.txt (collected from sd-scripts' argparse setup);
tests/options/test_kohya_doc.py fails when the committed page differs from what this writes.
"""

from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from library.options.docs import doc_tool_main  # noqa: E402
from library.options.kohya_doc import read_kohya_options, render_kohya_markdown  # noqa: E402

DOC_PATH = os.path.join(ROOT, "docs", "kohya.md")
KOHYA_LIST = os.path.join(ROOT, "tests", "options", "data", "kohya_options.txt")


def render() -> str:
    with open(KOHYA_LIST, encoding="utf-8") as f:
        return render_kohya_markdown(read_kohya_options(f))


def main(argv=None) -> int:
    return doc_tool_main(argv, __doc__, DOC_PATH, render, "python tools/gen_kohya_doc.py")


if __name__ == "__main__":
    sys.exit(main())

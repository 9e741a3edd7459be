"""Arguments the LoRA maths tools (resize, extract, merge) share, so no tool imports another.

``--device`` must name a device that exists here before a model or file is read (the check is
library/devices.py's); ``--save_precision`` names the dtype the output is written in (the names are
library/vocabulary.py's, the dtypes library/devices.py's ``dtype_of``).
"""

from __future__ import annotations

from library.devices import check_device, dtype_of  # noqa: F401  (re-exported: the tools import them from here)
from library.vocabulary import SAVE_PRECISIONS  # noqa: F401


def add_output_options(parser, precision_default: str) -> None:
    """``--save_precision`` (the output's dtype; ``precision_default`` says what unset means), ``--overwrite``
    and ``--debug``: the options every LoRA/checkpoint writing tool shares, with one wording."""
    parser.add_argument("--save_precision", choices=SAVE_PRECISIONS, default=None,
                        help=f"dtype of the output (default: {precision_default})")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --save_to file even if it is not the same kind of file")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")


def add_device_option(parser) -> None:
    """``--device`` of the LoRA maths tools: where the SVD and the merge arithmetic run (checked by
    ``check_device`` before any file is read)."""
    parser.add_argument("--device", default="cpu", help="device for the SVD, e.g. cuda (default cpu)")

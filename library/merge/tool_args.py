"""Arguments the LoRA maths tools (resize, extract, merge) share, so no tool imports another.

``--device`` must name a device that exists here before a model or file is read (the check is
library/devices.py's); ``--save_precision`` names the dtype the output is written in (the names are
library/vocabulary.py's, the dtypes library/devices.py's ``dtype_of``).
"""

from __future__ import annotations

from library.devices import check_device, dtype_of  # noqa: F401  (re-exported: the tools import them from here)
from library.vocabulary import SAVE_PRECISIONS  # noqa: F401

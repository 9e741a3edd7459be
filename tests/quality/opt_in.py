"""Which quality cases wait for ``LORASMITH_QUALITY_MATRIX=1``: only SDXL's.

CI trains every SD1 case (the main test, the eleven option cases, three v-prediction losses, 2-process training),
about 2 CPU minutes each with the 900-step recipe, side by side (scripts/test.sh runs the suite with
pytest-xdist, one process per core). SDXL needs a base of its own, an 18-minute build per source hash, too large
to ship (28 MB); docs/quality.md has every case's measured result.
"""

import os

import pytest

MATRIX = os.environ.get("LORASMITH_QUALITY_MATRIX") == "1"

opt_in = pytest.mark.skipif(not MATRIX, reason="opt-in (LORASMITH_QUALITY_MATRIX=1): the SDXL shapes base is an "
                                               "18-minute build of its own (docs/quality.md, SDXL)")

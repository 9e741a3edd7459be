"""Which quality cases CI runs and which wait for ``LORASMITH_QUALITY_MATRIX=1``.

Each LoRA case trains 1800 steps (about 3 CPU minutes on one thread): CI's budget holds the main test,
v-prediction, 2-process training and four option cases, trained side by side (scripts/test.sh runs the suite
with pytest-xdist, one process per core). The rest of the option matrix, the other v losses and SDXL (a base
build of its own) are opt-in; docs/quality.md has every case's measured result.
"""

import os

import pytest

MATRIX = os.environ.get("LORASMITH_QUALITY_MATRIX") == "1"

opt_in = pytest.mark.skipif(not MATRIX, reason="opt-in (LORASMITH_QUALITY_MATRIX=1): CI's budget holds only some "
                                               "LoRA cases, about 3 CPU minutes each (docs/quality.md, Option matrix)")

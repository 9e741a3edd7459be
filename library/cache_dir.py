"""Where lorasmith keeps what it can rebuild but would rather not: remembered file hashes, built test models.

One rule for every such cache: ``$LORASMITH_CACHE_DIR`` when set, else ``~/.cache/lorasmith``. Imports
nothing heavy, so any layer may use it.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "LORASMITH_CACHE_DIR"


def cache_dir() -> Path:
    """``$LORASMITH_CACHE_DIR``, else ``~/.cache/lorasmith`` (not created here)."""
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else Path.home() / ".cache" / "lorasmith"

"""Find the lorasmith repository this node pack belongs to and make its packages importable.

Why a module of its own: ComfyUI imports ``custom_nodes/<folder>/__init__.py`` with only ComfyUI's
own folder on ``sys.path``. The trainer lives in the lorasmith repository (``library/``,
``networks/``, ``presets/``), so the node pack must find it before anything else runs:

1. ``LORASMITH_ROOT`` (environment variable), when set;
2. two folders above this file *after resolving symlinks*, so ``ln -s /path/to/lorasmith/custom_nodes/
   lorasmith_trainer ComfyUI/custom_nodes/`` (or a Windows junction) leads back to the repository.

A plain copy of the folder has no repository two levels up: set ``LORASMITH_ROOT`` then.

The repository is *not* put on ``sys.path``: its top level also holds ``tools``, ``tests``,
``scripts``, ``setup.py``..., names other node packs (and ComfyUI itself) use. Only the two packages
the node needs, ``library`` and ``networks``, are imported from it by file location; their submodules
then resolve through the packages' own ``__path__``.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path

ENV_VAR = "LORASMITH_ROOT"
_MARKERS = (("library", "train", "entry.py"), ("networks", "lora.py"), ("presets",))
PACKAGES = ("library", "networks")  # all the node imports from the repository


def is_repo_root(path: Path) -> bool:
    """True if ``path`` holds lorasmith's ``library/``, ``networks/`` and ``presets/``."""
    return all(path.joinpath(*parts).exists() for parts in _MARKERS)


def find_repo_root(this_file: str | os.PathLike = __file__, environ=os.environ) -> Path:
    """The lorasmith repository root for a node pack file at ``this_file`` (see the module docstring)."""
    here = Path(this_file).resolve()  # resolve(): a symlinked node folder points back into the repository
    candidates = []
    if environ.get(ENV_VAR):
        candidates.append((Path(environ[ENV_VAR]).expanduser().resolve(), f"{ENV_VAR}={environ[ENV_VAR]}"))
    candidates.append((here.parents[2], "two folders above the node pack"))
    for root, _ in candidates:
        if is_repo_root(root):
            return root
    looked = "; ".join(f"{root} ({why})" for root, why in candidates)
    raise ImportError(
        f"lorasmith_trainer: cannot find the lorasmith repository (looked in {looked}). Link the folder instead "
        f"of copying it (ln -s /path/to/lorasmith/custom_nodes/lorasmith_trainer ComfyUI/custom_nodes/) or set "
        f"{ENV_VAR}=/path/to/lorasmith before starting ComfyUI (docs/comfyui.md)"
    )


def make_importable(root: Path) -> None:
    """Import ``library`` and ``networks`` from ``root`` (without touching ``sys.path``) and check them.

    Other custom nodes bundling kohya's sd-scripts also have top-level ``library``/``networks``
    packages; if one of them was imported first, say so instead of failing later in odd ways.
    """
    for name in PACKAGES:
        module = sys.modules.get(name) or _import_from(root, name)
        found = Path(module.__file__).resolve().parent
        if found != root / name:
            raise ImportError(
                f"lorasmith_trainer: the top-level package `{name}` was already imported from {found} "
                f"(another custom node, probably one bundling kohya's sd-scripts); lorasmith needs {root / name}. "
                f"Remove or disable the other node pack, or run lorasmith in its own ComfyUI (docs/comfyui.md)"
            )


def _import_from(root: Path, name: str):
    """Import the top-level package ``name`` found in ``root`` and nowhere else."""
    spec = importlib.machinery.PathFinder.find_spec(name, [str(root)])
    if spec is None or spec.loader is None:
        raise ImportError(f"lorasmith_trainer: no package `{name}` in {root}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


REPO_ROOT = find_repo_root()

"""lorasmith's ComfyUI node pack: a ``LoRATrainer`` node that trains with the lorasmith library.

Install: link (or copy, then set LORASMITH_ROOT) this folder into ``ComfyUI/custom_nodes/`` and install
lorasmith's requirements into ComfyUI's Python; see docs/comfyui.md. ``locate`` finds the repository
(resolving symlinks) and imports its ``library`` and ``networks`` packages (only those) before the
node module uses them.
"""

from .locate import REPO_ROOT, make_importable

make_importable(REPO_ROOT)

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, LoRATrainer  # noqa: E402

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "LoRATrainer"]

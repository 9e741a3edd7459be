"""A training process imports what it uses: diffusers' optional bitsandbytes and peft backends stay out.

Why: diffusers imports bitsandbytes (for its quantized model loading; it pulls in torch's inductor) and
peft (its LoRA backend, ~230 modules) at start whenever they are installed: together about a fifth of the
trainer's import time (measured: bench/startup.py, docs/benchmarks.md). The trainer uses neither through
diffusers: our LoRA is our own module, and the 8-bit optimizers import bitsandbytes themselves when asked
for. So the training scripts tell diffusers, as it sets itself up, that the two are not installed.

Only for processes that are ours from the start (train_network.py, sdxl_train_network.py): a host such as
ComfyUI, or a test that loads a LoRA through diffusers' peft backend in the same process, keeps diffusers
as it is. Nothing is imported here; the flags are set when diffusers itself is first imported. Should
diffusers rename them, nothing happens (the imports just stay as they were).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys

_MODULE = "diffusers.utils.import_utils"
_UNUSED_BACKENDS = ("_bitsandbytes_available", "_peft_available")


class _HideUnusedBackends(importlib.abc.MetaPathFinder):
    """Finds diffusers' import_utils as the normal finder would, and clears the two flags once it ran."""

    def find_spec(self, name, path, target=None):
        if name != _MODULE:
            return None
        sys.meta_path.remove(self)  # once
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        if spec is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            for flag in _UNUSED_BACKENDS:
                if isinstance(getattr(module, flag, None), bool):
                    setattr(module, flag, False)

        spec.loader.exec_module = exec_module
        return spec


def skip_unused_diffusers_backends() -> None:
    """Call first thing in a training script's ``__main__``; a no-op once diffusers is imported."""
    if "diffusers" not in sys.modules and not any(isinstance(f, _HideUnusedBackends) for f in sys.meta_path):
        sys.meta_path.insert(0, _HideUnusedBackends())

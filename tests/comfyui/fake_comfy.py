"""The parts of ComfyUI the node meets at run time, behaving as ComfyUI's own code does.

Reproduced from reading ComfyUI's sources (not copied):
- ``comfy.utils``: a global progress hook set with ``set_progress_bar_global_hook``; ``ProgressBar``
  takes the hook when it is created and calls ``hook(value, total, preview, node_id=...)`` from
  ``update_absolute`` after clamping ``value`` to ``total``.
- ``comfy.model_management``: ``InterruptProcessingException``; the Cancel button calls
  ``interrupt_current_processing(True)``; ``processing_interrupted()`` reads the flag;
  ``throw_exception_if_processing_interrupted()`` clears it and raises.
- ``main.py``'s progress hook calls ``throw_exception_if_processing_interrupted()`` first, so Cancel
  surfaces as an exception raised from inside the node's ``ProgressBar.update_absolute``.
- ``execution.py`` runs every node function inside ``torch.inference_mode()``, after
  ``throw_exception_if_processing_interrupted()``, and shows a run that raised
  ``InterruptProcessingException`` as "interrupted".
"""

from __future__ import annotations

import threading
import types

import torch


def make_comfy():
    """Fresh ``comfy``, ``comfy.utils`` and ``comfy.model_management`` modules (a namespace for the test).

    ``updates`` records ``(value, total)`` as the web page would receive them; ``events`` records the
    memory calls the node makes.
    """
    comfy = types.ModuleType("comfy")
    comfy.__path__ = []
    utils = types.ModuleType("comfy.utils")
    mm = types.ModuleType("comfy.model_management")
    comfy.utils, comfy.model_management = utils, mm
    updates, events = [], []

    # comfy.utils
    utils.PROGRESS_BAR_HOOK = None

    def set_progress_bar_global_hook(function):
        utils.PROGRESS_BAR_HOOK = function

    class ProgressBar:
        def __init__(self, total, node_id=None):
            self.total, self.current, self.node_id = total, 0, node_id
            self.hook = utils.PROGRESS_BAR_HOOK

        def update_absolute(self, value, total=None, preview=None):
            if total is not None:
                self.total = total
            if value > self.total:
                value = self.total
            self.current = value
            if self.hook is not None:
                self.hook(self.current, self.total, preview, node_id=self.node_id)

        def update(self, value):
            self.update_absolute(self.current + value)

    utils.set_progress_bar_global_hook, utils.ProgressBar = set_progress_bar_global_hook, ProgressBar

    # comfy.model_management
    class InterruptProcessingException(Exception):
        pass

    lock = threading.RLock()
    state = {"interrupt": False}

    def interrupt_current_processing(value=True):
        with lock:
            state["interrupt"] = value

    def processing_interrupted():
        with lock:
            return state["interrupt"]

    def throw_exception_if_processing_interrupted():
        with lock:
            if state["interrupt"]:
                state["interrupt"] = False
                raise InterruptProcessingException()

    mm.InterruptProcessingException = InterruptProcessingException
    mm.interrupt_current_processing = interrupt_current_processing
    mm.processing_interrupted = processing_interrupted
    mm.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted
    mm.unload_all_models = lambda: events.append("unload")
    mm.soft_empty_cache = lambda force=False: events.append("empty")

    # main.py: the server's progress hook
    def hook(value, total, preview_image, prompt_id=None, node_id=None):
        mm.throw_exception_if_processing_interrupted()
        updates.append((value, total))

    set_progress_bar_global_hook(hook)
    return types.SimpleNamespace(package=comfy, utils=utils, mm=mm, updates=updates, events=events)


def execute_node(comfy, node_class, **inputs):
    """Run a node's function as ComfyUI's executor does: inference mode, an interrupt check, then FUNCTION."""
    with torch.inference_mode():
        comfy.mm.throw_exception_if_processing_interrupted()
        node = node_class()
        return getattr(node, node_class.FUNCTION)(**inputs)

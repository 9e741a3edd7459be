"""What our network types share: modules that take over their base layer's forward, and the network
object holding them with the parts of kohya's network-module contract that do not depend on the type.

Why: a module wraps its base layer by replacing the layer's ``forward`` (as kohya does), so the base
model's own state dict and module tree stay untouched; LoRA (and DyLoRA, LoRA-FA) and OFT all hook the
same way and answer the trainer's contract calls (restore, multiplier, epoch start...) the same way.
"""

from __future__ import annotations

import torch


class HookedModule(torch.nn.Module):
    """A module that runs in place of ``org_module``'s forward once ``apply_to`` is called."""

    def __init__(self, lora_name: str, org_module: torch.nn.Module, multiplier: float = 1.0):
        super().__init__()
        self.lora_name = lora_name
        self.multiplier = multiplier
        self.merged = False
        self._org = [org_module]  # a list, so the base layer is not registered as a submodule
        self._org_forward = None

    @property
    def org_module(self) -> torch.nn.Module:
        return self._org[0]

    def apply_to(self) -> None:
        """Route the base layer's forward through this module."""
        if self._org_forward is None:
            self._org_forward = self.org_module.forward
            self.org_module.forward = self.forward

    def restore(self) -> None:
        """Give the base layer its own forward back."""
        if self._org_forward is not None:
            self.org_module.forward = self._org_forward
            self._org_forward = None


class HookedNetwork(torch.nn.Module):
    """kohya's contract calls that every network of HookedModules answers alike; a subclass lists its
    modules in ``hooked_modules``."""

    def hooked_modules(self) -> list[HookedModule]:
        raise NotImplementedError

    def restore(self):
        """Unhook all modules (the base model runs as if no network were there)."""
        for module in self.hooked_modules():
            module.restore()

    def set_multiplier(self, multiplier: float):
        self.multiplier = multiplier
        for module in self.hooked_modules():
            module.multiplier = multiplier

    def is_mergeable(self) -> bool:
        return True

    def merge_hooked(self) -> None:
        """Fold every not yet merged module into its base weight; hooked forwards then skip it."""
        for module in self.hooked_modules():
            if not module.merged:
                module.merge()

    def prepare_grad_etc(self, text_encoder=None, unet=None):
        self.requires_grad_(True)

    def on_epoch_start(self, text_encoder=None, unet=None):
        self.train()

    def get_trainable_params(self):
        return self.parameters()

    def enable_gradient_checkpointing(self):
        """The modules hold no activations of their own; the base model's checkpointing covers them."""

"""LoRA-FA (``--network_module networks.lora_fa``): LoRA with a frozen, randomly initialised down projection.

Only the up weights learn (arXiv 2308.03303), which roughly halves the optimizer state and needs
no activation of the down input for the gradient. The down weight is a buffer, not a parameter, so
no optimizer, gradient clipping or weight decay ever touches it; it is still saved, so the file is
a plain kohya LoRA (``lora_down``/``lora_up``/``alpha``) that loads everywhere a LoRA does.
Targets, names, network_args (conv_dim, block dims, LoRA+ ...) are networks.lora's.
"""

from __future__ import annotations

import torch

from networks.lora import LoRAModule, build_network, build_network_from_weights
from networks.lora_math import lora_fa_down_std


class LoRAFAModule(LoRAModule):
    """A LoRA module whose down projection is fixed at its random init."""

    NETWORK_MODULE = "networks.lora_fa"

    def __init__(self, lora_name, org_module, multiplier=1.0, lora_dim=4, alpha=1, dropout=None, rank_dropout=None, module_dropout=None):
        super().__init__(lora_name, org_module, multiplier, lora_dim, alpha, dropout, rank_dropout, module_dropout)
        down = self.lora_down.weight.detach().clone()
        torch.nn.init.normal_(down, std=lora_fa_down_std(down.shape[1], self.lora_dim))
        del self.lora_down.weight
        self.lora_down.register_buffer("weight", down)

    @torch.no_grad()
    def rescale_(self, ratio: torch.Tensor) -> None:
        """Max-norm scales only the trained factor (the down projection stays as initialised)."""
        self.lora_up.weight.mul_(ratio.to(self.lora_up.weight.dtype))


def create_network(multiplier, network_dim, network_alpha, vae, text_encoder, unet, neuron_dropout=None, **kwargs):
    """kohya's factory signature; network_args as networks.lora."""
    return build_network(multiplier, network_dim, network_alpha, text_encoder, unet, neuron_dropout, kwargs, LoRAFAModule)


def create_network_from_weights(multiplier, file, vae, text_encoder, unet, weights_sd=None, for_inference=False, **kwargs):
    """A LoRA-FA network shaped like a saved file (any plain LoRA file works)."""
    return build_network_from_weights(multiplier, file, text_encoder, unet, weights_sd, kwargs, LoRAFAModule)

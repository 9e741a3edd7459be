"""DyLoRA (``--network_module networks.dylora``, network_args ``unit``): one LoRA usable at many ranks.

Each training forward draws a rank ``k`` (a multiple of ``unit`` up to the network rank) and uses
only the first ``k`` components, with scale ``alpha / k``; only the newest ``unit`` components
learn (the ones below are detached, so they get no gradient and the optimizer skips them). After
training, the file cut to any multiple of ``unit`` is itself a good LoRA of that rank (keep alpha).
The file is saved at full rank as a plain kohya LoRA, as kohya's networks.dylora does.

Differences from kohya's module (docs/networks.md): kohya always computes with all components and
rescales by sqrt(r/k); we truncate as the DyLoRA paper does, so the lower ranks are what training
optimised. Random draws use torch's generator, which the trainer seeds per micro-batch (exact
resume) and gradient checkpointing restores on recomputation.
"""

from __future__ import annotations

import torch

from library.errors import UserError
from networks.lora import LoRAModule, build_network, build_network_from_weights
from networks.lora_math import dylora_scale


class DyLoRAModule(LoRAModule):
    """A LoRA module whose rank components are trained in blocks of ``unit``."""

    NETWORK_MODULE = "networks.dylora"

    def __init__(self, lora_name, org_module, multiplier=1.0, lora_dim=4, alpha=1, dropout=None, rank_dropout=None,
                 module_dropout=None, unit=1):
        super().__init__(lora_name, org_module, multiplier, lora_dim, alpha, dropout, rank_dropout, module_dropout)
        if unit < 1 or self.lora_dim % unit:
            raise UserError(f"networks.dylora: the rank {self.lora_dim} of {lora_name} is not a multiple of "
                            f"network_args unit={unit}; choose a unit that divides network_dim (and conv_dim)")
        self.unit = unit
        down, up = self.lora_down.weight.detach(), self.lora_up.weight.detach()
        self.is_conv = isinstance(org_module, torch.nn.Conv2d)
        if self.is_conv:
            self.conv_args = (org_module.stride, org_module.padding, org_module.dilation)
        self.lora_down_units = torch.nn.ParameterList([torch.nn.Parameter(c.clone()) for c in down.split(unit, 0)])
        self.lora_up_units = torch.nn.ParameterList([torch.nn.Parameter(c.clone()) for c in up.split(unit, 1)])
        del self.lora_down, self.lora_up
        # The file and the resume state hold plain lora_down/lora_up tensors, as kohya's DyLoRA writes them.
        self.register_state_dict_post_hook(_units_to_plain)
        self.register_load_state_dict_pre_hook(_plain_to_units)

    def weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.cat(tuple(self.lora_down_units), 0), torch.cat(tuple(self.lora_up_units), 1)

    @torch.no_grad()
    def rescale_(self, ratio: torch.Tensor) -> None:
        for p in (*self.lora_down_units, *self.lora_up_units):
            p.mul_(ratio.sqrt().to(p.dtype))

    def forward(self, x):
        out = self._org_forward(x)
        if self.skips():
            return out
        n = len(self.lora_down_units)
        if self.training:
            j = int(torch.randint(n, (1,)))
            downs = [p.detach() for p in self.lora_down_units[:j]] + [self.lora_down_units[j]]
            ups = [p.detach() for p in self.lora_up_units[:j]] + [self.lora_up_units[j]]
        else:
            j, downs, ups = n - 1, list(self.lora_down_units), list(self.lora_up_units)
        rank = (j + 1) * self.unit
        down, up = torch.cat(downs, 0), torch.cat(ups, 1)
        if self.is_conv:
            lx = torch.nn.functional.conv2d(x, down.to(x.dtype), None, *self.conv_args)
        else:
            lx = torch.nn.functional.linear(x, down.to(x.dtype))
        return self.add_low_rank(out, lx, up, dylora_scale(self.alpha_value, rank), rank)

    @property
    def alpha_value(self) -> float:
        return self.scale * self.lora_dim


def _units_to_plain(module, state_dict, prefix, local_metadata):
    for i in range(len(module.lora_down_units)):
        state_dict.pop(f"{prefix}lora_down_units.{i}", None)
        state_dict.pop(f"{prefix}lora_up_units.{i}", None)
    down, up = module.weights()
    state_dict[prefix + "lora_down.weight"] = down.detach()
    state_dict[prefix + "lora_up.weight"] = up.detach()


def _plain_to_units(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
    down = state_dict.pop(prefix + "lora_down.weight", None)
    up = state_dict.pop(prefix + "lora_up.weight", None)
    if down is None or up is None:
        return  # strict loading reports the unit keys as missing
    unit = module.unit
    for i, c in enumerate(down.split(unit, 0)):
        state_dict[f"{prefix}lora_down_units.{i}"] = c
    for i, c in enumerate(up.split(unit, 1)):
        state_dict[f"{prefix}lora_up_units.{i}"] = c


def _unit(kwargs) -> int:
    value = kwargs.get("unit")
    return 1 if value in (None, "", "None") else int(value)


def _module_class(unit: int):
    class _WithUnit(DyLoRAModule):
        def __init__(self, *args, **kw):
            super().__init__(*args, unit=unit, **kw)

    return _WithUnit


def create_network(multiplier, network_dim, network_alpha, vae, text_encoder, unet, neuron_dropout=None, **kwargs):
    """kohya's factory signature; network_args as networks.lora plus ``unit`` (default 1)."""
    return build_network(multiplier, network_dim, network_alpha, text_encoder, unet, neuron_dropout, kwargs,
                         _module_class(_unit(kwargs)))


def create_network_from_weights(multiplier, file, vae, text_encoder, unet, weights_sd=None, for_inference=False, **kwargs):
    """A DyLoRA network shaped like a saved file (any plain LoRA file; ``unit`` from kwargs, default 1)."""
    return build_network_from_weights(multiplier, file, text_encoder, unet, weights_sd, kwargs, _module_class(_unit(kwargs)))

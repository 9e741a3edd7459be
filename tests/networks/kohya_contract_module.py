"""A third-party network module written only against kohya's contract (as sd-scripts calls it).

It is deliberately not shaped like ours: ``create_network`` reads its own network_args (``scale``),
``prepare_optimizer_params`` returns a plain list of groups without descriptions, ``load_weights``
takes a path only, ``save_weights`` writes with safetensors directly (not atomically), there is no
``apply_max_norm_regularization``, and it records the hooks the trainer calls. Each adapter is a
bias-free rank-1 update on the UNet's attention output projections.
"""

import torch
from safetensors.torch import load_file, save_file

CALLS = {"on_step_start": 0, "on_epoch_start": 0, "prepare_network": 0, "kwargs": None}


class _Adapter(torch.nn.Module):
    def __init__(self, name, layer, scale):
        super().__init__()
        self.name, self.scale, self.layer = name, scale, [layer]
        self.down = torch.nn.Parameter(torch.randn(1, layer.in_features) * 0.1)
        self.up = torch.nn.Parameter(torch.zeros(layer.out_features, 1))
        self.org_forward = None

    def hook(self):
        self.org_forward = self.layer[0].forward
        self.layer[0].forward = self.forward

    def forward(self, x):
        return self.org_forward(x) + (x @ self.down.t() @ self.up.t()) * self.scale


class ContractNetwork(torch.nn.Module):
    def __init__(self, unet, scale):
        super().__init__()
        self.adapters = torch.nn.ModuleDict()
        for name, module in unet.named_modules():
            if name.endswith("to_out.0") and isinstance(module, torch.nn.Linear):
                self.adapters["lora_unet_" + name.replace(".", "_")] = _Adapter(name, module, scale)

    def prepare_network(self, args):
        CALLS["prepare_network"] += 1

    def apply_to(self, text_encoder, unet, apply_text_encoder, apply_unet):
        for adapter in self.adapters.values():
            adapter.hook()

    def prepare_optimizer_params(self, text_encoder_lr, unet_lr, default_lr=None):
        return [{"params": (p for p in self.parameters()), "lr": unet_lr or default_lr}]

    def prepare_grad_etc(self, text_encoder, unet):
        self.requires_grad_(True)

    def on_epoch_start(self, text_encoder, unet):
        CALLS["on_epoch_start"] += 1
        self.train()

    def on_step_start(self, text_encoder, unet):
        CALLS["on_step_start"] += 1

    def get_trainable_params(self):
        return self.parameters()

    def save_weights(self, file, dtype, metadata):
        assert file.endswith(".safetensors")
        sd = {k: v.detach().to(dtype or v.dtype).contiguous() for k, v in self.state_dict().items()}
        save_file(sd, file, metadata)

    def load_weights(self, file):
        return self.load_state_dict(load_file(file), strict=False)


def create_network(multiplier, network_dim, network_alpha, vae, text_encoder, unet, neuron_dropout=None, **kwargs):
    CALLS["kwargs"] = dict(kwargs)
    return ContractNetwork(unet, float(kwargs.get("scale", 1.0)))

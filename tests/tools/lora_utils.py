"""Helpers for the tools' tests: random LoRA files on a tiny model (calling the model: tests/tiny_model_calls.py)."""

import torch

from networks.lora import create_network


def make_lora(model, path, seed, dim=4, alpha=2.0, conv_dim=2, std=0.05):
    """Save a LoRA (LoCon when conv_dim) with random non-zero weights for ``model``; returns the path as str."""
    kwargs = {"conv_dim": conv_dim, "conv_alpha": 1} if conv_dim else {}
    net = create_network(1.0, dim, alpha, model.vae, model.text_encoders, model.unet, **kwargs)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for lora in net.all_loras:
            for w in (lora.lora_down.weight, lora.lora_up.weight):
                w.copy_(torch.randn(w.shape, generator=g) * std)
    net.save_weights(str(path), metadata={"ss_base_model_version": model.model_version, "ss_network_module": "networks.lora"})
    return str(path)

"""Helpers for the tools' tests: random LoRA files on a tiny model and prompt encoding."""

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


@torch.no_grad()
def te_outputs(model, prompt="a photo of a cat"):
    """The conditioning tensors each family feeds the UNet: (context, added_cond_kwargs or None)."""
    ids = [tok([prompt], padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids for tok in model.tokenizers]
    outs = [te(i, output_hidden_states=True) for te, i in zip(model.text_encoders, ids)]
    if model.is_sdxl:
        ctx = torch.cat([outs[0].hidden_states[-2], outs[1].hidden_states[-2]], dim=-1)
        time_ids = torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]])
        return ctx, {"text_embeds": outs[1].text_embeds, "time_ids": time_ids}
    return outs[0].last_hidden_state, None


@torch.no_grad()
def unet_output(model, ctx, added, seed=0):
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(seed))
    return model.unet(latents, torch.tensor([500]), encoder_hidden_states=ctx, added_cond_kwargs=added).sample

"""Calling a tiny base model the way each family conditions its UNet: one helper for the models' and tools' tests."""

import torch


@torch.no_grad()
def te_outputs(model, prompt="a photo of a cat"):
    """(context, added_cond_kwargs or None): SD1/SD2 the last layer, SDXL the penultimate ones and the pooled output."""
    ids = [tok([prompt], padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
           for tok in model.tokenizers]
    outs = [te(i, output_hidden_states=True) for te, i in zip(model.text_encoders, ids)]
    if model.is_sdxl:
        ctx = torch.cat([outs[0].hidden_states[-2], outs[1].hidden_states[-2]], dim=-1)
        time_ids = torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]])
        return ctx, {"text_embeds": outs[1].text_embeds, "time_ids": time_ids}
    return outs[0].last_hidden_state, None


@torch.no_grad()
def unet_output(model, ctx, added, seed=0, timestep=500):
    """The UNet's prediction for seeded 8x8 latents at ``timestep``."""
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(seed))
    return model.unet(latents, torch.tensor([timestep]), encoder_hidden_states=ctx, added_cond_kwargs=added).sample

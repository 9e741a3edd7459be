"""diffusers pipelines around a lorasmith model: the sampler names' schedulers, the text-to-image
pipeline, and a prompt's text arguments for it.

Why one place: images made during training (library/train/sampling.py), by tools/gen_img.py and for
class images are made the same way, so a sample seen in training is the image gen_img gives.
"""

from __future__ import annotations

import inspect

import torch

from library.vocabulary import SAMPLERS as SAMPLER_NAMES

_SCHEDULERS = {  # sampler name -> diffusers scheduler class and its extra config
    "ddim": ("DDIMScheduler", {}),
    "pndm": ("PNDMScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "k_euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "k_euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "dpm_2": ("KDPM2DiscreteScheduler", {}),
    "k_dpm_2": ("KDPM2DiscreteScheduler", {}),
    "dpm_2_a": ("KDPM2AncestralDiscreteScheduler", {}),
    "k_dpm_2_a": ("KDPM2AncestralDiscreteScheduler", {}),
    "dpmsolver": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver"}),
    "dpmsolver++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "dpmsingle": ("DPMSolverSinglestepScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {}),
    "k_lms": ("LMSDiscreteScheduler", {}),
}
SAMPLERS = {name: _SCHEDULERS[name] for name in SAMPLER_NAMES}  # every name of library.vocabulary


def make_scheduler(sampler: str, train_scheduler_config: dict):
    """A diffusers inference scheduler of the named kind, on the model's noise schedule."""
    import diffusers

    cls_name, extra = SAMPLERS[sampler]
    keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "prediction_type", "rescale_betas_zero_snr")
    cfg = {k: train_scheduler_config[k] for k in keys if k in train_scheduler_config}
    cls = getattr(diffusers, cls_name)
    allowed = set(inspect.signature(cls.__init__).parameters)
    cfg = {k: v for k, v in {**cfg, "steps_offset": 1, "clip_sample": False, "set_alpha_to_one": False, **extra}.items() if k in allowed}
    return cls(**cfg)


def make_pipeline(model, sampler: str, with_text_encoders: bool = True):
    """A diffusers text-to-image pipeline around the (LoRA-hooked) model components; without text
    encoders it takes prompt embeddings only (see library/train/sampling.py's ``encode_sample_prompts``)."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    scheduler = make_scheduler(sampler, dict(model.noise_scheduler.config))
    tes = list(model.text_encoders) if with_text_encoders else [None] * len(model.text_encoders)
    if model.is_sdxl:
        pipe = StableDiffusionXLPipeline(
            vae=model.vae, text_encoder=tes[0], text_encoder_2=tes[1],
            tokenizer=model.tokenizers[0], tokenizer_2=model.tokenizers[1], unet=model.unet, scheduler=scheduler,
        )
    else:
        pipe = StableDiffusionPipeline(
            vae=model.vae, text_encoder=tes[0], tokenizer=model.tokenizers[0], unet=model.unet,
            scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def prompt_kwargs(model, prompt: str, negative: str | None, clip_skip: int | None = None) -> dict:
    """The pipeline's text arguments for one prompt: the plain strings, or, when the prompt or the negative
    uses weighting syntax (``(word:1.2)``, ``[word]``, ``\\(``) or clip skip is set (SD1/SD2), embeddings
    made as in training (library/inference/prompt_weights.py), up to 225 tokens, as kohya's sample images do."""
    from library.inference.prompt_weights import has_weights, tokens_with_weights
    from library.inference.text_encoding import CHUNK, encode_captions

    weighted = has_weights(prompt) or bool(negative and has_weights(negative))
    skip = clip_skip is not None and clip_skip > 1 and not model.is_sdxl
    if not weighted and not skip:
        return {"prompt": prompt, "negative_prompt": negative or None}
    # Our own encoder, as in training: weights, and clip skip counted as kohya counts it. (diffusers' own
    # clip_skip reaches for text_encoder.text_model, which transformers v5's CLIPTextModel no longer has.)
    texts = [prompt, negative or ""]
    longest = max(len(tokens_with_weights(model.tokenizers[0], t, 3 * CHUNK)[0]) for t in texts)
    length = CHUNK * min(3, max(1, -(-longest // CHUNK)))
    cond = encode_captions(model, texts, length, None if model.is_sdxl else clip_skip, weighted=weighted,
                           device=model.unet.device)
    dtype = model.unet.dtype
    kwargs = {"prompt_embeds": cond.context[:1].to(dtype), "negative_prompt_embeds": cond.context[1:].to(dtype)}
    if model.is_sdxl:
        kwargs["pooled_prompt_embeds"] = cond.pooled[:1].to(dtype)
        kwargs["negative_pooled_prompt_embeds"] = cond.pooled[1:].to(dtype)
        if not negative:  # what the SDXL pipeline does for an empty negative prompt (force_zeros_for_empty_prompt)
            kwargs["negative_prompt_embeds"] = torch.zeros_like(kwargs["negative_prompt_embeds"])
            kwargs["negative_pooled_prompt_embeds"] = torch.zeros_like(kwargs["negative_pooled_prompt_embeds"])
    return kwargs

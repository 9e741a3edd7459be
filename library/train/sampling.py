"""Sample images during training, from kohya's prompt-file syntax.

A prompt line is ``prompt text --n negative --w 512 --h 768 --d 42 --s 30 --l 7.5 --ss euler_a``;
``#`` starts a comment line. Images are generated with diffusers' pipelines built around the
model being trained (LoRA hooks included), on a private RNG, so sampling never changes the
training run's random stream.
"""

from __future__ import annotations

import inspect
import os

import torch
from PIL import PngImagePlugin

from library.atomic import atomic_path
from library.errors import UserError
from library.inference.prompts import OPTION_KEYS, SamplePrompt, parse_prompt_line, read_prompt_file  # noqa: F401
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
    encoders it takes prompt embeddings only (see ``encode_sample_prompts``)."""
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


def png_info(sample: SamplePrompt, sampler: str) -> PngImagePlugin.PngInfo:
    """A1111-style ``parameters`` text chunk, so the settings travel with the image."""
    info = PngImagePlugin.PngInfo()
    text = sample.prompt
    if sample.negative_prompt:
        text += f"\nNegative prompt: {sample.negative_prompt}"
    text += f"\nSteps: {sample.steps}, Sampler: {sampler}, CFG scale: {sample.scale}, Seed: {sample.seed}, Size: {sample.width}x{sample.height}"
    info.add_text("parameters", text)
    return info


def prompt_kwargs(model, prompt: str, negative: str | None, clip_skip: int | None = None) -> dict:
    """The pipeline's text arguments for one prompt: the plain strings, or, when the prompt or the negative
    uses weighting syntax (``(word:1.2)``, ``[word]``, ``\\(``) or clip skip is set (SD1/SD2), embeddings
    made as in training (library/inference/prompt_weights.py), up to 225 tokens, as kohya's sample images do."""
    from library.inference.prompt_weights import has_weights, tokens_with_weights
    from library.train.text_encoding import CHUNK, encode_captions

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


def _conditioning_key(sample: SamplePrompt, clip_skip) -> tuple:
    return (sample.prompt, sample.negative_prompt, sample.scale > 1, clip_skip)



@torch.no_grad()
def encode_sample_prompts(model, prompts: list[SamplePrompt], clip_skip=None) -> dict:
    """Each prompt's embeddings, made by the pipeline's own prompt encoder (so the images are the same
    as with the text encoders present): lets training free the text encoders when their outputs are cached."""
    pipe = make_pipeline(model, "ddim")
    device = next(model.unet.parameters()).device
    out = {}
    for sample in prompts:
        key = _conditioning_key(sample, clip_skip)
        if key in out:
            continue
        kwargs = prompt_kwargs(model, sample.prompt, sample.negative_prompt, clip_skip)
        if "prompt" not in kwargs:  # weighted or clip-skipped prompts: already embeddings
            out[key] = kwargs
            continue
        cfg = sample.scale > 1
        neg = sample.negative_prompt or None
        if model.is_sdxl:
            pe, npe, ppe, nppe = pipe.encode_prompt(sample.prompt, device=device, do_classifier_free_guidance=cfg,
                                                    negative_prompt=neg)
            out[key] = {"prompt_embeds": pe, "negative_prompt_embeds": npe, "pooled_prompt_embeds": ppe,
                        "negative_pooled_prompt_embeds": nppe}
        else:
            pe, npe = pipe.encode_prompt(sample.prompt, device, 1, cfg, neg)
            out[key] = {"prompt_embeds": pe, "negative_prompt_embeds": npe}
    return out


@torch.no_grad()
def generate_samples(model, prompts: list[SamplePrompt], out_dir: str, stem: str, default_sampler: str = "ddim", clip_skip=None, seed=0,
                     conditioning: dict | None = None) -> list[str]:
    """Generate one image per prompt into ``out_dir``; returns the file paths. ``conditioning`` (from
    ``encode_sample_prompts``) replaces the text encoders, which may then be freed."""
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    modules = (model.unet,) if conditioning is not None else (model.unet, *model.text_encoders)
    was_training = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        with torch.random.fork_rng(devices=[]):
            for i, sample in enumerate(prompts):
                sampler = sample.sampler or default_sampler
                pipe = make_pipeline(model, sampler, with_text_encoders=conditioning is None)
                sample_seed = sample.seed if sample.seed is not None else seed + i
                gen = torch.Generator(device="cpu").manual_seed(sample_seed)
                text = (conditioning[_conditioning_key(sample, clip_skip)] if conditioning is not None
                        else prompt_kwargs(model, sample.prompt, sample.negative_prompt, clip_skip))
                kwargs = dict(**text, width=sample.width, height=sample.height, num_inference_steps=sample.steps,
                              guidance_scale=sample.scale, generator=gen)
                image = pipe(**kwargs).images[0]
                sample.seed = sample_seed
                path = os.path.join(out_dir, f"{stem}_{i:02d}_{sample_seed}.png")
                with atomic_path(path) as tmp:  # a kill mid-write never leaves a partial PNG under the name
                    image.save(tmp, format="PNG", pnginfo=png_info(sample, sampler))
                paths.append(path)
    finally:
        for m, t in zip(modules, was_training):
            m.train(t)
    return paths

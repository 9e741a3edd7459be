"""Sample images during training, from kohya's prompt files (library/inference/prompts.py).

Images are generated with the inference layer's pipelines (library/inference/pipelines.py) built
around the model being trained (LoRA hooks included), on a private RNG, so sampling never changes
the training run's random stream. With cached text-encoder outputs the prompts are encoded once up
front, so the encoders can be freed.
"""

from __future__ import annotations

import os

import torch

from library.atomic import atomic_path
from library.inference.pipelines import make_pipeline, prompt_kwargs
from library.inference.png_info import png_info
from library.inference.prompts import SamplePrompt
from library.options.typed import SamplingOptions


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
def generate_samples(model, prompts: list[SamplePrompt], out_dir: str, stem: str,
                     options: SamplingOptions = SamplingOptions(), conditioning: dict | None = None) -> list[str]:
    """Generate one image per prompt into ``out_dir``; returns the file paths. ``options``: the run's
    ``--sample_sampler`` (a prompt's ``--ss`` wins), ``--clip_skip`` and ``--seed`` (a prompt without ``--d`` gets
    seed + its index). ``conditioning`` (from ``encode_sample_prompts``) replaces the text encoders, which may
    then be freed."""
    clip_skip, seed = options.clip_skip, options.seed or 0
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    modules = (model.unet,) if conditioning is not None else (model.unet, *model.text_encoders)
    was_training = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        with torch.random.fork_rng(devices=[]):
            for i, sample in enumerate(prompts):
                sampler = sample.sampler or options.sample_sampler
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

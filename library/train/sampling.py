"""Sample images during training, from kohya's prompt files (the one reader of them; gen_img uses it).

A ``.txt`` prompt line is ``prompt text --n negative --w 512 --h 768 --d 42 --s 30 --l 7.5 --ss euler_a``;
``#`` starts a comment line. ``.toml`` and ``.json`` files hold kohya's prompt dicts (``prompt``,
``negative_prompt``, ``width``, ``height``, ``sample_steps``, ``scale``, ``seed``, ``sample_sampler``). Images are generated with diffusers' pipelines built around the
model being trained (LoRA hooks included), on a private RNG, so sampling never changes the
training run's random stream.
"""

from __future__ import annotations

import inspect
import logging
import os
from dataclasses import dataclass, field

import torch
from PIL import PngImagePlugin

from library.errors import UserError

logger = logging.getLogger("lorasmith.train")

OPTION_KEYS = {"n": "negative_prompt", "w": "width", "h": "height", "d": "seed", "s": "steps", "l": "scale", "ss": "sampler"}
SAMPLERS = {
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


@dataclass
class SamplePrompt:
    prompt: str
    negative_prompt: str = ""
    width: int = 512
    height: int = 512
    seed: int | None = None
    steps: int = 30
    scale: float = 7.5
    sampler: str | None = None
    extra: dict = field(default_factory=dict)


def parse_prompt_line(line: str, where: str = "prompt", defaults: dict | None = None) -> SamplePrompt:
    """One prompt line -> SamplePrompt; unknown ``--x`` options are an error naming the line."""
    parts = line.split(" --")
    sample = SamplePrompt(prompt=parts[0].strip(), **(defaults or {}))
    for part in parts[1:]:
        key, _, value = part.strip().partition(" ")
        if key not in OPTION_KEYS:
            known = ", ".join(f"--{k}" for k in OPTION_KEYS)
            raise UserError(f"{where}: unknown option '--{key}' (known: {known})")
        name, value = OPTION_KEYS[key], value.strip()
        try:
            if name in ("width", "height", "seed", "steps"):
                value = int(value)
            elif name == "scale":
                value = float(value)
        except ValueError:
            raise UserError(f"{where}: option --{key} needs a number, got '{value}'") from None
        if name == "sampler" and value.lower() not in SAMPLERS:
            raise UserError(f"{where}: unknown sampler '{value}' (known: {', '.join(SAMPLERS)})")
        setattr(sample, name, value.lower() if name == "sampler" else value)
    return sample


def read_prompt_file(path: str, defaults: dict | None = None, option: str = "--sample_prompts") -> list[SamplePrompt]:
    """All prompts of a kohya prompt file, by extension as sd-scripts' ``load_prompts``: ``.toml`` (a
    ``[prompt]`` table of defaults with ``[[prompt.subset]]`` prompts), ``.json`` (a list of prompt objects
    or prompt lines), anything else one prompt a line. ``option`` names the file in errors."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            text = f.read()
    except FileNotFoundError:
        raise UserError(f"{option} {path}: file not found") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{option} {path}: not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8") from None
    kind = os.path.splitext(path)[1].lower()
    if kind == ".toml":
        prompts = _toml_prompts(text, path, option, defaults)
    elif kind == ".json":
        prompts = _json_prompts(text, path, option, defaults)
    else:
        prompts = _text_prompts(text, path, defaults)
    if not prompts:
        raise UserError(f"{option} {path}: no prompts in the file ({_FORMAT_HINT[kind if kind in _FORMAT_HINT else '']})")
    return prompts


# kohya's prompt-dict keys (train_util.line_to_prompt_dict / sample_image_inference) -> SamplePrompt fields
DICT_KEYS = {"prompt": "prompt", "negative_prompt": "negative_prompt", "width": "width", "height": "height",
             "seed": "seed", "sample_steps": "steps", "scale": "scale", "sample_sampler": "sampler"}
# kohya prompt keys for other trainers (FLUX, SD3, Lumina, ControlNet): accepted with a warning
OTHER_MODEL_KEYS = ("guidance_scale", "controlnet_image", "cfg_trunc_ratio", "renorm_cfg", "flow_shift", "enum")
_FORMAT_HINT = {
    "": "one prompt per line, '#' for comments",
    ".toml": "a [prompt] table with [[prompt.subset]] tables, each with prompt = \"...\"",
    ".json": "a list like [{\"prompt\": \"...\", \"width\": 512}]",
}


def _text_prompts(text: str, path: str, defaults: dict | None) -> list[SamplePrompt]:
    prompts = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if line and not line.startswith("#"):
            prompts.append(parse_prompt_line(line, f"{path}:{n}", defaults))
    return prompts


def _toml_prompts(text: str, path: str, option: str, defaults: dict | None) -> list[SamplePrompt]:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{option} {path}: not valid TOML ({e}); expected {_FORMAT_HINT['.toml']}") from None
    table = data.get("prompt")
    extra = sorted(set(data) - {"prompt"})
    if not isinstance(table, dict) or extra:
        what = f"unknown top-level key {extra[0]!r}" if extra else "no [prompt] table"
        raise UserError(f"{option} {path}: {what}; expected {_FORMAT_HINT['.toml']}")
    subsets = table.get("subset", [])
    if not isinstance(subsets, list) or not all(isinstance(x, dict) for x in subsets):
        raise UserError(f"{option} {path}: prompt.subset must be [[prompt.subset]] tables")
    shared = {k: v for k, v in table.items() if k != "subset"}
    return [_dict_prompt({**shared, **sub}, f"{path} [[prompt.subset]] #{i}", defaults)
            for i, sub in enumerate(subsets, 1)]


def _json_prompts(text: str, path: str, option: str, defaults: dict | None) -> list[SamplePrompt]:
    import json

    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{option} {path}: not valid JSON ({e.msg} at line {e.lineno}); expected "
                        f"{_FORMAT_HINT['.json']}") from None
    if not isinstance(data, list):
        raise UserError(f"{option} {path}: the JSON must be a list of prompts; expected {_FORMAT_HINT['.json']}")
    prompts = []
    for i, item in enumerate(data, 1):
        where = f"{path} item {i}"
        if isinstance(item, str):
            prompts.append(parse_prompt_line(item, where, defaults))
        elif isinstance(item, dict):
            prompts.append(_dict_prompt(item, where, defaults))
        else:
            raise UserError(f"{where}: a prompt is an object like {{\"prompt\": \"...\"}} or a prompt line, got "
                            f"{type(item).__name__}")
    return prompts


def _dict_prompt(item: dict, where: str, defaults: dict | None) -> SamplePrompt:
    """One kohya prompt dict -> SamplePrompt; unknown keys and wrong types are errors naming ``where``."""
    sample = SamplePrompt(prompt="", **(defaults or {}))
    for key, value in item.items():
        if key in OTHER_MODEL_KEYS:
            logger.warning("%s: %s is a kohya prompt key for other model families; SD/SDXL samples do not use it",
                           where, key)
            continue
        if key not in DICT_KEYS:
            raise UserError(f"{where}: unknown key {key!r} (known: {', '.join(DICT_KEYS)})")
        name = DICT_KEYS[key]
        try:
            if name in ("width", "height", "seed", "steps"):
                if isinstance(value, bool) or not float(value).is_integer():
                    raise ValueError
                value = int(value)
            elif name == "scale":
                if isinstance(value, bool):
                    raise ValueError
                value = float(value)
            elif not isinstance(value, str):
                raise ValueError
        except (TypeError, ValueError):
            kind = "a number" if name in ("width", "height", "seed", "steps", "scale") else "text"
            raise UserError(f"{where}: {key} must be {kind}, got {value!r}") from None
        if name == "sampler":
            value = value.lower()
            if value not in SAMPLERS:
                raise UserError(f"{where}: unknown sampler {value!r} (known: {', '.join(SAMPLERS)})")
        setattr(sample, name, value)
    if not sample.prompt.strip():
        raise UserError(f"{where}: no prompt (add prompt = \"...\")")
    return sample


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


def make_pipeline(model, sampler: str):
    """A diffusers text-to-image pipeline around the (LoRA-hooked) model components."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    scheduler = make_scheduler(sampler, dict(model.noise_scheduler.config))
    if model.is_sdxl:
        pipe = StableDiffusionXLPipeline(
            vae=model.vae, text_encoder=model.text_encoders[0], text_encoder_2=model.text_encoders[1],
            tokenizer=model.tokenizers[0], tokenizer_2=model.tokenizers[1], unet=model.unet, scheduler=scheduler,
        )
    else:
        pipe = StableDiffusionPipeline(
            vae=model.vae, text_encoder=model.text_encoders[0], tokenizer=model.tokenizers[0], unet=model.unet,
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
    uses weighting syntax (``(word:1.2)``, ``[word]``, ``\\(``), embeddings weighted as in training
    (library/inference/prompt_weights.py), up to 225 tokens, as kohya's sample images do."""
    from library.inference.prompt_weights import has_weights, tokens_with_weights
    from library.train.text_encoding import CHUNK, encode_captions

    if not (has_weights(prompt) or (negative and has_weights(negative))):
        kwargs = {"prompt": prompt, "negative_prompt": negative or None}
        if clip_skip and clip_skip > 1 and not model.is_sdxl:
            kwargs["clip_skip"] = clip_skip - 1  # kohya counts the last layer as 1, diffusers as 0
        return kwargs
    texts = [prompt, negative or ""]
    longest = max(len(tokens_with_weights(model.tokenizers[0], t, 3 * CHUNK)[0]) for t in texts)
    length = CHUNK * min(3, max(1, -(-longest // CHUNK)))
    cond = encode_captions(model, texts, length, None if model.is_sdxl else clip_skip, weighted=True,
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


@torch.no_grad()
def generate_samples(model, prompts: list[SamplePrompt], out_dir: str, stem: str, default_sampler: str = "ddim", clip_skip=None, seed=0) -> list[str]:
    """Generate one image per prompt into ``out_dir``; returns the file paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    was_training = [m.training for m in (model.unet, *model.text_encoders)]
    for m in (model.unet, *model.text_encoders):
        m.eval()
    try:
        with torch.random.fork_rng(devices=[]):
            for i, sample in enumerate(prompts):
                sampler = sample.sampler or default_sampler
                pipe = make_pipeline(model, sampler)
                sample_seed = sample.seed if sample.seed is not None else seed + i
                gen = torch.Generator(device="cpu").manual_seed(sample_seed)
                kwargs = dict(
                    **prompt_kwargs(model, sample.prompt, sample.negative_prompt, clip_skip), width=sample.width,
                    height=sample.height, num_inference_steps=sample.steps, guidance_scale=sample.scale, generator=gen,
                )
                image = pipe(**kwargs).images[0]
                sample.seed = sample_seed
                path = os.path.join(out_dir, f"{stem}_{i:02d}_{sample_seed}.png")
                tmp = path + ".tmp"  # a kill mid-write never leaves a partial PNG under the final name
                image.save(tmp, format="PNG", pnginfo=png_info(sample, sampler))
                os.replace(tmp, path)
                paths.append(path)
    finally:
        for m, t in zip((model.unet, *model.text_encoders), was_training):
            m.train(t)
    return paths

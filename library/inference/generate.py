"""Text-to-image with a base model and any number of LoRAs: the library behind tools/gen_img.py.

LoRAs are hooked into the model (not merged) by default, so every prompt can carry its own
set and weights (A1111 ``<lora:name:w>`` tags); before each image the hooks are rebuilt
for that prompt, and a LoRA at weight 0 is not hooked at all, so the image is the base
model's bit for bit. Merging (``--network_merge``) folds the command-line LoRAs into the
weights once: no per-layer cost, but their weights are then fixed for the whole run.
Seeds are drawn on a CPU generator, so an image is reproducible on any device.
"""

from __future__ import annotations


import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from library.atomic import atomic_path
from library.errors import UserError
from library.inference.prompts import LIMITS, SamplePrompt
from library.inference.lora_tags import available_loras, resolve_lora, split_lora_tags
from library.inference.pipelines import make_pipeline, prompt_kwargs
from library.inference.png_info import png_info
from networks.lora import create_network_from_weights


@dataclass
class LoraUse:
    """One LoRA file at given text-encoder / UNet weights."""

    path: Path
    te: float = 1.0
    unet: float = 1.0
    merged: bool = False

    @property
    def name(self) -> str:
        return self.path.stem

    def tag(self) -> str:
        w = f"{self.te:g}" if self.te == self.unet else f"{self.te:g}:{self.unet:g}"
        return f"<lora:{self.name}:{w}>"


@dataclass
class Job:
    """One image to make: the prompt without tags, its settings, seed and LoRAs."""

    sample: SamplePrompt
    raw_prompt: str
    sampler: str
    index: int
    loras: list[LoraUse] = field(default_factory=list)


def _where(i: int, prompt: str) -> str:
    short = prompt if len(prompt) <= 40 else prompt[:37] + "..."
    return f"prompt {i + 1} ('{short}')"


def plan_jobs(
    prompts: list[SamplePrompt],
    *,
    images_per_prompt: int = 1,
    seed: int = 0,
    default_sampler: str = "ddim",
    lora_dir: str | None = None,
) -> list[Job]:
    """Expand prompts into jobs: tags resolved to files, one seed per image.

    A prompt's own ``--d`` seed gives d, d+1, ... for its images; other images take
    ``seed``, ``seed+1``, ... in order. The same file tagged twice adds up its weights.
    """
    if images_per_prompt < 1:
        raise UserError(f"--images_per_prompt {images_per_prompt}: must be 1 or more")
    found = available_loras(lora_dir) if lora_dir is not None and Path(lora_dir).is_dir() else None
    jobs: list[Job] = []
    counter = 0
    for i, sample in enumerate(prompts):
        where = _where(i, sample.prompt)
        text, tags = split_lora_tags(sample.prompt, where)
        uses: dict[Path, LoraUse] = {}
        for tag in tags:
            path = resolve_lora(tag.name, lora_dir, where, found)
            use = uses.setdefault(path, LoraUse(path, 0.0, 0.0))
            use.te += tag.te
            use.unet += tag.unet
        for j in range(images_per_prompt):
            if sample.seed is not None:
                image_seed = sample.seed + j
            else:
                image_seed = seed + counter
                counter += 1
            clean = dataclasses.replace(sample, prompt=text, seed=image_seed)
            jobs.append(Job(clean, sample.prompt, sample.sampler or default_sampler, len(jobs), list(uses.values())))
    return jobs


class LoraStack:
    """LoRA networks loaded once, hooked per image at that image's weights, or merged for good."""

    def __init__(self, model):
        self.model = model
        self._networks: dict[Path, object] = {}
        self._active: list = []
        self.merged: list[LoraUse] = []

    def _parameter(self):
        return next(self.model.unet.parameters())

    def network(self, path: Path):
        """The network of a file, weights loaded, on the model's device and dtype (cached)."""
        if path not in self._networks:
            m = self.model
            net, sd = create_network_from_weights(1.0, path, m.vae, m.text_encoders, m.unet)
            net.load_weights(sd)
            p = self._parameter()
            net.to(device=p.device, dtype=p.dtype).eval().requires_grad_(False)
            self._networks[path] = net
        return self._networks[path]

    @staticmethod
    def _set_weights(net, te: float, unet: float) -> None:
        for lora in net.text_encoder_loras:
            lora.multiplier = te
        for lora in net.unet_loras:
            lora.multiplier = unet

    @torch.no_grad()
    def merge(self, use: LoraUse) -> None:
        """Add a LoRA's deltas into the base weights for the rest of the run."""
        m = self.model
        net, sd = create_network_from_weights(1.0, use.path, m.vae, m.text_encoders, m.unet)
        self._set_weights(net, use.te, use.unet)
        net.merge_to(weights_sd=sd)
        self.merged.append(dataclasses.replace(use, merged=True))

    def activate(self, uses: list[LoraUse]) -> None:
        """Hook exactly these LoRAs at these weights; all others (and weight-0 ones) unhooked."""
        for net in reversed(self._active):  # unhook in reverse: hooks chain through each other
            net.restore()
        self._active = []
        for use in uses:
            if use.te == 0 and use.unet == 0:
                continue
            net = self.network(use.path)
            self._set_weights(net, use.te, use.unet)
            net.apply_to()
            self._active.append(net)

    def close(self) -> None:
        self.activate([])


def combine(global_uses: list[LoraUse], job_uses: list[LoraUse]) -> list[LoraUse]:
    """The hooked LoRAs of one image: command-line ones plus the prompt's; weights add per file."""
    out: dict[Path, LoraUse] = {}
    for use in [*global_uses, *job_uses]:
        if use.path in out:
            prev = out[use.path]
            out[use.path] = LoraUse(use.path, prev.te + use.te, prev.unet + use.unet)
        else:
            out[use.path] = LoraUse(use.path, use.te, use.unet)
    return list(out.values())


def image_info(job: Job, uses: list[LoraUse], model_name: str = ""):
    """PNG text chunks: A1111 ``parameters`` (tags of all LoRAs in the prompt, so the image can be
    sent back to A1111) plus kohya gen_img's separate keys (prompt, seed, sampler, ...)."""
    s = job.sample
    prompt = job.raw_prompt
    for use in uses:
        if use.tag() not in prompt:
            prompt = f"{prompt} {use.tag()}"
    info = png_info(dataclasses.replace(s, prompt=prompt), job.sampler)
    info.add_text("prompt", s.prompt)
    info.add_text("raw-prompt", job.raw_prompt)
    info.add_text("seed", str(s.seed))
    info.add_text("sampler", job.sampler)
    info.add_text("steps", str(s.steps))
    info.add_text("scale", str(s.scale))
    if s.negative_prompt:
        info.add_text("negative-prompt", s.negative_prompt)
    if model_name:
        info.add_text("model", model_name)
    if uses:
        info.add_text("loras", json.dumps([{"name": u.name, "te": u.te, "unet": u.unet, "merged": u.merged} for u in uses]))
    return info


def _file_name(outdir: Path, job: Job, stamp: str, sequential: bool) -> Path:
    name = f"im_{job.index + 1:06d}" if sequential else f"im_{stamp}_{job.index:03d}_{job.sample.seed}"
    path = outdir / f"{name}.png"
    n = 1
    while path.exists():  # never overwrite an earlier run's image
        path = outdir / f"{name}_{n}.png"
        n += 1
    return path


def check_size(job: Job, multiple: int) -> None:
    """Sizes the model can make (latents are 1/``multiple`` of the image) and a usable step count."""
    s = job.sample
    where = f"prompt '{job.raw_prompt if len(job.raw_prompt) <= 40 else job.raw_prompt[:37] + '...'}'"
    high = LIMITS["width"][1]
    for what, v in (("width (--W / --w)", s.width), ("height (--H / --h)", s.height)):
        if v is None or v < multiple or v % multiple or v > high:
            raise UserError(f"{where}: {what} {v} must be a positive multiple of {multiple}, at most {high}")
    low, most = LIMITS["steps"]
    if not low <= s.steps <= most:
        raise UserError(f"{where}: steps (--steps / --s) {s.steps} must be between {low} and {most}")


@torch.no_grad()
def generate(
    model,
    jobs: list[Job],
    outdir: str | Path,
    *,
    stack: LoraStack | None = None,
    global_loras: list[LoraUse] = (),
    clip_skip: int | None = None,
    sequential_file_name: bool = False,
    model_name: str = "",
    on_image=None,
) -> list[Path]:
    """Make every job's image into ``outdir``; returns the PNG paths in job order."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    stack = stack or LoraStack(model)
    for m in (model.unet, model.vae, *model.text_encoders):
        m.eval()
    pipes = {}
    stamp = time.strftime("%Y%m%d%H%M%S")
    paths = []
    try:
        for job in jobs:
            uses = combine(list(global_loras), job.loras)
            stack.activate(uses)
            if job.sampler not in pipes:
                pipes[job.sampler] = make_pipeline(model, job.sampler)
            s = job.sample
            kwargs = dict(
                **prompt_kwargs(model, s.prompt, s.negative_prompt, clip_skip), width=s.width, height=s.height,
                num_inference_steps=s.steps, guidance_scale=s.scale,
                generator=torch.Generator(device="cpu").manual_seed(s.seed),
            )
            image = pipes[job.sampler](**kwargs).images[0]
            path = _file_name(outdir, job, stamp, sequential_file_name)
            shown = [u for u in uses if u.te or u.unet] + stack.merged
            with atomic_path(path) as tmp:  # never a partial PNG under the final name
                image.save(tmp, format="PNG", pnginfo=image_info(job, shown, model_name))
            paths.append(path)
            if on_image is not None:
                on_image(path, job)
    finally:
        stack.close()
    return paths

"""Generate images through library.inference and read them with the shapes scorer."""

from __future__ import annotations

from pathlib import Path

from library.eval.shapes_data import SIZE
from library.eval.shapes_score import Reading, read_image
from library.inference.generate import LoraStack, LoraUse, generate, plan_jobs
from library.train.sampling import SamplePrompt


def sample_readings(model, prompt: str, n: int, outdir: str | Path, *, seed: int = 0, steps: int = 20,
                    scale: float = 5.0, sampler: str = "ddim", loras: list[LoraUse] = (),
                    stack: LoraStack | None = None, clip_skip: int | None = None) -> list[Reading]:
    """``n`` images of ``prompt`` (seeds ``seed..seed+n-1``) at 64 px, each read by the scorer."""
    sample = SamplePrompt(prompt, width=SIZE, height=SIZE, seed=seed, steps=steps, scale=scale, sampler=sampler)
    jobs = plan_jobs([sample], images_per_prompt=n, default_sampler=sampler)
    paths = generate(model, jobs, outdir, stack=stack, global_loras=list(loras), sequential_file_name=True,
                     clip_skip=clip_skip)
    return [read_image(p) for p in paths]

"""Class images for prior preservation (DreamBooth style): generate them with the base model.

kohya expects the user to bring a reg folder; diffusers' DreamBooth fills it from the base
model. This does the latter into a kohya folder (``reg/1_star``), image ``i`` always from
seed ``seed + i``, so an interrupted run resumes where it stopped and gives the same set.
Each image gets its caption beside it (``class_00003.png`` + ``class_00003.txt``).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from library import atomic
from library.errors import UserError
from library.inference.generate import generate, plan_jobs
from library.inference.prompts import SamplePrompt

NAME = re.compile(r"^class_(\d{5})\.png$")


def existing_indices(folder: Path) -> set[int]:
    """Indices of the class images already in ``folder``."""
    if not folder.is_dir():
        return set()
    return {int(m.group(1)) for p in folder.iterdir() if (m := NAME.match(p.name))}


def make_class_images(model, folder: str | os.PathLike, class_prompt: str, num_images: int, *,
                      seed: int = 0, width: int = 512, height: int = 512, steps: int = 30, scale: float = 7.5,
                      sampler: str = "ddim", negative_prompt: str = "", log=print) -> list[Path]:
    """Fill ``folder`` up to ``num_images`` class images of ``class_prompt``; returns all their paths."""
    if num_images < 1:
        raise UserError(f"--num_class_images {num_images}: must be 1 or more")
    if not class_prompt.strip():
        raise UserError("--class_prompt is empty: give the class the images should show, e.g. 'a star'")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    done = existing_indices(folder)
    todo = [i for i in range(num_images) if i not in done]
    log(f"class images in {folder}: {len(done & set(range(num_images)))} present, {len(todo)} to make")
    partial = folder / ".partial"
    for i in todo:
        sample = SamplePrompt(class_prompt, negative_prompt=negative_prompt, width=width, height=height,
                              seed=seed + i, steps=steps, scale=scale, sampler=sampler)
        shutil.rmtree(partial, ignore_errors=True)
        [made] = generate(model, plan_jobs([sample], default_sampler=sampler), partial, sequential_file_name=True)
        final = folder / f"class_{i:05d}.png"
        atomic.commit(str(made), str(final))  # an image is there whole or not at all
    shutil.rmtree(partial, ignore_errors=True)
    paths = [folder / f"class_{i:05d}.png" for i in range(num_images)]
    for p in paths:
        cap = p.with_suffix(".txt")
        if not cap.exists():
            atomic.write_text(str(cap), class_prompt + "\n")
    return paths

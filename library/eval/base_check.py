"""Does a shapes base model draw what a caption says? The cheap sanity check of a build.

Why: a v-prediction or SDXL base trained with a wrong target or a wrong conditioning still
produces images; only reading them back (shape and colour, by the pixel scorer) tells a model
that learnt the world from one that learnt noise.
"""

from __future__ import annotations

from pathlib import Path

from library.eval.sample_score import sample_readings
from library.eval.shapes_data import COLOURS, SHAPES
from library.eval.shapes_score import rate

PROMPTS = ("a red circle", "a blue square", "a yellow triangle", "a green star")


def expected(prompt: str) -> tuple[str, str]:
    """(shape, colour) a prompt like ``a red circle, top left`` asks for."""
    words = prompt.replace(",", " ").split()
    shape = next(w for w in words if w in SHAPES)
    colour = next(w for w in words if w in COLOURS)
    return shape, colour


def caption_rates(model, n: int, outdir: str | Path, prompts=PROMPTS, **gen) -> dict[str, float]:
    """For each prompt, the share of ``n`` images whose shape and colour the scorer reads as asked."""
    out = {}
    for i, prompt in enumerate(prompts):
        want = expected(prompt)
        readings = sample_readings(model, prompt, n, Path(outdir) / f"p{i}", **gen)
        out[prompt] = rate(readings, lambda r, want=want: (r.shape, r.colour) == want)
    return out

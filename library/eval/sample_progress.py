"""What a run's sample images show, step by step, read by the shapes scorer (the demo's last table).

Why: on the shapes base a new user can watch a LoRA learn without judging pictures: the trainer
records every sample it draws in ``<output_dir>/samples.jsonl`` (step, prompt, file), and the
pixel scorer names the shape and colour in each, so ``sks star`` turning from the base's yellow
stars into purple stars is a line of text per checkpoint.

    python -m library.eval.sample_progress output/demo
"""

from __future__ import annotations

import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

from library.eval.concept_run import CONCEPT_PROMPT
from library.eval.shapes_score import is_concept, read_image
from library.train.run_folder import SAMPLES_FILE

CONCEPT_TOKEN = CONCEPT_PROMPT.split()[0]  # prompts with it get a concept count


def sample_progress(output_dir: str | Path) -> dict[int, dict[str, list]]:
    """{step: {prompt: [Reading, ...]}} of the samples recorded in ``output_dir`` (files that are gone are skipped)."""
    folder = Path(output_dir)
    table: dict[int, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    records = folder / SAMPLES_FILE
    if not records.is_file():
        return {}
    for line in records.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        item = json.loads(line)
        path = folder / item["file"]
        if path.is_file():
            table[int(item["step"])][item["prompt"]].append(read_image(path))
    return {step: dict(prompts) for step, prompts in sorted(table.items())}


def describe(readings: list, concept: bool = True) -> str:
    """``purple star 3, yellow star 1 (concept 3/4)``: what the scorer saw, most common first."""
    seen = Counter(f"{r.colour or 'no colour'} {r.shape or 'no shape'}" for r in readings)
    text = ", ".join(f"{name} {n}" for name, n in seen.most_common())
    return f"{text} (concept {sum(is_concept(r) for r in readings)}/{len(readings)})" if concept else text


def progress_text(output_dir: str | Path) -> str:
    table = sample_progress(output_dir)
    if not table:
        return f"no samples recorded in {Path(output_dir) / SAMPLES_FILE}"
    lines = ["what the samples show (shapes scorer; concept = a purple star):"]
    for step, prompts in table.items():
        for prompt, readings in prompts.items():
            concept = CONCEPT_TOKEN in prompt.split()
            lines.append(f"  step {step:>5}  {prompt!r:<12} {describe(readings, concept)}")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m library.eval.sample_progress OUTPUT_DIR")
    print(progress_text(sys.argv[1]))

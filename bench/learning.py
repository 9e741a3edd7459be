"""Steps to concept: how many training steps until the LoRA draws the concept in >= 80 % of images.

Trains the concept LoRA of the quality suite (library/eval/concept_run.py: ``sks`` = purple
star with a white outline, on the trained shapes base) with checkpoints every ``--every``
steps, scores each checkpoint on ``--images`` generated images, and prints one table row per
variant: rank 4 / 16 / 64 with AdamW, then each optimizer at rank 8.

    .venv/bin/python bench/learning.py [--max_steps 200] [--every 25] [--images 8] [--only rank]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from library.eval.concept_run import concept_rates, prepare_concept_data, train_concept_lora  # noqa: E402
from library.eval.shapes_model import cached_shapes_model  # noqa: E402
from library.models import load_base_model  # noqa: E402

RANKS = {f"rank {r}": {"network_dim": r, "network_alpha": r} for r in (4, 16, 64)}
OPTIMIZERS = {
    "AdamW": {"optimizer_type": "AdamW", "learning_rate": "2e-3"},
    "Adafactor": {"optimizer_type": "Adafactor", "learning_rate": "2e-3",
                  "optimizer_args": ["relative_step=False", "scale_parameter=False", "warmup_init=False"]},
    "Prodigy": {"optimizer_type": "Prodigy", "learning_rate": "1.0"},
    "AdamW8bit": {"optimizer_type": "AdamW8bit", "learning_rate": "2e-3"},
}


def steps_to_concept(base: str, data: Path, work: Path, options: dict, max_steps: int, every: int, images: int):
    """(first step with concept rate >= 0.8 or None, [(step, rate)...], train seconds)."""
    t0 = time.time()
    lora = train_concept_lora(base, data, work / "out", max_train_steps=max_steps, save_every_n_steps=every, **options)
    seconds = time.time() - t0
    model = load_base_model(base)
    curve = []
    for step in range(every, max_steps + 1, every):
        ckpt = work / "out" / f"sks-step{step:08d}.safetensors"
        path = ckpt if ckpt.is_file() else (lora if step == max_steps else None)
        if path is None:
            continue
        r = concept_rates(model, path, images, work / f"gen{step}")["concept"]
        curve.append((step, r))
        if r >= 0.8:
            return step, curve, seconds
    return None, curve, seconds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--max_steps", type=int, default=200)
    p.add_argument("--every", type=int, default=25)
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--only", choices=("rank", "optimizer"))
    args = p.parse_args(argv)
    base = str(cached_shapes_model())
    variants = {}
    if args.only != "optimizer":
        variants.update({k: {**v, "optimizer_type": "AdamW"} for k, v in RANKS.items()})
    if args.only != "rank":
        variants.update(OPTIMIZERS)
    with tempfile.TemporaryDirectory() as tmp:
        data = prepare_concept_data(base, Path(tmp) / "data")
        print("| variant | steps to concept (>= 80 %) | concept rate per checkpoint | train s |")
        print("|---|---|---|---|")
        for name, options in variants.items():
            try:
                first, curve, secs = steps_to_concept(base, data, Path(tmp) / name.replace(" ", "_"), options,
                                                      args.max_steps, args.every, args.images)
            except Exception as e:  # an optimizer missing here (bitsandbytes, prodigyopt) is a row, not a crash
                print(f"| {name} | error: {type(e).__name__}: {str(e)[:80]} | | |", flush=True)
                continue
            shown = " ".join(f"{s}:{r:.2f}" for s, r in curve)
            print(f"| {name} | {first if first is not None else f'> {args.max_steps}'} | {shown} | {secs:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The grid image of docs/quality.md: base vs concept-LoRA outputs on the shapes model.

Rows: ``sks star`` without the LoRA, ``sks star`` with it, ``a star`` with it (prior
preservation), and the training images for comparison; 8 seeds per row.

    .venv/bin/python bench/concept_grid.py --out docs/images/quality_grid.png [--steps 900]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from library.eval.concept_run import (  # noqa: E402
    CLASS_PROMPT, CONCEPT_PROMPT, GEN, TRAIN_DEFAULTS, prepare_concept_data, train_concept_lora,
)
from library.eval.sample_score import sample_readings  # noqa: E402
from library.eval.shapes_model import cached_shapes_model  # noqa: E402
from library.inference.generate import LoraUse  # noqa: E402
from library.models import load_base_model  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=int(TRAIN_DEFAULTS["max_train_steps"]))
    p.add_argument("--n", type=int, default=8)
    args = p.parse_args(argv)
    base = str(cached_shapes_model())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = prepare_concept_data(base, tmp / "data")
        lora = train_concept_lora(base, data, tmp / "out", max_train_steps=args.steps)
        model = load_base_model(base)
        rows = []
        for name, prompt, uses in (("base", CONCEPT_PROMPT, []), ("lora", CONCEPT_PROMPT, [LoraUse(lora)]),
                                   ("class", CLASS_PROMPT, [LoraUse(lora)])):
            sample_readings(model, prompt, args.n, tmp / name, loras=uses, **GEN)
            rows.append([np.asarray(Image.open(f)) for f in sorted((tmp / name).glob("*.png"))])
        rows.append([np.asarray(Image.open(f).convert("RGB")) for f in sorted((data / "img" / "10_sks star").glob("*.png"))[: args.n]])
        grid = np.concatenate([np.concatenate(r, axis=1) for r in rows], axis=0)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.Resampling.NEAREST).save(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

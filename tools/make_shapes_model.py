"""Build the trained shapes base model (SD1 layout, 64 px) used by the quality tests and the demo.

Deterministic from --seed; a few CPU minutes. Without --out the model goes to the cache
(``$LORASMITH_CACHE_DIR`` or ~/.cache/lorasmith, under shapes-<source hash>/) and is reused
while the builder's code is unchanged; the path is printed either way.

    python tools/make_shapes_model.py [--out shapes.safetensors] [--seed 0] [--v_parameterization] [--sdxl]

``--sdxl`` builds the SDXL-layout model instead (two text encoders, size/crop conditioning;
library/eval/shapes_model_sdxl.py), cached under shapes-sdxl-<hash>/.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from library.eval import shapes_model_sdxl  # noqa: E402
from library.eval.shapes_model import BUDGETS, build_shapes_model, cached_shapes_model  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="output .safetensors path (default: the shared cache)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--v_parameterization", action="store_true", help="train for v-prediction")
    parser.add_argument("--sdxl", action="store_true", help="build the SDXL-layout model (two text encoders)")
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="default",
                        help="'smoke' trains a few steps only (tests of the machinery); needs --out")
    args = parser.parse_args(argv)
    if args.budget != "default" and not args.out:
        parser.error("--budget smoke needs --out (the cache holds only the real model)")
    prediction = "v_prediction" if args.v_parameterization else "epsilon"
    if args.sdxl:
        path = _build_sdxl(args, prediction)
    elif args.out:
        path = build_shapes_model(args.out, seed=args.seed, budget=BUDGETS[args.budget], prediction_type=prediction)
    else:
        path = cached_shapes_model(seed=args.seed, prediction_type=prediction)
    print(f"shapes model: {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


def _build_sdxl(args, prediction: str):
    if args.out:
        return shapes_model_sdxl.build_sdxl_shapes_model(args.out, seed=args.seed, prediction_type=prediction,
                                                         budget=shapes_model_sdxl.BUDGETS[args.budget])
    return shapes_model_sdxl.cached_sdxl_shapes_model(seed=args.seed, prediction_type=prediction)


if __name__ == "__main__":
    sys.exit(main())

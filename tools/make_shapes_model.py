"""Build the trained shapes base model (SD1 layout, 64 px) used by the quality tests and the demo.

Deterministic from --seed; a few CPU minutes. Without --out the model goes to the cache
(``$LORASMITH_CACHE_DIR`` or ~/.cache/lorasmith, under shapes-<source hash>/) and is reused
while the builder's code is unchanged; the path is printed either way. --ship writes it into
the repository (models/shapes/), where the quality tests and the demo take it from while its
recorded source hash matches the builder's: run it after any change to the builder.

    python tools/make_shapes_model.py [--out shapes.safetensors | --ship] [--seed 0] [--v_parameterization] [--sdxl]
    python tools/make_shapes_model.py --print_path   # scripts/demo.sh: the shipped or cached model's path only

``--sdxl`` builds the SDXL-layout model instead (two text encoders, size/crop conditioning;
library/eval/shapes_model_sdxl.py), cached under shapes-sdxl-<hash>/ or, with --ship, into models/shapes/.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from library.eval import shapes_model_sdxl  # noqa: E402
from library.eval.shapes_model import (  # noqa: E402
    BUDGETS, build_shapes_model, cached_shapes_model, shipped_path, source_hash,
)

SHIP_LIMIT_MB = 20  # the repository keeps the model only while it stays this small


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--out", help="output .safetensors path (default: the shared cache)")
    where.add_argument("--ship", action="store_true",
                       help="build into the repository (models/shapes/), replacing a stale shipped model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--v_parameterization", action="store_true", help="train for v-prediction")
    parser.add_argument("--sdxl", action="store_true", help="build the SDXL-layout model (two text encoders)")
    parser.add_argument("--print_path", action="store_true",
                        help="print only the model's path on stdout (progress goes to stderr); for scripts")
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="default",
                        help="'smoke' trains a few steps only (tests of the machinery); needs --out")
    args = parser.parse_args(argv)
    if args.budget != "default" and not args.out:
        parser.error("--budget smoke needs --out (the cache and the repository hold only the real model)")
    prediction = "v_prediction" if args.v_parameterization else "epsilon"
    log = (lambda m: print(m, file=sys.stderr, flush=True)) if args.print_path else print
    if args.sdxl:
        path = _build_sdxl(args, prediction, log)
    elif args.out:
        path = build_shapes_model(args.out, seed=args.seed, budget=BUDGETS[args.budget], prediction_type=prediction,
                                  log=log)
    elif args.ship:
        path = build_shapes_model(shipped_path(args.seed, prediction), seed=args.seed, prediction_type=prediction,
                                  log=log)
    else:
        path = cached_shapes_model(seed=args.seed, prediction_type=prediction, log=log)
    if args.print_path:
        print(path)
        return 0
    size_mb = path.stat().st_size / 1e6
    source = shapes_model_sdxl.source_hash() if args.sdxl else source_hash()
    print(f"shapes model: {path} ({size_mb:.1f} MB, source {source})")
    if args.ship and size_mb > SHIP_LIMIT_MB:
        print(f"warning: {size_mb:.1f} MB is over the {SHIP_LIMIT_MB} MB the repository should hold", file=sys.stderr)
    return 0


def _build_sdxl(args, prediction: str, log):
    if args.out or args.ship:
        out = args.out or shapes_model_sdxl.shipped_sdxl_path(args.seed, prediction)
        return shapes_model_sdxl.build_sdxl_shapes_model(out, seed=args.seed, prediction_type=prediction,
                                                         budget=shapes_model_sdxl.BUDGETS[args.budget], log=log)
    return shapes_model_sdxl.cached_sdxl_shapes_model(seed=args.seed, prediction_type=prediction, log=log)


if __name__ == "__main__":
    sys.exit(main())

"""Write a tiny random SD1/SD2/SDXL checkpoint in the original single-file layout.

Same key names as a real checkpoint (so loaders, LoRA targeting and converters see the
real structure) with tiny widths, so tests, the demo and benchmarks run in seconds.

    python tools/make_tiny_model.py --family sdxl --out tiny_sdxl.safetensors [--seed 0] [--v_parameterization]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from library.models import FAMILIES, assemble, build_models, save_base_model, tiny_configs  # noqa: E402


def make_tiny_model(family: str, path: str | os.PathLike, seed: int = 0, v_parameterization: bool = False) -> Path:
    """Build a seeded tiny model of ``family`` and save it to ``path`` (.safetensors); returns the path."""
    configs = tiny_configs(family, v_prediction=v_parameterization)
    model = assemble(configs, build_models(configs, device="cpu", seed=seed))
    save_base_model(model, path)
    return Path(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", required=True, choices=FAMILIES)
    parser.add_argument("--out", required=True, help="output .safetensors path")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--v_parameterization", action="store_true", help="mark the model as v-prediction")
    args = parser.parse_args(argv)
    out = make_tiny_model(args.family, args.out, seed=args.seed, v_parameterization=args.v_parameterization)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, tiny {args.family})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

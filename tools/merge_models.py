"""Merge checkpoints of one family: weighted sum or add difference (kohya tools/merge_models.py).

    # 30% DreamShaper into SD1.5: 0.7 * sd15 + 0.3 * dreamshaper
    python tools/merge_models.py --models sd15.safetensors dreamshaper.safetensors --ratio 0.3 --save_to mix.safetensors
    # any number of models with explicit weights
    python tools/merge_models.py --models a.safetensors b.safetensors c.safetensors --ratios 0.5 0.3 0.2 --save_to abc.safetensors
    # add difference: A + (B - C) * ratio (e.g. move a fine-tune's change onto another base)
    python tools/merge_models.py --mode add_difference --models a.safetensors b.safetensors c.safetensors --ratio 1 --save_to out.safetensors

Tensors are merged and written one at a time, so RAM use stays near one tensor. See docs/tools/merge_models.md.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from library.devices import dtype_of  # noqa: E402
from library.errors import UserError  # noqa: E402
from library.options.schema import finite_float  # noqa: E402
from library.vocabulary import SAVE_PRECISIONS  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", required=True, help="single-file checkpoints (.safetensors/.ckpt), first one is A")
    p.add_argument("--mode", choices=("weighted_sum", "add_difference"), default="weighted_sum")
    p.add_argument("--ratio", type=finite_float, default=None,
                   help="weighted_sum with 2 models: (1-r)*A + r*B; add_difference: A + (B-C)*r (default 1)")
    p.add_argument("--ratios", nargs="+", type=finite_float, default=None, help="weighted_sum: one weight per model (default equal, summing to 1)")
    p.add_argument("--save_to", "--output", dest="save_to", required=True, help="output .safetensors (written atomically)")
    p.add_argument("--save_precision", "--saving_precision", dest="save_precision", choices=SAVE_PRECISIONS, default=None,
                   help="dtype of floating tensors in the output (default: as in the first model)")
    p.add_argument("--precision", choices=SAVE_PRECISIONS, default="float", help="accepted for kohya commands; arithmetic is always float32")
    p.add_argument("--unet_only", action="store_true", help="merge only the UNet; text encoders and VAE come from the first model")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --save_to file even if it is not the same kind of file")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        from library.merge.model_merge import merge_models
        from library.output_paths import check_tool_output

        check_tool_output(args.save_to, args.models, "checkpoint", args.overwrite)
        dtype = dtype_of(args.save_precision)
        summary = merge_models(args.models, args.save_to, mode=args.mode, ratio=args.ratio, ratios=args.ratios,
                               save_dtype=dtype, unet_only=args.unet_only)
    except UserError as e:
        if args.debug:
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        return 2
    ratios = ", ".join(f"{r:g}" for r in summary["ratios"])
    print(f"wrote {args.save_to} ({summary['family']}, {args.mode}, ratios {ratios}, {summary['tensors']} tensors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

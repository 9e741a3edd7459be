"""Generate class (regularisation) images for prior preservation with the base model.

Resumable: image i always comes from seed --seed + i, existing images are kept, and each
image gets a caption file beside it, so the folder is a ready kohya reg folder.

    python tools/make_class_images.py --model base.safetensors --class_prompt "a star" \
        --num_class_images 20 --out reg/1_star [--W 64 --H 64 --steps 20 --scale 5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from library.errors import UserError, run_reporting_user_errors  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="base model (.safetensors/.ckpt or diffusers folder)")
    parser.add_argument("--class_prompt", required=True)
    parser.add_argument("--num_class_images", type=int, required=True)
    parser.add_argument("--out", required=True, help="the reg folder to fill, e.g. reg/1_star")
    parser.add_argument("--negative_prompt", default="")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--W", type=int, default=512)
    parser.add_argument("--H", type=int, default=512)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--scale", type=float, default=7.5)
    parser.add_argument("--sampler", default="ddim")
    parser.add_argument("--v_parameterization", action="store_true", default=None)
    args = parser.parse_args(argv)
    from library.inference.class_images import make_class_images
    from library.models import load_base_model

    def run() -> None:
        if args.num_class_images < 1:
            raise UserError(f"--num_class_images {args.num_class_images}: must be 1 or more")
        if not args.class_prompt.strip():
            raise UserError("--class_prompt is empty: give the class the images should show, e.g. 'a star'")
        model = load_base_model(args.model, v_parameterization=args.v_parameterization)
        paths = make_class_images(
            model, args.out, args.class_prompt, args.num_class_images, seed=args.seed, width=args.W,
            height=args.H, steps=args.steps, scale=args.scale, sampler=args.sampler,
            negative_prompt=args.negative_prompt,
        )
        print(f"{len(paths)} class images in {args.out}")

    return run_reporting_user_errors(run)


if __name__ == "__main__":
    sys.exit(main())

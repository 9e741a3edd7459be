"""``--num_class_images``: fill the reg folder with the base model's class images before training.

Why: kohya expects the user to bring regularisation images; diffusers' DreamBooth draws them from
the base model, which is what prior preservation means. The main process draws the missing ones
(library.inference.class_images: image i from seed i, kept whole or not at all, so a fill that was
interrupted resumes), the other processes wait, and only then is the dataset scanned.
"""

from __future__ import annotations

import gc
import logging
import os
from pathlib import Path

from library.data.layouts import detect_layout
from library.errors import UserError
from library.inference.class_images import existing_indices

logger = logging.getLogger("lorasmith.train")


def missing_class_images(args) -> int:
    """How many of the ``num_class_images`` images ``reg_data_dir`` still lacks (0 when the option is off)."""
    if not args.num_class_images:
        return 0
    have = existing_indices(Path(args.reg_data_dir))
    return sum(1 for i in range(args.num_class_images) if i not in have)


def check_fill_target(folder: str) -> None:
    """The fill writes one flat folder: a kohya root of NN_name folders (or another layout) is refused."""
    layout = detect_layout(folder)
    if layout not in ("missing", "empty", "images"):
        raise UserError(
            f"reg_data_dir {folder} is a {layout} dataset, but num_class_images fills one flat folder of class "
            f"images: point reg_data_dir at a folder of their own, or fill one kohya NN_name folder with "
            f"tools/make_class_images.py --out {os.path.join(folder, '1_<class>')}")


def fill_class_images(args, script: str, acc) -> None:
    """Draw the missing class images with the base model on this run's device, then free it."""
    if not args.num_class_images:
        return
    check_fill_target(args.reg_data_dir)
    if acc.is_main_process and missing_class_images(args):
        import torch

        from library.inference.class_images import make_class_images
        from library.train.setup_model import load_base

        model = load_base(args, script, device=acc.device)
        width, height = args.resolution  # (w, h) after option parsing
        make_class_images(model, args.reg_data_dir, args.class_prompt, args.num_class_images, seed=0, width=width,
                          height=height, steps=args.class_image_steps, scale=args.class_image_scale,
                          sampler="ddim", log=logger.info)
        del model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    acc.wait_for_everyone()

"""When a run saves per epoch and makes samples at its end, by kohya's rules (train_network.py).

Why here: the loop asks "is it time?"; the answers follow sd-scripts exactly and are small enough to
test alone, so they live outside the loop.
"""

from __future__ import annotations

from typing import Optional


def epochs_between_saves(args, num_epochs: int) -> Optional[int]:
    """``save_every_n_epochs``, or kohya's ``floor(num_epochs / save_n_epoch_ratio)`` (at least 1) when the
    ratio is set (it wins, as in sd-scripts)."""
    ratio = getattr(args, "save_n_epoch_ratio", None)
    if ratio:
        return max(1, num_epochs // ratio)
    return args.save_every_n_epochs


def samples_due_after_step(args, step: int) -> bool:
    """Step-interval samples; ``--sample_every_n_epochs`` wins and turns them off (kohya's sample_images)."""
    every = args.sample_every_n_steps
    return bool(every) and not args.sample_every_n_epochs and step % every == 0


def samples_due_at_end(args, epoch: int, step: int) -> bool:
    """Samples for the final LoRA: only when the interval hits the last epoch (epoch mode, which wins) or
    the last step (step mode), as sd-scripts does; ``--sample_at_end`` (ours) asks for them regardless."""
    if not (args.sample_every_n_steps or args.sample_every_n_epochs):
        return False
    if getattr(args, "sample_at_end", False):
        return True
    if args.sample_every_n_epochs:
        return epoch % args.sample_every_n_epochs == 0
    return step % args.sample_every_n_steps == 0

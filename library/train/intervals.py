"""When a run saves per epoch and makes samples at its end, by kohya's rules (train_network.py).

Why here: the loop asks "is it time?"; the answers follow sd-scripts exactly and are small enough to
test alone, so they live outside the loop. They read the run's typed options (library/options/typed.py).
"""

from __future__ import annotations

from typing import Optional

from library.options.typed import SamplingOptions, SavingOptions


def epochs_between_saves(saving: SavingOptions, num_epochs: int) -> Optional[int]:
    """``save_every_n_epochs``, or kohya's ``floor(num_epochs / save_n_epoch_ratio)`` (at least 1) when the
    ratio is set (it wins, as in sd-scripts)."""
    if saving.save_n_epoch_ratio:
        return max(1, num_epochs // saving.save_n_epoch_ratio)
    return saving.save_every_n_epochs


def samples_due_after_step(sampling: SamplingOptions, step: int) -> bool:
    """Step-interval samples; ``--sample_every_n_epochs`` wins and turns them off (kohya's sample_images)."""
    every = sampling.sample_every_n_steps
    return bool(every) and not sampling.sample_every_n_epochs and step % every == 0


def samples_due_after_epoch(sampling: SamplingOptions, epoch: int) -> bool:
    """Epoch-interval samples (kohya's sample_images at an epoch's end)."""
    every = sampling.sample_every_n_epochs
    return bool(every) and epoch % every == 0


def samples_due_at_end(sampling: SamplingOptions, epoch: int, step: int) -> bool:
    """Samples for the final LoRA: only when the interval hits the last epoch (epoch mode, which wins) or
    the last step (step mode), as sd-scripts does; ``--sample_at_end`` (ours) asks for them regardless."""
    if not (sampling.sample_every_n_steps or sampling.sample_every_n_epochs):
        return False
    if sampling.sample_at_end:
        return True
    if sampling.sample_every_n_epochs:
        return samples_due_after_epoch(sampling, epoch)
    return step % sampling.sample_every_n_steps == 0

"""The validation loss (kohya's ``--validation_split``): held-out images, fixed timesteps, fixed noise.

Why fixed: a validation number is only worth logging if two evaluations of the same weights give
the same value, so the curve shows the LoRA changing and nothing else. Each evaluation therefore
uses the same batches (a fixed plan of the held-out images, see data/validation_split.py), the
timesteps ``linspace(min_timestep, max_timestep, 6)[1:-1]`` (200/400/600/800 by default) for every
batch, and noise from a generator seeded from ``validation_seed`` (else ``--seed``) and the batch index
(kohya draws one stream for the whole pass; one per batch lets processes share the work exactly).
The global RNG state is saved and restored around it and LoRA dropout is off (eval mode), so a run
with validation trains exactly as one without it, and a resumed run stays bit-identical.

Scalars, as kohya logs them: ``loss/validation/step_average`` and ``loss/validation/step_divergence``
(validation minus the training moving average) every ``validate_every_n_steps``;
``loss/validation/epoch_average`` and ``loss/validation/epoch_divergence`` at the end of every
``validate_every_n_epochs``-th epoch (every epoch by default). With several processes each takes a
share of the batches and the sums are reduced, so the number does not depend on the process count.
"""

from __future__ import annotations

import hashlib
import logging
from typing import List, Optional, Sequence

import numpy as np
import torch

from library.data.dataset import TrainDataset
from library.train.step import batch_loss

logger = logging.getLogger("lorasmith.train")

NUM_VALIDATION_TIMESTEPS = 4  # kohya's fixed count
_PLAN_EPOCH = 1  # the validation plan (batch order, flips, caption choices) is always the one of epoch 1


def validation_timesteps(min_timestep: int, max_timestep: int) -> List[int]:
    """kohya's ``linspace(min, max, 4 + 2, dtype=int)[1:-1]``: e.g. [200, 400, 600, 800] for 0..1000."""
    return [int(t) for t in np.linspace(min_timestep, max_timestep, NUM_VALIDATION_TIMESTEPS + 2, dtype=int)[1:-1]]


def build_validation_dataset(prepared: Sequence, seed: int, stop_on_bad_image: bool = False,
                             masks: bool = False) -> Optional[TrainDataset]:
    """The held-out images of every prepared dataset as one TrainDataset, or None when nothing is held out."""
    held_out = [d for d in (p.validation_dataset() for p in prepared) if d is not None]
    if not held_out:
        return None
    return TrainDataset(held_out, seed=seed, stop_on_bad_image=stop_on_bad_image, masks=masks)


class _SavedRng:
    """Saves torch's CPU (and CUDA) RNG states on enter and puts them back on exit."""

    def __enter__(self):
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
        return self

    def __exit__(self, *exc):
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)
        return False


def validation_losses(model, dataset: TrainDataset, cfg, seed: int, max_batches: Optional[int] = None,
                      rank: int = 0, world: int = 1) -> List[float]:
    """The loss of every (batch, fixed timestep) pair of this process's share, in order.

    Pure in the sense that matters: the same weights give the same list; RNG states and the
    network's train/eval mode are as before when it returns.
    """
    n = len(dataset) if max_batches is None else min(max_batches, len(dataset))
    steps = validation_timesteps(cfg.noise.min_timestep, cfg.noise.max_timestep)
    net = model.network
    was_training = net.training
    out: List[float] = []
    with _SavedRng(), torch.no_grad():
        torch.manual_seed(seed)  # anything drawing outside the generator draws the same each time
        net.eval()
        try:
            for i in range(rank, n, world):
                batch = dataset[(_PLAN_EPOCH, i)]
                # one stream per batch, so a process's share gives the same numbers as one process
                generator = torch.Generator("cpu").manual_seed(_batch_seed(seed, i))
                fixed = [torch.full((len(batch["captions"]),), t, dtype=torch.long) for t in steps]
                out.extend(float(batch_loss(model, batch, cfg, generator, ts)) for ts in fixed)
        finally:
            net.train(was_training)
    return out


def _batch_seed(seed: int, index: int) -> int:
    digest = hashlib.sha256(f"validation:{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class Validation:
    """When to validate, what to log, and the history for the report; the loop calls ``after_step``/``after_epoch``."""

    def __init__(self, args, model, dataset: TrainDataset, cfg, accelerator, optimizer_info=None):
        self.args, self.model, self.dataset, self.cfg, self.acc = args, model, dataset, cfg, accelerator
        self.optimizer_info = optimizer_info  # schedule-free optimizers validate at their averaged weights
        self.seed = args.validation_seed if args.validation_seed is not None else int(args.seed or 0)
        self.history: List[dict] = []  # {"step", "epoch", "kind", "loss"}: kept in the train state for the report

    @property
    def num_images(self) -> int:
        return len(self.dataset.records())

    def evaluate(self) -> float:
        """The mean validation loss over all processes (main and others get the same value)."""
        if self.optimizer_info is not None:
            self.optimizer_info.eval()
        try:
            losses = validation_losses(self.model, self.dataset, self.cfg, self.seed, self.args.max_validation_steps,
                                       self.acc.process_index, self.acc.num_processes)
        finally:
            if self.optimizer_info is not None:
                self.optimizer_info.train()
        total, count = sum(losses), len(losses)
        if self.acc.num_processes > 1:
            both = self.acc.reduce(torch.tensor([total, float(count)], device=self.acc.device, dtype=torch.float64), "sum")
            total, count = float(both[0]), int(both[1])
        return total / max(count, 1)

    def after_step(self, step: int, epoch: int, training_average: float) -> None:
        every = self.args.validate_every_n_steps
        if not every or step % every:
            return
        value = self._run(step, epoch, "step")
        self._log({"loss/validation/step_average": value, "loss/validation/step_divergence": value - training_average}, step)

    def after_epoch(self, step: int, epoch: int, epoch_losses: Sequence[float]) -> None:
        every = self.args.validate_every_n_epochs
        if every and epoch % every:
            return
        value = self._run(step, epoch, "epoch")
        train = sum(epoch_losses) / len(epoch_losses) if epoch_losses else value
        self._log({"loss/validation/epoch_average": value, "loss/validation/epoch_divergence": value - train}, epoch)

    def _run(self, step: int, epoch: int, kind: str) -> float:
        value = self.evaluate()
        self.history.append({"step": step, "epoch": epoch, "kind": kind, "loss": value})
        if self.acc.is_main_process:
            logger.info("validation loss at step %d (epoch %d): %.5f", step, epoch, value)
        return value

    def _log(self, values: dict, step: int) -> None:
        if self.args.log_with:
            self.acc.log(values, step=step)

"""The learning rates a run logs per parameter group (kohya's ``lr/<label>`` and ``lr/d*lr/<label>`` scalars)."""

from __future__ import annotations

from typing import Optional, Sequence

from library.train.optimizers import OptimizerInfo


def _labels(n: int, descriptions) -> list:
    if descriptions is not None and len(descriptions) == n:
        return [str(d) for d in descriptions]
    if n == 1:
        return ["unet"]
    if n == 2:
        return ["textencoder", "unet"]
    return [f"group{i}" for i in range(n)]


def current_lrs(info: OptimizerInfo, scheduler=None, descriptions: Optional[Sequence[str]] = None) -> dict:
    """Scalars for the logger: ``lr/<label>`` per param group and, for Prodigy/D-Adaptation, ``lr/d*lr/<label>``.

    Labels are ``descriptions`` (or ``info.descriptions``), e.g. "textencoder", "unet", "unet plus";
    without them kohya's defaults: one group -> "unet", two -> "textencoder", "unet", more -> "group<i>".
    The lr is the scheduler's last lr (the Adafactor schedule reports Adafactor's own step size); for
    schedule-free optimizers it is the lr after their built-in warmup.
    """
    groups = info.optimizer.param_groups
    labels = _labels(len(groups), descriptions if descriptions is not None else info.descriptions)
    lrs = list(scheduler.get_last_lr()) if scheduler is not None else []
    if len(lrs) != len(groups):  # no scheduler, or the Adafactor schedule before every group had a gradient
        lrs = [g.get("lr") for g in groups]
    logs: dict = {}
    for label, group, lr in zip(labels, groups, lrs):
        if info.is_schedule_free and group.get("k", 0) > 0 and "scheduled_lr" in group:
            lr = group["scheduled_lr"]
        lr = float(lr) if lr is not None else float(info.initial_lr or 0.0)
        logs[f"lr/{label}"] = lr
        if info.is_adaptive and "d" in group:
            logs[f"lr/d*lr/{label}"] = float(group["d"]) * float(group["lr"])
    return logs

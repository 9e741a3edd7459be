"""Learning-rate schedulers by kohya name (``--lr_scheduler``), checkpointable and resumable bit-for-bit.

``build_scheduler`` follows kohya's ``get_scheduler_fix``: the curves come from
``diffusers.optimization`` (constant, constant_with_warmup, linear, cosine, cosine_with_restarts,
polynomial, piecewise_constant) and ``transformers.optimization`` (inverse_sqrt, cosine_with_min_lr,
warmup_stable_decay, and the Adafactor proxy schedule); nothing here re-implements a curve.

Every scheduler returned is a ``torch.optim.lr_scheduler.LRScheduler`` whose lr at step ``t`` is a pure
function of ``t`` (LambdaLR) or, for dotted torch classes, of the optimizer state. So
``scheduler.state_dict()`` saved next to ``optimizer.state_dict()`` and loaded into a freshly built pair
continues with identical learning rates.

kohya behaviours kept (and said plainly in the messages):

* ``lr_warmup_steps`` / ``lr_decay_steps``: an int is a step count, a float below 1 a fraction of
  ``num_training_steps`` (truncated, ``int(fraction * total)``); ``"10%"`` also works.
* A non-zero warmup with a scheduler that has no warmup (constant, adafactor, piecewise_constant, a
  class path) is an error, not silently ignored.
* ``cosine_with_min_lr`` and ``warmup_stable_decay`` get ``num_cycles / 2`` (so the default 1 is the usual
  half cosine) and ``min_lr_ratio``.
* Adafactor with ``relative_step=True`` always uses the ``adafactor`` proxy schedule.
* Schedule-free optimizers get a constant (no-op) schedule; kohya ignores the warmup there, we pass it
  to the optimizer's own ``warmup_steps`` when it has one.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import torch
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

from library.errors import UserError
from library.options.definitions import SCHEDULERS_WITHOUT_WARMUP
from library.train.optimizers import OptimizerInfo, is_schedule_free_class, parse_optimizer_args
from library.vocabulary import LR_SCHEDULERS

logger = logging.getLogger(__name__)

__all__ = ["SCHEDULER_NAMES", "SchedulerError", "build_scheduler", "resolve_steps"]

DEFAULT_SCHEDULER = "constant"

#: names accepted by ``--lr_scheduler`` (a dotted class path such as torch.optim.lr_scheduler.StepLR works too).
SCHEDULER_NAMES: tuple = LR_SCHEDULERS
_NO_WARMUP = SCHEDULERS_WITHOUT_WARMUP


class SchedulerError(UserError):
    """A bad ``--lr_scheduler`` / warmup / ``--lr_scheduler_args`` combination, with the fix."""


def _one_line(text) -> str:
    return " ".join(str(text).split())


def resolve_steps(value: Union[int, float, str, None], num_training_steps: int, option: str = "--lr_warmup_steps") -> int:
    """kohya's int-or-fraction step options: 100 -> 100 steps, 0.1 -> int(0.1 * total), "10%" -> same."""
    if value is None:
        return 0
    raw = value
    if isinstance(value, str):
        text = value.strip()
        try:
            value = float(text[:-1]) / 100.0 if text.endswith("%") else (int(text) if text.lstrip("+-").isdigit() else float(text))
        except ValueError:
            raise SchedulerError(f"{option}={raw!r} is not a number; give a step count (100) or a fraction of all steps (0.05)") from None
        if text.endswith("%") and value >= 1:
            raise SchedulerError(f"{option}={raw} is 100% or more of the training; give less than 100%")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SchedulerError(f"{option}={raw!r} is not a number; give a step count (100) or a fraction of all steps (0.05)")
    if value < 0:
        raise SchedulerError(f"{option}={raw} is negative; give a step count (100) or a fraction of all steps (0.05)")
    if isinstance(value, float) and value < 1:
        if value > 0 and num_training_steps < 1:
            raise SchedulerError(f"{option}={raw} is a fraction, but the number of training steps is unknown; give a step count")
        return int(value * num_training_steps)
    if isinstance(value, float) and not value.is_integer():
        raise SchedulerError(f"{option}={raw}: a float must be a fraction below 1 (0.05 = 5% of the steps) or a whole step count")
    return int(value)


def _optimizer_of(optimizer) -> tuple:
    if isinstance(optimizer, OptimizerInfo):
        return optimizer, optimizer.optimizer
    if isinstance(optimizer, torch.optim.Optimizer):
        return None, optimizer
    raise TypeError(f"build_scheduler needs a torch optimizer or an OptimizerInfo, got {type(optimizer).__name__}")


def _is_relative_step_adafactor(opt) -> bool:
    cls = type(opt)
    return (f"{cls.__module__}.{cls.__name__}" == "transformers.optimization.Adafactor"
            and bool(opt.param_groups[0].get("relative_step")))


def _no_warmup(name: str, warmup: int, fix: str, given=None) -> None:
    if warmup:
        shown = warmup if given is None or given == warmup else f"{given} ({warmup} steps)"
        raise SchedulerError(f"--lr_warmup_steps={shown} has no effect with --lr_scheduler={name}: {fix}")


def _call(func, label: str, *args, **kwargs):
    """Call a schedule factory/class; its TypeError/ValueError about arguments become a SchedulerError."""
    try:
        return func(*args, **kwargs)
    except TypeError as exc:
        if "argument" not in str(exc):
            raise
        try:
            accepted = [n for n in inspect.signature(func).parameters if n not in ("self", "optimizer", "last_epoch")]
        except (TypeError, ValueError):
            accepted = []
        raise SchedulerError(
            f"--lr_scheduler_args for {label}: {_one_line(exc)}; it accepts: {', '.join(accepted) or '(none)'}"
        ) from exc
    except ValueError as exc:
        raise SchedulerError(f"--lr_scheduler={label}: {_one_line(exc)}; check --lr_scheduler_args and the lr options") from exc


def _constant_factor(_step: int) -> float:
    return 1.0


def _schedule_free(opt, name: str, warmup: int) -> LRScheduler:
    if name not in ("constant", "constant_with_warmup"):
        logger.warning("--lr_scheduler=%s is ignored: a schedule-free optimizer needs no lr schedule", name)
    if warmup:
        groups = opt.param_groups
        if "warmup_steps" not in groups[0]:
            logger.warning(
                "--lr_warmup_steps=%d is ignored: %s has no warmup of its own", warmup, type(opt).__name__)
        elif any(g["warmup_steps"] not in (0, warmup) for g in groups):
            logger.warning(
                "--lr_warmup_steps=%d is ignored: --optimizer_args warmup_steps=%s is used", warmup, groups[0]["warmup_steps"])
        else:
            logger.info("schedule-free warmup: %d steps (passed to the optimizer's warmup_steps)", warmup)
            for group in groups:
                group["warmup_steps"] = warmup
    return LambdaLR(opt, _constant_factor)


def _scheduler_class(name: str):
    """A dotted path (``torch.optim.lr_scheduler.StepLR``, ``mypkg.MySched``) or a bare torch scheduler name."""
    if "." not in name:
        classes = {
            attr.lower(): obj for attr, obj in vars(torch.optim.lr_scheduler).items()
            if inspect.isclass(obj) and issubclass(obj, LRScheduler) and obj is not LRScheduler
        }
        return classes.get(name.lower())
    module_name, _, attr = name.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise SchedulerError(f"--lr_scheduler={name}: cannot import {module_name} ({_one_line(exc)}); install it or fix the path") from exc
    if not hasattr(module, attr):
        close = difflib.get_close_matches(attr, [n for n in dir(module) if not n.startswith("_")], n=3)
        hint = f"; did you mean {' or '.join(module_name + '.' + c for c in close)}?" if close else ""
        raise SchedulerError(f"--lr_scheduler={name}: {module_name} has no '{attr}'{hint}")
    return getattr(module, attr)


def _unknown(name: str) -> SchedulerError:
    close = difflib.get_close_matches(name.lower(), SCHEDULER_NAMES, n=3, cutoff=0.6)
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    return SchedulerError(
        f"--lr_scheduler={name} is not a known scheduler.{hint} Valid names: {', '.join(SCHEDULER_NAMES)}, "
        f"or a class path such as torch.optim.lr_scheduler.StepLR (with --lr_scheduler_args)"
    )


def _check_first_lr(scheduler: LRScheduler, opt) -> LRScheduler:
    """DAdaptSGD divides by the lr-weighted gradient norm of its first step: a warmup starting at lr 0 crashes it."""
    cls = type(opt)
    if f"{cls.__module__}.{cls.__name__}" == "dadaptation.dadapt_sgd.DAdaptSGD" and not any(g["lr"] for g in opt.param_groups):
        raise SchedulerError("--optimizer_type=DAdaptSGD cannot take its first step at lr 0 (it divides by zero): "
                             "set --lr_warmup_steps=0, or use DAdaptAdam/Prodigy with a warmup")
    return scheduler


@dataclass(frozen=True)
class _Request:
    """One scheduler request with every step count resolved; what the spec table's arguments read."""

    total: int
    warmup: int
    num_cycles: int
    power: float
    min_lr_ratio: Optional[float]
    kwargs: dict
    num_decay_steps: Union[int, float, str, None]
    num_stable_steps: Optional[int]
    timescale: Optional[int]


@dataclass(frozen=True)
class _Curve:
    """A named curve: where its factory lives, whether it takes a warmup (else the fix to print when one is
    given), whether it runs over the total step count, and the factory's arguments besides the optimizer."""

    module: str
    factory: str
    no_warmup_fix: Optional[str] = None
    needs_total: bool = True
    arguments: Callable[[_Request], dict] = lambda r: {"num_warmup_steps": r.warmup, "num_training_steps": r.total}
    check: Optional[Callable[[_Request], None]] = None


def _piecewise_rules(r: _Request) -> dict:
    if "step_rules" not in r.kwargs:
        raise SchedulerError("--lr_scheduler=piecewise_constant needs --lr_scheduler_args step_rules='1:100,0.5:200,0.1' "
                             "(multiplier:until_step, ..., final multiplier)")
    rules = r.kwargs["step_rules"]
    if not isinstance(rules, str):  # unquoted 1:100,0.5 was read as a tuple of parts
        rules = ",".join(str(part) for part in rules)
    return {"step_rules": rules}


def _min_lr_arguments(r: _Request) -> dict:
    if r.min_lr_ratio is None and "min_lr" not in r.kwargs and "min_lr_rate" not in r.kwargs:
        raise SchedulerError("--lr_scheduler=cosine_with_min_lr needs --lr_scheduler_min_lr_ratio (e.g. 0.1) "
                             "or --lr_scheduler_args min_lr=1e-6")
    given = "min_lr" in r.kwargs or "min_lr_rate" in r.kwargs
    extra = {"min_lr_rate": r.min_lr_ratio} if r.min_lr_ratio is not None and not given else {}
    return {"num_warmup_steps": r.warmup, "num_training_steps": r.total, "num_cycles": r.num_cycles / 2, **extra}


def _wsd_arguments(r: _Request) -> dict:
    decay = resolve_steps(r.num_decay_steps, r.total, "--lr_decay_steps")
    stable = r.total - r.warmup - decay if r.num_stable_steps is None else int(r.num_stable_steps)
    if stable < 0:
        raise SchedulerError(f"--lr_scheduler=warmup_stable_decay: warmup ({r.warmup}) + decay ({decay}) steps exceed the "
                             f"{r.total} training steps; lower --lr_warmup_steps or --lr_decay_steps")
    if decay == 0:
        logger.warning("--lr_scheduler=warmup_stable_decay with --lr_decay_steps=0 never decays; set --lr_decay_steps "
                       "(e.g. 0.2 for the last 20% of the steps)")
    return {"num_warmup_steps": r.warmup, "num_decay_steps": decay, "num_stable_steps": stable,
            "num_cycles": r.num_cycles / 2, "min_lr_ratio": 0.0 if r.min_lr_ratio is None else r.min_lr_ratio}


_DIFFUSERS, _TRANSFORMERS = "diffusers.optimization", "transformers.optimization"
_CURVES: Mapping[str, _Curve] = {
    "constant": _Curve(_DIFFUSERS, "get_constant_schedule", needs_total=False, arguments=lambda r: {},
                       no_warmup_fix="use --lr_scheduler=constant_with_warmup, or set --lr_warmup_steps=0"),
    "piecewise_constant": _Curve(_DIFFUSERS, "get_piecewise_constant_schedule", needs_total=False,
                                 arguments=_piecewise_rules,
                                 no_warmup_fix="put the warmup into step_rules, or set --lr_warmup_steps=0"),
    "constant_with_warmup": _Curve(_DIFFUSERS, "get_constant_schedule_with_warmup", needs_total=False,
                                   arguments=lambda r: {"num_warmup_steps": r.warmup}),
    "inverse_sqrt": _Curve(_TRANSFORMERS, "get_inverse_sqrt_schedule", needs_total=False,
                           arguments=lambda r: {"num_warmup_steps": r.warmup, "timescale": r.timescale}),
    "linear": _Curve(_DIFFUSERS, "get_linear_schedule_with_warmup"),
    "cosine": _Curve(_DIFFUSERS, "get_cosine_schedule_with_warmup"),
    "cosine_with_restarts": _Curve(_DIFFUSERS, "get_cosine_with_hard_restarts_schedule_with_warmup",
                                   arguments=lambda r: {"num_warmup_steps": r.warmup, "num_training_steps": r.total,
                                                        "num_cycles": r.num_cycles}),
    "polynomial": _Curve(_DIFFUSERS, "get_polynomial_decay_schedule_with_warmup",
                         arguments=lambda r: {"num_warmup_steps": r.warmup, "num_training_steps": r.total,
                                              "power": r.power}),
    "cosine_with_min_lr": _Curve(_TRANSFORMERS, "get_cosine_with_min_lr_schedule_with_warmup",
                                 arguments=_min_lr_arguments),
    "warmup_stable_decay": _Curve(_TRANSFORMERS, "get_wsd_schedule", arguments=_wsd_arguments),
}


def build_scheduler(
    name: Optional[str],
    optimizer: Union[torch.optim.Optimizer, OptimizerInfo],
    num_training_steps: int,
    num_warmup_steps: Union[int, float, str, None] = 0,
    num_cycles: int = 1,
    power: float = 1.0,
    min_lr_ratio: Optional[float] = None,
    scheduler_args: Union[Sequence[str], Mapping[str, Any], None] = None,
    num_decay_steps: Union[int, float, str, None] = None,
    num_stable_steps: Optional[int] = None,
    timescale: Optional[int] = None,
) -> LRScheduler:
    """The lr scheduler kohya's ``--lr_scheduler`` names, stepped once per optimizer step.

    ``optimizer``: pass the ``OptimizerInfo`` from ``build_optimizer`` (a bare optimizer works; then the
    Adafactor schedule reports 0 as its initial lr). ``num_training_steps``: the number of
    ``scheduler.step()`` calls in the whole run (kohya: max_train_steps x num_processes when accelerate
    wraps the scheduler). ``num_warmup_steps`` / ``num_decay_steps``: int steps or a fraction < 1.
    ``scheduler_args``: kohya's ``--lr_scheduler_args`` (``"k=v"`` strings or a dict), passed to the
    curve or class (e.g. ``lr_end=1e-6`` for polynomial, ``step_rules='1:100,0.5'`` for piecewise_constant).
    """
    info, opt = _optimizer_of(optimizer)
    total = int(num_training_steps or 0)
    request = _Request(total, resolve_steps(num_warmup_steps, total, "--lr_warmup_steps"), num_cycles, power,
                       min_lr_ratio, parse_optimizer_args(scheduler_args, option="--lr_scheduler_args"),
                       num_decay_steps, num_stable_steps, timescale)
    return _check_first_lr(_build(info, opt, name, request, num_warmup_steps), opt)


def _adafactor_name(raw_name: str, info) -> tuple:
    """(lower-case name, initial lr): kohya's internal ``adafactor:<initial lr>`` spelling included."""
    lname = raw_name.lower()
    initial_lr = info.initial_lr if info is not None else None
    if lname.startswith("adafactor:"):
        try:
            initial_lr = float(lname.split(":", 1)[1])
        except ValueError:
            raise SchedulerError(f"--lr_scheduler={raw_name}: write it as adafactor or adafactor:<initial lr>") from None
        lname = "adafactor"
    return lname, initial_lr


def _relative_step_adafactor(opt, lname: str, raw_name: str, request: _Request, given, initial_lr) -> LRScheduler:
    if lname not in ("adafactor", DEFAULT_SCHEDULER):
        logger.warning("--lr_scheduler=%s is replaced by the adafactor schedule: Adafactor with relative_step=True "
                       "sets its own learning rate", raw_name)
    _no_warmup("adafactor", request.warmup, "Adafactor relative_step=True warms up by itself (warmup_init=True); set "
               "--lr_warmup_steps=0, or use --optimizer_args relative_step=False scale_parameter=False "
               "warmup_init=False with --lr_scheduler=constant_with_warmup", given)
    from transformers.optimization import AdafactorSchedule

    return AdafactorSchedule(opt, initial_lr or 0.0)


def _build(info, opt, name, request: _Request, given_warmup) -> LRScheduler:
    raw_name = (name or DEFAULT_SCHEDULER).strip() or DEFAULT_SCHEDULER
    lname, initial_lr = _adafactor_name(raw_name, info)
    schedule_free = info.is_schedule_free if info is not None else is_schedule_free_class(type(opt))
    if schedule_free:
        return _schedule_free(opt, lname, request.warmup)
    if _is_relative_step_adafactor(opt):
        return _relative_step_adafactor(opt, lname, raw_name, request, given_warmup, initial_lr)
    if lname == "adafactor":
        raise SchedulerError("--lr_scheduler=adafactor only works with --optimizer_type=Adafactor and relative_step=True; "
                             "pick another scheduler such as constant_with_warmup")
    if f"{type(opt).__module__}.{type(opt).__name__}" == "transformers.optimization.Adafactor" and lname != "constant_with_warmup":
        logger.warning("Adafactor with a fixed lr works best with --lr_scheduler=constant_with_warmup (kohya's advice)")

    curve = _CURVES.get(lname)
    if curve is None:
        cls = _scheduler_class(raw_name)
        if cls is None:
            raise _unknown(raw_name)
        _no_warmup(raw_name, request.warmup, "the class has no warmup; set --lr_warmup_steps=0", given_warmup)
        logger.info("lr scheduler: %s %s", raw_name, request.kwargs)
        return _call(cls, raw_name, opt, **request.kwargs)
    if curve.no_warmup_fix is not None:
        _no_warmup(lname, request.warmup, curve.no_warmup_fix, given_warmup)
    if curve.needs_total:
        if request.total < 1:
            raise SchedulerError(f"--lr_scheduler={lname} needs the number of training steps (got {request.total}); "
                                 f"set --max_train_steps or --max_train_epochs")
        if request.warmup >= request.total:
            logger.warning("--lr_warmup_steps=%d is not below the %d training steps: --lr_scheduler=%s will never decay",
                           request.warmup, request.total, lname)
    merged = dict(request.kwargs)
    for key, value in curve.arguments(request).items():
        if key in merged and value is not None and key != "step_rules":  # step_rules: our normalised copy wins
            raise SchedulerError(f"--lr_scheduler_args {key}=... is already set from the options ({key}={value}); "
                                 f"remove it from --lr_scheduler_args")
        if value is not None or key not in merged:
            merged[key] = value
    return _call(getattr(importlib.import_module(curve.module), curve.factory), lname, opt, **merged)

"""Optimizers by kohya name: ``--optimizer_type`` + ``--optimizer_args`` -> a ready torch optimizer.

``build_optimizer`` matches kohya's ``get_optimizer`` (library/train_util.py) in what it builds and in
the ``ss_optimizer`` string it reports, and does better where kohya crashes late or silently:

* names are case-insensitive; an unknown name lists the valid ones with a "did you mean";
* a missing optional package says the exact ``pip install`` command;
* ``--optimizer_args`` entries are split on the first ``=`` and read with ``ast.literal_eval``
  (``betas=0.9,0.999`` -> ``(0.9, 0.999)``), falling back to the raw string; ``true``/``false``/``none``
  in any case are booleans/None (kohya would pass the string ``"false"``, which is truthy);
* an argument the optimizer does not take, or a value it rejects, is a ``UserError`` naming it;
* Prodigy, DAdaptAdam, DAdaptLion, DAdaptSGD and DAdaptation raise at their *first step* when two
  parameter groups have different non-zero learning rates (text encoder vs U-Net lr, LoRA+, block lr
  weights); kohya only warns. We refuse up front with the fix.

The optional packages are imported only when their optimizer is asked for (bitsandbytes and
transformers take seconds to import). Nothing here keeps module-level mutable state.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import logging
import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import torch

from library.errors import UserError
from library.options.kwargs import parse_key_values
from library.train.speed import fast_step_kwargs

logger = logging.getLogger(__name__)

__all__ = [
    "OptimizerError",
    "OptimizerInfo",
    "OPTIMIZER_TYPES",
    "build_optimizer",
    "is_schedule_free_class",
    "optimizer_table",
    "optimizer_type_names",
    "parse_optimizer_args",
]

DEFAULT_OPTIMIZER = "AdamW"


class OptimizerError(UserError):
    """A bad ``--optimizer_type`` / ``--optimizer_args`` / learning-rate combination, with the fix."""


# --- the table of kohya names -------------------------------------------------------------------

# kinds
_PLAIN = "plain"
_ADAPTIVE = "adaptive"  # Prodigy / D-Adaptation: log d*lr, lr should be ~1.0
_SCHEDULE_FREE = "schedule_free"  # needs optimizer.train()/eval(); no lr scheduler
_ADAFACTOR = "adafactor"  # relative_step handling

# how an optimizer treats different lrs in different param groups
_GROUP_LRS_ANY = "any"
_GROUP_LRS_EQUAL = "equal"  # raises RuntimeError at step() unless every non-zero lr is the same
_GROUP_LRS_FIRST = "first"  # silently uses the first group's lr for every group


@dataclass(frozen=True)
class _Spec:
    name: str  # kohya's spelling
    module: str
    attr: str
    package: Optional[str] = None  # pip name of an optional package; None = always installed
    kind: str = _PLAIN
    group_lrs: str = _GROUP_LRS_ANY
    fixed: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))  # passed, not reported
    defaults: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))  # reported like user args
    note: str = ""


def _bnb(name, attr=None, note=""):
    return _Spec(name, "bitsandbytes.optim", attr or name, "bitsandbytes", note=note)


_NESTEROV = MappingProxyType({"nesterov": True})
_MOMENTUM = MappingProxyType({"momentum": 0.9})
_PAGED_NOTE = "paged state lives in CUDA unified memory; on CPU/MPS it behaves like the non-paged version"

_SPECS: tuple = (
    _Spec("AdamW", "torch.optim", "AdamW", note="default"),
    _bnb("AdamW8bit", note="8-bit state; tensors under 4096 elements keep 32-bit state"),
    _bnb("PagedAdamW8bit", note=_PAGED_NOTE),
    _bnb("PagedAdamW", note=_PAGED_NOTE),
    _bnb("PagedAdamW32bit", note=_PAGED_NOTE),
    _bnb("Lion8bit", note="Lion wants a 3-10x smaller lr than AdamW"),
    _bnb("PagedLion8bit", note=_PAGED_NOTE),
    _bnb("AdEMAMix8bit"),
    _bnb("PagedAdEMAMix8bit", note=_PAGED_NOTE),
    _Spec("SGDNesterov8bit", "bitsandbytes.optim", "SGD8bit", "bitsandbytes", fixed=_NESTEROV, defaults=_MOMENTUM,
          note="nesterov=True; momentum defaults to 0.9"),
    _Spec("SGDNesterov", "torch.optim", "SGD", fixed=_NESTEROV, defaults=_MOMENTUM,
          note="nesterov=True; momentum defaults to 0.9"),
    _Spec("Lion", "lion_pytorch", "Lion", "lion-pytorch", note="Lion wants a 3-10x smaller lr than AdamW"),
    _Spec("Prodigy", "prodigyopt", "Prodigy", "prodigyopt", _ADAPTIVE, _GROUP_LRS_EQUAL,
          note="lr ~1.0; one lr for every param group (no LoRA+, equal TE/U-Net lr)"),
    _Spec("DAdaptation", "dadaptation.experimental", "DAdaptAdamPreprint", "dadaptation", _ADAPTIVE,
          _GROUP_LRS_EQUAL, note="= DAdaptAdamPreprint, as in kohya; lr ~1.0; one lr for every param group"),
    _Spec("DAdaptAdamPreprint", "dadaptation.experimental", "DAdaptAdamPreprint", "dadaptation", _ADAPTIVE,
          _GROUP_LRS_EQUAL, note="lr ~1.0; one lr for every param group"),
    _Spec("DAdaptAdam", "dadaptation", "DAdaptAdam", "dadaptation", _ADAPTIVE, _GROUP_LRS_EQUAL,
          note="lr ~1.0; one lr for every param group"),
    _Spec("DAdaptAdaGrad", "dadaptation", "DAdaptAdaGrad", "dadaptation", _ADAPTIVE, _GROUP_LRS_FIRST,
          note="lr ~1.0; only the first group's lr is used"),
    _Spec("DAdaptAdan", "dadaptation", "DAdaptAdan", "dadaptation", _ADAPTIVE, _GROUP_LRS_FIRST,
          note="lr ~1.0; only the first group's lr is used"),
    _Spec("DAdaptAdanIP", "dadaptation.experimental", "DAdaptAdanIP", "dadaptation", _ADAPTIVE, _GROUP_LRS_FIRST,
          note="lr ~1.0; only the first group's lr is used"),
    _Spec("DAdaptLion", "dadaptation", "DAdaptLion", "dadaptation", _ADAPTIVE, _GROUP_LRS_EQUAL,
          note="lr ~1.0; one lr for every param group"),
    _Spec("DAdaptSGD", "dadaptation", "DAdaptSGD", "dadaptation", _ADAPTIVE, _GROUP_LRS_EQUAL,
          note="lr ~1.0; one lr for every param group; no warmup (its first step cannot be at lr 0)"),
    _Spec("Adafactor", "transformers.optimization", "Adafactor", kind=_ADAFACTOR,
          note="relative_step=True by default: it sets its own lr and the 'adafactor' schedule is used"),
    _Spec("AdamWScheduleFree", "schedulefree", "AdamWScheduleFree", "schedulefree", _SCHEDULE_FREE,
          note="no lr scheduler; warmup via warmup_steps"),
    _Spec("RAdamScheduleFree", "schedulefree", "RAdamScheduleFree", "schedulefree", _SCHEDULE_FREE,
          note="no lr scheduler; its built-in RAdam warmup leaves the weights unchanged for the first 4 steps"),
    _Spec("SGDScheduleFree", "schedulefree", "SGDScheduleFree", "schedulefree", _SCHEDULE_FREE,
          note="no lr scheduler; warmup via warmup_steps"),
)
_BY_LOWER = MappingProxyType({spec.name.lower(): spec for spec in _SPECS})

#: kohya names accepted by ``--optimizer_type`` (any dotted ``module.Class`` path is accepted too).
OPTIMIZER_TYPES: tuple = tuple(spec.name for spec in _SPECS)


def optimizer_type_names() -> list:
    """The kohya names, for help texts and docs."""
    return list(OPTIMIZER_TYPES)


def optimizer_table() -> list:
    """(name, class path, pip package or '', note) per kohya name: the source of docs/optimizers.md's table."""
    return [(s.name, f"{s.module}.{s.attr}", s.package or "", s.note) for s in _SPECS]


# --- --optimizer_args ---------------------------------------------------------------------------


def parse_optimizer_args(args: Union[Sequence[str], Mapping[str, Any], str, None], option: str = "--optimizer_args") -> dict:
    """kohya's ``--optimizer_args "weight_decay=0.01" "betas=0.9,0.999"`` -> ``{"weight_decay": 0.01, "betas": (0.9, 0.999)}``.

    Read by the options layer's one ``key=value`` reader (library/options/kwargs.parse_key_values: a
    value with commas becomes a tuple, ``[..]`` a list, quoted text a string, true/false/none in any case
    ``True/False/None``, else the raw string); its errors are OptimizerErrors here. ``option`` names the
    CLI option in error messages (also used for ``--lr_scheduler_args``).
    """
    try:
        return parse_key_values(args, option)
    except UserError as e:
        raise OptimizerError(str(e)) from None


# --- the result ---------------------------------------------------------------------------------


@dataclass
class OptimizerInfo:
    """What ``build_optimizer`` made, and what the training loop and the metadata need to know about it."""

    optimizer: torch.optim.Optimizer
    type: str  # kohya name ("Prodigy") or the dotted path the user gave
    name: str  # class path, e.g. "prodigyopt.prodigy.Prodigy" (kohya's optimizer_name)
    args: dict  # the keyword arguments reported (user's + defaults we add), kohya's optimizer_kwargs
    description: str  # kohya's ss_optimizer: "name(k=v,k=v)" or just "name"
    learning_rate: Optional[float]  # the base lr the optimizer got; None for Adafactor relative_step
    initial_lr: Optional[float] = None  # Adafactor relative_step: what the 'adafactor' schedule reports first
    is_adaptive: bool = False  # Prodigy / D-Adaptation: log lr/d*lr/...
    is_schedule_free: bool = False  # call train()/eval(); the lr scheduler is a no-op
    fused_lr_schedule: bool = False  # the optimizer computes its own lr (Adafactor relative_step)
    descriptions: Optional[list] = None  # one label per param group ("textencoder", "unet", "unet plus", ...)

    def train(self) -> None:
        """Before training steps: schedule-free optimizers move the weights to their training point."""
        if self.is_schedule_free:
            self.optimizer.train()

    def eval(self) -> None:
        """Before sampling, validation or saving the LoRA: schedule-free optimizers move to the averaged weights."""
        if self.is_schedule_free:
            self.optimizer.eval()


def is_schedule_free_class(cls) -> bool:
    """A schedule-free optimizer class (needs train()/eval() and no lr scheduler), as kohya decides it."""
    return cls.__module__.split(".")[0] == "schedulefree" or cls.__name__.lower().endswith("schedulefree")


def _is_adaptive_class(cls) -> bool:
    return cls.__module__.split(".")[0] in ("prodigyopt", "dadaptation")


# --- building -----------------------------------------------------------------------------------


def _one_line(text) -> str:
    return " ".join(str(text).split())


def _import_class(spec: _Spec):
    try:
        module = importlib.import_module(spec.module)
    except ModuleNotFoundError as exc:
        top = spec.module.split(".")[0]
        if spec.package and exc.name and exc.name.split(".")[0] == top:
            raise OptimizerError(
                f"--optimizer_type={spec.name} needs the '{spec.package}' package, which is not installed: "
                f"pip install {spec.package}"
            ) from exc
        raise
    except Exception as exc:  # e.g. a bitsandbytes binary that does not load on this machine
        if spec.package is None:
            raise
        raise OptimizerError(
            f"--optimizer_type={spec.name}: the '{spec.package}' package failed to import ({_one_line(exc)}); "
            f"reinstall it with pip install -U {spec.package}, or pick another --optimizer_type"
        ) from exc
    try:
        return getattr(module, spec.attr)
    except AttributeError as exc:
        raise OptimizerError(
            f"--optimizer_type={spec.name}: the installed '{spec.package}' has no {spec.attr}; "
            f"upgrade it with pip install -U {spec.package}"
        ) from exc


def _unknown_type(name: str) -> OptimizerError:
    choices = {n.lower(): n for n in OPTIMIZER_TYPES}
    close = difflib.get_close_matches(name.lower(), list(choices), n=3, cutoff=0.6)
    hint = f" Did you mean {' or '.join(choices[c] for c in close)}?" if close else ""
    return OptimizerError(
        f"--optimizer_type={name} is not a known optimizer.{hint} Valid names: {', '.join(OPTIMIZER_TYPES)}, "
        f"or a class path such as torch.optim.RMSprop"
    )


def _torch_optimizer_by_name(name: str):
    """kohya resolves a bare unknown name in ``torch.optim`` (``RMSprop``, ``Adam``); we do, case-insensitively."""
    classes = {
        attr.lower(): obj
        for attr, obj in vars(torch.optim).items()
        if inspect.isclass(obj) and issubclass(obj, torch.optim.Optimizer) and obj is not torch.optim.Optimizer
    }
    return classes.get(name.lower())


def _resolve_path(path: str):
    """``package.module.Class`` -> the class: import the longest importable module prefix, getattr the rest."""
    parts = path.split(".")
    if any(not p.isidentifier() for p in parts):
        raise OptimizerError(f"--optimizer_type={path} is not a valid class path; write it like torch.optim.RMSprop")
    module, error = None, None
    for cut in range(len(parts) - 1, 0, -1):
        try:
            module = importlib.import_module(".".join(parts[:cut]))
            break
        except ModuleNotFoundError as exc:
            error = error or exc
            if exc.name and not ".".join(parts[:cut]).startswith(exc.name):
                raise OptimizerError(
                    f"--optimizer_type={path}: importing {'.'.join(parts[:cut])} failed ({_one_line(exc)}); "
                    f"install the missing package"
                ) from exc
    if module is None:
        raise OptimizerError(
            f"--optimizer_type={path}: no module '{parts[0]}' is installed; pip install the package that provides it"
        ) from error
    obj = module
    for i, attr in enumerate(parts[cut:], start=cut):
        if not hasattr(obj, attr):
            names = [n for n in dir(obj) if not n.startswith("_")]
            close = difflib.get_close_matches(attr, names, n=3)
            hint = f"; did you mean {' or '.join('.'.join(parts[:i] + [c]) for c in close)}?" if close else ""
            raise OptimizerError(f"--optimizer_type={path}: {'.'.join(parts[:i])} has no '{attr}'{hint}")
        obj = getattr(obj, attr)
    if not callable(obj):
        raise OptimizerError(f"--optimizer_type={path} is not a class; give an optimizer class such as torch.optim.RMSprop")
    return obj


def _copy_groups(param_groups, lr) -> list:
    """Shallow copies (we never mutate the caller's dicts); a bare iterable of tensors becomes one group."""
    items = list(param_groups)
    if not items:
        raise OptimizerError("nothing to train: no parameter groups were given (check --network_train_unet_only, "
                             "--unet_lr and --text_encoder_lr: a 0 lr freezes that part)")
    if all(isinstance(p, torch.Tensor) for p in items):
        items = [{"params": items}]
    groups = []
    for group in items:
        group = dict(group)
        params = group["params"]
        group["params"] = [params] if isinstance(params, torch.Tensor) else list(params)
        if group.get("lr") is None:
            group.pop("lr", None)
            if lr is not None:
                group["lr"] = lr
        groups.append(group)
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise OptimizerError("nothing to train: every parameter group is empty (check --network_train_unet_only, "
                             "--unet_lr and --text_encoder_lr: a 0 lr freezes that part)")
    return groups


def _group_label(descriptions, i) -> str:
    if descriptions and i < len(descriptions):
        return str(descriptions[i])
    return f"group{i}"


def _check_adaptive(spec_name: str, group_lrs: str, groups: list, lr, descriptions) -> None:
    """kohya's sanity checks for Prodigy/D-Adaptation, plus the per-group lr rule that crashes them at step()."""
    actual = next((g["lr"] for g in groups if g.get("lr")), lr)  # a frozen (lr 0) group does not count
    if actual is not None and (actual <= 0.1 or actual >= 10.0):
        logger.warning(
            "--optimizer_type=%s adapts the step size itself and expects a learning rate around 1.0, got %g; "
            "set --learning_rate=1.0 (and --unet_lr/--text_encoder_lr to 1.0 or unset)", spec_name, actual,
        )
    labelled = [(_group_label(descriptions, i), g.get("lr", lr)) for i, g in enumerate(groups)]
    nonzero = {v for _, v in labelled if v}
    if len(nonzero) <= 1:
        return
    listing = ", ".join(f"{label}={value}" for label, value in labelled)
    plus = any("plus" in label for label, _ in labelled)
    if group_lrs == _GROUP_LRS_EQUAL:
        cause = "drop --loraplus_lr_ratio (LoRA+ cannot work with it)" if plus else \
            "give --unet_lr and --text_encoder_lr the same value (or leave them unset) and drop block lr weights"
        raise OptimizerError(
            f"--optimizer_type={spec_name} needs one learning rate for every parameter group but got {listing}: "
            f"{cause}, or use an optimizer such as AdamW"
        )
    logger.warning(
        "--optimizer_type=%s uses only the first parameter group's learning rate (%s) for every group; "
        "the others (%s) are ignored", spec_name, labelled[0][1], listing,
    )


def _adafactor_kwargs(kwargs: dict, groups: list, lr, max_grad_norm, descriptions):
    """kohya's Adafactor rules. Returns (kwargs, lr to pass, initial_lr, fused)."""
    kwargs.setdefault("relative_step", True)
    if not kwargs["relative_step"] and kwargs.get("warmup_init", False):
        logger.info("Adafactor: warmup_init=True needs relative_step=True; setting relative_step=True")
        kwargs["relative_step"] = True
    if kwargs["relative_step"]:
        if lr:
            logger.warning(
                "Adafactor relative_step=True computes its own step size: --learning_rate=%g is only reported as "
                "the initial lr. For a fixed lr pass --optimizer_args scale_parameter=False relative_step=False "
                "warmup_init=False", lr,
            )
        group_lrs = [g.pop("lr", None) for g in groups]
        if any(v is not None and v != lr for v in group_lrs):
            listing = ", ".join(f"{_group_label(descriptions, i)}={v}" for i, v in enumerate(group_lrs) if v is not None)
            logger.warning(
                "Adafactor relative_step=True ignores per-group learning rates (%s): --unet_lr, --text_encoder_lr, "
                "LoRA+ and block lr weights have no effect", listing,
            )
        return kwargs, None, (lr or 0.0), True
    if lr is None and any("lr" not in g for g in groups):
        raise OptimizerError("Adafactor with relative_step=False needs --learning_rate (e.g. 1e-4)")
    if max_grad_norm:
        logger.warning(
            "Adafactor clips updates itself (clip_threshold); --max_grad_norm=%g also clips gradients. "
            "Consider --max_grad_norm=0", max_grad_norm,
        )
    if kwargs.get("clip_threshold", 1.0) != 1.0:
        logger.warning("Adafactor: clip_threshold=1.0 is the recommended value, got %s", kwargs["clip_threshold"])
    return kwargs, lr, None, False


def _accepted_args(cls) -> list:
    try:
        params = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        return []
    return [n for n, p in params.items() if n not in ("self", "params") and p.kind is not p.VAR_POSITIONAL]


def _construct(cls, label: str, groups: list, lr, kwargs: dict):
    call = dict(kwargs)
    if lr is not None:
        call["lr"] = lr
    try:
        return cls(groups, **call)
    except TypeError as exc:
        text = str(exc)
        if "keyword argument" not in text:
            raise
        accepted = [a for a in _accepted_args(cls) if a != "lr"]
        raise OptimizerError(
            f"--optimizer_args for {label}: {_one_line(text)}; it accepts: {', '.join(accepted) or '(none)'}"
        ) from exc
    except ValueError as exc:
        raise OptimizerError(
            f"--optimizer_type={label} rejected its settings ({_one_line(exc)}); check --optimizer_args and --learning_rate"
        ) from exc


def build_optimizer(
    optimizer_type: Optional[str],
    param_groups: Iterable,
    lr: Optional[float],
    optimizer_args: Union[Sequence[str], Mapping[str, Any], None] = None,
    max_grad_norm: Optional[float] = None,
    descriptions: Optional[Sequence[str]] = None,
) -> OptimizerInfo:
    """Build the optimizer kohya's ``--optimizer_type`` names (case-insensitive) or a dotted class path.

    ``param_groups``: dicts with ``params`` and usually ``lr`` (a group without lr gets ``lr``), or a
    plain iterable of tensors. The caller's dicts are not modified. ``descriptions`` (one label per
    group, as ``LoRANetwork.prepare_optimizer_params`` returns) only improve messages and logging.
    ``max_grad_norm`` is used for kohya's Adafactor advice only.
    """
    label = (optimizer_type or DEFAULT_OPTIMIZER).strip() or DEFAULT_OPTIMIZER
    kwargs = parse_optimizer_args(optimizer_args)
    for reserved, fix in (("lr", "--learning_rate (or --unet_lr/--text_encoder_lr)"), ("params", "nothing: the network supplies them")):
        if reserved in kwargs:
            raise OptimizerError(f"--optimizer_args {reserved}=... is not allowed; set it with {fix}")
    groups = _copy_groups(param_groups, lr)
    descriptions = list(descriptions) if descriptions is not None else None

    cls, label, kind, group_lrs, fixed = _resolve_type(label, kwargs)
    pass_lr, initial_lr, fused = lr, None, False
    if kind == _ADAFACTOR:
        kwargs, pass_lr, initial_lr, fused = _adafactor_kwargs(kwargs, groups, lr, max_grad_norm, descriptions)
    elif kind == _ADAPTIVE:
        _check_adaptive(label, group_lrs, groups, lr, descriptions)
    _check_learning_rate(label, kind, groups, pass_lr)

    reported = dict(kwargs)
    fixed.update(fast_step_kwargs(cls, groups, kwargs))  # speed only: fused/foreach step, not reported
    optimizer = _construct(cls, label, groups, pass_lr, {**fixed, **kwargs})
    if kind == _SCHEDULE_FREE:
        optimizer.train()  # kohya: start in train mode; eval() before sampling/saving, train() after

    name = f"{cls.__module__}.{cls.__name__}"
    args_text = ",".join(f"{k}={v}" for k, v in reported.items())
    description = f"{name}({args_text})" if args_text else name
    logger.info("optimizer: %s", description)
    return OptimizerInfo(optimizer=optimizer, type=label, name=name, args=reported, description=description,
                         learning_rate=pass_lr, initial_lr=initial_lr, is_adaptive=kind == _ADAPTIVE,
                         is_schedule_free=kind == _SCHEDULE_FREE, fused_lr_schedule=fused, descriptions=descriptions)


def _resolve_type(label: str, kwargs: dict):
    """(class, shown name, kind, group-lr rule, fixed kwargs) for a kohya name (its defaults go into
    ``kwargs`` where not given) or a dotted/torch class name."""
    spec = _BY_LOWER.get(label.lower())
    if spec is not None:
        cls = _import_class(spec)
        label = spec.name
        kind, group_lrs = spec.kind, spec.group_lrs
        for key, value in spec.defaults.items():
            if key not in kwargs:
                logger.info("%s: %s not given, using %s=%s", spec.name, key, key, value)
                kwargs[key] = value
        fixed = dict(spec.fixed)
    else:
        cls = _resolve_path(label) if "." in label else _torch_optimizer_by_name(label)
        if cls is None:
            raise _unknown_type(label)
        fixed = {}
        module_name = f"{cls.__module__}.{cls.__name__}"
        if module_name == "transformers.optimization.Adafactor":
            kind = _ADAFACTOR
        elif is_schedule_free_class(cls):
            kind = _SCHEDULE_FREE
        elif _is_adaptive_class(cls):
            kind = _ADAPTIVE
        else:
            kind = _PLAIN
        group_lrs = _GROUP_LRS_ANY
    return cls, label, kind, group_lrs, fixed


def _check_learning_rate(label: str, kind: str, groups: list, lr) -> None:
    if lr is None and kind != _ADAFACTOR and any("lr" not in g for g in groups):
        raise OptimizerError(f"--optimizer_type={label} needs a learning rate: set --learning_rate")
    if lr is not None and (not isinstance(lr, (int, float)) or isinstance(lr, bool) or not math.isfinite(lr) or lr < 0):
        raise OptimizerError(f"--learning_rate={lr!r} is not a usable learning rate; give a number such as 1e-4")

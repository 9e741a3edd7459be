"""Resume from a state folder that kohya-ss/sd-scripts wrote (``--save_state``, through accelerate).

Why a module of its own: kohya users bring ``<name>-step00000500-state`` folders. Their layout is
accelerate's ``save_state`` plus kohya's ``train_state.json``:

* ``model.safetensors`` (or ``pytorch_model.bin``): the network's ``state_dict()`` — kohya's LoRA names
  ``<module>.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha``, our naming too; ``module.`` in front
  when kohya ran under DDP;
* ``optimizer.bin``: ``optimizer.state_dict()`` (per-parameter moments by index, and param groups);
* ``scheduler.bin``, ``random_states_0.pkl``, ``scaler.pt``: not read (see below);
* ``train_state.json``: ``{"current_epoch": E, "current_step": N}`` — N optimizer steps done.

What carries over: the LoRA weights (exactly), the optimizer's state when it is the same optimizer
over the same parameter groups (moments, step counts, per-group values such as Prodigy's d), and the
position: step N, at epoch and batch computed from this run's steps per epoch. What does not: the
random streams (ours are seeded per step, library/train/loop.py, so the continuation cannot be
kohya's bit for bit; ``random_states_0.pkl`` is never unpickled), the fp16 loss scale (re-calibrates in a
few steps), and kohya's learning-rate schedule — the lr follows this run's settings at step N. A
different optimizer keeps the weights and restarts the optimizer, said in one notice. Pickles are read
with ``weights_only=True`` only (library/models/checkpoint_file.py): a pickle that references code is refused.
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings

import torch

from library.errors import UserError
from library.models.checkpoint_file import torch_load_weights_only
from library.models.errors import ModelLoadError
from networks.lora_names import guess_lora_family

logger = logging.getLogger("lorasmith.train")

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
OPTIMIZER_FILE = "optimizer.bin"
TRAIN_STATE = "train_state.json"
OUR_WEIGHTS = "network.safetensors"  # library/train/checkpoints.py: a folder with it is one of ours

# param-group keys that are torch implementation flags or the learning rate, not the optimizer's kind
_VOLATILE_GROUP_KEYS = {"params", "lr", "initial_lr", "foreach", "fused", "capturable", "differentiable", "maximize",
                        "decoupled_weight_decay"}


class KohyaStateError(UserError):
    """A kohya state folder that cannot be resumed from."""


def is_kohya_state(path: str) -> bool:
    """A folder accelerate/kohya wrote: kohya's train_state.json or accelerate's weight files, none of ours."""
    if not os.path.isdir(path) or os.path.exists(os.path.join(path, OUR_WEIGHTS)):
        return False
    if any(os.path.isfile(os.path.join(path, f)) for f in WEIGHT_FILES + (OPTIMIZER_FILE,)):
        return True
    try:
        with open(os.path.join(path, TRAIN_STATE), encoding="utf-8") as f:
            return "current_step" in json.load(f)
    except (OSError, ValueError, TypeError):
        return False


def _read_pickle(path: str):
    try:
        return torch_load_weights_only(path, code_fix="this state cannot be resumed safely; start from its LoRA file "
                                       "with --network_weights instead", damaged_fix="resume from another state")
    except ModelLoadError as e:
        raise KohyaStateError(f"--resume: {e}") from None


def _read_train_state(path: str) -> tuple[int, int | None]:
    file = os.path.join(path, TRAIN_STATE)
    if not os.path.isfile(file):
        raise KohyaStateError(f"--resume {path}: no {TRAIN_STATE}, so the step to continue at is unknown (kohya writes it "
                              "with every state); resume from a complete state folder")
    try:
        with open(file, encoding="utf-8") as f:
            data = json.load(f)
        step, epoch = data["current_step"], data.get("current_epoch")
        if not isinstance(step, int) or step < 0 or not (epoch is None or isinstance(epoch, int)):
            raise ValueError(f"current_step {step!r}, current_epoch {epoch!r}")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise KohyaStateError(f"--resume {file}: not kohya's train state ({e}); it needs integer current_step and current_epoch") from None
    return step, epoch


def _read_weights(path: str) -> dict[str, torch.Tensor]:
    for name in WEIGHT_FILES:
        file = os.path.join(path, name)
        if not os.path.isfile(file):
            continue
        if name.endswith(".safetensors"):
            from safetensors.torch import load_file

            try:
                sd = load_file(file)
            except Exception as e:  # noqa: BLE001 - a damaged file fails in many ways
                raise KohyaStateError(f"--resume {file}: the weights are damaged ({str(e).splitlines()[0]}); "
                                      "resume from another state") from None
        else:
            sd = _read_pickle(file)
            if not isinstance(sd, dict):
                raise KohyaStateError(f"--resume {file}: holds a {type(sd).__name__}, not the network's weights")
        return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()
                if isinstance(v, torch.Tensor)}
    raise KohyaStateError(f"--resume {path}: no network weights ({' or '.join(WEIGHT_FILES)}); kohya's state folders "
                          "hold them — was it written with --deepspeed or cut short? Resume from another state")


def _check_weights(path: str, state: dict, own: dict) -> None:
    """The state's LoRA must be this run's network: same modules, ranks and alphas (else what would train?)."""
    extra = sorted({k.rsplit(".", 2)[0] if k.endswith(".weight") else k.rsplit(".", 1)[0] for k in state if k not in own})
    missing = sorted({k.rsplit(".", 2)[0] if k.endswith(".weight") else k.rsplit(".", 1)[0] for k in own if k not in state})
    if extra and guess_lora_family(state) != guess_lora_family(own):
        raise KohyaStateError(f"--resume {path}: the state is a {guess_lora_family(state)} LoRA but this run's base model is "
                              f"{guess_lora_family(own)}; resume with the base model the state was trained on")
    if extra:
        raise KohyaStateError(f"--resume {path}: {len(extra)} LoRA modules of the state are not in this run (e.g. {extra[0]}); "
                              "resume with the state's network settings (--network_module, conv_dim in --network_args, "
                              "--network_train_unet_only / --network_train_text_encoder_only)")
    if missing:
        raise KohyaStateError(f"--resume {path}: this run trains {len(missing)} LoRA modules the state lacks (e.g. {missing[0]}); "
                              "resume with the state's network settings (e.g. --network_train_unet_only if it trained "
                              "the UNet only, or the same conv_dim)")
    for key, value in state.items():
        mine = own[key]
        if mine.shape != value.shape:
            if key.endswith("lora_down.weight") and mine.shape[1:] == value.shape[1:]:
                what = "--network_dim" if value.dim() == 2 or value.shape[-1] == 1 else "conv_dim (--network_args)"
                raise KohyaStateError(f"--resume {path}: the state's LoRA has rank {value.shape[0]} at {key.rsplit('.', 2)[0]}, "
                                      f"this run {mine.shape[0]}; resume with {what} {value.shape[0]}")
            raise KohyaStateError(f"--resume {path}: {key} has shape {tuple(value.shape)} in the state but "
                                  f"{tuple(mine.shape)} here; the state was trained on another base model")
        if key.endswith(".alpha") and not math.isclose(float(value), float(mine), rel_tol=1e-6, abs_tol=1e-6):
            raise KohyaStateError(f"--resume {path}: the state's network alpha is {float(value):g} at {key[:-6]}, this run "
                                  f"{float(mine):g}; resume with --network_alpha {float(value):g} (or the same conv_alpha)")


def _kind(opt_sd: dict) -> str:
    """A readable guess of which optimizer wrote a state dict, from its keys."""
    per_param = set().union(*(set(s) for s in opt_sd.get("state", {}).values())) if opt_sd.get("state") else set()
    groups = set(opt_sd["param_groups"][0]) if opt_sd.get("param_groups") else set()
    if "d" in groups:
        return "Prodigy/DAdaptation"
    if {"state1", "qmap1"} & per_param:
        return "an 8-bit bitsandbytes optimizer"
    if "exp_avg_sq_row" in per_param or "scale_parameter" in groups:
        return "Adafactor"
    if "momentum" in groups:
        return "SGD"
    if "amsgrad" in groups:
        return "AdamW" if groups and opt_sd["param_groups"][0].get("decoupled_weight_decay", True) else "Adam"
    if "betas" in groups and "eps" not in groups:
        return "Lion"
    return "another optimizer"


def _optimizer_mismatch(saved: dict, optimizer, params: list) -> str | None:
    """Why the saved optimizer state cannot go into ``optimizer``; None when it fits."""
    if not isinstance(saved, dict) or not isinstance(saved.get("param_groups"), list) or not isinstance(saved.get("state"), dict):
        return "optimizer.bin is not an optimizer state"
    mine = optimizer.state_dict()
    keys = lambda groups: {k for g in groups for k in g} - _VOLATILE_GROUP_KEYS  # noqa: E731
    flag = lambda groups: {g.get("decoupled_weight_decay") for g in groups} - {None}  # noqa: E731
    if keys(saved["param_groups"]) != keys(mine["param_groups"]) or (
            flag(saved["param_groups"]) and flag(mine["param_groups"]) and flag(saved["param_groups"]) != flag(mine["param_groups"])):
        return f"the state's optimizer is {_kind(saved)}, this run's {optimizer.__class__.__name__}"
    sizes = [len(g["params"]) for g in saved["param_groups"]]
    if sizes != [len(g["params"]) for g in mine["param_groups"]]:
        return (f"its parameter groups differ ({len(sizes)} groups of {sizes} vs {len(mine['param_groups'])} of "
                f"{[len(g['params']) for g in mine['param_groups']]}: learning rates per module, LoRA+ or block lr differ)")
    index = {i: p for g_saved, g in zip(saved["param_groups"], mine["param_groups"]) for i, p in zip(g_saved["params"], g["params"])}
    for i, entry in saved["state"].items():
        p = params[index[i]] if i in index else None
        if p is None or not isinstance(entry, dict):
            return "its per-parameter state does not match this run's parameters"
        for name, v in entry.items():
            if isinstance(v, torch.Tensor) and v.dim() == p.dim() and v.shape != p.shape:
                return f"its {name} has shape {tuple(v.shape)} where this run's parameter has {tuple(p.shape)}"
    return None


def _position_scheduler(optimizer, scheduler, lrs: list, step: int) -> None:
    """This run's schedule at ``step``: our learning rates back in the groups, the scheduler stepped there."""
    for group, (lr, initial) in zip(optimizer.param_groups, lrs):
        group["lr"] = lr
        if initial is not None:
            group["initial_lr"] = initial
    with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()": intended here
        warnings.simplefilter("ignore")
        for _ in range(step):
            scheduler.step()


def load_kohya_state(path: str, network, optimizer, scheduler, plan, accum: int) -> tuple[int, int, int]:
    """Load a kohya state into this run; return (global_step, epoch, position). One notice says what carried."""
    step, kohya_epoch = _read_train_state(path)
    if step > plan.max_train_steps:
        raise KohyaStateError(f"--resume {path}: the state is at step {step}, beyond this run's {plan.max_train_steps} "
                              "steps; raise --max_train_steps or --max_train_epochs")
    weights = _read_weights(path)
    own = network.state_dict()
    _check_weights(path, weights, own)

    opt_file = os.path.join(path, OPTIMIZER_FILE)
    saved_opt = _read_pickle(opt_file) if os.path.isfile(opt_file) else None
    params = [p for g in optimizer.param_groups for p in g["params"]]
    why = "optimizer.bin is missing" if saved_opt is None else _optimizer_mismatch(saved_opt, optimizer, params)

    with torch.no_grad():
        network.load_state_dict({k: v.to(own[k].dtype) for k, v in weights.items()}, strict=True)
    lrs = [(g["lr"], g.get("initial_lr")) for g in optimizer.param_groups]
    if why is None:
        try:
            optimizer.load_state_dict(saved_opt)
        except (ValueError, KeyError, RuntimeError, TypeError) as e:
            raise KohyaStateError(f"--resume {opt_file}: the optimizer state does not load ({str(e).splitlines()[0]}); "
                                  "resume with the state's --optimizer_type and network settings") from None
    _position_scheduler(optimizer, scheduler, lrs, step)

    epoch, done = divmod(step, max(1, plan.steps_per_epoch))
    position = min(done * accum, plan.micro_per_rank)
    epoch += 1
    carried = "LoRA weights and optimizer state" if why is None else f"LoRA weights (optimizer restarted: {why})"
    expected_epoch = -(-step // max(1, plan.steps_per_epoch)) if step else kohya_epoch
    epochs = "" if kohya_epoch in (None, expected_epoch) else (
        f"; kohya counted epoch {kohya_epoch} at this step, this run has {plan.steps_per_epoch} steps per epoch "
        "(dataset, batch size or repeats differ)")
    notice = (f"resumed kohya state {path} at step {step} (epoch {epoch}, batch {position}): {carried}; the learning "
              f"rate follows this run's schedule at step {step}; random streams are lorasmith's, so the continuation "
              f"is not kohya's bit for bit{epochs}")
    logger.warning(notice)
    return step, epoch, position

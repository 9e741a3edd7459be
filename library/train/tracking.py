"""The run's Accelerator arguments and trackers, as kohya's ``train_util.prepare_accelerator`` and
``init_trackers`` set them up: timestamped log folder with ``--log_prefix``, DDP kwargs handlers,
W&B login and run name, ``--log_tracker_config`` and ``--log_config``.

Why a module: entry.py only asks for the keyword arguments; every kohya logging option is honoured
in one place (the option schema says what each does).
"""

from __future__ import annotations

import datetime
import os
import time

import torch

from library.errors import UserError

# never sent to a tracker (kohya leaves the same out): secrets, and paths that may name the user
_SENSITIVE = ("wandb_api_key", "huggingface_token", "pretrained_model_name_or_path", "vae", "tokenizer_cache_dir",
              "train_data_dir", "conditioning_data_dir", "reg_data_dir", "output_dir", "logging_dir")


def log_dir(args, now: float | None = None) -> str | None:
    """kohya's ``logging_dir/<log_prefix><YYYYmmddHHMMSS>``; None without ``--logging_dir``."""
    if not args.logging_dir:
        return None
    stamp = time.strftime("%Y%m%d%H%M%S", time.localtime(now))
    return os.path.join(args.logging_dir, (args.log_prefix or "") + stamp)


def check_device_precision(args) -> None:
    """fp16 autocast needs CUDA; on the CPU PyTorch would fail deep in the UNet with 'Half != float'."""
    if args.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise UserError("--mixed_precision fp16 needs a CUDA GPU (this machine has none, and PyTorch cannot train in "
                        "fp16 on the CPU); use --mixed_precision bf16 or no")


def accelerator_kwargs(args) -> dict:
    """``project_dir`` and ``kwargs_handlers`` for ``Accelerator(...)`` (``log_with`` is the caller's)."""
    from accelerate import DistributedDataParallelKwargs, InitProcessGroupKwargs

    handlers = []
    if args.ddp_timeout:
        handlers.append(InitProcessGroupKwargs(timeout=datetime.timedelta(minutes=args.ddp_timeout)))
    if args.ddp_gradient_as_bucket_view or args.ddp_static_graph:
        handlers.append(DistributedDataParallelKwargs(gradient_as_bucket_view=bool(args.ddp_gradient_as_bucket_view),
                                                      static_graph=bool(args.ddp_static_graph)))
    return {"project_dir": log_dir(args) if args.log_with else None, "kwargs_handlers": handlers or None}


def wandb_login(args) -> None:
    """``--wandb_api_key``: log in before the tracker starts (kohya does the same)."""
    if args.log_with in ("wandb", "all") and args.wandb_api_key:
        import wandb

        wandb.login(key=args.wandb_api_key)


def init_trackers(accelerator, args, default_name: str = "network_train") -> None:
    """Start the trackers with kohya's project name, run name, init kwargs and (``--log_config``) options."""
    if not args.log_with:
        return
    init_kwargs = {}
    if args.wandb_run_name:
        init_kwargs["wandb"] = {"name": args.wandb_run_name}
    if args.log_tracker_config:
        init_kwargs = _read_tracker_config(args.log_tracker_config)
    accelerator.init_trackers(args.log_tracker_name or default_name, config=logged_config(args),
                              init_kwargs=init_kwargs)


def logged_config(args) -> dict | None:
    """The options for the tracker under ``--log_config`` (scalars as they are, lists as text)."""
    if not args.log_config:
        return None
    out = {}
    for key, value in sorted(vars(args).items()):
        if key in _SENSITIVE:
            continue
        out[key] = value if value is None or isinstance(value, (bool, int, float, str)) else str(value)
    return out


def _read_tracker_config(path: str) -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise UserError(f"--log_tracker_config {path}: cannot read it as TOML ({e}); it holds one table per "
                        "tracker, like [wandb] name = \"run\"") from None
    if not all(isinstance(v, dict) for v in data.values()):
        raise UserError(f"--log_tracker_config {path}: every top-level entry must be a table named after a tracker, "
                        "like [wandb]")
    return data

"""The run's parts, built before the Trainer: step plan, optimizer and scheduler, outputs with their
``ss_*`` metadata, the run folder.

Why apart from the Trainer: building them reads files (the base model's hashes for the metadata, the
sample-prompt file, the run folder's status), and a constructor that reads files cannot be made, tested
or reasoned about without them. The Trainer takes the built parts and only assembles them. The base
file's full sha256 is read once, on the main process (started in the background at low priority by
library/train/entry.py, or taken from the hash cache, library/models/hashes.py); it stays a Future in the
metadata until the first LoRA file is written, so it is never awaited before the first step.
"""

from __future__ import annotations

from dataclasses import dataclass

from library.errors import UserError
from library.options.typed import SamplingOptions, SavingOptions, from_args
from library.train.metadata import training_metadata
from library.train.optimizers import OptimizerInfo, build_optimizer
from library.train.outputs import RunOutputs
from library.train.run_folder import RunFolder
from library.train.schedulers import build_scheduler
from library.train.setup_data import StepPlan, plan_steps
from library.train.setup_model import save_dtype_for


@dataclass
class Optimization:
    """How long the run is and what optimizes it."""

    plan: StepPlan
    opt_info: OptimizerInfo
    scheduler: object


def build_optimization(args, model, dataset, world: int) -> Optimization:
    """kohya's step arithmetic, then the optimizer over the network's parameter groups and its LR schedule."""
    accum = max(1, args.gradient_accumulation_steps)
    plan = plan_steps(len(dataset), world, accum, args.max_train_epochs, args.max_train_steps)
    te_lr = args.text_encoder_lr if model.train_text_encoder else None
    groups, descriptions = model.contract.optimizer_params(te_lr, args.unet_lr if model.train_unet else None, args.learning_rate)
    if not groups:
        raise UserError("no parameters to train: every learning rate is 0 (check --unet_lr / --text_encoder_lr)")
    opt_info = build_optimizer(args.optimizer_type, groups, args.learning_rate, args.optimizer_args,
                               args.max_grad_norm, descriptions)
    scheduler = build_scheduler(
        args.lr_scheduler_type or args.lr_scheduler, opt_info, plan.max_train_steps, args.lr_warmup_steps,
        args.lr_scheduler_num_cycles, args.lr_scheduler_power, args.lr_scheduler_min_lr_ratio, args.lr_scheduler_args,
        args.lr_decay_steps or None, None, args.lr_scheduler_timescale,
    )
    return Optimization(plan, opt_info, scheduler)


def run_metadata(args, model, dataset, held_out, optimization: Optimization, world: int, base_sha256) -> dict:
    """The ``ss_*``/modelspec metadata every LoRA of the run carries; ``base_sha256`` is a Future (resolved when
    a file is written, library/train/metadata.py) or None."""
    plan = optimization.plan
    summary = {**dataset.metadata(), "resolution": args.resolution, "enable_bucket": args.enable_bucket,
               "num_validation_images": len(held_out.records()) if held_out is not None else 0,
               "num_epochs": plan.num_epochs, "max_train_steps": plan.max_train_steps, "num_processes": world}
    first = summary["datasets"][0] if summary["datasets"] else {}
    summary.update({k: first.get(k) for k in ("bucket_info", "tag_frequency", "dataset_dirs")})
    return training_metadata(args, model.base, summary, model.network_args, optimization.opt_info.description,
                             base_sha256)


def build_outputs(args, acc, model, dataset, held_out, optimization: Optimization, base_sha256) -> RunOutputs:
    """The run's writer, with the run's saving and sampling options; only the main process writes files, so only
    it builds the metadata."""
    md = run_metadata(args, model, dataset, held_out, optimization, acc.num_processes, base_sha256) if acc.is_main_process else {}
    saving = from_args(SavingOptions, args)
    return RunOutputs(saving, from_args(SamplingOptions, args), model, md, save_dtype_for(saving), optimization.opt_info)


def build_run_folder(args, acc) -> RunFolder:
    """status.json / metrics / control files of the output folder (written by the main process only)."""
    return RunFolder(args.output_dir, enabled=acc.is_main_process)

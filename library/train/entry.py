"""``train_network.py`` / ``sdxl_train_network.py``: options -> data -> model -> loop, with clean exits.

Why here and not in the scripts: the ComfyUI node and the tests call ``train(args, script)`` with
the same behaviour; the scripts are two lines. Every failure a user can cause ends in one message
(no traceback unless ``--debug``) and a documented exit code (docs/troubleshooting.md):
0 done · 2 bad input · 3 non-finite loss · 4 out of memory · 130 interrupted by Ctrl-C · 143 stopped by
SIGTERM (library/train/stopping.py).
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import random
import sys
import time
from dataclasses import dataclass

from library import atomic
from library.errors import UserError
from library.train import stopping
from library.train.stopping import EXIT_INTERRUPTED, EXIT_TERMINATED, StopFlag  # noqa: F401 - exit codes re-exported

logger = logging.getLogger("lorasmith.train")

EXIT_OK, EXIT_USER, EXIT_NONFINITE, EXIT_OOM = 0, 2, 3, 4


@dataclass
class TrainResult:
    lora: str
    output_dir: str
    steps: int
    losses: list
    network: object = None  # the trained network module (tests, the ComfyUI node)


def make_accelerator(args):
    """The run's Accelerator; ``args.log_with`` is final (train() derives it from --logging_dir)."""
    import torch
    from accelerate import Accelerator

    from library.train.tracking import accelerator_kwargs, check_device_precision, wandb_login

    check_device_precision(args)
    log_with = args.log_with
    if log_with in ("wandb", "all"):
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise UserError(f"--log_with {log_with} needs wandb: pip install wandb (or use --log_with tensorboard)") from None
        wandb_login(args)
    # accelerate forms a CPU (gloo) process group only when asked for the CPU: without a GPU, processes
    # started by ``accelerate launch --multi_gpu`` would otherwise each train alone.
    multi_cpu = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    # accelerate keeps the mixed precision of the first run in a process-wide singleton; a second run in the
    # same process (ComfyUI, tests) with another --mixed_precision would fail, so each run starts it afresh.
    # The process group (PartialState) is kept.
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state()
    GradientState._reset_state()
    try:
        return Accelerator(
            mixed_precision=args.mixed_precision, log_with=log_with, cpu=multi_cpu, **accelerator_kwargs(args),
        )
    except ValueError as e:
        raise UserError(f"--mixed_precision {args.mixed_precision}: {str(e).splitlines()[0]}") from None


def train(args: argparse.Namespace, script: str = "train_network", stop_flag=None, progress_callback=None) -> TrainResult:
    """Run one training as ``args`` say (already parsed and validated)."""
    from library.train.checkpoints import last_name
    from library.train.ownership import RunLock

    from library.inference.prompts import read_prompt_file

    args = argparse.Namespace(**vars(args))  # never mutate the caller's options
    if args.sample_prompts:  # a bad prompt file fails now, not at the first sample after the model loaded
        read_prompt_file(args.sample_prompts)
    if args.seed is None:
        args.seed = random.randint(0, 2**31 - 1)
        logger.info("no --seed given: using %d", args.seed)
    if args.log_with is None and args.logging_dir:
        args.log_with = "tensorboard"  # kohya: a logging_dir alone turns TensorBoard on
    acc = make_accelerator(args)
    lock = RunLock(args.output_dir, last_name(args.output_name)).acquire() if acc.is_main_process else None
    try:  # one run at a time per output_dir/output_name (library/train/ownership.py)
        return _train_locked(args, script, acc, stop_flag, progress_callback)
    finally:
        if lock is not None:
            lock.release()


def _train_locked(args, script, acc, stop_flag, progress_callback) -> TrainResult:
    """The run in named steps: data and model, the step settings, the trainer's parts, the trainer, the loop."""
    from library.train.class_images import fill_class_images

    base_sha256 = _start_base_hash(args) if acc.is_main_process else None
    fill_class_images(args, script, acc)  # --num_class_images: the reg folder is complete before it is scanned
    dataset, held_out, model = _load_data_and_model(args, script, acc)
    cfg = _step_config(args, acc, model)
    flag = stop_flag or StopFlag().install()
    try:
        trainer = _make_trainer(args, script, acc, model, held_out, dataset, cfg, base_sha256, flag, progress_callback)
        return _run_trainer(args, acc, trainer, model)
    finally:
        if isinstance(flag, StopFlag):
            flag.restore()


def _load_data_and_model(args, script, acc):
    """Scan the datasets (report shown on the main process), load the model, attach the caches."""
    import torch

    from library.train.setup_data import build_dataset, prepare_data
    from library.train.startup import load_and_cache
    from library.train.validation import build_validation_dataset

    world = acc.num_processes
    prepared = prepare_data(args, world, show=(lambda text: logger.info("\n%s", text)) if acc.is_main_process else None)
    dataset = build_dataset(args, args.seed, prepared)
    held_out = build_validation_dataset(prepared, args.seed, args.stop_on_bad_image, bool(args.masked_loss))
    torch.manual_seed(args.seed)  # LoRA init
    model = load_and_cache(args, script, acc, dataset, held_out)  # latents cached while the model loads: train/startup.py
    return dataset, held_out, model


def _step_config(args, acc, model):
    """The per-step settings (noise, loss, text encoding), checked against the loaded model."""
    from library.train.losses import check_options
    from library.train.step import StepConfig, loss_options, noise_options

    cfg = StepConfig(
        noise=noise_options(args, model.base.noise_scheduler.config.num_train_timesteps),
        loss=loss_options(args, model.base.v_parameterization),
        clip_skip=None if model.base.is_sdxl else args.clip_skip, max_token_length=args.max_token_length,
        weighted_captions=bool(args.weighted_captions),
        autocast=acc.autocast,
    )
    # the options layer checked these rules before loading; again with the model's own timesteps and
    # prediction type (its warnings were already logged as notices)
    check_options(cfg.noise, cfg.loss, model.base.noise_scheduler.config.num_train_timesteps)
    return cfg


def _make_trainer(args, script, acc, model, held_out, dataset, cfg, base_sha256, flag, progress_callback):
    """The trainer's parts (library/train/run_parts.py: the files are read here, the base file's sha256 once,
    on the main process), then the Trainer with its validation, resumed state and progress callback."""
    from library.train.loop import Trainer, total_steps_text
    from library.train.run_parts import build_optimization, build_outputs, build_run_folder
    from library.train.validation import Validation

    optimization = build_optimization(args, model, dataset, acc.num_processes)
    outputs = build_outputs(args, acc, model, dataset, held_out, optimization, base_sha256)
    trainer = Trainer(args, acc, model, dataset, cfg, optimization, outputs, build_run_folder(args, acc), flag)
    trainer.script = script
    if held_out is not None:
        trainer.validation = Validation(args, model, held_out, cfg, acc, trainer.opt_info)
    if acc.is_main_process:
        logger.info("training: %s", total_steps_text(trainer.plan))
    if args.resume:
        trainer.resume(args.resume)
    if progress_callback is not None:
        trainer.progress_callback = progress_callback
    return trainer


def _run_trainer(args, acc, trainer, model) -> TrainResult:
    """Train to the end and say how long it took."""
    t0 = time.perf_counter()
    final = trainer.run()
    if acc.is_main_process:
        logger.info("done in %.0f s: %s", time.perf_counter() - t0, final)
    return TrainResult(final, args.output_dir, trainer.global_step, trainer.losses, model.network)


def _start_base_hash(args):
    """The base file's full sha256 (for ss_new_sd_model_hash) as a Future: hashed in the background at low
    priority, or taken from the hash cache; awaited when the first LoRA file is written. None for a folder."""
    from library.models.hashes import start_sha256

    path = args.pretrained_model_name_or_path
    return start_sha256(path) if path and os.path.isfile(path) else None


def _setup_logging(debug: bool) -> None:
    level = logging.DEBUG if debug else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    for noisy in ("accelerate", "diffusers", "transformers", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING if debug else logging.ERROR)
    try:  # transformers and diffusers keep their own verbosity switches
        import diffusers.utils.logging as dlog
        import transformers.utils.logging as tlog

        tlog.set_verbosity_error() if not debug else None
        dlog.set_verbosity_error() if not debug else None
    except ImportError:
        pass


def _newest_state_text(args, script: str) -> str:
    """Where to continue from, naming a state only if a complete one of this run's name exists."""
    from library.train.checkpoints import latest_state

    found = latest_state(args.output_dir, args.output_name, defaults=True, script=script) if args else None
    if found:
        return f"the newest saved state is {found}: continue with --resume {found}"
    return "no resumable state was saved, so a new run starts from the beginning (files already saved are intact)"


def _print_error(text: str) -> None:
    print(f"error: {text}", file=sys.stderr, flush=True)


def main(argv=None, script: str = "train_network") -> int:
    """Command-line entry: parse, train, map every failure to a message and an exit code.

    Options are parsed and checked before torch, diffusers or accelerate are imported, so ``--help``
    and a bad option answer in well under a second."""
    from library.options import parse_args

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        args = parse_args(argv, script)
    except UserError as e:
        if debug:
            raise
        _print_error(str(e))
        return EXIT_USER
    _setup_logging(debug)
    return _run(args, script, debug)


def _run(args, script: str, debug: bool) -> int:
    """Train with parsed options; every failure becomes its message and exit code."""
    import torch

    from library.train.loop import Interrupted, NonFiniteLoss
    from library.train.run_folder import run_status

    try:
        with run_status(args), stopping.sigterm_before_training():  # status.json (library/train/run_folder.py)
            result = train(args, script)
        print(f"LoRA written to {os.path.abspath(result.lora)}", flush=True)
        return EXIT_OK
    except Interrupted as e:
        print(stopping.stopped_message(e.reason, e.lora, e.state_dir), file=sys.stderr)
        return stopping.exit_code_for(e.reason)
    except KeyboardInterrupt as e:
        if debug:
            raise
        reason = e.reason if isinstance(e, stopping.StopNow) else "Ctrl-C"
        print(f"stopped at once ({reason}) without saving; {_newest_state_text(args, script)}", file=sys.stderr)
        return stopping.exit_code_for(reason)
    except NonFiniteLoss as e:
        if debug:
            raise
        _print_error(str(e))
        return EXIT_NONFINITE
    except UserError as e:
        if debug:
            raise
        _print_error(str(e))
        return EXIT_USER
    except torch.cuda.OutOfMemoryError:
        if debug:
            raise
        _print_error("out of GPU memory; try --gradient_checkpointing, --cache_latents, --mixed_precision bf16, "
                     "a smaller --train_batch_size or --resolution (docs/troubleshooting.md)")
        return EXIT_OOM
    except OSError as e:
        if debug:
            raise
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            where = atomic.disk_of(e.filename or args.output_dir)
            _print_error(f"disk full while writing {e.filename or 'an output file'} on {where}; free space or choose "
                         f"another --output_dir; {_newest_state_text(args, script)}")
        else:
            _print_error(f"{e.filename or ''}: {e.strerror or e}; check the path and its permissions")
        return EXIT_USER

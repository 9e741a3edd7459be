"""The settings a state is tied to, and the check that ``--resume`` continues the same training.

Why: a state resumed with another resolution, base model, network shape, precision or dataset
silently trains something else, and the result is blamed on the method. Each setting that changes the
result has a key (an option name where there is one); resuming with different values is refused
unless ``--resume_with_changes`` lists those keys. A few can never change, because the saved weights
or optimizer state would not fit (``FIXED``).
"""

from __future__ import annotations

import json
import os

from library.train.checkpoints import CheckpointError

FIXED = ("network_module", "network_dim", "trained_parts", "processes")


def _datasets(dataset, resolution) -> list:
    """Per dataset: batch size, (image folder, repeats) of each subset, and its resolution where a dataset
    config sets one apart from --resolution (that one is the ``resolution`` key)."""
    out = []
    for prepared in getattr(dataset, "datasets", []):
        params = prepared.params
        subsets = [[os.path.abspath(s.subset.image_dir) if s.subset.image_dir else s.subset.name, s.subset.num_repeats]
                   for s in prepared.subsets]
        own = params.resolution and tuple(params.resolution) != tuple(resolution or ())
        out.append({"resolution": list(params.resolution) if own else None,
                    "batch_size": params.batch_size, "subsets": subsets})
    return out


def run_settings(args, model, plan, world: int, dataset) -> dict:
    """{key: value} of everything that changes what a run trains (JSON-plain values)."""
    settings = {
        "model": model.base.content_hash,
        "network_module": args.network_module, "network_dim": args.network_dim, "network_alpha": args.network_alpha,
        "network_args": args.network_args, "network_dropout": args.network_dropout,
        "optimizer_type": args.optimizer_type, "optimizer_args": args.optimizer_args,
        "learning_rate": args.learning_rate, "unet_lr": args.unet_lr, "text_encoder_lr": args.text_encoder_lr,
        "lr_scheduler": args.lr_scheduler, "lr_warmup_steps": args.lr_warmup_steps,
        "resolution": args.resolution, "mixed_precision": args.mixed_precision,
        "datasets": _datasets(dataset, args.resolution),
        "batches_per_epoch": plan.batches_per_epoch,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "processes": world, "seed": args.seed,
        "trained_parts": [model.train_unet, model.train_text_encoder],
        # another split trains other images (absent without a split, so older states still resume)
        **({"validation": [args.validation_split, args.validation_seed]} if args.validation_split else {}),
    }
    return json.loads(json.dumps(settings, default=str))


def check_resume_settings(path: str, saved, current: dict, allowed) -> list[str]:
    """Refuse a state whose settings differ, unless each differing key is in ``allowed``; return the keys.

    States written before these keys existed are compared on the keys both know.
    """
    if not isinstance(saved, dict):
        raise CheckpointError(f"--resume {path}: train_state.json has no valid 'fingerprint'; it was not written by "
                              "lorasmith or is damaged")
    diffs = [k for k in current if k in saved and saved[k] != current[k]]
    fixed = [k for k in diffs if k in FIXED]
    if fixed:
        detail = "; ".join(f"{k}: state {saved[k]!r} vs now {current[k]!r}" for k in fixed)
        raise CheckpointError(f"--resume {path}: {detail}; these cannot change within a run (the saved weights or "
                              "optimizer would not fit): resume with the state's values, or start a new run "
                              "(--network_weights can start it from a LoRA)")
    refused = [k for k in diffs if k not in set(allowed or ())]
    if refused:
        detail = "; ".join(f"{k}: state {_short(saved[k])} vs now {_short(current[k])}" for k in refused[:4])
        more = f" (and {len(refused) - 4} more)" if len(refused) > 4 else ""
        raise CheckpointError(f"--resume {path}: this state was trained with other settings ({detail}{more}); resume "
                              "with the same settings, or accept the change with --resume_with_changes "
                              f"{' '.join(refused)}")
    return diffs


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."

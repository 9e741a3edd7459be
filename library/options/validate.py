"""Checks of a complete set of options, before any model or image is loaded.

Why: a typo or an impossible combination should cost the user seconds, not a model load and a
crash twenty minutes in. ``validate`` raises the first ``UserError`` (naming the option, where the
value came from and what to use instead); ``notices`` lists things that are allowed but probably
not what the user meant (kohya prints these as warnings); ``check_paths`` checks that the input
files and folders exist.
"""

from __future__ import annotations

import difflib
import os
from argparse import Namespace
from typing import Any, Dict, List, Mapping, Optional

from ..errors import UserError
from ..output_paths import check_output_name
from .definitions import BY_NAME, LR_SCHEDULERS, OPTIONS, SCHEDULERS_WITHOUT_WARMUP
from .kwargs import check_network_module, literal_value, network_kwargs, split_key_values
from .schema import ConversionError, format_value

_CAPTION_CHANGERS = (  # options that make a caption differ between steps (no text-encoder cache then)
    ("shuffle_caption", lambda v: bool(v)),
    ("caption_dropout_rate", lambda v: v > 0),
    ("caption_dropout_every_n_epochs", lambda v: v > 0),
    ("caption_tag_dropout_rate", lambda v: v > 0),
    ("enable_wildcard", lambda v: bool(v)),
)
_ADAPTIVE_OPTIMIZERS = ("prodigy", "dadapt")


def validate(args: Namespace, script: str = "train_network", sources: Optional[Dict[str, str]] = None,
             *, require_inputs: bool = True) -> None:
    """Raise ``UserError`` for the first impossible or contradictory setting in ``args``.

    ``require_inputs=False`` checks a partial set (``--output_config`` writes a file that may get its
    model, images and resolution later) by every rule except the presence of those."""
    sources = sources or {}
    _check_schema_rules(args, script, sources)
    if require_inputs:
        _check_required(args)
    _check_resolution(args, sources)
    _check_network(args, sources)
    _check_optimizer(args, script, sources)
    _check_precision(args)
    _check_saving(args, sources)
    _check_loss(args)
    _check_class_images(args, sources)
    if script == "sdxl_train_network":
        _check_text_encoder_cache(args)
    if args.log_with in ("tensorboard", "all") and not args.logging_dir:
        raise UserError(f"log_with {args.log_with} writes TensorBoard files, so it needs --logging_dir DIR as well")


def notices(args: Namespace, script: str = "train_network") -> List[str]:
    """Allowed but doubtful settings, as one-line messages (the caller logs them)."""
    out = []
    for option in OPTIONS:
        value = getattr(args, option.name)
        if option.status == "ignored" and value not in (option.default, None, "", False, []):
            out.append(f"{option.name} is accepted for kohya compatibility but does nothing here: {option.help}")
    if args.dataset_config and (args.train_data_dir or args.reg_data_dir):
        out.append("train_data_dir and reg_data_dir are ignored because dataset_config describes the images")
    if args.cache_latents and (args.color_aug or args.random_crop):
        which = " and ".join(n for n in ("color_aug", "random_crop") if getattr(args, n))
        out.append(f"{which} change the pixels every epoch, so latents are not cached although cache_latents is set")
    attention = [n for n in ("mem_eff_attn", "xformers", "sdpa") if getattr(args, n)]
    if len(attention) > 1:
        out.append(f"{' and '.join(attention)} are all set; {attention[0]} is used")
    samples_wanted = args.sample_every_n_steps or args.sample_every_n_epochs or args.sample_at_first
    if samples_wanted and not args.sample_prompts:
        out.append("sample images are requested but --sample_prompts is not set, so none will be made")
    if args.sample_prompts and not samples_wanted:
        out.append("sample_prompts is set but none of sample_every_n_steps/_epochs or sample_at_first, "
                   "so no samples are made")
    if args.mem_eff_attn:
        out.append("mem_eff_attn: PyTorch SDPA attention is used (memory-efficient kernels), lorasmith's default")
    ddp = [n for n in ("ddp_gradient_as_bucket_view", "ddp_static_graph") if getattr(args, n)]
    if ddp:
        out.append(f"{' and '.join(ddp)} are passed to accelerate, but lorasmith averages the LoRA gradients with "
                   "one all-reduce instead of a DDP wrapper, so they change nothing")
    if args.save_n_epoch_ratio and args.save_every_n_epochs:
        out.append("save_n_epoch_ratio wins over save_every_n_epochs (as in kohya)")
    mask_sources = [n for n in ("alpha_mask", "conditioning_data_dir") if getattr(args, n)]
    if mask_sources and not args.masked_loss:
        out.append(f"{' and '.join(mask_sources)} only matter with --masked_loss, which is not set: the whole image counts")
    validation_options = [n for n in ("validate_every_n_steps", "validate_every_n_epochs", "max_validation_steps",
                                      "validation_seed") if getattr(args, n) is not None]
    if validation_options and not args.validation_split and not args.dataset_config:
        out.append(f"{', '.join(validation_options)} do nothing without validation_split (e.g. --validation_split 0.1), "
                   "which holds out the images the validation loss is computed on")
    if args.clip_skip is not None and script == "sdxl_train_network":
        out.append("clip_skip is ignored for SDXL, which always uses the penultimate text-encoder layer")
    elif args.clip_skip is not None and args.clip_skip > 1 and args.v2:
        out.append("clip_skip with an SD 2.x model is unusual (SD 2.x was trained on the penultimate layer already)")
    for flag, needs in (("noise_offset_random_strength", "noise_offset"),
                        ("ip_noise_gamma_random_strength", "ip_noise_gamma")):
        if getattr(args, flag) and not getattr(args, needs):
            out.append(f"{flag} has no effect without --{needs}")
    if args.zero_terminal_snr and not args.v_parameterization:
        out.append("zero_terminal_snr is meant for v_parameterization; with epsilon prediction results may be poor")
    if args.network_train_unet_only and args.text_encoder_lr:
        out.append("text_encoder_lr is unused because network_train_unet_only is set")
    optimizer = args.optimizer_type.lower()
    if optimizer.startswith(_ADAPTIVE_OPTIMIZERS) and args.learning_rate < 0.1:
        out.append(f"{args.optimizer_type} finds its own step size; learning_rate is a multiplier, usually 1.0 "
                   f"(got {args.learning_rate})")
    return out


def check_paths(args: Namespace, sources: Optional[Dict[str, str]] = None) -> None:
    """UserError when an input file or folder named in ``args`` does not exist."""
    sources = sources or {}
    model = args.pretrained_model_name_or_path
    if model is not None and not os.path.exists(model):
        raise UserError(
            f"pretrained_model_name_or_path {model} not found{_from(sources, 'pretrained_model_name_or_path')}; "
            f"give a local .safetensors/.ckpt file or a diffusers folder (lorasmith works offline)"
        )
    filled_reg = args.num_class_images and not args.dataset_config  # a reg folder num_class_images creates
    for name, kind in (("train_data_dir", "dir"), ("reg_data_dir", "new_dir" if filled_reg else "dir"),
                       ("dataset_config", "file"), ("in_json", "file"), ("vae", "any"), ("network_weights", "file"),
                       ("sample_prompts", "file"), ("resume", "dir"), ("log_tracker_config", "file")):
        _check_path(name, getattr(args, name), kind, sources)
    thumbnail = args.metadata_thumbnail
    if thumbnail and not thumbnail.startswith("data:"):
        _check_path("metadata_thumbnail", thumbnail, "file", sources)
    for path in args.base_weights or ():
        _check_path("base_weights", path, "file", sources)
    _check_output_dir(args.output_dir, sources)


def _check_output_dir(path: Optional[str], sources: Dict[str, str]) -> None:
    """The output folder must be a folder we can create or write to: found now, not after training."""
    if not path:
        return
    where = _from(sources, "output_dir")
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"output_dir {path} is a file{where}; give a folder (it is created if missing)")
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UserError(f"output_dir {path} cannot be created{where}: {existing} is a file; choose another folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"output_dir {path} is not writable{where} ({existing} does not allow writing); choose "
                        "another folder or fix its permissions")


# ------------------------------------------------------------------------------------- rules
def _check_schema_rules(args: Namespace, script: str, sources: Dict[str, str]) -> None:
    for option in OPTIONS:
        value = getattr(args, option.name)
        if value is None:
            continue
        if not option.for_script(script) and value not in (option.default, False, []):
            raise UserError(f"{option.name} is set{_from(sources, option.name)} but only applies to "
                            f"{option.scripts[0]}.py; remove it")
        if option.choices:
            bad = [v for v in (value if option.nargs else [value]) if v not in option.choices]
            if bad:
                raise UserError(f"{option.name} must be one of {', '.join(map(str, option.choices))}, got "
                                f"{bad[0]!r}{_from(sources, option.name)}")
        problem = option.range_error(value)
        if problem:
            raise UserError(f"{option.name} {problem}, got {format_value(value)}{_from(sources, option.name)}")
        if option.status == "unsupported" and value != option.default:
            raise UserError(f"{option.name} is not supported by lorasmith{_from(sources, option.name)}: {option.help}")


def _check_required(args: Namespace) -> None:
    if not args.pretrained_model_name_or_path:
        raise UserError("no base model: pass --pretrained_model_name_or_path with a .safetensors/.ckpt checkpoint "
                        "or a diffusers folder")
    if not (args.train_data_dir or args.dataset_config):
        what = "--in_json needs --train_data_dir (the image folder)" if args.in_json else "no training images"
        raise UserError(f"{what}: pass --train_data_dir DIR (NN_name subfolders, NN = repeats) or "
                        f"--dataset_config FILE.toml")
    if args.resolution is None and not args.dataset_config:
        raise UserError("--resolution is not set; use 512 for SD1.x, 768 for SD2.x 768-v models, 1024 for SDXL")


def _check_resolution(args: Namespace, sources: Dict[str, str]) -> None:
    problem = resolution_problem(args.resolution, args.enable_bucket, args.min_bucket_reso, args.max_bucket_reso,
                                 args.bucket_reso_steps, lambda name: _from(sources, name))
    if problem:
        raise UserError(problem)


def resolution_problem(resolution, enable_bucket: bool, min_bucket_reso: int, max_bucket_reso: int,
                       bucket_reso_steps: int, source=lambda name: "") -> Optional[str]:
    """The resolution and bucket rules (kohya's), as one message or None. The command line and every dataset of a
    dataset_config are checked with it (``source(name)`` says where a value came from, for the message)."""
    steps = bucket_reso_steps
    if steps % 8:
        return (f"bucket_reso_steps {steps}{source('bucket_reso_steps')} must be a multiple of 8 "
                f"(the VAE works on 8-pixel blocks); use {_round_to(steps, 8)} or 64")
    if resolution is None:
        return None
    shown = format_value(resolution)
    step = steps if enable_bucket else 8
    why = f"bucket_reso_steps {steps} (enable_bucket is on)" if enable_bucket else "8 (the VAE's block size)"
    for side in resolution:
        if side % step:
            fixes = " or ".join(format_value(_fix(resolution, step, up)) for up in (False, True))
            return f"resolution {shown}{source('resolution')} must be a multiple of {why}; use {fixes}"
    if not enable_bucket:
        return None
    low, high = min_bucket_reso, max_bucket_reso
    if low > high:
        return f"min_bucket_reso {low} is larger than max_bucket_reso {high}; swap them"
    for name, value, fixed in (("min_bucket_reso", low, low - low % steps),
                               ("max_bucket_reso", high, _round_to(high, steps, up=True))):
        if value % steps:
            return f"{name} {value}{source(name)} must be a multiple of bucket_reso_steps {steps}; use {fixed}"
    if min(resolution) < low:
        return (f"min_bucket_reso {low} is larger than the resolution {shown}; lower min_bucket_reso to "
                f"{min(resolution)} or less")
    if max(resolution) > high:
        return (f"max_bucket_reso {high} is smaller than the resolution {shown}; raise max_bucket_reso to "
                f"{max(resolution)} or more")
    return None


def _check_network(args: Namespace, sources: Dict[str, str]) -> None:
    if args.network_train_unet_only and args.network_train_text_encoder_only:
        raise UserError("network_train_unet_only and network_train_text_encoder_only exclude each other; keep one "
                        "(or neither to train both)")
    if args.dim_from_weights and not args.network_weights:
        raise UserError("dim_from_weights needs --network_weights FILE to read the ranks from")
    if args.base_weights_multiplier and len(args.base_weights_multiplier) > len(args.base_weights or ()):
        raise UserError(f"base_weights_multiplier has {len(args.base_weights_multiplier)} values but base_weights "
                        f"lists {len(args.base_weights or ())} files; give one multiplier per file")
    check_network_module(args.network_module)
    network_kwargs(args)  # raises on malformed or unknown network_args


def _check_optimizer(args: Namespace, script: str, sources: Dict[str, str]) -> None:
    optimizer_args = split_key_values(args.optimizer_args, "optimizer_args")
    split_key_values(args.lr_scheduler_args, "lr_scheduler_args")
    scheduler = args.lr_scheduler.strip().lower()
    if scheduler not in LR_SCHEDULERS and "." not in scheduler and not scheduler.startswith("adafactor:"):
        near = difflib.get_close_matches(scheduler, LR_SCHEDULERS, 1, 0.6)
        hint = f"did you mean {near[0]!r}?" if near else "use one of " + ", ".join(LR_SCHEDULERS)
        raise UserError(f"lr_scheduler {args.lr_scheduler!r}{_from(sources, 'lr_scheduler')} is not a known "
                        f"schedule; {hint} (or a class path like torch.optim.lr_scheduler.StepLR)")
    most = 2 if script == "sdxl_train_network" else 1
    if args.text_encoder_lr and len(args.text_encoder_lr) > most:
        detail = "two for SDXL (CLIP-L, then bigG)" if most == 2 else "one (SD1.x/2.x have one text encoder)"
        raise UserError(f"text_encoder_lr has {len(args.text_encoder_lr)} values{_from(sources, 'text_encoder_lr')}; "
                        f"give {detail}")
    for name in ("lr_warmup_steps", "lr_decay_steps"):
        value = getattr(args, name)
        if isinstance(value, float) and not 0 <= value < 1:
            raise UserError(f"{name} {value}{_from(sources, name)} is a fraction of all steps and must be below 1; "
                            f"give a whole step count like {max(1, round(value))} or a fraction like 0.1")
    _check_warmup(args, scheduler, optimizer_args, sources)


def _check_warmup(args: Namespace, scheduler: str, optimizer_args: Dict[str, str], sources: Dict[str, str]) -> None:
    """The scheduler layer refuses a warm-up that would be ignored; say so before the model loads."""
    if not args.lr_warmup_steps or args.lr_scheduler_type:
        return
    optimizer = args.optimizer_type.lower()
    if optimizer.endswith("schedulefree"):
        return  # the optimizer's own warmup_steps takes it
    where = _from(sources, "lr_warmup_steps")
    relative = literal_value(optimizer_args.get("relative_step", "True"))
    if optimizer == "adafactor" and (relative or literal_value(optimizer_args.get("warmup_init", "False"))):
        raise UserError(f"lr_warmup_steps {args.lr_warmup_steps}{where} does nothing with Adafactor's own "
                        f"relative_step schedule; set lr_warmup_steps 0, or use optimizer_args relative_step=False "
                        f"scale_parameter=False warmup_init=False with lr_scheduler constant_with_warmup")
    if scheduler in SCHEDULERS_WITHOUT_WARMUP:
        fix = "constant_with_warmup" if scheduler == "constant" else "a schedule with a warm-up"
        raise UserError(f"lr_warmup_steps {args.lr_warmup_steps}{where} has no effect with lr_scheduler "
                        f"{args.lr_scheduler}; use {fix} or set lr_warmup_steps 0")


def _check_precision(args: Namespace) -> None:
    if args.full_fp16 and args.full_bf16:
        raise UserError("full_fp16 and full_bf16 exclude each other; keep one")
    for flag, dtype in (("full_fp16", "fp16"), ("full_bf16", "bf16")):
        if getattr(args, flag) and args.mixed_precision != dtype:
            raise UserError(f"{flag} needs mixed_precision {dtype} (it is {args.mixed_precision}); set "
                            f"--mixed_precision {dtype} or drop {flag}")
    for flag in ("fp8_base", "fp8_base_unet"):
        if getattr(args, flag) and args.mixed_precision == "no":
            raise UserError(f"{flag} needs mixed_precision fp16 or bf16 to compute in; set --mixed_precision bf16 "
                            "(or fp16 on older GPUs)")


def _check_saving(args: Namespace, sources: Dict[str, str]) -> None:
    if args.save_model_as != "safetensors":
        raise UserError(f"save_model_as {args.save_model_as}{_from(sources, 'save_model_as')} is not supported: "
                        f"lorasmith writes .safetensors only (it loads everywhere .{args.save_model_as} did); "
                        f"set save_model_as = \"safetensors\"")
    name = args.output_name
    if name is not None:
        check_output_name(name, args.output_dir)  # hidden, control characters, separators, too long: before any load
        if name.lower().endswith((".safetensors", ".ckpt", ".pt")):
            stem = os.path.splitext(name)[0]
            raise UserError(f"output_name {name!r} must not end in a file extension; use {stem!r}")


def _check_loss(args: Namespace) -> None:
    if args.adaptive_noise_scale is not None and not args.noise_offset:
        raise UserError("adaptive_noise_scale adds to noise_offset, so it needs --noise_offset above 0 too (e.g. 0.1)")
    if args.scale_v_pred_loss_like_noise_pred and not args.v_parameterization:
        raise UserError("scale_v_pred_loss_like_noise_pred only applies with --v_parameterization; drop it")
    if args.v_pred_like_loss and args.v_parameterization:
        raise UserError("v_pred_like_loss is for epsilon models and cannot be used with --v_parameterization; drop it")
    if args.loss_type in ("huber", "smooth_l1") and not args.huber_c > 0:
        raise UserError(f"huber_c must be greater than 0 with loss_type {args.loss_type} (got {args.huber_c}); "
                        "0.1 is kohya's default")
    low, high = args.min_timestep, args.max_timestep
    if low is not None and high is not None and low >= high:
        raise UserError(f"min_timestep {low} must be below max_timestep {high}: timesteps are drawn from "
                        f"[min_timestep, max_timestep), max_timestep excluded")
    check_snr_weighting(args.zero_terminal_snr, args.debiased_estimation_loss, args.v_pred_like_loss,
                        args.v_parameterization)


def check_noise_and_loss(values: Mapping[str, Any], num_train_timesteps: int = 1000) -> None:
    """The noise and loss options' rules on a set of values (missing options at their defaults): each value's
    schema range and choices, then the combinations ``validate`` checks. The trainer runs it again once the model
    is loaded, with the model's own prediction type and schedule length (library.train.losses.check_options)."""
    for name, value in values.items():
        option = BY_NAME[name]
        try:
            converted = option.from_value(value) if option.choices else value
        except ConversionError as e:
            raise UserError(f"{name} {e}") from None
        problem = option.range_error(converted)
        if problem:
            raise UserError(f"{name} {problem}, got {format_value(converted)}")
    _check_loss(Namespace(**{**{o.name: o.default for o in OPTIONS}, **values}))
    for name in ("min_timestep", "max_timestep"):
        value = values.get(name)
        if value is not None and value > num_train_timesteps - (name == "min_timestep"):
            raise UserError(f"{name} {value} is beyond the model's {num_train_timesteps} timesteps; use at most "
                            f"{num_train_timesteps - (name == 'min_timestep')}")


def check_snr_weighting(zero_terminal_snr, debiased_estimation_loss, v_pred_like_loss, v_parameterization) -> None:
    """The one rule for loss weights that divide by SNR under --zero_terminal_snr (SNR reaches 0 at the last
    timestep, so they become infinite). Checked on the options here, and again by the trainer once the
    model's own prediction type is known (library.train.losses.check_options)."""
    if not zero_terminal_snr:
        return
    if debiased_estimation_loss and not v_parameterization:
        raise UserError("--debiased_estimation_loss weights by 1/sqrt(SNR), which --zero_terminal_snr drives to "
                        "infinity near the last timestep: add --v_parameterization or drop one of them")
    if v_pred_like_loss:
        raise UserError("--v_pred_like_loss weights by (SNR+1)/SNR, which --zero_terminal_snr drives to "
                        "infinity near the last timestep: drop one of them")


def _check_class_images(args: Namespace, sources: Dict[str, str]) -> None:
    """num_class_images draws class_prompt into reg_data_dir: it needs both, and not a dataset_config."""
    if not args.num_class_images:
        return
    where = _from(sources, "num_class_images")
    if args.dataset_config:
        raise UserError(f"num_class_images{where} fills reg_data_dir, which dataset_config replaces; fill a reg "
                        "subset's image_dir with tools/make_class_images.py instead")
    if not args.reg_data_dir:
        raise UserError(f"num_class_images{where} needs --reg_data_dir, the folder the class images go into")
    if not (args.class_prompt or "").strip():
        raise UserError(f"num_class_images{where} needs --class_prompt, what the class images show "
                        "(e.g. \"a photo of a dog\"); it is also their caption")


def _check_text_encoder_cache(args: Namespace) -> None:
    if not args.cache_text_encoder_outputs:
        return
    changing = [name for name, test in _CAPTION_CHANGERS if test(getattr(args, name))]
    if changing:
        raise UserError(f"cache_text_encoder_outputs needs captions that never change, but {', '.join(changing)} "
                        f"change them every step; turn those off or drop cache_text_encoder_outputs")
    if not args.network_train_unet_only:
        raise UserError("cache_text_encoder_outputs frees the text encoders, so they cannot be trained; add "
                        "--network_train_unet_only or drop cache_text_encoder_outputs")


# ------------------------------------------------------------------------------------- helpers
def _from(sources: Dict[str, str], name: str) -> str:
    source = sources.get(name)
    return f" (from {source})" if source else ""


def _check_path(name: str, path: Optional[str], kind: str, sources: Dict[str, str]) -> None:
    """kind: "file", "dir", "any", or "new_dir" (a folder the run creates when missing, e.g. the reg folder
    num_class_images fills; its layout is checked by the fill, library/train/class_images.py)."""
    if path is None:
        return
    where = _from(sources, name)
    if kind == "new_dir" and not os.path.exists(path):
        return
    if not os.path.exists(path):
        raise UserError(f"{name} {path} not found{where}; check the path")
    if kind in ("dir", "new_dir") and not os.path.isdir(path):
        raise UserError(f"{name} {path} is a file{where}; it must be a folder")
    if kind == "file" and not os.path.isfile(path):
        raise UserError(f"{name} {path} is a folder{where}; it must be a file")


def _round_to(value: int, step: int, up: bool = False) -> int:
    low = max(step, value - value % step)
    return low + step if up and value % step else low


def _fix(resolution, step: int, up: bool):
    return tuple(_round_to(side, step, up) for side in resolution)

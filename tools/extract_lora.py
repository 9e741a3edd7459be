"""Extract a LoRA from the difference of two checkpoints by SVD (kohya's networks/extract_lora_from_models.py).

    python tools/extract_lora.py --model_org base.safetensors --model_tuned tuned.safetensors \\
        --save_to extracted.safetensors --dim 32 [--conv_dim 16] [--clamp_quantile 0.99] [--min_diff 0.01]

The modules are the ones networks.lora trains (same names, so the file loads everywhere a
trained LoRA does); the text encoders are included only when they differ by more than
``--min_diff``. The family (SD1/SD2/SDXL) is detected; both models must share it.
See docs/tools/extract_lora.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from library.errors import UserError, run_reporting_user_errors  # noqa: E402
from library.merge.tool_args import add_device_option, add_output_options, check_device, dtype_of  # noqa: E402
from library.merge.lora_extract import extract_tensors, lora_networks, module_diffs  # noqa: E402
from library.output_paths import check_tool_output  # noqa: E402
from networks.lora_file import save_lora_file  # noqa: E402
from library.options.schema import finite_float  # noqa: E402


def _check_models(org, tuned, args) -> None:
    if org.family != tuned.family:
        raise UserError(
            f"--model_tuned {args.model_tuned} is an {tuned.family} model but --model_org {args.model_org} is {org.family}; "
            "extract from two models of the same family (the fine-tune and the base it was trained from)"
        )
    for part in ("unet", "text_encoders"):
        if json.dumps(org.configs[part], sort_keys=True) != json.dumps(tuned.configs[part], sort_keys=True):
            raise UserError(
                f"--model_tuned {args.model_tuned} and --model_org {args.model_org} have different {part} shapes; "
                "pass the base model the fine-tune was made from"
            )


def extracted_metadata(org, args, save_to: str) -> dict[str, str]:
    from networks import lora_format

    net_args = {"conv_dim": lora_format.format_dim(args.conv_dim), "conv_alpha": lora_format.format_alpha(args.conv_dim)} if args.conv_dim else {}
    meta = lora_format.minimum_network_metadata(org.family, org.model_version, "networks.lora", args.dim, args.dim, net_args)
    meta["ss_training_comment"] = (f"extracted by lorasmith from {Path(args.model_tuned).name} - "
                                   f"{Path(args.model_org).name}")
    if not args.no_metadata:
        size = lora_format.default_resolution(org.family, org.v_parameterization)
        meta.update(lora_format.modelspec(org.family, org.v_parameterization, Path(save_to).stem, size))
    return meta


def _check_args(args) -> str | None:
    if not args.save_to.endswith(".safetensors"):
        raise UserError(f"--save_to {args.save_to}: LoRA files are written as .safetensors; use a name ending in .safetensors")
    check_tool_output(args.save_to, [args.model_org, args.model_tuned], "lora", args.overwrite)
    if args.dim < 1 or (args.conv_dim is not None and args.conv_dim < 1):
        raise UserError("--dim and --conv_dim must be 1 or more")
    if not 0 < args.clamp_quantile <= 1:
        raise UserError(f"--clamp_quantile {args.clamp_quantile}: must be in (0, 1]; 1 turns clamping off")
    if args.min_diff < 0:
        raise UserError(f"--min_diff {args.min_diff}: must be 0 or more")
    args.device = check_device(args.device)  # an empty name means the default
    forced = [f for f, on in (("sdxl", args.sdxl), ("sd2", args.v2)) if on]
    if args.family != "auto":
        forced.append(args.family)
    if len(set(forced)) > 1:
        raise UserError(f"--sdxl/--v2/--family disagree ({', '.join(forced)}); give one family")
    return forced[0] if forced else None


def extract(args) -> str:
    from library.models import load_base_model

    family = _check_args(args)
    org = load_base_model(args.model_org, family=family, dtype=None)
    tuned = load_base_model(args.model_tuned, family=family, dtype=None)
    _check_models(org, tuned, args)
    net_o, net_t = lora_networks(org, tuned, args.dim, args.conv_dim)
    diffs, te_different, te_max = module_diffs(net_o, net_t, args.min_diff)
    if all(not bool(d.any()) for _, d in diffs):
        raise UserError(
            f"--model_tuned {args.model_tuned} has the same weights as --model_org {args.model_org} in every LoRA-able layer; "
            "there is nothing to extract (pass the fine-tuned model)"
        )
    if not te_different and net_o.text_encoder_loras:
        print(f"text encoder is the same (max |diff| {te_max:.3g} <= --min_diff {args.min_diff}): extracting the UNet only")
    tensors, retained = extract_tensors(diffs, args.dim, args.conv_dim, args.clamp_quantile, args.device, args.svd_lowrank_niter)
    dtype = dtype_of(args.save_precision)
    save_lora_file(tensors, args.save_to, extracted_metadata(org, args, args.save_to), dtype)
    worst = min(retained, key=retained.get)
    mean = sum(retained.values()) / len(retained)
    te = sum(1 for n in retained if n.startswith("lora_te"))
    size = os.path.getsize(args.save_to) / 1e6
    return (f"extracted {len(retained)} modules ({te} text encoder, {len(retained) - te} UNet) of {org.family} at rank {args.dim}"
            f"{f' (conv {args.conv_dim})' if args.conv_dim else ''}; Frobenius norm of the difference retained: "
            f"mean {mean:.2%}, lowest {retained[worst]:.2%} ({worst})\nwrote {args.save_to} ({size:.2f} MB)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_org", required=True, help="the base model (single file or diffusers folder)")
    p.add_argument("--model_tuned", required=True, help="the fine-tuned model; the LoRA is tuned - org")
    p.add_argument("--save_to", required=True, help="output .safetensors (written atomically)")
    p.add_argument("--dim", type=int, default=4, help="rank of Linear and 1x1-conv modules (default 4); alpha = rank")
    p.add_argument("--conv_dim", type=int, default=None, help="also extract 3x3 convs (LoCon) at this rank (default: not)")
    p.add_argument("--clamp_quantile", type=finite_float, default=0.99, help="clamp factor values to this quantile as kohya does; 1 = no clamping")
    p.add_argument("--min_diff", type=finite_float, default=0.01, help="text encoders are extracted only if a weight differs by more than this")
    p.add_argument("--family", choices=("auto", "sd1", "sd2", "sdxl"), default="auto", help="base model family (default: detected)")
    p.add_argument("--sdxl", action="store_true", help="kohya's flag: the models are SDXL (detected anyway)")
    p.add_argument("--v2", action="store_true", help="kohya's flag: the models are SD2 (detected anyway)")
    p.add_argument("--v_parameterization", action="store_true", default=None, help="accepted for kohya commands; read from the model")
    add_device_option(p)
    p.add_argument("--svd_lowrank_niter", type=int, default=2, help="randomised SVD iterations for weights over 2048x2048 (0 = exact)")
    p.add_argument("--no_metadata", action="store_true", help="write only the ss_* fields (no modelspec)")
    add_output_options(p, "float")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_reporting_user_errors(lambda: print(extract(args)), args.debug)


if __name__ == "__main__":
    sys.exit(main())

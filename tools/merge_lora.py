"""Merge LoRAs into a checkpoint, or several LoRAs into one LoRA (kohya merge_lora.py / svd_merge_lora.py).

    # bake two LoRAs into a base model (an original-layout single file for ComfyUI/A1111)
    python tools/merge_lora.py --sd_model sd15.safetensors --models a.safetensors b.safetensors \\
        --ratios 0.8 0.5 --save_to sd15_ab.safetensors --save_precision fp16
    # one LoRA from two: exact (ranks add up) ...
    python tools/merge_lora.py --models a.safetensors b.safetensors --ratios 1 0.5 --save_to ab.safetensors
    # ... or SVD to a fixed rank
    python tools/merge_lora.py --models a.safetensors b.safetensors --new_rank 32 --new_conv_rank 16 --save_to ab32.safetensors

See docs/tools/merge_lora.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from library.devices import dtype_of  # noqa: E402
from library.errors import UserError, run_reporting_user_errors  # noqa: E402
from library.options.schema import finite_float  # noqa: E402
from library.merge.tool_args import add_device_option, add_output_options  # noqa: E402
from library.output_paths import check_tool_output  # noqa: E402
from library.vocabulary import SAVE_PRECISIONS  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", required=True, help="LoRA files (.safetensors) to merge")
    p.add_argument("--ratios", nargs="+", type=finite_float, default=None, help="one weight per LoRA (default 1.0 each; negatives allowed)")
    p.add_argument("--save_to", required=True, help="output .safetensors (written atomically)")
    p.add_argument("--sd_model", default=None, help="base checkpoint or diffusers folder: merge the LoRAs into it; without it, LoRAs merge into one LoRA")
    p.add_argument("--precision", choices=SAVE_PRECISIONS, default="float", help="accepted for kohya commands; merging always computes in float32")
    p.add_argument("--new_rank", type=int, default=None, help="LoRA merge by SVD to this rank (default: exact merge, ranks add up)")
    p.add_argument("--new_conv_rank", type=int, default=None, help="SVD rank of 3x3 conv (LoCon) modules (default: --new_rank)")
    p.add_argument("--clamp_quantile", type=finite_float, default=0.99, help="SVD: clamp values to this quantile as kohya does; 1 = no clamping")
    p.add_argument("--concat", action="store_true", help="accepted for kohya commands; the exact rank-concatenating merge is the default")
    p.add_argument("--v2", action="store_true", help="accepted for kohya commands; the family is detected from the file")
    add_device_option(p)
    p.add_argument("--no_metadata", action="store_true", help="write only the minimum ss_network_* metadata")
    add_output_options(p, "checkpoint merges keep the base file's dtype, LoRA merges write float")
    return p


def merge_into_checkpoint(args) -> str:
    """Load the base, add every LoRA's delta, save an original-layout single file."""
    from library.merge.lora_merge import merge_loras_into_model
    from library.models import load_base_model, save_base_model
    from networks.lora_format import default_resolution, modelspec

    if args.new_rank is not None or args.new_conv_rank is not None:
        raise UserError("--new_rank/--new_conv_rank shape a merged LoRA; leave them out when merging into --sd_model")
    out = Path(args.save_to)
    save_dtype = dtype_of(args.save_precision)
    model = load_base_model(args.sd_model, dtype=save_dtype)  # None keeps the file's dtype; deltas add in float32
    merge_loras_into_model(model, args.models, args.ratios)
    meta = {k: v for k, v in model.metadata.items() if "hash" not in k.lower()}
    if not args.no_metadata:
        size = default_resolution(model.family, model.v_parameterization)
        spec = modelspec(model.family, model.v_parameterization, out.stem, size)
        spec["modelspec.architecture"] = spec["modelspec.architecture"].removesuffix("/lora")
        meta.update(spec)
        meta["modelspec.merged_from"] = ", ".join(Path(p).stem for p in [args.sd_model, *args.models])
        ratios = args.ratios or [1.0] * len(args.models)
        meta["lorasmith.merge"] = json.dumps({"mode": "lora_into_checkpoint", "base": Path(args.sd_model).name,
                                              "models": [Path(p).name for p in args.models], "ratios": ratios})
    save_base_model(model, out, dtype=save_dtype, metadata=meta)
    return f"wrote {out} ({model.family} checkpoint with {len(args.models)} LoRA(s) merged)"


def merge_loras(args) -> str:
    from library.merge.lora_merge import merge_loras_to_file
    from library.merge.tool_args import check_device

    device = check_device(args.device)
    tensors = merge_loras_to_file(
        args.models, args.ratios, args.save_to, new_rank=args.new_rank, new_conv_rank=args.new_conv_rank,
        clamp_quantile=args.clamp_quantile, save_dtype=dtype_of(args.save_precision), device=device,
        no_metadata=args.no_metadata,
    )
    ranks = sorted({int(t.shape[0]) for k, t in tensors.items() if k.endswith("lora_down.weight")})
    how = "exact concat" if args.new_rank is None else f"SVD to rank {args.new_rank}"
    return f"wrote {args.save_to} ({len(tensors) // 3} modules, rank {ranks[0]}-{ranks[-1]}, {how})"


def check_output(args) -> None:
    """--save_to is never an input, nor an existing file of another kind (library.output_paths)."""
    kind = "checkpoint" if args.sd_model else "lora"
    check_tool_output(args.save_to, [*args.models, args.sd_model], kind, args.overwrite)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_reporting_user_errors(lambda: check_output(args) or print(merge_into_checkpoint(args) if args.sd_model else merge_loras(args)), args.debug)


if __name__ == "__main__":
    sys.exit(main())

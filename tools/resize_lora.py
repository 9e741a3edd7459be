"""Resize a LoRA to a lower rank by SVD (kohya's networks/resize_lora.py, same options).

    python tools/resize_lora.py --model in.safetensors --save_to out.safetensors --new_rank 8 [--new_conv_rank 4]
    python tools/resize_lora.py --model in.safetensors --save_to out.safetensors --new_rank 32 \\
        --dynamic_method sv_fro --dynamic_param 0.9 --verbose

Each module's delta ``up @ down * alpha/r`` is decomposed exactly and truncated; the new
alpha is ``alpha/r * new_r`` so the kept part of the delta is unchanged. See docs/tools/resize_lora.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from library.errors import UserError, run_reporting_user_errors  # noqa: E402
from library.merge.tool_args import add_device_option, add_output_options, check_device, dtype_of  # noqa: E402
from library.merge.lora_resize import ModuleResize, resize_modules  # noqa: E402
from networks import lora_format, lora_svd  # noqa: E402
from library.output_paths import check_tool_output  # noqa: E402
from networks.lora_file import LoRAFileError, read_lora_file, require_plain_lora, save_lora_file  # noqa: E402
from library.options.schema import finite_float  # noqa: E402


def _pairs(tensors: dict[str, torch.Tensor], path: str) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor, float | None]], list[str]]:
    """{module: (down, up, alpha or None)} of a kohya file, and the keys that are none of these."""
    modules, other = lora_format.group_modules(tensors)
    if not any(m.get("down") is not None for m in modules.values()):
        sample = ", ".join(list(tensors)[:3])
        raise LoRAFileError(
            f"{path}: no kohya LoRA keys (<name>.lora_down.weight) found (keys look like: {sample}); "
            "convert diffusers/PEFT files first with tools/convert_lora.py --to kohya"
        )
    out = {}
    for name, slots in modules.items():
        down, up, alpha = slots.get("down"), slots.get("up"), slots.get("alpha")
        if down is None or up is None:
            missing = "lora_up" if up is None else "lora_down"
            raise LoRAFileError(f"{path}: module {name} has no {missing}.weight; the file is damaged, re-download or re-save it")
        if down.shape[0] != up.shape[1]:
            raise LoRAFileError(f"{path}: module {name} has lora_down rank {down.shape[0]} but lora_up rank {up.shape[1]}; the file is damaged")
        a = None if alpha is None else float(alpha.float().item())
        out[name] = (down, up, a)
    return out, other


def resize_lora_tensors(
    tensors: dict[str, torch.Tensor],
    new_rank: int,
    new_conv_rank: int | None = None,
    dynamic_method: str | None = None,
    dynamic_param: float | None = None,
    device="cpu",
    path: str = "<weights>",
) -> tuple[dict[str, torch.Tensor], list[ModuleResize]]:
    """Resized kohya tensors (float32; keys that are not LoRA factors kept as they are) and one ModuleResize per module."""
    modules, other = _pairs(tensors, path)
    out, rows = resize_modules(modules, new_rank, new_conv_rank, dynamic_method, dynamic_param, device)
    return {**{k: tensors[k] for k in other}, **out}, rows


def resized_metadata(metadata: dict[str, str], resized: dict[str, torch.Tensor], rows: list[ModuleResize], args) -> dict[str, str]:
    """The input's metadata with ss_network_dim/alpha/args (networks/lora_format.py's summary of the resized
    tensors; "Dynamic" with a dynamic method, as kohya) and ss_training_comment updated (kohya's wording)."""
    meta = {k: v for k, v in metadata.items() if not k.startswith("sshs_")}
    comment = meta.get("ss_training_comment", "")
    old = max(r.old_rank for r in rows)
    dim, alpha, conv_args = lora_format.network_summary(resized)
    if args.dynamic_method:
        meta["ss_training_comment"] = f"Dynamic resize with {args.dynamic_method}: {args.dynamic_param} from {old}; {comment}"
        dim = alpha = lora_format.DYNAMIC
    else:
        conv_rank = args.new_conv_rank if args.new_conv_rank is not None else args.new_rank
        conv_desc = "" if conv_rank == args.new_rank else f" (conv: {conv_rank})"
        meta["ss_training_comment"] = f"dimension is resized from {old} to {args.new_rank}{conv_desc}; {comment}"
    meta["ss_network_dim"], meta["ss_network_alpha"] = dim, alpha
    try:
        net_args = json.loads(meta.get("ss_network_args", "") or "{}")
    except json.JSONDecodeError:
        net_args = None
    if isinstance(net_args, dict) and conv_args and "conv_dim" in net_args:
        net_args.update(conv_args)
        meta["ss_network_args"] = json.dumps(net_args)
    return meta


def _verbose_line(r: ModuleResize, dynamic: bool) -> str:
    line = (f"{r.name:75} | sum(S) retained: {r.sum_retained:.1%}, fro retained: {r.fro_retained:.1%}, "
            f"max(S) ratio: {r.max_ratio:0.1f}")
    if dynamic:
        line += f", dynamic | dim: {r.new_rank}, alpha: {r.new_alpha:g}"
    return line


def summary(rows: list[ModuleResize], save_to: str) -> str:
    fro = [r.fro_retained for r in rows]
    worst = min(rows, key=lambda r: r.fro_retained)
    old = sorted({r.old_rank for r in rows})
    new = sorted({r.new_rank for r in rows})
    span = lambda v: str(v[0]) if len(v) == 1 else f"{v[0]}-{v[-1]}"  # noqa: E731
    mean = sum(fro) / len(fro)
    std = (sum((f - mean) ** 2 for f in fro) / len(fro)) ** 0.5
    size = os.path.getsize(save_to) / 1e6 if os.path.exists(save_to) else 0.0
    return (f"resized {len(rows)} modules: rank {span(old)} -> {span(new)}; Frobenius norm retained: "
            f"mean {mean:.2%} (std {std:.3f}), lowest {worst.fro_retained:.2%} ({worst.name})\n"
            f"wrote {save_to} ({size:.2f} MB)")


def _check_args(args) -> None:
    args.device = check_device(args.device)  # an empty name means the default
    if not args.save_to.endswith(".safetensors"):
        raise UserError(f"--save_to {args.save_to}: LoRA files are written as .safetensors; use a name ending in .safetensors")
    check_tool_output(args.save_to, [args.model], "lora", args.overwrite)
    if args.new_rank < 1 or (args.new_conv_rank is not None and args.new_conv_rank < 1):
        raise UserError("--new_rank and --new_conv_rank must be 1 or more")
    if args.dynamic_method and args.dynamic_param is None:
        raise UserError(f"--dynamic_method {args.dynamic_method} needs --dynamic_param (e.g. sv_fro 0.9, sv_ratio 20)")
    if args.dynamic_param is not None and not args.dynamic_method:
        raise UserError("--dynamic_param is used only with --dynamic_method (sv_ratio, sv_fro or sv_cumulative)")
    if args.dynamic_method == "sv_ratio" and args.dynamic_param < 1:
        raise UserError(f"--dynamic_param {args.dynamic_param}: sv_ratio keeps singular values above S[0]/param; use 1 or more (e.g. 20)")
    if args.dynamic_method in ("sv_fro", "sv_cumulative") and not 0 < args.dynamic_param <= 1:
        raise UserError(f"--dynamic_param {args.dynamic_param}: {args.dynamic_method} is the fraction to keep; use a value in (0, 1] (e.g. 0.9)")


def resize(args) -> str:
    _check_args(args)
    tensors, metadata = read_lora_file(args.model)
    require_plain_lora(tensors, args.model, "resize_lora.py")
    resized, rows = resize_lora_tensors(
        tensors, args.new_rank, args.new_conv_rank, args.dynamic_method, args.dynamic_param, args.device, args.model
    )
    if args.verbose:
        for r in rows:
            print(_verbose_line(r, bool(args.dynamic_method)))
    if args.save_precision:
        dtype = dtype_of(args.save_precision)
    else:  # the input's dtype: an fp16 file stays fp16
        dtype = next(v.dtype for k, v in tensors.items() if k.endswith(".lora_down.weight"))
    save_lora_file(resized, args.save_to, resized_metadata(metadata, resized, rows, args), dtype)
    return summary(rows, args.save_to)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="kohya-format LoRA to resize (.safetensors)")
    p.add_argument("--save_to", required=True, help="output .safetensors (written atomically)")
    p.add_argument("--new_rank", type=int, default=4, help="rank of Linear/1x1 modules; the cap with --dynamic_method (default 4)")
    p.add_argument("--new_conv_rank", type=int, default=None, help="rank of 3x3 conv (LoCon) modules (default: --new_rank)")
    p.add_argument("--dynamic_method", choices=lora_svd.DYNAMIC_METHODS, default=None,
                   help="pick each module's rank from its singular values (capped by --new_rank/--new_conv_rank)")
    p.add_argument("--dynamic_param", type=finite_float, default=None,
                   help="sv_ratio: keep S > S[0]/param; sv_fro: keep this fraction of the Frobenius norm; sv_cumulative: of sum(S)")
    add_device_option(p)
    p.add_argument("--svd_lowrank_niter", type=int, default=2, help="accepted for kohya commands; the SVD here is always exact and cheap")
    p.add_argument("--verbose", action="store_true", help="print each module's retained singular values")
    add_output_options(p, "the input's")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_reporting_user_errors(lambda: print(resize(args)), args.debug)


if __name__ == "__main__":
    sys.exit(main())

"""Convert LoRA files between kohya format and diffusers/PEFT format (both directions).

    # a diffusers / PEFT / SimpleLoRA / attention-processor LoRA -> kohya (for A1111, ComfyUI, our trainer)
    python tools/convert_lora.py --input pytorch_lora_weights.safetensors --save_to my_lora.safetensors
    python tools/convert_lora.py --input old_lora.bin --save_to my_lora.safetensors --from attn_procs
    # kohya -> diffusers (a folder gets pytorch_lora_weights.safetensors)
    python tools/convert_lora.py --input my_lora.safetensors --to diffusers --save_to my_lora_diffusers/

Module names are mapped from the names alone; ``--model`` (the base checkpoint) is needed
only when they do not tell SD1/SD2 from SDXL, and checks every module against the model.
Keys that cannot be converted are listed and nothing is written (exit 1) unless
``--allow_unmapped``. See docs/tools/convert_lora.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from library.devices import dtype_of  # noqa: E402
from library.merge.tool_args import add_output_options  # noqa: E402
from library.errors import UserError  # noqa: E402
from library.vocabulary import base_model_version  # noqa: E402
from networks import lora_convert as lc  # noqa: E402
from networks import lora_format, lora_names  # noqa: E402
from library.output_paths import check_tool_output  # noqa: E402
from networks.lora_file import save_lora_file  # noqa: E402

SHOW_UNMAPPED = 40


class ModelInfo:
    """What --model tells the converter: SDXL or not, the UNet block layout, every LoRA-able layer's shape."""

    def __init__(self, path: str, family: str | None):
        from library.models import load_base_model
        from library.models.unet_layout import UNetLayout
        from networks.lora import LoRANetwork
        from networks.lora_ranks import RankResolver

        model = load_base_model(path, family=family, dtype=torch.float16)
        self.family, self.model_version, self.is_sdxl = model.family, model.model_version, model.is_sdxl
        self.layout = UNetLayout.from_config(model.unet.config)
        net = LoRANetwork(model.text_encoders, model.unet, RankResolver(1, 1.0, conv_dim=1, conv_alpha=1.0))
        self.shapes = {lora.lora_name: tuple(lora.org_module.weight.shape) for lora in net.all_loras}


def kohya_metadata(weights: lc.LoRAWeights, tensors: dict, sdxl: bool, model: ModelInfo | None, family: str | None) -> dict[str, str]:
    """Source metadata (ss_* kept) plus the ss_network_* / base-model fields kohya tools expect."""
    meta = {k: v for k, v in weights.metadata.items() if k not in (lc.ADAPTER_METADATA_KEY, "format") and not k.startswith("sshs_")}
    fam = model.family if model else (family or ("sdxl" if sdxl else "sd1"))
    dim, alpha, conv_args = lora_format.network_summary(tensors)
    version = model.model_version if model else base_model_version(fam)
    for key, value in lora_format.minimum_network_metadata(fam, version, "networks.lora", dim, alpha, conv_args).items():
        meta.setdefault(key, value)
    if weights.format != "kohya":
        note = f"converted from {weights.format} format by lorasmith tools/convert_lora.py"
        meta["ss_training_comment"] = f"{note}; {meta['ss_training_comment']}" if meta.get("ss_training_comment") else note
    return meta


def _report_unmapped(unmapped: list[str], source: str, allowed: bool) -> None:
    print(f"{len(unmapped)} key(s) of {source} could not be converted:", file=sys.stderr)
    for line in unmapped[:SHOW_UNMAPPED]:
        print(f"  {line}", file=sys.stderr)
    if len(unmapped) > SHOW_UNMAPPED:
        print(f"  ... and {len(unmapped) - SHOW_UNMAPPED} more", file=sys.stderr)
    if allowed:
        print("warning: --allow_unmapped: writing the modules that could be converted", file=sys.stderr)


def _decide_sdxl(weights: lc.LoRAWeights, args, model: ModelInfo | None) -> bool:
    by_names = lc.decide_sdxl(weights)
    forced = model.is_sdxl if model else (args.family == "sdxl" if args.family else None)
    if forced is not None:
        if weights.sdxl is not None and weights.sdxl != forced:
            what = "an SDXL" if weights.sdxl else "an SD1/SD2"
            given = f"--model {args.model}" if model else f"--family {args.family}"
            raise UserError(f"{args.input}: its module names make it {what} LoRA, but {given} says otherwise; use a matching base model")
        return forced
    if by_names is None:
        raise UserError(
            f"{args.input}: the module names do not tell an SD1/SD2 LoRA from an SDXL one; "
            "pass --model <base checkpoint> (or --family sd1|sd2|sdxl)"
        )
    return by_names


def _family_layout(family: str | None):
    if family is None:
        return None
    return lora_names.SDXL_LAYOUT if family == "sdxl" else lora_names.SD_LAYOUT


def _output_path(args) -> Path:
    out = Path(args.save_to)
    if args.to == "diffusers" and out.suffix != ".safetensors":
        return out / lc.DIFFUSERS_WEIGHT_NAME
    if out.suffix != ".safetensors":
        raise UserError(f"--save_to {out}: LoRA files are written as .safetensors; use a name ending in .safetensors")
    return out


def convert(args) -> int:
    if args.model and args.family:
        raise UserError("--model and --family both set the base model family; give only one")
    check_tool_output(args.save_to, [args.input, args.model, args.adapter_config], None)  # before reading anything
    tensors, metadata, config = lc.read_any(args.input)
    if args.adapter_config:
        config = lc.read_adapter_config(args.adapter_config)
    fmt = lc.detect_format(tensors, config, args.input) if args.source_format == "auto" else args.source_format
    to = args.to or ("diffusers" if fmt == "kohya" else "kohya")
    args.to = to
    if fmt == "kohya" and to == "kohya":
        raise UserError(f"{args.input}: is already a kohya LoRA; use --to diffusers to convert it")
    out_path = _output_path(args)
    check_tool_output(str(out_path), [args.input, args.model, args.adapter_config], "lora", args.overwrite)
    model = ModelInfo(args.model, None) if args.model else None
    layout = model.layout if model else _family_layout(args.family)
    weights = lc.parse(tensors, metadata, config, fmt, layout, args.input)
    # the family matters for kohya names (and for checking against --model); diffusers paths do not depend on it
    sdxl = _decide_sdxl(weights, args, model) if to == "kohya" or model or args.family else lc.decide_sdxl(weights)
    if model:
        lc.check_against_model(weights, sdxl, layout, model.shapes)
    if to == "kohya":
        out, more = lc.to_kohya(weights, sdxl, layout)
        unmapped = weights.unmapped + more
    else:
        out, adapter_meta = lc.to_diffusers(weights)
        unmapped = weights.unmapped
    if unmapped:
        _report_unmapped(unmapped, args.input, args.allow_unmapped)
        if not args.allow_unmapped:
            print("error: nothing was written; fix the input, pass --model to check the names against a base model, "
                  "or pass --allow_unmapped to write the modules that converted", file=sys.stderr)
            return 1
    if not out:
        raise UserError(f"{args.input}: no module could be converted; nothing to write")
    dtype = dtype_of(args.save_precision)
    if to == "kohya":
        save_lora_file(out, str(out_path), kohya_metadata(weights, out, sdxl, model, args.family), dtype)
    else:
        meta = {k: v for k, v in weights.metadata.items() if k != lc.ADAPTER_METADATA_KEY and not k.startswith("sshs_")}
        meta.update({"format": "pt", lc.ADAPTER_METADATA_KEY: json.dumps(adapter_meta, indent=2, sort_keys=True)})
        save_lora_file(out, str(out_path), meta, dtype)
    counts: dict[str, int] = {}
    for component, _ in weights.modules:
        counts[component] = counts.get(component, 0) + 1
    parts = ", ".join(f"{c} {counts[c]}" for c in lora_names.COMPONENTS if c in counts)
    family = {True: "SDXL ", False: "SD1/SD2 ", None: ""}[sdxl]
    print(f"converted {len(weights.modules)} {family}modules ({parts}) from {fmt} to {to}; wrote {out_path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, help="LoRA file (.safetensors, or a diffusers .bin) or a diffusers/PEFT output folder")
    p.add_argument("--save_to", required=True, help="output .safetensors; with --to diffusers also a folder (gets pytorch_lora_weights.safetensors)")
    p.add_argument("--from", dest="source_format", choices=("auto",) + lc.FORMATS, default="auto", help="input format (default: detected)")
    p.add_argument("--to", choices=("kohya", "diffusers"), default=None, help="output format (default: kohya for non-kohya input, else diffusers)")
    p.add_argument("--model", default=None, help="base checkpoint or diffusers folder: decides SD1/SD2 vs SDXL and checks every module")
    p.add_argument("--family", choices=("sd1", "sd2", "sdxl"), default=None, help="base model family, when the names do not tell and no --model is at hand")
    p.add_argument("--adapter_config", default=None, help="PEFT adapter_config.json giving lora_alpha (read automatically next to adapter_model.*)")
    p.add_argument("--allow_unmapped", action="store_true", help="write what converts even if some keys do not (they are listed)")
    add_output_options(p, "the input's")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return convert(args)
    except UserError as e:
        if args.debug:
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

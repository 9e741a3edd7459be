"""LoRA merging (tools/merge_lora.py): several LoRAs into one LoRA, or into a base checkpoint.

Each LoRA module adds ``up @ down * alpha/r * ratio`` to a weight, so a merge of LoRAs is a
sum of low-rank products. Two ways to write that sum as one LoRA:

* concat (default, exact): stack the ranks. The output module has rank ``sum r_i`` and
  alpha = rank (scale 1); each file's scale ``ratio * alpha/r`` is folded into its rows as
  ``sqrt|s|`` on up and ``sign(s) sqrt|s|`` on down. Delta is the exact sum. (kohya's
  merge_lora adds up and down matrices elementwise, which drops cross terms, and its
  ``--concat`` keeps the first alpha for the larger rank and applies the ratio squared;
  we avoid both.)
* SVD (``new_rank``): the best rank-k approximation of the summed delta, as kohya's
  svd_merge_lora: up = U*S, down = Vh, alpha = rank, values clamped to the 99th
  percentile (``clamp_quantile``; 1 disables it), all by networks/lora_svd.py, the maths
  resize and extract use too. Computed through QR of the stacked factors, so the SVD is of a (sum r_i)-square matrix, never of the full weight; the rank
  is never more than the summed rank needs.
"""

from __future__ import annotations

import json
import math
import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import torch

from library.errors import UserError
from library.output_paths import check_tool_output
from library.vocabulary import base_model_version, family_of_version
from networks import lora_format, lora_svd
from networks.lora import create_network_from_weights
from networks.lora_file import read_lora_file, require_plain_lora, save_lora_file
from networks.lora_math import effective_alpha
from networks.lora_names import guess_lora_family


class LoRAMergeError(UserError):
    """LoRAs that cannot be merged as asked, with what to do."""


@dataclass
class Factor:
    """One file's part of one module: delta = up @ down * scale (up/down as stored)."""

    path: Path
    down: torch.Tensor
    up: torch.Tensor
    scale: float


@dataclass
class LoRAInput:
    path: Path
    ratio: float
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str] = field(default_factory=dict)


def read_inputs(paths: list, ratios: list[float] | None) -> list[LoRAInput]:
    """The files with their ratios (1.0 each when none are given), keys checked."""
    if not paths:
        raise LoRAMergeError("--models: give at least one LoRA file")
    ratios = [1.0] * len(paths) if not ratios else ratios
    if len(ratios) != len(paths):
        raise LoRAMergeError(f"--ratios has {len(ratios)} values for {len(paths)} --models; give one ratio per LoRA")
    inputs = []
    for path, ratio in zip(paths, ratios):
        tensors, meta = read_lora_file(path)
        require_plain_lora(tensors, path, "merge_lora.py")
        bad = [k for k in tensors if not lora_format.is_kohya_key(k)]
        if bad:
            raise LoRAMergeError(
                f"{path}: {len(bad)} tensors are not plain kohya LoRA keys (e.g. {', '.join(sorted(bad)[:3])}); "
                "only LoRA/LoCon files (lora_down/lora_up/alpha) can be merged, not LoHa/LoKr/DoRA or diffusers/PEFT files"
            )
        inputs.append(LoRAInput(Path(path), float(ratio), tensors, meta))
    return inputs


def _is_sdxl_lora(inp: LoRAInput) -> bool:
    found = family_of_version(inp.metadata.get("ss_base_model_version", ""))
    return (found is not None and found[0] == "sdxl") or guess_lora_family(k.split(".")[0] for k in inp.tensors) == "SDXL"


def collect_factors(inputs: list[LoRAInput]) -> dict[str, list[Factor]]:
    """Module name -> the factors of every file that has it; shapes checked across files."""
    kinds = {_is_sdxl_lora(i) for i in inputs}
    if len(kinds) > 1:
        sdxl = next(i for i in inputs if _is_sdxl_lora(i))
        other = next(i for i in inputs if not _is_sdxl_lora(i))
        raise LoRAMergeError(f"cannot merge {sdxl.path} (SDXL LoRA) with {other.path} (SD1.x/SD2.x LoRA); merge LoRAs of one base family")
    modules: dict[str, list[Factor]] = {}
    for inp in inputs:
        for name, slots in lora_format.group_modules(inp.tensors)[0].items():
            down, up = slots.get("down"), slots.get("up")
            if down is None:
                continue
            if up is None:
                raise LoRAMergeError(f"{inp.path}: module {name} has lora_down but no lora_up; the file is damaged")
            rank = down.shape[0]
            if up.shape[1] != rank or up.dim() not in (2, 4) or down.dim() not in (2, 4):
                raise LoRAMergeError(
                    f"{inp.path}: module {name} has lora_down {list(down.shape)} and lora_up {list(up.shape)}, which do not fit; the file is damaged"
                )
            alpha = effective_alpha(slots.get("alpha"), rank)
            factor = Factor(inp.path, down.float(), up.float(), inp.ratio * alpha / rank)
            if modules.get(name):
                _check_fit(name, modules[name][0], factor)
            if factor.scale != 0:
                modules.setdefault(name, []).append(factor)
            else:
                modules.setdefault(name, [])
    return {name: factors for name, factors in modules.items() if factors}


def _check_fit(name: str, first: Factor, f: Factor) -> None:
    """Same in/out shape across files; a 1x1 conv and a linear of one matrix are reshaped to the first."""
    want_in, want_out = tuple(first.down.shape[1:]), first.up.shape[0]
    same = tuple(f.down.shape[1:]) == want_in and f.up.shape[0] == want_out and f.up.dim() == first.up.dim()
    if (not same and f.up.shape[0] == want_out and f.down[0].numel() == first.down[0].numel()
            and not lora_svd.is_conv_kxk(f.down) and not lora_svd.is_conv_kxk(first.down)):
        f.down = f.down.reshape(f.down.shape[0], *want_in)
        f.up = f.up.reshape(want_out, f.up.shape[1], *first.up.shape[2:])
        same = True
    if not same:
        raise LoRAMergeError(
            f"module {name} is {[want_out, *want_in]} in {first.path} but "
            f"{[f.up.shape[0], *f.down.shape[1:]]} in {f.path}; the LoRAs were trained on different base models"
        )


def concat_module(factors: list[Factor]) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(down, up, alpha) whose delta is exactly the sum of the factors' deltas."""
    downs, ups = [], []
    for f in factors:
        root = math.sqrt(abs(f.scale))
        downs.append(f.down * (root if f.scale > 0 else -root))
        ups.append(f.up * root)
    down, up = torch.cat(downs, 0), torch.cat(ups, 1)
    return down, up, float(down.shape[0])


def svd_module(factors: list[Factor], rank: int, clamp_quantile: float = 0.99, device="cpu") -> tuple[torch.Tensor, torch.Tensor, float]:
    """(down, up, alpha) of the best rank-``rank`` approximation of the summed delta.

    The stacked factors (scaled ups [out, R], downs [R, in]) are one product, so
    ``lora_svd.product_svd`` decomposes it without forming the weight; truncation, the
    factor split and the clamp are the ones resize and extract use (networks/lora_svd.py).
    """
    first = factors[0]
    up_all = torch.cat([f.up.flatten(1) * f.scale for f in factors], 1)
    down_all = torch.cat([f.down.flatten(1) for f in factors], 0)
    u, s, vh = lora_svd.product_svd(up_all, down_all, device)
    k = max(1, min(rank, s.numel()))
    down, up = lora_svd.split_factors(u, s, vh, k, (first.up.shape[0], *first.down.shape[1:]))
    up, down = lora_svd.clamp_to_quantile(up, down, clamp_quantile)
    return down.float().cpu().contiguous(), up.float().cpu().contiguous(), float(k)


def merge_lora_tensors(
    inputs: list[LoRAInput],
    *,
    new_rank: int | None = None,
    new_conv_rank: int | None = None,
    clamp_quantile: float = 0.99,
    device="cpu",
) -> dict[str, torch.Tensor]:
    """The merged LoRA's tensors: concat when ``new_rank`` is None, else SVD to that rank."""
    if (new_rank is not None and new_rank < 1) or (new_conv_rank is not None and new_conv_rank < 1):
        raise LoRAMergeError("--new_rank and --new_conv_rank must be 1 or more")
    if not 0 < clamp_quantile <= 1:
        raise LoRAMergeError(f"--clamp_quantile {clamp_quantile}: must be in (0, 1]; 1 turns clamping off")
    modules = collect_factors(inputs)
    if not modules:
        raise LoRAMergeError("nothing to merge: every LoRA module has ratio 0")
    out: dict[str, torch.Tensor] = {}
    for name, factors in sorted(modules.items()):
        if new_rank is None:
            down, up, alpha = concat_module(factors)
        else:
            conv_rank = new_conv_rank if new_conv_rank is not None else new_rank
            rank = conv_rank if lora_svd.is_conv_kxk(factors[0].down) else new_rank
            down, up, alpha = svd_module(factors, rank, clamp_quantile, device)
        out[f"{name}.lora_down.weight"] = down
        out[f"{name}.lora_up.weight"] = up
        out[f"{name}.alpha"] = torch.tensor(alpha)
    return out


def _family(inputs: list[LoRAInput], tensors: dict[str, torch.Tensor]) -> tuple[str, bool]:
    """(family, v_parameterization) from the inputs' metadata, else from the text-encoder width."""
    for inp in inputs:
        found = family_of_version(inp.metadata.get("ss_base_model_version", ""))
        if found:
            family, v = found
            return family, family != "sd1" and (v or inp.metadata.get("modelspec.prediction_type") == "v")
    if guess_lora_family(k.split(".")[0] for k in tensors) == "SDXL":
        return "sdxl", False
    widths = {v.shape[1] for k, v in tensors.items() if k.startswith("lora_te_") and k.endswith("lora_down.weight")}
    return ("sd2" if 1024 in widths else "sd1"), False


def merged_metadata(inputs: list[LoRAInput], tensors: dict[str, torch.Tensor], save_to, recipe: dict) -> dict[str, str]:
    """kohya's minimum network metadata, modelspec, and the merge recipe; model hashes kept only if all inputs agree."""
    family, v = _family(inputs, tensors)
    title = Path(save_to).stem
    dim, alpha, conv_args = lora_format.network_summary(tensors)
    meta = lora_format.minimum_network_metadata(family, base_model_version(family, v), "networks.lora", dim, alpha,
                                                conv_args)
    meta["ss_session_id"] = str(uuid.uuid4().int % 2**31)
    meta["ss_output_name"] = title
    meta["ss_training_comment"] = f"merged by lorasmith from {', '.join(i.path.name for i in inputs)}"
    for key in ("ss_sd_model_name", "ss_sd_model_hash", "ss_new_sd_model_hash", "ss_resolution", "ss_clip_skip"):
        values = {i.metadata.get(key) for i in inputs}
        if len(values) == 1 and None not in values:
            meta[key] = values.pop()
    res = inputs[0].metadata.get("modelspec.resolution", "")
    size = tuple(int(x) for x in res.split("x")) if re.fullmatch(r"\d+x\d+", res) else lora_format.default_resolution(family, v)
    meta.update(lora_format.modelspec(family, v, title, size))
    meta["modelspec.merged_from"] = ", ".join(i.path.stem for i in inputs)
    meta["lorasmith.merge"] = json.dumps(recipe)
    return meta


def merge_loras_to_file(
    paths: list,
    ratios: list[float] | None,
    save_to,
    *,
    new_rank: int | None = None,
    new_conv_rank: int | None = None,
    clamp_quantile: float = 0.99,
    save_dtype: torch.dtype | None = None,
    device="cpu",
    no_metadata: bool = False,
) -> dict[str, torch.Tensor]:
    """Merge LoRA files into one LoRA file (atomic write); returns the merged tensors."""
    _check_output(save_to, paths)
    inputs = read_inputs(paths, ratios)
    tensors = merge_lora_tensors(inputs, new_rank=new_rank, new_conv_rank=new_conv_rank, clamp_quantile=clamp_quantile, device=device)
    recipe = {"mode": "concat" if new_rank is None else "svd", "models": [i.path.name for i in inputs],
              "ratios": [i.ratio for i in inputs], "new_rank": new_rank, "new_conv_rank": new_conv_rank}
    meta = merged_metadata(inputs, tensors, save_to, recipe)
    if no_metadata:  # kohya keeps the minimum network metadata even then
        meta = lora_format.keep_minimum(meta, with_modelspec=False)
    save_lora_file(tensors, str(save_to), meta, dtype=save_dtype)
    return tensors


def _check_output(save_to, inputs) -> None:
    out = Path(save_to)
    if out.suffix.lower() != ".safetensors":
        raise LoRAMergeError(f"--save_to {out}: merges are written as .safetensors; use a name ending in .safetensors")
    if not out.parent.is_dir():
        raise LoRAMergeError(f"--save_to {out}: the folder {out.parent} does not exist; create it or choose another path")
    check_tool_output(str(out), inputs, None)  # the one owner: paths, symlinks, hard links


@torch.no_grad()
def merge_loras_into_model(model, paths: list, ratios: list[float] | None) -> None:
    """Add each LoRA's delta (times its ratio) into the base model's weights, in place.

    Uses the network's own merge, so module targeting and naming are the ones training
    and inference use; a LoRA that does not fit the model is a clear error.
    """
    ratios = [1.0] * len(paths) if not ratios else ratios
    if len(ratios) != len(paths):
        raise LoRAMergeError(f"--ratios has {len(ratios)} values for {len(paths)} --models; give one ratio per LoRA")
    for path, ratio in zip(paths, ratios):
        net, sd = create_network_from_weights(float(ratio), os.fspath(path), model.vae, model.text_encoders, model.unet)
        net.merge_to(weights_sd=sd)

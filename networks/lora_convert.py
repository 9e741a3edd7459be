"""LoRA file formats: read kohya, diffusers/PEFT and attention-processor files into one form, write kohya or diffusers.

Every format stores, per adapted layer, a down (A) and an up (B) matrix; they differ in
key names and in where the scale ``alpha / r`` lives:

* kohya (A1111, ComfyUI): ``lora_unet_<path with _>.lora_down.weight`` / ``.lora_up.weight`` /
  ``.alpha`` (docs/formats.md).
* diffusers (``pytorch_lora_weights.safetensors``): ``unet.<path>.lora_A.weight`` /
  ``.lora_B.weight``, ``text_encoder.``/``text_encoder_2.`` for the text encoders; older
  writers used ``.lora.down.weight``/``.lora.up.weight`` (the ComfyUI SimpleLoRA trainer,
  diffusers' train_text_to_image_lora) or ``.lora_linear_layer.down.weight``. Alpha is in the
  ``lora_adapter_metadata`` JSON (PEFT LoraConfig fields per component) or absent (alpha = r).
* PEFT (``adapter_model.safetensors`` + ``adapter_config.json``): ``base_model.model.<path>.lora_A.weight``,
  alpha from the config (``lora_alpha``, ``alpha_pattern``, ``use_rslora``).
* diffusers attention processors (``save_attn_procs``, a pickled ``.bin``):
  ``<path>.processor.to_q_lora.down.weight``, ``to_out_lora`` = ``to_out.0``; read with
  ``torch.load(weights_only=True)`` only.

The common form maps (component, diffusers module path) to (down, up, alpha); tensors are
never reshaped or rescaled, so conversions round-trip bit for bit. Keys that fit nowhere are
collected in ``unmapped`` with the reason, for the tool to report.
"""

from __future__ import annotations

import collections
import json
import math
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from networks import lora_format
from networks import lora_names as names
from library.models.unet_layout import UNetLayout
from networks.lora_file import LoRAFileError, read_lora_file, require_plain_lora

FORMATS = ("kohya", "diffusers", "peft", "attn_procs")
ADAPTER_METADATA_KEY = "lora_adapter_metadata"  # diffusers' safetensors metadata entry
DIFFUSERS_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
_FOLDER_FILES = ("pytorch_lora_weights.safetensors", "adapter_model.safetensors", "pytorch_lora_weights.bin", "adapter_model.bin")
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
_UNET_HEADS = ("down_blocks.", "mid_block.", "up_blocks.", "conv_in", "conv_out", "conv_norm_out", "time_embedding.", "add_embedding.")
_TE_HEADS = ("text_model.", "encoder.")
_RE_AB = re.compile(r"^(.+)\.lora_([AB])(?:\.[^.]+)?\.weight$")
_RE_DOWN_UP = re.compile(r"^(.+)\.lora(?:_linear_layer)?\.(down|up)\.weight$")
_RE_PROC = re.compile(r"^(.+?)(?:\.processor)?\.(to_q|to_k|to_v|to_out)_lora\.(down|up)\.weight$")
_RE_ALPHA = re.compile(r"^(.+)\.alpha$")
_PROC_UNET = {"to_q": "to_q", "to_k": "to_k", "to_v": "to_v", "to_out": "to_out.0"}
_PROC_TE = {"to_q": "q_proj", "to_k": "k_proj", "to_v": "v_proj", "to_out": "out_proj"}


@dataclass
class ModuleWeights:
    """One adapted layer: down [r, in(, kh, kw)], up [out, r(, 1, 1)], alpha (None = not stored: alpha = r)."""

    down: torch.Tensor | None = None
    up: torch.Tensor | None = None
    alpha: float | None = None
    keys: list[str] = field(default_factory=list)

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])


@dataclass
class LoRAWeights:
    """A LoRA in the common form, whatever file it came from."""

    modules: dict[tuple[str, str], ModuleWeights]
    unmapped: list[str]
    format: str
    metadata: dict[str, str]
    sdxl: bool | None = None  # what the names alone say (kohya files); None: not decided by names


# --- reading files --------------------------------------------------------------------------
def read_any(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str], dict | None]:
    """(tensors, metadata, PEFT adapter config or None) of a LoRA file or a diffusers/PEFT output folder."""
    p = Path(path)
    if p.is_dir():
        found = next((p / n for n in _FOLDER_FILES if (p / n).is_file()), None)
        if found is None:
            raise LoRAFileError(f"{p}: a folder without {' or '.join(_FOLDER_FILES[:2])}; pass the LoRA file itself")
        p = found
    if not p.is_file():
        raise LoRAFileError(f"{p}: LoRA file not found; check the path")
    config = None
    if p.name.startswith("adapter_model.") and (p.parent / "adapter_config.json").is_file():
        config = read_adapter_config(p.parent / "adapter_config.json")
    if p.suffix in _PICKLE_SUFFIXES:
        return _read_pickle(p), {}, config
    if p.suffix != ".safetensors":
        raise LoRAFileError(f"{p}: unknown LoRA file type '{p.suffix}'; expected .safetensors (or a diffusers .bin)")
    tensors, metadata = read_lora_file(str(p))
    require_plain_lora(tensors, p, "convert_lora.py")
    return tensors, metadata, config


def _read_pickle(p: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
        reason = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise LoRAFileError(
            f"{p}: cannot be read as plain tensors ({reason}); only weights-only pickles are loaded (others can run code). "
            "Re-save it as .safetensors in the program that made it"
        ) from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise LoRAFileError(f"{p}: holds no tensor dictionary; it is not a LoRA file")
    return obj


def read_adapter_config(path: str | os.PathLike) -> dict:
    """A PEFT ``adapter_config.json`` (r, lora_alpha, alpha_pattern, use_rslora ...)."""
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise LoRAFileError(f"{path}: not a readable JSON adapter config ({e}); fix or remove it") from None
    if not isinstance(config, dict):
        raise LoRAFileError(f"{path}: not a PEFT adapter config (expected a JSON object)")
    return config


def detect_format(tensors: dict[str, torch.Tensor], config: dict | None = None, path: str = "<weights>") -> str:
    """kohya, attn_procs, peft or diffusers, from the key names (raises when no LoRA key is recognised)."""
    keys = list(tensors)
    if keys and sum(lora_format.is_kohya_key(k) for k in keys) * 2 > len(keys):
        return "kohya"
    if any(_RE_PROC.match(k) and ".processor." in k for k in keys):
        return "attn_procs"
    if any(_RE_AB.match(k) for k in keys):
        return "peft" if config is not None or any(k.startswith("base_model.model.") for k in keys) else "diffusers"
    if any(_RE_DOWN_UP.match(k) or _RE_PROC.match(k) for k in keys):
        return "diffusers"
    sample = ", ".join(keys[:3])
    raise LoRAFileError(f"{path}: no LoRA weights recognised (keys look like: {sample}); this is not a kohya, diffusers or PEFT LoRA")


# --- parsing into the common form ----------------------------------------------------------
def _add(modules, unmapped, key, component, path, slot, value):
    try:
        path = names.check_path(names.strip_text_model(path) if component != names.UNET else path)
    except names.UnknownName as e:
        unmapped.append(f"{key}: {e}")
        return
    m = modules.setdefault((component, path), ModuleWeights())
    m.keys.append(key)
    if slot == "alpha":
        m.alpha = float(value.float().item()) if isinstance(value, torch.Tensor) else float(value)
    else:
        setattr(m, slot, value)


def parse_kohya(tensors: dict[str, torch.Tensor], metadata: dict[str, str], layout: UNetLayout | None = None) -> LoRAWeights:
    """kohya keys -> common form; SDXL-ness from the prefixes and the UNet name layout.

    ``layout`` (from --model or --family) translates original-layout UNet names; without it
    they are read with SDXL's layout, or SD's when ``lora_te_`` names say SD1/SD2.
    """
    heads = {k.split("_", 2)[1] for k in tensors if k.startswith("lora_")}
    modules: dict = {}
    unmapped: list[str] = []
    sdxl_by_te = True if heads & {"te1", "te2"} else (False if "te" in heads else None)
    layout_given = layout is not None
    if layout is None:
        layout = names.SD_LAYOUT if sdxl_by_te is False else names.SDXL_LAYOUT
    compvis = diffusers_paths = False
    for key, value in tensors.items():
        found = lora_format.split_key(key)
        if found is None:
            unmapped.append(f"{key}: not a lora_down/lora_up/alpha tensor (DoRA, bias or other extras cannot be converted)")
            continue
        name, slot = found
        try:
            component, path, was_compvis = names.parse_kohya_name(name, layout)
        except names.UnknownName as e:
            unmapped.append(f"{key}: {e}")
            continue
        if component == names.UNET:
            compvis |= was_compvis
            diffusers_paths |= not was_compvis
        _add(modules, unmapped, key, component, path, slot, value)
    # original-layout UNet names mean SDXL unless the caller knows the model (old SD1 tools wrote them too)
    by_unet = None if compvis and layout_given else (True if compvis else (False if diffusers_paths else None))
    sdxl = sdxl_by_te if sdxl_by_te is not None else by_unet
    return LoRAWeights(modules, unmapped, "kohya", dict(metadata), sdxl)


def _component_of(path: str) -> str | None:
    if path.startswith(_UNET_HEADS):
        return names.UNET
    if path.startswith(_TE_HEADS):
        return names.TE
    return None


def parse_diffusers(tensors: dict[str, torch.Tensor], metadata: dict[str, str], config: dict | None = None, fmt: str = "diffusers") -> LoRAWeights:
    """diffusers / PEFT / attention-processor keys -> common form, alphas from keys, metadata or config."""
    modules: dict = {}
    unmapped: list[str] = []
    for key, value in tensors.items():
        if not isinstance(value, torch.Tensor):
            unmapped.append(f"{key}: not a tensor")
            continue
        k = key.removeprefix("base_model.model.")
        component = next((c for c in (names.TE2, names.TE, names.UNET) if k.startswith(c + ".")), None)
        if component is not None:
            k = k[len(component) + 1 :]
        if m := _RE_PROC.match(k):
            base, which, direction = m.groups()
            component = component or _component_of(base)
            table = _PROC_TE if component in (names.TE, names.TE2) else _PROC_UNET
            path, slot = f"{base}.{table[which]}", direction
        elif m := _RE_AB.match(k):
            path, slot = m.group(1), ("down" if m.group(2) == "A" else "up")
        elif m := _RE_DOWN_UP.match(k):
            path, slot = m.groups()
        elif m := _RE_ALPHA.match(k):
            path, slot = m.group(1), "alpha"
        else:
            unmapped.append(f"{key}: not a LoRA down/up/alpha tensor (DoRA magnitudes, biases and embeddings cannot be converted)")
            continue
        component = component or _component_of(path)
        if component is None:
            unmapped.append(f"{key}: '{path}' is not a UNet or text-encoder module path")
            continue
        _add(modules, unmapped, key, component, path, slot, value)
    configs = adapter_configs(metadata, config)
    for (component, path), m in modules.items():
        if m.alpha is None and m.down is not None and component in configs:
            m.alpha = config_alpha(configs[component], path, m.rank, component != names.UNET)
    return LoRAWeights(modules, unmapped, fmt, dict(metadata), None)


def adapter_configs(metadata: dict[str, str], config: dict | None) -> dict[str, dict]:
    """Per-component PEFT config fields: diffusers' ``lora_adapter_metadata`` (``unet.lora_alpha`` ...) or a PEFT config."""
    out: dict[str, dict] = {}
    raw = metadata.get(ADAPTER_METADATA_KEY)
    if raw:
        try:
            packed = json.loads(raw)
        except json.JSONDecodeError:
            packed = {}
        for key, value in packed.items() if isinstance(packed, dict) else ():
            component, _, fld = key.partition(".")
            if component in names.COMPONENTS and fld:
                out.setdefault(component, {})[fld] = value
    if config is not None:
        for component in names.COMPONENTS:
            out.setdefault(component, config)
    return out


def config_alpha(config: dict, path: str, rank: int, text_encoder: bool) -> float:
    """The kohya alpha that gives the module PEFT's scale (``lora_alpha/r``, or ``/sqrt(r)`` with rsLoRA)."""
    alpha = config.get("lora_alpha")
    candidates = [path, "text_model." + path] if text_encoder else [path]
    for pattern, value in (config.get("alpha_pattern") or {}).items():
        if any(re.match(rf"(.*\.)?({pattern})$", c) for c in candidates):
            alpha = value
            break
    if alpha is None:
        return float(rank)
    alpha = float(alpha)
    return alpha * math.sqrt(rank) if config.get("use_rslora") else alpha


def parse(tensors, metadata, config=None, fmt: str = "auto", layout: UNetLayout | None = None, path: str = "<weights>") -> LoRAWeights:
    """Any supported format (``fmt`` 'auto' detects it) -> common form, with incomplete modules reported."""
    if fmt == "auto":
        fmt = detect_format(tensors, config, path)
    weights = parse_kohya(tensors, metadata, layout) if fmt == "kohya" else parse_diffusers(tensors, metadata, config, fmt)
    for key, m in list(weights.modules.items()):
        problem = None
        if m.down is None or m.up is None:
            problem = f"has no {'up' if m.up is None else 'down'} weight"
        elif m.down.dim() not in (2, 4) or m.up.shape[1] != m.down.shape[0] or m.up.dim() != m.down.dim():
            problem = f"down {tuple(m.down.shape)} and up {tuple(m.up.shape)} do not form a LoRA pair"
        if problem:
            weights.unmapped += [f"{k}: module {key[1]} {problem}" for k in m.keys]
            del weights.modules[key]
    if not weights.modules and not weights.unmapped:
        raise LoRAFileError(f"{path}: no LoRA modules found in this {fmt} file")
    return weights


def decide_sdxl(weights: LoRAWeights) -> bool | None:
    """SDXL or not from the names (None when they do not say: the tool then needs --model or --family)."""
    if weights.sdxl is not None:
        return weights.sdxl
    unet_paths = [p for c, p in weights.modules if c == names.UNET]
    sdxl, sd = names.family_evidence(unet_paths, {c for c, _ in weights.modules})
    return sdxl if sdxl != sd else None


# --- writing ---------------------------------------------------------------------------------
def to_kohya(weights: LoRAWeights, sdxl: bool, layout: UNetLayout | None = None) -> tuple[dict[str, torch.Tensor], list[str]]:
    """kohya tensors (alpha stored for every module, in the down weight's dtype) and the modules that have no kohya name."""
    out: dict[str, torch.Tensor] = {}
    unmapped: list[str] = []
    for (component, path), m in sorted(weights.modules.items()):
        try:
            name = names.kohya_name(component, path, sdxl, layout)
        except names.UnknownName as e:
            unmapped += [f"{k}: {e}" for k in m.keys]
            continue
        alpha = float(m.rank) if not m.alpha else m.alpha
        out[f"{name}.lora_down.weight"] = m.down
        out[f"{name}.lora_up.weight"] = m.up
        out[f"{name}.alpha"] = torch.tensor(alpha, dtype=m.down.dtype)
    return out, unmapped


def _most_common(values):
    return collections.Counter(values).most_common(1)[0][0]


def to_diffusers(weights: LoRAWeights) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    """diffusers keys (``unet.<path>.lora_A.weight`` ...) and the ``lora_adapter_metadata`` fields.

    The metadata is a PEFT LoraConfig per component (``unet.r``, ``unet.lora_alpha``,
    ``unet.rank_pattern``, ``unet.alpha_pattern``, ``unet.target_modules``): diffusers'
    ``load_lora_weights`` builds its adapters from it, so per-module ranks and alphas survive.
    """
    out: dict[str, torch.Tensor] = {}
    per_component: dict[str, dict[str, tuple[int, float]]] = {}
    for (component, path), m in sorted(weights.modules.items()):
        full = path if component == names.UNET else "text_model." + path
        out[f"{component}.{full}.lora_A.weight"] = m.down
        out[f"{component}.{full}.lora_B.weight"] = m.up
        per_component.setdefault(component, {})[path] = (m.rank, float(m.rank) if not m.alpha else m.alpha)
    meta: dict[str, object] = {}
    for component, mods in per_component.items():
        r = _most_common(rank for rank, _ in mods.values())
        lora_alpha = _most_common(alpha for _, alpha in mods.values())
        fields = {
            "r": r,
            "lora_alpha": lora_alpha,
            "rank_pattern": {p: rank for p, (rank, _) in mods.items() if rank != r},
            "alpha_pattern": {p: alpha for p, (_, alpha) in mods.items() if alpha != lora_alpha},
            "target_modules": sorted(mods),
        }
        meta.update({f"{component}.{k}": v for k, v in fields.items()})
    return out, meta


def check_against_model(weights: LoRAWeights, sdxl: bool, layout: UNetLayout | None, shapes: dict[str, tuple[int, ...]]) -> None:
    """Move modules that do not exist in the model (by kohya name) or do not fit its weight shape to ``unmapped``."""
    for key, m in list(weights.modules.items()):
        try:
            name = names.kohya_name(key[0], key[1], sdxl, layout)
        except names.UnknownName as e:
            problem = str(e)
        else:
            shape = shapes.get(name)
            if shape is None:
                problem = f"module {key[0]}.{key[1]} does not exist in the given --model"
            elif tuple(m.down.shape[1:]) != tuple(shape[1:]) or m.up.shape[0] != shape[0]:
                problem = f"module {key[0]}.{key[1]} does not fit the --model weight {tuple(shape)}"
            else:
                continue
        weights.unmapped += [f"{k}: {problem}" for k in m.keys]
        del weights.modules[key]

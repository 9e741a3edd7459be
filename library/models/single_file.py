"""Load an original-layout single-file checkpoint (.safetensors, or .ckpt/.pt weights-only).

Steps: open safely -> reject non-checkpoints -> detect the family -> pick configs (our
own metadata if the file has it, else the shipped full-size ones) -> build empty
networks -> stream tensors through the key maps -> check every key and shape against the
networks -> assign. Nothing is randomly initialised and nothing is fetched.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path

import torch

from library.models.base_model import BaseModel, assemble
from library.models.build import build_empty
from library.models.checkpoint_file import open_checkpoint
from library.models.configs import check_configs, full_size_configs, with_prediction_type
from library.models.detect import detect_family, reject_non_checkpoints
from library.models.errors import ModelLoadError, UnmappedKey, one_line
from library.models.hashes import content_key
from library.models.keys_clip import EXTRA, IGNORE, model_state_dict, to_model_keys
from library.models.load_request import LoadRequest
from library.models.layout import Part, is_ignored_top_level, parts_for

log = logging.getLogger(__name__)

CONFIGS_KEY = "lorasmith.configs"
FAMILY_KEY = "lorasmith.family"


def _examples(keys: list[str], n: int = 3) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f", ... ({len(keys) - n} more)" if len(keys) > n else "")


def _count(items: list) -> str:
    return f"{len(items)} tensor" + ("" if len(items) == 1 else "s")


def _verb(items: list, one: str, many: str) -> str:
    return one if len(items) == 1 else many


def declared_configs(path, metadata: dict[str, str]) -> dict | None:
    """The configs our saver stored in the file's metadata, or None if there are none."""
    raw = metadata.get(CONFIGS_KEY)
    if raw is None:
        return None
    try:
        return check_configs(json.loads(raw))
    except ValueError as e:  # JSONDecodeError is a ValueError
        raise ModelLoadError(
            f"{path}: the model configs in its metadata ({CONFIGS_KEY}) are unusable ({one_line(e)}); "
            "the file was changed by another tool, save it again from the original"
        ) from None


def _prediction_type(v_parameterization: bool | None, declared: dict | None, metadata: dict[str, str]) -> str:
    if v_parameterization is not None:
        return "v_prediction" if v_parameterization else "epsilon"
    if declared is not None:
        return declared["scheduler"].get("prediction_type", "epsilon")
    # SAI model spec, written by kohya and others: "epsilon" or "v".
    return "v_prediction" if metadata.get("modelspec.prediction_type") in ("v", "v_prediction") else "epsilon"


def _fits(got: torch.Tensor, want: torch.Size) -> torch.Tensor | None:
    """``got`` in shape ``want``: as is, or a 1x1 conv <-> linear reshape of the same matrix."""
    if got.shape == want:
        return got
    a, b = tuple(got.shape), tuple(want)
    if got.numel() == want.numel() and (a[:2] == b and set(a[2:]) == {1} or b[:2] == a and set(b[2:]) == {1}):
        return got.reshape(want)
    return None


def _shape_hint(part: Part, key: str) -> str:
    if part.name == "UNet" and key == "input_blocks.0.0.weight":
        return " (an inpainting or instruct-pix2pix UNet? only plain text-to-image models can be trained)"
    return ""


class _Collected:
    """Tensors routed to one part, remembered with the checkpoint key each came from."""

    def __init__(self):
        self.tensors: dict[str, torch.Tensor] = {}
        self.source: dict[str, str] = {}
        self.unexpected: list[str] = []


def _assign(path, family: str, part: Part, model: torch.nn.Module, got: _Collected, declared: bool) -> None:
    """Check ``got`` against ``model`` key by key and shape by shape, then assign it."""
    is_te = part.index is not None
    target = model_state_dict(model) if is_te else model.state_dict()
    where = f"the {family} {part.name}"
    unexpected = got.unexpected + [got.source[k] for k in got.tensors if k not in target]
    if unexpected:
        raise ModelLoadError(
            f"{path}: {_count(unexpected)} under {part.prefix}* {_verb(unexpected, 'does', 'do')} not belong to {where} "
            f"(e.g. {_examples(sorted(unexpected))}); this is another model variant, check the family or pick another file"
        )
    missing = sorted({part.prefix + part.keys.original_key(k) for k in target if k not in got.tensors})
    if missing:
        raise ModelLoadError(
            f"{path}: {_count(missing)} of {where} {_verb(missing, 'is', 'are')} missing (e.g. {_examples(missing)}); "
            "the file is incomplete or a different model, re-download it or check the family"
        )
    bad = []
    for k, want in target.items():
        fixed = _fits(got.tensors[k], want.shape)
        if fixed is None:
            bad.append((got.source[k], tuple(got.tensors[k].shape), tuple(want.shape)))
        else:
            got.tensors[k] = fixed
    if bad:
        key, have, want = bad[0]
        fix = ("its metadata and weights disagree, save it again" if declared
               else f"this is not a standard {family} model, check the family or pick another file")
        more = f" ({len(bad) - 1} more tensors differ)" if len(bad) > 1 else ""
        raise ModelLoadError(
            f"{path}: tensor '{key}' has shape {list(have)} but {where} expects {list(want)}"
            f"{_shape_hint(part, key[len(part.prefix):])}{more}; {fix}"
        )
    sd = to_model_keys(got.tensors, set(model.state_dict())) if is_te else got.tensors
    model.load_state_dict(sd, strict=True, assign=True)


def load_single_file(path: str | Path, request: LoadRequest = LoadRequest()) -> BaseModel:
    """Load an original-layout checkpoint; see library.models.load_base_model."""
    model = load_from_reader(open_checkpoint(path), path, request)
    model.content_hash = content_key(path)
    return model


class DictReader:
    """The reader interface over an in-memory original-layout state dict."""

    def __init__(self, state_dict: dict[str, torch.Tensor], metadata: dict[str, str] | None = None):
        self._sd = state_dict
        self.metadata = dict(metadata or {})

    def keys(self) -> list[str]:
        return list(self._sd)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._sd[key].shape)

    def get(self, key: str) -> torch.Tensor:
        return self._sd[key]


def load_original_state_dict(state_dict: dict[str, torch.Tensor], metadata: dict[str, str] | None = None, *,
                             name: str = "<state dict>", **request) -> BaseModel:
    """Like load_single_file for a state dict already in memory (meta tensors work with device="meta");
    ``request``: the fields of :class:`LoadRequest` by name."""
    return load_from_reader(DictReader(state_dict, metadata), name, LoadRequest(**request))


def _read_part(reader, part: Part, keys: list[str], dtype, device, extras: dict) -> _Collected:
    """One part's tensors, read and mapped to the model's keys (extras, e.g. OpenCLIP's, go to ``extras``)."""
    got = _Collected()
    for key in keys:
        sub = key[len(part.prefix):]
        kind = part.keys.classify(sub)
        if kind == IGNORE:
            continue
        tensor = reader.get(key)
        tensor = tensor.to(device=device, dtype=dtype if dtype is not None and tensor.is_floating_point() else None)
        if kind == EXTRA:
            extras[key] = tensor
            continue
        try:
            pairs = part.keys.from_original(sub, tensor)
        except UnmappedKey:
            got.unexpected.append(key)
            continue
        for model_key, value in pairs:
            got.tensors[model_key] = value
            got.source[model_key] = key
    return got


def load_from_reader(reader, path, request: LoadRequest) -> BaseModel:
    """The loader proper: detect, configure, build empty, then per part (VAE first) stream, check, assign.

    ``request.on_part(name, module, family)`` is called as each part ("VAE", "UNet", "text encoder"...) is ready."""
    family, v_parameterization, dtype, device, on_part = (
        request.family, request.v_parameterization, request.dtype, request.device, request.on_part)
    keys = reader.keys()
    reject_non_checkpoints(path, keys, reader.metadata)
    declared = declared_configs(path, reader.metadata)
    family = detect_family(
        path, keys, reader.shape, forced=family, declared=declared["family"] if declared else None
    )
    prediction_type = _prediction_type(v_parameterization, declared, reader.metadata)
    configs = declared or full_size_configs(family, v_prediction=prediction_type == "v_prediction")
    configs = with_prediction_type(configs, prediction_type)
    try:
        components = build_empty(configs)
    except Exception as e:  # noqa: BLE001 - any failure here means the stored configs are bad
        if declared is None:
            raise
        raise ModelLoadError(
            f"{path}: the model configs in its metadata do not build a model ({one_line(e)[:200]}); save it again"
        ) from None
    parts = parts_for(configs)
    models = dict(zip((p.name for p in parts), [components.unet, components.vae, *components.text_encoders]))
    keys_of: dict[str, list[str]] = {p.name: [] for p in parts}
    extras: dict[str, torch.Tensor] = {}
    foreign: dict[str, int] = defaultdict(int)
    by_length = sorted(parts, key=lambda p: len(p.prefix), reverse=True)
    for key in keys:
        part = next((p for p in by_length if key.startswith(p.prefix)), None)
        if part is None:
            if not is_ignored_top_level(key):
                foreign[key.split(".", 1)[0]] += 1
            continue
        keys_of[part.name].append(key)
    if foreign:
        log.warning("%s: ignored tensors outside the model: %s", path,
                    ", ".join(f"{p}.* ({n})" for p, n in sorted(foreign.items())))

    # One part at a time, the VAE first: each is complete (checked and assigned) before the next is read,
    # so ``on_part`` can put the VAE to work (latent caching) while the UNet and text encoders load.
    for part in sorted(parts, key=lambda p: p.name != "VAE"):
        got = _read_part(reader, part, keys_of[part.name], dtype, device, extras)
        model = models[part.name]
        _assign(path, family, part, model, got, declared is not None)
        model.to(device)  # buffers that are not in the file (e.g. CLIP position_ids)
        if on_part is not None:
            on_part(part.name, model, family)

    meta = {k: v for k, v in reader.metadata.items() if k not in (CONFIGS_KEY, FAMILY_KEY)}
    return assemble(configs, components, source=str(path), extras=extras, metadata=meta)

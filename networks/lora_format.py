"""The kohya LoRA file format in one place: the key grammar and the ``ss_*``/``modelspec.*`` metadata.

Why one owner: training, merge, resize, extract and convert all write LoRA files, and their copies
of these rules had drifted (two key grammars with different character classes, three spellings of a
uniform ``ss_network_dim``/``ss_network_alpha``). The rules, as kohya's tools write them:

* a key is ``<module>.lora_down.weight``, ``<module>.lora_up.weight`` or ``<module>.alpha``; a module
  name is ``lora_unet_``/``lora_te_``/``lora_te1_``/``lora_te2_`` plus its module path with ``_`` for
  ``.`` (letters of either case, digits, ``_``);
* ``ss_network_dim`` is ``str(int)`` ("16"), ``ss_network_alpha`` is ``str(float)`` ("16.0"); "Dynamic"
  when the modules differ; 3x3-conv (LoCon) ranks go in ``ss_network_args`` as strings
  (``{"conv_dim": "8", "conv_alpha": "4.0"}``); no ``ss_network_args`` when there is nothing to say;
* ``ss_base_model_version`` is library/vocabulary.py's ``base_model_version``.

torch is not imported: tensors are only asked for their shape and value.
"""

from __future__ import annotations

import datetime
import json
import re

from library.errors import UserError

# --- key grammar ----------------------------------------------------------------------------
PREFIXES = ("lora_unet", "lora_te", "lora_te1", "lora_te2")
SLOTS = {"lora_down.weight": "down", "lora_up.weight": "up", "alpha": "alpha"}
KEY_SUFFIXES = tuple("." + rest for rest in SLOTS)
_KEY = re.compile(r"^lora_(?:unet|te|te1|te2)_[A-Za-z0-9_]+\.(?:lora_down\.weight|lora_up\.weight|alpha)$")


def split_key(key: str) -> tuple[str, str] | None:
    """(module name, 'down' | 'up' | 'alpha') of a ``<module>.<slot>`` key; None for any other tensor."""
    name, _, rest = key.partition(".")
    slot = SLOTS.get(rest)
    return (name, slot) if slot else None


def is_kohya_key(key: str) -> bool:
    """Whether ``key`` is a plain kohya LoRA key: a known prefix, a module path, a down/up/alpha slot."""
    return bool(_KEY.match(key))


def group_modules(tensors: dict) -> tuple[dict[str, dict[str, object]], list[str]]:
    """``{module: {'down'|'up'|'alpha': tensor}}`` of a kohya state dict, and the keys that are no slot."""
    modules: dict[str, dict[str, object]] = {}
    other = []
    for key, value in tensors.items():
        found = split_key(key)
        if found is None:
            other.append(key)
        else:
            modules.setdefault(found[0], {})[found[1]] = value
    return modules, other


def is_conv_kxk(shape) -> bool:
    """A conv kernel larger than 1x1 (LoCon's ``conv_dim`` modules); Linear and 1x1 use ``network_dim``."""
    return len(shape) == 4 and tuple(shape[2:]) != (1, 1)


# --- ss_network_* -----------------------------------------------------------------------------
DYNAMIC = "Dynamic"
# what kohya keeps under --no_metadata (train_util.SS_METADATA_MINIMUM_KEYS), so tools can still filter
MINIMUM_KEYS = ("ss_v2", "ss_base_model_version", "ss_network_module", "ss_network_dim", "ss_network_alpha",
                "ss_network_args")


def format_dim(value) -> str:
    """``ss_network_dim``/``conv_dim``: "16"; "None" when not set (kohya writes the unset option as it is)."""
    return "None" if value is None else (value if value == DYNAMIC else str(int(value)))


def format_alpha(value) -> str:
    """``ss_network_alpha``/``conv_alpha``: "16.0"; "None" when not set."""
    return "None" if value is None else (value if value == DYNAMIC else str(float(value)))


def _uniform(values, fmt) -> str:
    values = set(values)
    return fmt(values.pop()) if len(values) == 1 else DYNAMIC


def network_summary(tensors: dict) -> tuple[str, str, dict[str, str] | None]:
    """(ss_network_dim, ss_network_alpha, conv network args or None) of a kohya state dict.

    Ranks are lora_down's first dimension; a missing or zero alpha is the rank (kohya's rule). Linear
    and 1x1 modules give dim/alpha; 3x3 convs give ``conv_dim``/``conv_alpha``; "Dynamic" where they differ.
    """
    linear, conv = [], []
    for name, slots in group_modules(tensors)[0].items():
        down = slots.get("down")
        if down is None:
            continue
        rank = int(down.shape[0])
        alpha = float(slots["alpha"]) if slots.get("alpha") is not None else 0.0
        (conv if is_conv_kxk(tuple(down.shape)) else linear).append((rank, alpha or float(rank)))
    linear = linear or conv
    dim = _uniform((r for r, _ in linear), format_dim) if linear else "None"
    alpha = _uniform((a for _, a in linear), format_alpha) if linear else "None"
    conv_args = None
    if conv:
        conv_args = {"conv_dim": _uniform((r for r, _ in conv), format_dim),
                     "conv_alpha": _uniform((a for _, a in conv), format_alpha)}
    return dim, alpha, conv_args


def metadata_value(value) -> str:
    """One metadata value as kohya stores it: str(), JSON for dicts and lists, "None" for None."""
    if value is None:
        return "None"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value)
    return str(value)


def minimum_network_metadata(family: str, model_version: str, network_module: str, dim, alpha,
                             network_args: dict | None) -> dict[str, str]:
    """kohya's ``build_minimum_network_metadata``: the keys every LoRA file carries. ``dim``/``alpha``
    are numbers (formatted here) or strings already formatted; ``network_args`` None leaves its key out."""
    md = {"ss_v2": str(family == "sd2"), "ss_base_model_version": model_version,
          "ss_network_module": network_module,
          "ss_network_dim": dim if isinstance(dim, str) else format_dim(dim),
          "ss_network_alpha": alpha if isinstance(alpha, str) else format_alpha(alpha)}
    if network_args is not None:
        md["ss_network_args"] = json.dumps(network_args)
    return md


def keep_minimum(metadata: dict[str, str], with_modelspec: bool = True) -> dict[str, str]:
    """What ``--no_metadata`` keeps: kohya's minimum keys (and the modelspec, as training keeps it)."""
    return {k: v for k, v in metadata.items() if k in MINIMUM_KEYS or (with_modelspec and k.startswith("modelspec."))}


# --- modelspec --------------------------------------------------------------------------------
IMPLEMENTATION_VERSION = "lorasmith/0.1.0"
ARCHITECTURES = {
    "sd1": "stable-diffusion-v1",
    "sd2": "stable-diffusion-v2-512",
    "sd2_v": "stable-diffusion-v2-768-v",
    "sdxl": "stable-diffusion-xl-v1-base",
}
DEFAULT_RESOLUTIONS = {"sd1": 512, "sd2": 512, "sd2_v": 768, "sdxl": 1024}
# modelspec fields taken from --metadata_* options as they are (thumbnail is turned into a data URL)
_SPEC_TEXT_FIELDS = ("author", "description", "license", "tags", "usage_hint", "merged_from", "trigger_phrase",
                     "preprocessor", "is_negative_embedding")


def default_resolution(family: str, v_parameterization: bool) -> int:
    """The resolution a family's base was trained at (modelspec's when nothing else says)."""
    return DEFAULT_RESOLUTIONS["sd2_v" if family == "sd2" and v_parameterization else family]


def modelspec(family: str, v_parameterization: bool, title: str, resolution, args=None) -> dict[str, str]:
    """Stability AI's model-spec 1.0.1 fields for a LoRA adapter (kohya's sai_model_spec.build_metadata).

    With training options (``args``): ``--metadata_title`` wins over ``title``; the other ``--metadata_*``
    options, ``timestep_range`` (from --min/--max_timestep) and ``encoder_layer`` (--clip_skip) are added.
    """
    arch = ARCHITECTURES["sd2_v" if family == "sd2" and v_parameterization else family]
    w, h = resolution if isinstance(resolution, (tuple, list)) else (resolution, resolution)
    opt = (lambda name: getattr(args, name, None)) if args is not None else (lambda name: None)
    spec = {
        "modelspec.sai_model_spec": "1.0.1",
        "modelspec.architecture": f"{arch}/lora",
        "modelspec.implementation": "https://github.com/Stability-AI/generative-models" if family == "sdxl" else "diffusers",
        "modelspec.implementation_version": IMPLEMENTATION_VERSION,
        "modelspec.title": opt("metadata_title") or title,
        "modelspec.resolution": f"{w}x{h}",
        "modelspec.prediction_type": "v" if v_parameterization else "epsilon",
        "modelspec.date": datetime.datetime.now().replace(microsecond=0).isoformat(),
    }
    spec.update(_spec_options(opt))
    return spec


def _spec_options(opt) -> dict[str, str]:
    """The modelspec fields training options add (``--metadata_*``, timestep range, clip skip)."""
    spec = {}
    for key in _SPEC_TEXT_FIELDS:
        value = opt(f"metadata_{key}")
        if value:
            spec[f"modelspec.{key}"] = str(value)
    if opt("metadata_thumbnail"):
        spec["modelspec.thumbnail"] = thumbnail_data_url(opt("metadata_thumbnail"))
    if opt("min_timestep") is not None or opt("max_timestep") is not None:
        low = opt("min_timestep") if opt("min_timestep") is not None else 0
        high = opt("max_timestep") if opt("max_timestep") is not None else 1000
        spec["modelspec.timestep_range"] = f"{low},{high}"
    if opt("clip_skip") is not None:
        spec["modelspec.encoder_layer"] = str(opt("clip_skip"))
    return spec


def thumbnail_data_url(value: str) -> str:
    """``--metadata_thumbnail``: a data: URL as it is, an image file as a base64 data URL (kohya's rule)."""
    if value.startswith("data:"):
        return value
    import base64
    import mimetypes

    try:
        with open(value, "rb") as f:
            data = f.read()
    except OSError as e:
        raise UserError(f"--metadata_thumbnail {value}: cannot read it ({e.strerror}); give an image file or a data: URL") from None
    mime = mimetypes.guess_type(value)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"

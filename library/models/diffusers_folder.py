"""Load a diffusers-format folder (unet/, vae/, text_encoder/[, text_encoder_2/]) offline.

Each part comes from ``from_pretrained(..., local_files_only=True)``; the family is read
from the part configs before any weights load. Tokenizers come from the folder if it
has them, else the shipped ones; the noise schedule is always ours (DDPM, as in
training), taking only ``prediction_type`` from the folder's scheduler config.
"""

from __future__ import annotations

import json
from pathlib import Path

from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTokenizer

from library.models.base_model import BaseModel, assemble
from library.models.build import TEXT_ENCODER_CLASSES, Components, clip_config_dict, diffusers_config_dict
from library.models.configs import scheduler_config
from library.models.errors import ModelLoadError, one_line
from library.models.hashes import content_key
from library.models.load_request import LoadRequest
from library.models.tokenizers import PAD_CLIP, PAD_OPENCLIP, clip_tokenizer

_TE_FOLDERS = ("text_encoder", "text_encoder_2")


def is_diffusers_folder(path: Path) -> bool:
    return path.is_dir() and (path / "unet").is_dir()


_CONFIG_TYPES = {"addition_embed_type": (str, type(None)), "hidden_act": str, "prediction_type": str}


def _read_json(path: Path, what: str) -> dict:
    """A config file as a dict; ModelLoadError naming the file (and key) for anything else."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelLoadError(f"{path.parent.parent}: {what} has no {path.name}; the folder is incomplete, re-download it") from None
    except (ValueError, OSError) as e:
        raise ModelLoadError(f"{path}: not valid JSON ({one_line(e)}); re-download the model folder") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path}: must be a JSON object {{...}}, got a {type(data).__name__}; re-download the model folder")
    for key, kind in _CONFIG_TYPES.items():
        if key in data and not isinstance(data[key], kind):
            raise ModelLoadError(f"{path}: {key} has the wrong type ({type(data[key]).__name__}: {data[key]!r}); "
                                 "re-download the model folder")
    return data


def detect_folder_family(path: Path) -> str:
    """sdxl if the UNet takes text_time embeddings, else sd2 (OpenCLIP, gelu) or sd1 (CLIP-L)."""
    unet = _read_json(path / "unet" / "config.json", "unet/")
    has = {name: (path / name).is_dir() for name in _TE_FOLDERS}
    if unet.get("addition_embed_type") == "text_time":
        if not has["text_encoder"] and has["text_encoder_2"]:
            raise ModelLoadError(f"{path}: this is an SDXL refiner folder, which cannot be trained here; use the SDXL base model")
        return "sdxl"
    if not has["text_encoder"]:
        raise ModelLoadError(f"{path}: no text_encoder/ folder; the model folder is incomplete, re-download it")
    te = _read_json(path / "text_encoder" / "config.json", "text_encoder/")
    return "sd2" if te.get("hidden_act") == "gelu" else "sd1"


def _variant(folder: Path) -> str | None:
    """Return "fp16" when the part ships only ``*.fp16.safetensors``/``*.fp16.bin`` weights, else None."""
    names = [p.name for p in folder.iterdir() if p.suffix in (".safetensors", ".bin")]
    return "fp16" if names and all(".fp16." in n for n in names) else None


def _load_part(path: Path, what: str, load):
    if not (path / what).is_dir():
        raise ModelLoadError(f"{path}: no {what}/ folder; the model folder is incomplete, re-download it")
    try:
        return load()
    except (OSError, ValueError, RuntimeError, TypeError, KeyError, AttributeError, IndexError) as e:
        # wrong JSON types in {what}/config.json surface as TypeError/AttributeError inside diffusers/transformers
        raise ModelLoadError(f"{path}: cannot load {what}/ ({type(e).__name__}: {one_line(e)[:200]}); check "
                             f"{what}/config.json or re-download the model folder") from None


def _tokenizer(path: Path, sub: str, pad: str):
    if (path / sub).is_dir():
        return _load_part(path, sub, lambda: CLIPTokenizer.from_pretrained(str(path), subfolder=sub, local_files_only=True))
    return clip_tokenizer(pad)


def load_diffusers_folder(path: str | Path, request: LoadRequest = LoadRequest()) -> BaseModel:
    """Load a diffusers folder; see library.models.load_base_model (``on_part``: the VAE first)."""
    path = Path(path)
    family, dtype, device, on_part = request.family, request.dtype, request.device, request.on_part
    found = detect_folder_family(path)
    if family is not None and family != found:
        raise ModelLoadError(
            f"{path}: family '{family}' was forced but the folder holds an {found} model; pass family '{found}' or leave it unset"
        )
    family = found

    def diffusers_part(cls, sub):
        return _load_part(path, sub, lambda: cls.from_pretrained(
            str(path), subfolder=sub, torch_dtype=dtype, variant=_variant(path / sub), local_files_only=True))

    vae = diffusers_part(AutoencoderKL, "vae").to(device).eval()
    if on_part is not None:
        on_part("VAE", vae, family)
    unet = diffusers_part(UNet2DConditionModel, "unet")
    te_classes = ["CLIPTextModel", "CLIPTextModelWithProjection"] if family == "sdxl" else ["CLIPTextModel"]
    tes = []
    for sub, cls in zip(_TE_FOLDERS, te_classes):
        model_cls = TEXT_ENCODER_CLASSES[cls]
        te_dtype = dtype if dtype is not None else "auto"
        tes.append(_load_part(path, sub, lambda: model_cls.from_pretrained(
            str(path), subfolder=sub, dtype=te_dtype, variant=_variant(path / sub), local_files_only=True)))
    pads = [PAD_CLIP, PAD_OPENCLIP] if family == "sdxl" else [PAD_OPENCLIP if family == "sd2" else PAD_CLIP]
    tokenizers = [_tokenizer(path, sub, pad) for sub, pad in zip(("tokenizer", "tokenizer_2"), pads)]

    if request.v_parameterization is not None:
        prediction_type = "v_prediction" if request.v_parameterization else "epsilon"
    else:
        sched = path / "scheduler" / "scheduler_config.json"
        prediction_type = _read_json(sched, "scheduler/").get("prediction_type", "epsilon") if sched.is_file() else "epsilon"
        if prediction_type not in ("epsilon", "v_prediction"):
            raise ModelLoadError(
                f"{sched}: prediction_type '{prediction_type}' cannot be trained here; use an epsilon or v-prediction model"
            )
    configs = {
        "family": family,
        "unet": diffusers_config_dict(unet.config),
        "vae": diffusers_config_dict(vae.config),
        "text_encoders": [{"class": c, "config": clip_config_dict(te.config)} for c, te in zip(te_classes, tes)],
        "tokenizers": [{"pad_token": p} for p in pads],
        "scheduler": scheduler_config(prediction_type),
    }
    components = Components(unet.to(device).eval(), vae, [te.to(device).eval() for te in tes])
    return assemble(configs, components, tokenizers=tokenizers, source=str(path), content_hash=content_key(path))

"""Which local folder is a captioning model: checked by its files before transformers loads anything.

Models load from a local folder only (``local_files_only=True``): a transformers folder such as a copy
of Salesforce/blip-image-captioning-large or Salesforce/blip2-opt-2.7b. A hub cache folder
(``models--Salesforce--...``) with one snapshot is followed to that snapshot.
"""

from __future__ import annotations

import json
import os

from library.errors import UserError

# model_type in config.json -> the transformers class that captions with it
CAPTION_MODELS = {"blip": "BlipForConditionalGeneration", "blip-2": "Blip2ForConditionalGeneration"}
# architectures that share a model_type but cannot caption
_NOT_CAPTIONERS = {
    "BlipForQuestionAnswering": "a visual question answering model",
    "BlipForImageTextRetrieval": "an image-text matching model",
    "BlipModel": "a BLIP encoder without the caption decoder",
    "Blip2Model": "a BLIP-2 base model",
    "Blip2ForImageTextRetrieval": "an image-text matching model",
}
_EXAMPLE = "e.g. a local copy of Salesforce/blip-image-captioning-large"


def resolve_model_folder(path: str) -> str:
    """The folder holding config.json: ``path`` itself, or the single snapshot of a hub cache folder."""
    if not path:
        raise UserError(f"--caption_weights is required: a local folder with a BLIP captioning model ({_EXAMPLE})")
    if not os.path.exists(path):
        raise UserError(f"--caption_weights {path} does not exist; pass a local folder with a BLIP captioning model ({_EXAMPLE})")
    if not os.path.isdir(path):
        raise UserError(
            f"--caption_weights {path} is a file; this tool loads a transformers model folder (config.json, weights, "
            f"tokenizer and preprocessor files), {_EXAMPLE}. kohya's model_large_caption.pth is not supported"
        )
    if os.path.isfile(os.path.join(path, "config.json")):
        return path
    snapshots = os.path.join(path, "snapshots")
    if os.path.isdir(snapshots):
        found = sorted(os.path.join(snapshots, s) for s in os.listdir(snapshots) if os.path.isfile(os.path.join(snapshots, s, "config.json")))
        if len(found) == 1:
            return found[0]
        if found:
            raise UserError(f"--caption_weights {path} holds {len(found)} snapshots; pass one of them, e.g. {found[-1]}")
    raise UserError(f"--caption_weights {path} has no config.json; pass the folder of a transformers BLIP model ({_EXAMPLE})")


def read_model_type(folder: str) -> str:
    """``"blip"`` or ``"blip-2"`` from config.json; UserError naming the folder for anything else."""
    config_path = os.path.join(folder, "config.json")
    try:
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {config_path} ({e}); is --caption_weights a transformers model folder?") from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type not in CAPTION_MODELS:
        raise UserError(
            f"--caption_weights {folder} is a {model_type or 'unknown'} model, not BLIP; "
            f"supported model types: {', '.join(CAPTION_MODELS)} ({_EXAMPLE})"
        )
    for arch in config.get("architectures") or []:
        if arch in _NOT_CAPTIONERS:
            raise UserError(
                f"--caption_weights {folder} is {_NOT_CAPTIONERS[arch]} ({arch}), which cannot write captions; "
                f"use a captioning checkpoint ({_EXAMPLE}, or a Blip2ForConditionalGeneration one)"
            )
    return model_type


_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "tokenizer.model")
_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def check_model_folder(folder: str) -> str:
    """The model type, after checking that config, weights, tokenizer and preprocessor files are all there.

    transformers would otherwise build a default 5-token tokenizer from a folder without tokenizer
    files and write nonsense captions, so each part is looked for by name first.
    """
    model_type = read_model_type(folder)
    names = set(os.listdir(folder))
    for files, what in ((_WEIGHT_FILES, "weights"), (_TOKENIZER_FILES, "tokenizer"), (_PROCESSOR_FILES, "image preprocessor")):
        if not names.intersection(files):
            raise UserError(
                f"--caption_weights {folder} has no {what} file ({' or '.join(files)}); "
                "copy the whole model folder, not just some of its files"
            )
    return model_type

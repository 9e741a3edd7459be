"""Caption images with a BLIP or BLIP-2 model from a local folder (transformers), for tools/caption.py.

Why a module of its own: the folder scan, the "which images still need a caption" rule, the model
checks and the atomic caption write are each small and easy to get wrong, and tests call them alone.

- Models load from a local folder only (``local_files_only=True``): a transformers folder such as a
  copy of Salesforce/blip-image-captioning-large or Salesforce/blip2-opt-2.7b. A hub cache folder
  (``models--Salesforce--...``) with one snapshot is followed to that snapshot.
- Images are resized and normalised by transformers' PIL image processor (``backend="pil"``), so
  torchvision is never needed and the pixels do not depend on whether it happens to be installed.
- A caption file is written under a temporary name and renamed into place: an interrupted run never
  leaves a half-written caption.
"""

from __future__ import annotations

import json
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from typing import Callable, Iterable, Iterator, List, Optional, Tuple, Union

import numpy as np

from library.data.folders import IMAGE_EXTENSIONS, count_images, is_image_name, normalize_extension
from library.data.images import load_image
from library import atomic
from library.devices import check_device, dtype_of
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
# the prompt BLIP's own decoder (kohya's make_captions.py) starts every caption with, then cuts off
BLIP_PROMPT = "a picture of "
# BLIP's own nucleus sampling (the code kohya's make_captions.py runs) uses this repetition penalty
SAMPLING_REPETITION_PENALTY = 1.1


@dataclass(frozen=True)
class GenerationSettings:
    """How captions are decoded: kohya's default is nucleus sampling; --beam_search is deterministic."""

    beam_search: bool = False
    num_beams: int = 1
    top_p: float = 0.9
    min_length: int = 5
    max_length: int = 75

    def generate_kwargs(self) -> dict:
        """Keyword arguments for ``model.generate``; lengths count caption tokens (prompt excluded)."""
        kwargs = {"max_new_tokens": self.max_length, "min_new_tokens": self.min_length}
        if self.beam_search:
            kwargs.update(do_sample=False, num_beams=self.num_beams)
        else:
            kwargs.update(do_sample=True, top_p=self.top_p, num_beams=1, repetition_penalty=SAMPLING_REPETITION_PENALTY)
        return kwargs


# --- images and caption files ---------------------------------------------------------------


def find_images(folder: str, recursive: bool = False) -> List[str]:
    """Sorted paths of the images in ``folder`` (and below with ``recursive``); UserError if none."""
    if not os.path.exists(folder):
        raise UserError(f"train_data_dir {folder} does not exist; check the path")
    if not os.path.isdir(folder):
        raise UserError(f"train_data_dir {folder} is a file, not a folder of images")
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if recursive else []
        found += [os.path.join(dirpath, n) for n in filenames if is_image_name(n) and not n.startswith(".")]
    if found:
        return sorted(found)
    kinds = ", ".join(IMAGE_EXTENSIONS)
    if not recursive:
        subs = sorted(e.path for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
        with_images = [s for s in subs if count_images(s)]
        if with_images:
            raise UserError(
                f"no images directly in {folder}, but its subfolder {with_images[0]} has some; "
                "add --recursive to caption the subfolders too"
            )
    raise UserError(f"no images ({kinds}) in {folder}{' or its subfolders' if recursive else ''}; check the path")


def check_caption_extension(ext: str) -> str:
    """The extension with a leading dot; UserError when it would overwrite the images themselves."""
    ext = normalize_extension(ext.strip())
    if ext in ("", "."):
        raise UserError("--caption_extension is empty; use e.g. .txt or .caption")
    if ext.lower() in IMAGE_EXTENSIONS:
        raise UserError(f"--caption_extension {ext} is an image extension and would overwrite images; use .txt or .caption")
    return ext


def caption_path(image_path: str, extension: str) -> str:
    """``photo.png`` -> ``photo<extension>`` next to it (kohya's naming)."""
    return os.path.splitext(image_path)[0] + extension


def has_caption(path: str) -> bool:
    """True when ``path`` exists with some non-blank text (an empty file counts as no caption)."""
    try:
        with open(path, "rb") as f:
            return bool(f.read().strip())
    except FileNotFoundError:
        return False
    except OSError:
        return True  # exists but unreadable: never overwrite it by accident


def compose_caption(caption: str, prefix: str = "", suffix: str = "") -> str:
    """One line: the model's caption with whitespace collapsed, prefix and suffix added as given."""
    return f"{prefix}{' '.join(caption.split())}{suffix}"


def write_caption(path: str, text: str) -> None:
    """Write ``text`` and a newline as UTF-8, atomically (temporary file in the same folder, then rename)."""
    try:
        atomic.write_text(path, text + "\n", newline="\n")
    except OSError as e:
        raise UserError(f"cannot write caption file {path}: {e.strerror or e}; check the folder's permissions") from None


Loaded = Union[np.ndarray, Exception]


def load_in_order(paths: Iterable[str], load: Callable[[str], np.ndarray], workers: int = 0) -> Iterator[Tuple[str, Loaded]]:
    """Yield ``(path, load(path) or the exception it raised)`` in order; ``workers`` threads read ahead.

    Read-ahead is bounded (4 images per worker), so a slow model never makes memory grow.
    """

    def attempt(path: str) -> Loaded:
        try:
            return load(path)
        except Exception as e:  # a damaged file must not stop the other images
            return e

    if workers <= 0:
        for path in paths:
            yield path, attempt(path)
        return
    it = iter(paths)
    with ThreadPoolExecutor(workers) as pool:
        pending = deque((p, pool.submit(attempt, p)) for p in islice(it, 4 * workers))
        while pending:
            path, future = pending.popleft()
            nxt = next(it, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(attempt, nxt)))
            yield path, future.result()


def describe_failure(path: str, error: Exception) -> str:
    """A one-line reason naming the file (DatasetError messages already do)."""
    text = str(error)
    return text if path in text else f"cannot read image {path} ({type(error).__name__}: {text})"


# --- the model --------------------------------------------------------------------------------


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


def pick_device(name: Optional[str]) -> str:
    """``--device`` or cuda when available, else cpu; UserError when the named device is absent."""
    return check_device(name, default="auto")


def pick_dtype(name: Optional[str], device: str):
    """--dtype, or float16 on a GPU and float32 on the CPU."""
    return dtype_of(name or ("fp16" if device.startswith("cuda") else "float"))


class Captioner:
    """A loaded BLIP/BLIP-2 model with its image processor and tokenizer."""

    def __init__(self, model, image_processor, tokenizer, model_type: str, device: str, dtype):
        self.model = model
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.model_type = model_type
        self.device = device
        self.dtype = dtype

    @classmethod
    def load(cls, path: str, device: str = "cpu", dtype=None) -> "Captioner":
        """Load from a local folder only; UserError naming the folder and the missing piece."""
        import torch
        import transformers

        folder = resolve_model_folder(path)
        model_type = check_model_folder(folder)
        dtype = dtype or torch.float32
        model_class = getattr(transformers, CAPTION_MODELS[model_type])
        try:
            image_processor = transformers.AutoImageProcessor.from_pretrained(folder, local_files_only=True, backend="pil")
        except Exception as e:  # any failure here comes from the folder's files
            raise UserError(f"--caption_weights {folder}: cannot load the image preprocessor: {_first_line(e)}") from e
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
        except Exception as e:  # any failure here comes from the folder's files
            raise UserError(f"--caption_weights {folder}: cannot load the tokenizer files: {_first_line(e)}") from e
        try:
            model, info = model_class.from_pretrained(folder, local_files_only=True, dtype=dtype, output_loading_info=True)
        except Exception as e:  # any failure here comes from the folder's files
            raise UserError(f"--caption_weights {folder}: cannot load the model weights: {_first_line(e)}") from e
        missing = list(info.get("missing_keys") or [])
        if missing:
            raise UserError(
                f"--caption_weights {folder}: the weights lack {len(missing)} tensors of a {CAPTION_MODELS[model_type]} "
                f"(e.g. {sorted(missing)[0]}); the folder is incomplete or not a captioning model"
            )
        if model_type == "blip-2" and model.config.image_token_index is None:
            raise UserError(f"--caption_weights {folder}: config.json lacks image_token_index; use a BLIP-2 folder saved by transformers 4.46 or later")
        model.to(device).eval()
        return cls(model, image_processor, tokenizer, model_type, device, dtype)

    def preprocess(self, path: str) -> np.ndarray:
        """Decode one image file (EXIF rotation applied) to the model's [3, H, W] float pixels."""
        image = load_image(path)
        return np.asarray(self.image_processor(images=[image], return_tensors="np")["pixel_values"][0], dtype=np.float32)

    def _start_tokens(self, prompt: str) -> Tuple[Optional[List[int]], int]:
        """(input_ids for ``generate`` or None, how many leading output tokens are not the caption).

        BLIP returns its BOS and the prompt before the caption; BLIP-2 with a decoder-only language
        model returns its image query tokens, BOS and prompt; BLIP-2 with T5 returns new tokens only.
        The prompt is cut off the caption, as kohya does with BLIP's "a picture of ".
        """
        config = self.model.config
        ids = self.tokenizer(prompt).input_ids if prompt else None
        if self.model_type == "blip":
            return ids, (len(ids) - 1 if ids else 1)  # generate swaps [CLS] for BOS and drops the final [SEP]
        if ids is not None:
            ids = [config.image_token_index] * config.num_query_tokens + list(ids)
        if config.is_encoder_decoder:
            return ids, 0
        return ids, (len(ids) if ids else config.num_query_tokens + 1)

    def caption(self, pixels: List[np.ndarray], settings: GenerationSettings, prompt: str = "") -> List[str]:
        """Captions for a batch of preprocessed images, in order, each continuing ``prompt`` (which is cut off)."""
        import torch

        batch = torch.from_numpy(np.stack(pixels)).to(self.device, self.dtype)
        ids, skip = self._start_tokens(prompt)
        inputs = {"pixel_values": batch}
        if ids is not None:
            inputs["input_ids"] = torch.tensor([ids] * len(pixels), dtype=torch.long, device=self.device)
            inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
        with torch.inference_mode():
            out = self.model.generate(**inputs, **settings.generate_kwargs())
        return [text.strip() for text in self.tokenizer.batch_decode(out[:, skip:], skip_special_tokens=True)]


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__

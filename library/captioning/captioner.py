"""A loaded BLIP/BLIP-2 captioning model: its decoding settings, device and precision.

Images are resized and normalised by transformers' PIL image processor (``backend="pil"``), so
torchvision is never needed and the pixels do not depend on whether it happens to be installed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

from library.captioning.model_folder import CAPTION_MODELS, check_model_folder, resolve_model_folder
from library.data.images import load_image
from library.devices import check_device
from library.errors import UserError

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


def pick_device(name: Optional[str]) -> str:
    """``--device`` or cuda when available, else cpu; UserError when the named device is absent."""
    return check_device(name, default="auto")


def pick_dtype(name: Optional[str], device: str):
    """--dtype, or float16 on a GPU and float32 on the CPU."""
    from library.devices import dtype_of

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

"""The A1111-style ``parameters`` text chunk of a generated PNG, so the settings travel with the image
(sample images during training and tools/gen_img.py write the same text)."""

from __future__ import annotations

from PIL import PngImagePlugin

from library.inference.prompts import SamplePrompt


def png_info(sample: SamplePrompt, sampler: str) -> PngImagePlugin.PngInfo:
    """``prompt``, ``Negative prompt: …`` and one line of steps, sampler, CFG scale, seed and size."""
    info = PngImagePlugin.PngInfo()
    text = sample.prompt
    if sample.negative_prompt:
        text += f"\nNegative prompt: {sample.negative_prompt}"
    text += f"\nSteps: {sample.steps}, Sampler: {sampler}, CFG scale: {sample.scale}, Seed: {sample.seed}, Size: {sample.width}x{sample.height}"
    info.add_text("parameters", text)
    return info

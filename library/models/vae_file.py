"""``--vae``: replace the checkpoint's VAE by one from a separate file or diffusers folder.

Users keep fixed VAEs (``sdxl_vae.safetensors``, ``vae-ft-mse-840000-ema-pruned.safetensors``) as
separate files in the original layout, sometimes with a ``first_stage_model.`` prefix, sometimes in
diffusers naming. All three are read here, offline, into the model's own AutoencoderKL shape.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from library.models.checkpoint_file import open_checkpoint
from library.models.errors import ModelLoadError, UnmappedKey
from library.models.keys_vae import PREFIX, vae_from_original


def _state_dict_from_file(path: Path, num_levels: int) -> dict[str, torch.Tensor]:
    reader = open_checkpoint(path)
    keys = reader.keys()
    if any(k.startswith(PREFIX) for k in keys):
        keys = [k for k in keys if k.startswith(PREFIX)]
    out = {}
    for key in keys:
        short = key[len(PREFIX):] if key.startswith(PREFIX) else key
        if short.startswith(("encoder.down_blocks", "decoder.up_blocks", "encoder.mid_block", "decoder.mid_block")) or (
            short.startswith(("encoder.conv_norm_out", "decoder.conv_norm_out"))
        ):
            out[short] = reader.get(key)  # already diffusers naming
            continue
        try:
            new, tensor = vae_from_original(short, reader.get(key), num_levels)
        except UnmappedKey:
            continue  # e.g. a full checkpoint's UNet keys when the file is not a VAE alone
        out[new] = tensor
    return out


def load_vae_into(vae: torch.nn.Module, path: str | os.PathLike) -> None:
    """Load the weights at ``path`` into ``vae`` (diffusers AutoencoderKL), checking every tensor fits."""
    p = Path(path)
    if p.is_dir():
        folder = p / "vae" if (p / "vae").is_dir() else p
        files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
        if not files:
            raise ModelLoadError(f"--vae {p}: no .safetensors or .bin weights in the folder; give a VAE file or diffusers vae folder")
        p = files[0]
    elif not p.exists():
        raise ModelLoadError(f"--vae {p}: no such file; give the path of a VAE .safetensors file")
    num_levels = len(vae.config.block_out_channels)
    sd = _state_dict_from_file(p, num_levels)
    own = vae.state_dict()
    missing = [k for k in own if k not in sd]
    wrong = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or wrong:
        what = f"{len(missing)} VAE weights missing (e.g. {missing[0]})" if missing else f"shape mismatch at {wrong[0]}"
        raise ModelLoadError(f"--vae {p}: not a VAE for this model ({what}); use a VAE made for this model family")
    with torch.no_grad():
        for k, v in own.items():
            v.copy_(sd[k].to(v.dtype))

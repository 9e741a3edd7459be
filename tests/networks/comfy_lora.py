"""A faithful re-implementation of how ComfyUI reads a LoRA-style file (comfy/lora.py and
comfy/weight_adapter/*.py): its key map, its key grammar per network type, and the LoRA and OFT
weight patches. ComfyUI itself cannot load our tiny layouts (it detects models by tensor shape), so
the tests prove our files against this instead.

Key map (``model_lora_keys_unet``/``model_lora_keys_clip``): every UNet weight under
``lora_unet_`` + its original-layout path and + its diffusers path (ComfyUI's ``unet_to_diffusers``;
here the pairing comes from diffusers' own checkpoint converter, not from our naming code), and the
CLIP layers as ``lora_te_``/``lora_te1_`` (CLIP-L) and ``lora_te2_`` (bigG, SDXL)
``text_model_encoder_layers_<i>_<mlp_fc1|self_attn_q_proj|...>``.
"""

from __future__ import annotations

import re

import torch
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint
from safetensors.torch import load_file

UNET_PREFIX = "model.diffusion_model."
CLIP_MAP = {"mlp.fc1": "mlp_fc1", "mlp.fc2": "mlp_fc2", "self_attn.k_proj": "self_attn_k_proj",
            "self_attn.q_proj": "self_attn_q_proj", "self_attn.v_proj": "self_attn_v_proj",
            "self_attn.out_proj": "self_attn_out_proj"}
# The tensors ComfyUI's adapters read for one module x (suffix after "x.").
GRAMMAR = {
    "lora": ("lora_up.weight", "lora_down.weight", "lora_mid.weight"),
    "loha": ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2"),
    "lokr": ("lokr_w1", "lokr_w2", "lokr_w1_a", "lokr_w1_b", "lokr_w2_a", "lokr_w2_b", "lokr_t2"),
    "glora": ("a1.weight", "a2.weight", "b1.weight", "b2.weight"),
    "oft": ("oft_blocks", "rescale"),
    "diff": ("diff", "diff_b", "w_norm", "b_norm"),
    "common": ("alpha", "dora_scale"),
}


def key_map(checkpoint_path: str, unet_config: dict) -> dict[str, str]:
    """ComfyUI's LoRA module name -> the weight key it patches, for a single-file checkpoint."""
    ck = load_file(checkpoint_path)
    out: dict[str, str] = {}
    for key in ck:
        if key.startswith(UNET_PREFIX) and key.endswith(".weight"):
            out["lora_unet_" + key[len(UNET_PREFIX):-len(".weight")].replace(".", "_")] = key
    by_ptr = {v.data_ptr(): k for k, v in ck.items()}
    for dkey, tensor in convert_ldm_unet_checkpoint(ck, unet_config).items():
        if dkey.endswith(".weight") and tensor.data_ptr() in by_ptr:
            out["lora_unet_" + dkey[:-len(".weight")].replace(".", "_")] = by_ptr[tensor.data_ptr()]
    sdxl = any(k.startswith("conditioner.embedders.1.") for k in ck)
    encoders = [("conditioner.embedders.0.transformer.", ("lora_te1",)),
                ("conditioner.embedders.1.model.", ("lora_te2",))] if sdxl else \
               [("cond_stage_model.transformer.", ("lora_te", "lora_te1"))]
    for head, prefixes in encoders:
        layers = {int(m.group(1)) for k in ck if k.startswith(head) and (m := re.search(r"(?:layers|resblocks)\.(\d+)\.", k))}
        for b in layers:
            for c, lc in CLIP_MAP.items():
                for p in prefixes:
                    out[f"{p}_text_model_encoder_layers_{b}_{lc}"] = f"{head}layers.{b}.{c}.weight"
    return out


def load_lora(tensors: dict, kmap: dict) -> tuple[dict[str, tuple[str, dict]], list[str]]:
    """(patches, keys not loaded): ComfyUI's ``load_lora``; a patch is (kind, {suffix: tensor})."""
    patches, loaded = {}, set()
    for x, target in kmap.items():
        found = {}
        for kind, suffixes in GRAMMAR.items():
            for s in suffixes:
                if f"{x}.{s}" in tensors:
                    found.setdefault(kind, {})[s] = tensors[f"{x}.{s}"]
        if not found:
            continue
        common = found.pop("common", {})
        if "oft" in found and found["oft"]["oft_blocks"].ndim != 3:
            found.pop("oft")  # 4-d blocks are BOFT's
        for kind, parts in found.items():
            patches[target] = (kind, {**parts, **common})
            loaded.update(f"{x}.{s}" for s in parts)
            loaded.update(f"{x}.{s}" for s in common)
    return patches, [k for k in tensors if k not in loaded]


def patched_weight(weight: torch.Tensor, kind: str, parts: dict, strength: float = 1.0) -> torch.Tensor:
    """ComfyUI's ``calculate_weight`` for LoRA, OFT, LoHa and LoKr patches (float32)."""
    weight = weight.float().clone()
    alpha = float(parts["alpha"]) if "alpha" in parts else None
    if kind == "lora":
        up, down = parts["lora_up.weight"].float(), parts["lora_down.weight"].float()
        scale = alpha / down.shape[0] if alpha is not None else 1.0
        return weight + strength * scale * (up.flatten(1) @ down.flatten(1)).reshape(weight.shape)
    if kind == "oft":
        blocks = parts["oft_blocks"].float()
        k, b, _ = blocks.shape
        eye = torch.eye(b)
        q = blocks - blocks.transpose(1, 2)
        if alpha and alpha > 0:  # ComfyUI reads alpha as the absolute norm limit
            norm = torch.norm(q) + 1e-8
            if norm > alpha:
                q = q * alpha / norm
        r = (eye + q) @ (eye - q).float().inverse()
        diff = torch.einsum("knm,kn...->km...", r * strength - strength * eye, weight.view(k, b, *weight.shape[1:]))
        return weight + strength * diff.reshape(weight.shape)
    if kind in ("loha", "lokr"):
        return weight + strength * _product_diff(kind, {k: v.float() for k, v in parts.items()}, alpha, weight.shape)
    raise NotImplementedError(kind)


def _tucker(t, b, a):
    return torch.einsum("i j k l, j r, i p -> p r k l", t, b, a)


def _product_diff(kind: str, p: dict, alpha, shape) -> torch.Tensor:
    """ComfyUI's LoHa (Hadamard product, scaled alpha / rank of w1_b) and LoKr (Kronecker product,
    scaled alpha / rank only when a factor is decomposed) weight differences."""
    if kind == "loha":
        if "hada_t1" in p:
            m1, m2 = _tucker(p["hada_t1"], p["hada_w1_b"], p["hada_w1_a"]), _tucker(p["hada_t2"], p["hada_w2_b"], p["hada_w2_a"])
        else:
            m1, m2 = p["hada_w1_a"] @ p["hada_w1_b"], p["hada_w2_a"] @ p["hada_w2_b"]
        scale = alpha / p["hada_w1_b"].shape[0] if alpha is not None else 1.0
        return scale * (m1 * m2).reshape(shape)
    dim = None
    w1 = p.get("lokr_w1")
    if w1 is None:
        dim, w1 = p["lokr_w1_b"].shape[0], p["lokr_w1_a"] @ p["lokr_w1_b"]
    w2 = p.get("lokr_w2")
    if w2 is None:
        dim = p["lokr_w2_b"].shape[0]
        w2 = _tucker(p["lokr_t2"], p["lokr_w2_b"], p["lokr_w2_a"]) if "lokr_t2" in p else p["lokr_w2_a"] @ p["lokr_w2_b"]
    if w2.ndim == 4:
        w1 = w1[:, :, None, None]
    scale = alpha / dim if alpha is not None and dim is not None else 1.0
    return scale * torch.kron(w1, w2).reshape(shape)

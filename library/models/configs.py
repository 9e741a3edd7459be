"""Shipped model configs: full-size SD1/SD2/SDXL and tiny look-alikes, as plain dicts.

An original single-file checkpoint carries weights but no architecture, so loading one
offline needs these. A ``configs`` dict is JSON-serialisable and has one shape for every
family::

    {"family": "sdxl",
     "unet": {...UNet2DConditionModel kwargs...},
     "vae": {...AutoencoderKL kwargs...},
     "text_encoders": [{"class": "CLIPTextModel", "config": {...CLIPTextConfig kwargs...}}, ...],
     "tokenizers": [{"pad_token": "<|endoftext|>"}, ...],
     "scheduler": {...DDPMScheduler kwargs, including prediction_type...}}

Our saver writes it into the checkpoint's metadata and our loader prefers it, which is
how tiny models (same key layout, tiny widths) load with no special case.

Tiny variants keep the real block structure so every key name exists: 4 UNet levels for
SD1/SD2 and 3 for SDXL with varying transformer depth, 2 ResNets per level, a 4-level
VAE (8x spatial downscale like the real one), and CLIP vocab 49408 x 77 positions.
Widths are distinct per level and per text encoder so a key mapped to the wrong place
fails the shape check instead of loading silently.
"""

from __future__ import annotations

import copy

FAMILIES = ("sd1", "sd2", "sdxl")
NUM_TEXT_ENCODERS = {"sd1": 1, "sd2": 1, "sdxl": 2}
PREDICTION_TYPES = ("epsilon", "v_prediction")

# Token ids of the shipped tokenizer. eos_token_id=49407 makes transformers pool at the
# first end token, which is right for both padding styles ("<|endoftext|>" and "!").
_CLIP_IDS = {"vocab_size": 49408, "max_position_embeddings": 77, "bos_token_id": 49406, "eos_token_id": 49407}
_PAD_CLIP = {"pad_token": "<|endoftext|>"}
_PAD_OPENCLIP = {"pad_token": "!"}

_SD_UNET_COMMON = {
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "act_fn": "silu",
    "center_input_sample": False,
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-5,
}
_SD12_BLOCKS = {
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}
_SDXL_BLOCKS = {
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
}
_VAE_COMMON = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "latent_channels": 4,
    "layers_per_block": 2,
    "act_fn": "silu",
}
SD_VAE_SCALE = 0.18215
SDXL_VAE_SCALE = 0.13025


def scheduler_config(prediction_type: str = "epsilon") -> dict:
    """The training noise schedule shared by SD1/SD2/SDXL (DDPM, scaled-linear betas)."""
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
    return {
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "clip_sample": False,
        "prediction_type": prediction_type,
    }


def _te(cls: str, **cfg) -> dict:
    # pad_token_id follows the tokenizer: "<|endoftext|>" for CLIP-L (quick_gelu), "!" for OpenCLIP.
    pad_id = 49407 if cfg["hidden_act"] == "quick_gelu" else 0
    return {"class": cls, "config": {**_CLIP_IDS, "pad_token_id": pad_id, "layer_norm_eps": 1e-5, **cfg}}


def _clip_l(**over) -> dict:
    return _te(
        "CLIPTextModel", hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
        num_attention_heads=12, hidden_act="quick_gelu", projection_dim=768, **over,
    )


def _scheduler(v_prediction: bool) -> dict:
    return scheduler_config("v_prediction" if v_prediction else "epsilon")


def _full_sd1(v_prediction: bool) -> dict:
    return {
        "family": "sd1",
        "unet": {
            **_SD_UNET_COMMON, **_SD12_BLOCKS, "sample_size": 64,
            "block_out_channels": [320, 640, 1280, 1280], "attention_head_dim": 8,
            "cross_attention_dim": 768, "norm_num_groups": 32,
        },
        "vae": {**_VAE_COMMON, "block_out_channels": [128, 256, 512, 512], "norm_num_groups": 32,
                "sample_size": 512, "scaling_factor": SD_VAE_SCALE},
        "text_encoders": [_clip_l()],
        "tokenizers": [dict(_PAD_CLIP)],
        "scheduler": _scheduler(v_prediction),
    }


def _full_sd2(v_prediction: bool) -> dict:
    # SD2 uses OpenCLIP-H's penultimate layer, so the HF model holds 23 of its 24 layers.
    return {
        "family": "sd2",
        "unet": {
            **_SD_UNET_COMMON, **_SD12_BLOCKS, "sample_size": 96 if v_prediction else 64,
            "block_out_channels": [320, 640, 1280, 1280], "attention_head_dim": [5, 10, 20, 20],
            "cross_attention_dim": 1024, "norm_num_groups": 32, "use_linear_projection": True,
            "upcast_attention": v_prediction,
        },
        "vae": {**_VAE_COMMON, "block_out_channels": [128, 256, 512, 512], "norm_num_groups": 32,
                "sample_size": 768 if v_prediction else 512, "scaling_factor": SD_VAE_SCALE},
        "text_encoders": [_te(
            "CLIPTextModel", hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
            num_attention_heads=16, hidden_act="gelu", projection_dim=512,
        )],
        "tokenizers": [dict(_PAD_OPENCLIP)],
        "scheduler": _scheduler(v_prediction),
    }


def _full_sdxl(v_prediction: bool) -> dict:
    return {
        "family": "sdxl",
        "unet": {
            **_SD_UNET_COMMON, **_SDXL_BLOCKS, "sample_size": 128,
            "block_out_channels": [320, 640, 1280], "attention_head_dim": [5, 10, 20],
            "transformer_layers_per_block": [1, 2, 10], "cross_attention_dim": 2048,
            "norm_num_groups": 32, "use_linear_projection": True,
            "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
            "projection_class_embeddings_input_dim": 2816,
        },
        "vae": {**_VAE_COMMON, "block_out_channels": [128, 256, 512, 512], "norm_num_groups": 32,
                "sample_size": 1024, "scaling_factor": SDXL_VAE_SCALE, "force_upcast": True},
        "text_encoders": [
            _clip_l(),
            _te(
                "CLIPTextModelWithProjection", hidden_size=1280, intermediate_size=5120,
                num_hidden_layers=32, num_attention_heads=20, hidden_act="gelu", projection_dim=1280,
            ),
        ],
        "tokenizers": [dict(_PAD_CLIP), dict(_PAD_OPENCLIP)],
        "scheduler": _scheduler(v_prediction),
    }


_TINY_UNET = {"norm_num_groups": 8, "sample_size": 8}
_TINY_VAE = {**_VAE_COMMON, "block_out_channels": [8, 16, 32, 32], "norm_num_groups": 4, "sample_size": 64}


def _tiny_te(cls: str, hidden: int, act: str, **over) -> dict:
    cfg = {"hidden_size": hidden, "intermediate_size": 2 * hidden, "num_hidden_layers": 3,
           "num_attention_heads": 4, "hidden_act": act, "projection_dim": hidden}
    return _te(cls, **{**cfg, **over})


def _tiny_sd1(v_prediction: bool) -> dict:
    return {
        "family": "sd1",
        "unet": {**_SD_UNET_COMMON, **_SD12_BLOCKS, **_TINY_UNET,
                 "block_out_channels": [16, 32, 48, 64], "attention_head_dim": 4, "cross_attention_dim": 32},
        "vae": {**_TINY_VAE, "scaling_factor": SD_VAE_SCALE},
        "text_encoders": [_tiny_te("CLIPTextModel", 32, "quick_gelu")],
        "tokenizers": [dict(_PAD_CLIP)],
        "scheduler": _scheduler(v_prediction),
    }


def _tiny_sd2(v_prediction: bool) -> dict:
    return {
        "family": "sd2",
        "unet": {**_SD_UNET_COMMON, **_SD12_BLOCKS, **_TINY_UNET,
                 "block_out_channels": [16, 32, 48, 64], "attention_head_dim": [2, 4, 6, 8],
                 "cross_attention_dim": 32, "use_linear_projection": True},
        "vae": {**_TINY_VAE, "scaling_factor": SD_VAE_SCALE},
        "text_encoders": [_tiny_te("CLIPTextModel", 32, "gelu", projection_dim=24)],
        "tokenizers": [dict(_PAD_OPENCLIP)],
        "scheduler": _scheduler(v_prediction),
    }


def _tiny_sdxl(v_prediction: bool) -> dict:
    te1, te2_hidden, te2_proj, time_dim = 32, 48, 40, 8
    return {
        "family": "sdxl",
        "unet": {**_SD_UNET_COMMON, **_SDXL_BLOCKS, **_TINY_UNET,
                 "block_out_channels": [16, 32, 64], "attention_head_dim": [1, 2, 4],
                 "transformer_layers_per_block": [1, 1, 2], "cross_attention_dim": te1 + te2_hidden,
                 "use_linear_projection": True, "addition_embed_type": "text_time",
                 "addition_time_embed_dim": time_dim,
                 "projection_class_embeddings_input_dim": te2_proj + 6 * time_dim},
        "vae": {**_TINY_VAE, "scaling_factor": SDXL_VAE_SCALE, "force_upcast": True},
        "text_encoders": [
            _tiny_te("CLIPTextModel", te1, "quick_gelu"),
            _tiny_te("CLIPTextModelWithProjection", te2_hidden, "gelu", projection_dim=te2_proj),
        ],
        "tokenizers": [dict(_PAD_CLIP), dict(_PAD_OPENCLIP)],
        "scheduler": _scheduler(v_prediction),
    }


_FULL_SIZE = {"sd1": _full_sd1, "sd2": _full_sd2, "sdxl": _full_sdxl}
_TINY = {"sd1": _tiny_sd1, "sd2": _tiny_sd2, "sdxl": _tiny_sdxl}


def _configs(makers: dict, family: str, v_prediction: bool) -> dict:
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    return makers[family](v_prediction)


def full_size_configs(family: str, *, v_prediction: bool = False) -> dict:
    """The released architecture of ``family`` (SD2: 512 base, or 768-v with ``v_prediction``)."""
    return _configs(_FULL_SIZE, family, v_prediction)


def tiny_configs(family: str, *, v_prediction: bool = False) -> dict:
    """A tiny model of ``family`` with the real key layout (loads and runs in milliseconds)."""
    return _configs(_TINY, family, v_prediction)


def with_prediction_type(configs: dict, prediction_type: str) -> dict:
    """A copy of ``configs`` whose noise schedule predicts ``prediction_type``."""
    out = copy.deepcopy(configs)
    out["scheduler"] = {**out["scheduler"], "prediction_type": scheduler_config(prediction_type)["prediction_type"]}
    return out


def check_configs(configs) -> dict:
    """Return ``configs`` if it has the shape described above, else raise ValueError saying why.

    Guards against metadata written by another tool or a different version of ours.
    """
    if not isinstance(configs, dict):
        raise ValueError("not a JSON object")
    for key, kind in (("family", str), ("unet", dict), ("vae", dict), ("text_encoders", list),
                      ("tokenizers", list), ("scheduler", dict)):
        if not isinstance(configs.get(key), kind):
            raise ValueError(f"'{key}' is missing or not a {kind.__name__}")
    family = configs["family"]
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}")
    want = NUM_TEXT_ENCODERS[family]
    if len(configs["text_encoders"]) != want or len(configs["tokenizers"]) != want:
        raise ValueError(f"{family} needs {want} text encoder(s) and tokenizer(s)")
    for te in configs["text_encoders"]:
        if not isinstance(te, dict) or te.get("class") not in ("CLIPTextModel", "CLIPTextModelWithProjection"):
            raise ValueError("a text encoder entry has no known 'class'")
        if not isinstance(te.get("config"), dict):
            raise ValueError("a text encoder entry has no 'config'")
    if configs["scheduler"].get("prediction_type", "epsilon") not in PREDICTION_TYPES:
        raise ValueError(f"unknown prediction_type {configs['scheduler'].get('prediction_type')!r}")
    return configs

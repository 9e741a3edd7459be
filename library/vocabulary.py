"""Names that several layers accept: data layouts, resize filters, samplers, schedulers, losses, precisions,
base-model versions.

Why: the options schema, the dataset config reader, the image code and the sampler each used to keep
their own copy of these lists, and nothing kept the copies equal. This leaf module imports nothing
(no torch, no PIL), so every layer can take its names from here; tests/test_vocabulary.py checks that
they do.
"""

# How train_data_dir / reg_data_dir is laid out ("kohya" = NN_name subfolders); data_layout option.
DATA_LAYOUTS = ("auto", "kohya", "images", "metadata_jsonl", "image_text_pairs", "hf_dataset")
# How one [[datasets.subsets]] entry is laid out (kohya_json = in_json / metadata_file).
SUBSET_LAYOUTS = ("auto", "images", "metadata_jsonl", "image_text_pairs", "hf_dataset", "kohya_json")
# resize_interpolation values (kohya's names; "linear"/"cubic"/"box" are aliases PIL also knows).
INTERPOLATIONS = ("lanczos", "nearest", "bilinear", "linear", "bicubic", "cubic", "area", "box")
# lr_scheduler names (kohya's; a scheduler class path works too); library/train/schedulers.py builds them.
LR_SCHEDULERS = (
    "constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "cosine_with_min_lr",
    "polynomial", "inverse_sqrt", "warmup_stable_decay", "piecewise_constant", "adafactor",
)
# loss_type and huber_schedule values; library/train/losses.py computes them.
LOSS_TYPES = ("l2", "l1", "huber", "smooth_l1")
HUBER_SCHEDULES = ("constant", "exponential", "snr")
# Samplers of sample images and tools/gen_img.py (kohya's names; k_* are aliases).
SAMPLERS = (
    "ddim", "pndm", "lms", "euler", "euler_a", "heun", "dpm_2", "dpm_2_a", "dpmsolver", "dpmsolver++",
    "dpmsingle", "k_lms", "k_euler", "k_euler_a", "k_dpm_2", "k_dpm_2_a",
)
# Precision option names (--mixed_precision, --save_precision, tools' --save_precision/--dtype) and the torch
# dtype each names, as a string so this module stays torch-free: library/devices.py's dtype_of turns it into one.
MIXED_PRECISIONS = ("no", "fp16", "bf16")
SAVE_PRECISIONS = ("float", "fp16", "bf16")
DTYPE_NAMES = ("float32", "float16", "bfloat16", "fp32", "fp16", "bf16")  # tools/caption.py --dtype
PRECISION_DTYPES = {
    "no": "float32", "float": "float32", "fp32": "float32", "float32": "float32",
    "fp16": "float16", "float16": "float16", "half": "float16", "bf16": "bfloat16", "bfloat16": "bfloat16",
}
# What marks a tensor name as a network's (LoRA, LoCon, LoHa, LoKr, OFT; kohya, diffusers and PEFT names), to
# tell a network file from a base checkpoint: the model loader refuses one as a base, the output guard knows its kind.
NETWORK_KEY_HEADS = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_", "lora_te3_", "oft_unet_")
NETWORK_KEY_PARTS = (".lora_down.", ".lora_up.", ".lora_A.", ".lora_B.", "lora.down.", "lora.up.", ".hada_w", ".lokr_w",
                     ".oft_blocks", ".oft_R")


def is_network_key(key: str) -> bool:
    """Whether a tensor name belongs to a LoRA/LyCORIS/OFT network rather than to a base model."""
    return key.startswith(NETWORK_KEY_HEADS) or key.endswith(".alpha") or any(p in key for p in NETWORK_KEY_PARTS)


# kohya's ss_base_model_version per family; SD1/SD2 with v-prediction add "_v" (base_model_version).
BASE_MODEL_VERSIONS = {"sd1": "sd_v1", "sd2": "sd_v2", "sdxl": "sdxl_base_v1-0"}


def base_model_version(family: str, v_parameterization: bool = False) -> str:
    """kohya's ``ss_base_model_version``: sd_v1, sd_v2, sd_v2_v, sdxl_base_v1-0."""
    version = BASE_MODEL_VERSIONS[family]
    return version + "_v" if v_parameterization and family != "sdxl" else version


def family_of_version(version: str) -> tuple[str, bool] | None:
    """(family, v_parameterization) of an ``ss_base_model_version`` (any SDXL version, e.g. kohya's
    ``sdxl_base_v0-9``, is SDXL); None for a version of no family here (sd3, flux ...)."""
    for family, prefix in (("sdxl", "sdxl_"), ("sd2", "sd_v2"), ("sd1", "sd_v1")):
        if version.startswith(prefix):
            return family, family != "sdxl" and version.endswith("_v")
    return None

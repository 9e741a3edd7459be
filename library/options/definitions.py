"""Every option of train_network.py and sdxl_train_network.py, once.

Names, types and defaults follow kohya-ss sd-scripts (train_network.py, library/train_util.py,
library/sdxl_train_util.py, library/custom_train_functions.py) unless the help says "(ours)" or
"kohya: ...". Help texts are our own. Edit this list, then run ``python tools/gen_options_doc.py``.
"""

from __future__ import annotations

from types import MappingProxyType

from ..vocabulary import (DATA_LAYOUTS, HUBER_SCHEDULES, INTERPOLATIONS, LOSS_TYPES, LR_SCHEDULERS, MIXED_PRECISIONS,
                          SAMPLERS, SAVE_PRECISIONS)
from .schema import SD_ONLY, SDXL_ONLY, Option

# network_args keys networks.lora understands (kohya's names); anything else is a typo
NETWORK_ARG_KEYS = (
    "conv_dim", "conv_alpha", "rank_dropout", "module_dropout",
    "block_dims", "block_alphas", "conv_block_dims", "conv_block_alphas",
    "down_lr_weight", "mid_lr_weight", "up_lr_weight", "block_lr_zero_threshold",
    "loraplus_lr_ratio", "loraplus_unet_lr_ratio", "loraplus_text_encoder_lr_ratio",
)
# network_args keys of each of our network modules; other modules (lycoris.kohya ...) get theirs unchecked
OWN_NETWORK_ARG_KEYS = MappingProxyType({
    "networks.lora": NETWORK_ARG_KEYS,
    "networks.lora_fa": NETWORK_ARG_KEYS,
    "networks.dylora": NETWORK_ARG_KEYS + ("unit",),
    "networks.oft": ("enable_all_linear", "enable_conv"),
})
# lr_scheduler values that never warm up: a non-zero lr_warmup_steps with them is an error
SCHEDULERS_WITHOUT_WARMUP = ("constant", "piecewise_constant", "adafactor")
# Upper bounds that protect memory: a subset's repeats, and samples (images x repeats) in one epoch; the
# per-epoch index lists hold one entry per sample, so 10**12 repeats would need terabytes before step 1
MAX_REPEATS = 100_000
MAX_SAMPLES_PER_EPOCH = 50_000_000
MAX_SIDE = 8192  # training sizes and bucket sides in pixels (SDXL trains at 1024; 8192 needs ~100 GB of activations)
# settings a state is tied to (library/train/run_settings.py); --resume_with_changes names them
RESUME_SETTING_KEYS = (
    "model", "network_module", "network_dim", "network_alpha", "network_args", "network_dropout", "optimizer_type",
    "optimizer_args", "learning_rate", "unet_lr", "text_encoder_lr", "lr_scheduler", "lr_warmup_steps", "resolution",
    "mixed_precision", "datasets", "batches_per_epoch", "gradient_accumulation_steps", "processes", "seed",
    "trained_parts", "validation",
)
_IGNORED_HF = "lorasmith does not upload or download; copy the files yourself."

_M, _D, _N, _O, _T = "model", "dataset", "network", "optimizer", "training"
_P, _S, _SA, _L, _X, _NL, _MI = "precision", "saving", "sampling", "logging", "sdxl", "noise_loss", "misc"

OPTIONS = (
    # ---------------------------------------------------------------- model
    Option("pretrained_model_name_or_path", "path", None,
           "Base model to train on: a single-file checkpoint (.safetensors, or .ckpt) or a diffusers folder. Required.",
           _M, metavar="PATH"),
    Option("v2", "bool", False, "The base model is Stable Diffusion 2.x.", _M, scripts=SD_ONLY),
    Option("v_parameterization", "bool", False,
           "Train with the v-prediction target (SD 2.x 768-v models and v-prediction fine-tunes).", _M),
    Option("vae", "path", None, "Use this VAE (single file or diffusers folder) instead of the model's own.", _M,
           metavar="PATH"),
    Option("clip_skip", "int", None,
           "Condition on the output of the n-th last text-encoder layer (2 = penultimate). SD1.x/2.x; SDXL always "
           "uses the penultimate layer.", _M, min=1),
    Option("max_token_length", "int", None,
           "Longest caption in tokens: 75 (unset), 150 or 225; longer captions are cut. Over 75, the text is "
           "encoded in 75-token chunks.",
           _M, choices=(75, 150, 225)),
    Option("tokenizer_cache_dir", "path", None,
           "kohya's tokenizer download folder; lorasmith ships its tokenizers, so this is not needed.", _M,
           status="ignored"),
    # ---------------------------------------------------------------- dataset
    Option("train_data_dir", "path", None,
           "Training images: a folder of NN_name subfolders (NN = repeats), or another supported layout.", _D,
           metavar="DIR"),
    Option("reg_data_dir", "path", None, "Regularisation (class) images, laid out like train_data_dir.", _D,
           metavar="DIR"),
    Option("dataset_config", "path", None,
           "A dataset TOML with [general], [[datasets]] and [[datasets.subsets]] tables (see docs/datasets.md); "
           "train_data_dir is then ignored.", _D, metavar="FILE"),
    Option("in_json", "path", None, "kohya fine-tuning metadata JSON for the images in train_data_dir.", _D,
           metavar="FILE"),
    Option("dataset_repeats", "int", 1, "How often in_json datasets are repeated per epoch.", _D, min=1,
           max=MAX_REPEATS, level="subset", dataset_key="num_repeats"),
    Option("resolution", "size", None,
           "Training size: 512 or width,height like 512,768. With buckets it is the maximum area, not a fixed "
           "shape. Required unless dataset_config sets it.", _D, gt=0, max=MAX_SIDE, metavar="W[,H]", level="dataset"),
    Option("enable_bucket", "bool", False, "Group images by aspect ratio instead of cropping them all square.", _D,
           level="dataset"),
    Option("min_bucket_reso", "int", 256, "Smallest bucket side in pixels.", _D, gt=0, max=MAX_SIDE, level="dataset"),
    Option("max_bucket_reso", "int", 1024, "Largest bucket side in pixels.", _D, gt=0, max=MAX_SIDE, level="dataset"),
    Option("bucket_reso_steps", "int", 64,
           "Bucket sides are multiples of this; a multiple of 8 (kohya insists on 64 for SD1/2, 32 for SDXL).",
           _D, gt=0, max=1024, level="dataset"),
    Option("bucket_no_upscale", "bool", False, "Never upscale: small images get a bucket of their own size.", _D,
           level="dataset"),
    Option("caption_extension", "str", ".caption",
           "Caption file extension next to each image (most datasets use .txt).", _D, level="subset"),
    Option("caption_extention", "str", None,
           "Old kohya misspelling of caption_extension, still accepted; it wins when set.", _D,
           alias_of="caption_extension"),
    Option("shuffle_caption", "bool", False, "Shuffle the comma-separated tags of each caption every step.", _D,
           level="subset"),
    Option("caption_separator", "str", ",", "Separator between tags for shuffling and dropping.", _D, level="subset"),
    Option("keep_tokens", "int", 0, "Keep the first N tags in place when shuffling.", _D, min=0, level="subset"),
    Option("keep_tokens_separator", "str", "",
           "Tags before this marker stay fixed when shuffling (instead of counting keep_tokens).", _D, level="subset"),
    Option("secondary_separator", "str", None,
           "A second separator that groups tags; it becomes caption_separator after shuffling.", _D, level="subset"),
    Option("enable_wildcard", "bool", False, "Pick one option of {a|b|c} in captions at random each step.", _D,
           level="subset"),
    Option("caption_prefix", "str", None, "Text put before every caption.", _D, level="subset"),
    Option("caption_suffix", "str", None, "Text put after every caption.", _D, level="subset"),
    Option("caption_dropout_rate", "float", 0.0, "Chance (0-1) of training a step with an empty caption.", _D,
           min=0, max=1, level="subset"),
    Option("caption_dropout_every_n_epochs", "int", 0, "Train every N-th epoch with empty captions (0 = never).",
           _D, min=0, level="subset"),
    Option("caption_tag_dropout_rate", "float", 0.0, "Chance (0-1) of dropping each tag (kept tags excepted).",
           _D, min=0, max=1, level="subset"),
    Option("flip_aug", "bool", False, "Mirror images left-right at random.", _D, level="subset"),
    Option("color_aug", "bool", False, "Small random hue/gamma changes; latents are then not cached.", _D,
           level="subset"),
    Option("random_crop", "bool", False, "Crop at a random place instead of the centre; latents are then not cached.",
           _D, level="subset"),
    Option("face_crop_aug_range", "str", None,
           "kohya's face-centred crop zoom range like \"2.0,4.0\"; accepted but not implemented (images are "
           "cropped as usual).", _D, status="ignored", level="subset"),
    Option("resize_interpolation", "str", None,
           "Resampling filter for resizing images (unset: area-style when shrinking, lanczos when enlarging, "
           "as kohya).", _D,
           choices=INTERPOLATIONS, level="subset"),
    Option("prior_loss_weight", "float", 1.0, "Loss weight of regularisation images.", _D, min=0, level="dataset"),
    Option("cache_latents", "bool", False, "Encode every image with the VAE once, before training, and keep it in RAM.",
           _D),
    Option("cache_latents_to_disk", "bool", False,
           "Cache latents in .npz files next to the images (implies cache_latents); reused when model and dtype match.",
           _D),
    Option("vae_batch_size", "int", 1, "Images per VAE batch while caching latents.", _D, min=1),
    Option("cache_info", "bool", False,
           "kohya's image-size/caption cache file; lorasmith's dataset scan does not need it.", _D, status="ignored",
           level="subset"),
    Option("skip_cache_check", "bool", False,
           "kohya: skip checking cached latents; lorasmith caches are keyed by model and dtype instead.", _D,
           status="ignored"),
    Option("token_warmup_min", "int", 1, "kohya's tag warm-up (start with N tags); not implemented.", _D,
           status="ignored", level="subset"),
    Option("token_warmup_step", "float", 0.0, "kohya's tag warm-up length; not implemented.", _D, status="ignored",
           level="subset"),
    Option("alpha_mask", "bool", False,
           "With masked_loss: use each image's alpha channel as its loss mask (opaque = full weight; an image "
           "without alpha counts whole). A dataset_config subset may set its own.", _D, level="subset"),
    Option("debug_dataset", "bool", False, "kohya's dataset viewer; use tools/check_dataset.py instead.", _D,
           status="ignored", level="dataset"),
    Option("dataset_class", "str", None,
           "kohya's custom dataset class (package.module.Class); use dataset_config or data_layout instead.", _D,
           status="unsupported"),
    Option("weighted_captions", "bool", False,
           "Read (word:1.2), (word) = x1.1, [word] = /1.1 in captions as token weights (\\( for a literal "
           "parenthesis); SD1/SD2 and SDXL (both text encoders). Sample prompts always understand this syntax.", _D),
    Option("data_layout", "str", "auto",
           "How train_data_dir is laid out: auto, kohya (NN_name folders), images, metadata_jsonl, "
           "image_text_pairs or hf_dataset (ours).", _D, choices=DATA_LAYOUTS, ours=True),
    Option("caption_column", "str", "text", "Caption column of metadata.jsonl or a datasets dataset (ours).", _D,
           ours=True, level="subset"),
    Option("image_column", "str", "image", "Image column of metadata.jsonl or a datasets dataset (ours).", _D,
           ours=True, level="subset"),
    Option("instance_prompt", "str", None,
           "One caption for all training images, DreamBooth style, e.g. \"a photo of sks dog\" (ours).", _D,
           ours=True, level="subset_only"),
    Option("class_prompt", "str", None, "One caption for all regularisation images, e.g. \"a photo of a dog\" (ours).",
           _D, ours=True, level="subset_only"),
    Option("num_class_images", "int", None, "Before training, fill reg_data_dir up to this many class images of "
           "class_prompt drawn by the base model (diffusers' prior preservation) (ours). Image i comes from seed i; "
           "images already there are kept, so an interrupted fill resumes.", _D, ours=True, min=1),
    Option("class_image_steps", "int", 30, "DDIM steps of each num_class_images image (ours).", _D, ours=True, min=1,
           max=1000),
    Option("class_image_scale", "float", 7.5, "Guidance scale of the num_class_images images (ours).", _D, ours=True,
           min=0),
    Option("allow_paths_outside_dataset", "bool", False,
           "Let metadata.jsonl / in_json name images outside the dataset folder (../ or absolute paths); their "
           "caches still go inside the dataset folder (ours).", _D, ours=True),
    Option("stop_on_bad_image", "bool", False,
           "Stop on an unreadable image instead of skipping it with a warning (ours).",
           _D, ours=True),
    # ---------------------------------------------------------------- network
    Option("network_module", "str", "networks.lora",
           "Network to train, a Python module following kohya's network-module contract: networks.lora (LoRA, "
           "LoCon with conv_dim), networks.dylora, networks.lora_fa, networks.oft, or e.g. lycoris.kohya "
           "(pip install lycoris-lora). See docs/networks.md.", _N),
    Option("network_dim", "int", None, "LoRA rank. Unset: 4.", _N, min=1),
    Option("network_alpha", "float", 1.0,
           "LoRA scale: updates are multiplied by alpha/dim (alpha = dim means no scaling; 0 means alpha = dim).",
           _N, min=0),
    Option("network_dropout", "float", None, "Dropout (0-1) on each LoRA's down output during training.", _N,
           min=0, max=1),
    Option("network_args", "str", None,
           "More network settings as key=value: conv_dim, conv_alpha, rank_dropout, module_dropout, block_dims, "
           "block_alphas, conv_block_dims, conv_block_alphas, down/mid/up_lr_weight, block_lr_zero_threshold, "
           "loraplus_lr_ratio, loraplus_unet_lr_ratio, loraplus_text_encoder_lr_ratio; networks.dylora adds unit, "
           "networks.oft takes enable_all_linear and enable_conv; other modules' keys (e.g. LyCORIS' algo=loha) are "
           "passed to them unchecked.", _N, nargs="*",
           metavar="KEY=VALUE"),
    Option("network_weights", "path", None, "Start from this LoRA file instead of a fresh network.", _N,
           metavar="FILE"),
    Option("dim_from_weights", "bool", False, "Take ranks and alphas from network_weights.", _N),
    Option("network_train_unet_only", "bool", False, "Train only the UNet's LoRA (no text encoder).", _N),
    Option("network_train_text_encoder_only", "bool", False, "Train only the text encoder's LoRA.", _N),
    Option("scale_weight_norms", "float", None,
           "Max-norm regularisation: scale down any LoRA module whose weight norm exceeds this (1-5 is typical; "
           "0 or unset: off).", _N, min=0),
    Option("base_weights", "path", None, "LoRA files merged into the base model before training.", _N, nargs="*",
           metavar="FILE"),
    Option("base_weights_multiplier", "float", None, "Strength of each base_weights file (default 1).", _N,
           nargs="*", unbounded=True),
    Option("loraplus_lr_ratio", "float", None,
           "LoRA+: the up weights learn this many times faster (16 is the paper's value). kohya takes it in "
           "network_args; both work (ours).", _N, gt=0, ours=True),
    Option("loraplus_unet_lr_ratio", "float", None, "LoRA+ ratio for the UNet only (ours, see loraplus_lr_ratio).",
           _N, gt=0, ours=True),
    Option("loraplus_text_encoder_lr_ratio", "float", None,
           "LoRA+ ratio for the text encoder only (ours, see loraplus_lr_ratio).", _N, gt=0, ours=True),
    # ---------------------------------------------------------------- optimizer and learning rate
    Option("optimizer_type", "str", "AdamW",
           "Optimizer, case-insensitive: AdamW, AdamW8bit, PagedAdamW8bit, Lion, Lion8bit, PagedLion8bit, "
           "SGDNesterov, Prodigy, DAdaptAdam (and other DAdapt*), Adafactor, AdamWScheduleFree, RAdamScheduleFree, "
           "or a dotted class path like torch.optim.RAdam. Empty means AdamW.", _O),
    Option("optimizer_args", "str", None,
           "Optimizer keyword arguments as key=value, values in Python syntax: weight_decay=0.01 betas=0.9,0.99 "
           "(one quoted string may hold several).",
           _O, nargs="*", metavar="KEY=VALUE"),
    Option("learning_rate", "float", 1e-4,
           "Learning rate for everything without its own (kohya's default 2e-6 is meant for full fine-tuning; "
           "ours is 1e-4). Use 1.0 with Prodigy and DAdapt*.", _O, min=0),
    Option("unet_lr", "float", None, "Learning rate of the UNet LoRA (default: learning_rate).", _O, min=0),
    Option("text_encoder_lr", "float", None,
           "Learning rate of the text-encoder LoRA; for SDXL two values may be given (CLIP-L, then bigG). "
           "0 freezes it. Default: learning_rate.", _O, nargs="*", min=0),
    Option("max_grad_norm", "float", 1.0, "Clip gradients to this norm (0 = no clipping).", _O, min=0),
    Option("lr_scheduler", "str", "constant",
           "Learning-rate schedule: " + ", ".join(LR_SCHEDULERS) + ", or a scheduler class path like "
           "torch.optim.lr_scheduler.StepLR.", _O),
    Option("lr_warmup_steps", "int_or_float", 0,
           "Warm-up length: a step count, or a fraction of all steps below 1 (0.05 or \"5%\" = the first 5%).",
           _O, min=0),
    Option("lr_decay_steps", "int_or_float", 0,
           "Decay length for warmup_stable_decay: a step count, or a fraction of all steps below 1.", _O, min=0),
    Option("lr_scheduler_num_cycles", "int", 1, "Restarts of cosine_with_restarts.", _O, min=1),
    Option("lr_scheduler_power", "float", 1.0, "Power of the polynomial schedule.", _O, min=0),
    Option("lr_scheduler_timescale", "int", None, "Time scale of inverse_sqrt (default: the warm-up steps).", _O,
           min=1),
    Option("lr_scheduler_min_lr_ratio", "float", None,
           "Lowest learning rate as a fraction of the start for cosine_with_min_lr and warmup_stable_decay.", _O,
           min=0, max=1),
    Option("lr_scheduler_type", "str", "",
           "kohya's custom scheduler class path, e.g. torch.optim.lr_scheduler.CosineAnnealingLR; used instead of "
           "lr_scheduler when set.", _O),
    Option("lr_scheduler_args", "str", None, "Scheduler keyword arguments as key=value (T_max=100).", _O, nargs="*",
           metavar="KEY=VALUE"),
    Option("use_8bit_adam", "bool", False, "Old kohya spelling of optimizer_type AdamW8bit.", _O),
    Option("fused_backward_pass", "bool", False,
           "kohya's fused Adafactor step for full fine-tuning; train_network.py does not use it (kohya neither), "
           "and a LoRA's optimizer state is small.", _O, status="ignored"),
    Option("use_lion_optimizer", "bool", False, "Old kohya spelling of optimizer_type Lion.", _O),
    # ---------------------------------------------------------------- training
    Option("max_train_steps", "int", 1600, "Total optimizer steps (max_train_epochs wins when set).", _T, min=1),
    Option("max_train_epochs", "int", None, "Train this many epochs instead of max_train_steps.", _T, min=1),
    Option("train_batch_size", "int", 1, "Images per step (per GPU).", _T, min=1,
           level="dataset", dataset_key="batch_size"),
    Option("gradient_accumulation_steps", "int", 1, "Add up gradients of this many batches before each update.",
           _T, min=1),
    Option("gradient_checkpointing", "bool", False,
           "Recompute activations in the backward pass: much less VRAM, slower.",
           _T),
    Option("seed", "int", None, "Random seed; set it to make runs repeatable (unset: random).", _T, min=0,
           max=2**32 - 1),
    Option("max_data_loader_n_workers", "int", 8,
           "Image-loading worker processes (0 loads in the training process; fewer use less RAM).", _T, min=0),
    Option("persistent_data_loader_workers", "bool", False, "Keep loader workers alive between epochs.", _T),
    Option("nonfinite_loss", "str", "stop",
           "On a NaN/inf loss: stop (end with an error naming likely causes) or skip (drop that step) (ours).", _T,
           choices=("stop", "skip"), ours=True),
    Option("initial_epoch", "int", None, "kohya: pretend training starts at this epoch; use --resume instead.", _T,
           status="unsupported"),
    Option("initial_step", "int", None, "kohya: pretend training starts at this step; use --resume instead.", _T,
           status="unsupported"),
    Option("skip_until_initial_step", "bool", False, "kohya: skip data up to initial_step; use --resume instead.",
           _T, status="unsupported"),
    Option("validation_split", "float", 0.0,
           "Fraction of each dataset's training images held out for the validation loss (0.1 = 10%); they are "
           "never trained. A [[datasets]] table of a dataset_config may set its own.", _T, min=0, lt=1,
           level="dataset"),
    Option("validation_seed", "int", None,
           "Seed of the validation split and of the validation loss's noise (default: --seed).", _T, level="dataset"),
    Option("validate_every_n_steps", "int", None,
           "Also compute the validation loss every N optimizer steps (it is always computed at each epoch end "
           "unless validate_every_n_epochs says otherwise).", _T, min=1),
    Option("validate_every_n_epochs", "int", None,
           "Compute the validation loss at the end of every N-th epoch (default: every epoch).", _T, min=1),
    Option("max_validation_steps", "int", None,
           "Use at most N validation batches per validation (default: all).", _T, min=1),
    # ---------------------------------------------------------------- precision and memory
    Option("mixed_precision", "str", "no",
           "Compute in fp16 or bf16 with fp32 weights (bf16 needs an Ampere or newer GPU); no = fp32.", _P,
           choices=MIXED_PRECISIONS),
    Option("full_fp16", "bool", False, "Keep the LoRA weights and gradients in fp16 too (needs mixed_precision fp16).",
           _P),
    Option("full_bf16", "bool", False, "Keep the LoRA weights and gradients in bf16 too (needs mixed_precision bf16).",
           _P),
    Option("fp8_base", "bool", False,
           "Store the frozen base model in fp8 to save VRAM (needs mixed_precision fp16/bf16).",
           _P),
    Option("fp8_base_unet", "bool", False,
           "Store only the UNet in fp8, text encoders in the compute dtype (what fp8_base does here; needs "
           "mixed_precision fp16/bf16).", _P),
    Option("cpu_offload_checkpointing", "bool", False,
           "kohya's CPU offload of checkpointed activations for its own UNet; the diffusers UNet used here has "
           "no such mode, so gradient_checkpointing alone is used.", _P, status="ignored"),
    Option("no_half_vae", "bool", False, "Keep the VAE in fp32 under mixed precision (avoids NaNs with the SDXL VAE).",
           _P),
    Option("xformers", "bool", False, "Use xformers attention.", _P),
    Option("sdpa", "bool", False, "Use PyTorch scaled-dot-product attention.", _P),
    Option("mem_eff_attn", "bool", False,
           "kohya's memory-efficient attention; here it means PyTorch SDPA (memory-efficient kernels), the "
           "default attention.", _P),
    Option("lowram", "bool", False,
           "Little RAM, more VRAM: load the checkpoint tensor by tensor straight onto the GPU, keep the VAE on the "
           "GPU after latent caching (freed if no samples need it; also on CPU).", _P),
    Option("highvram", "bool", False,
           "Plenty of VRAM: keep the VAE on the GPU after latent caching instead of parking it in CPU memory.", _P),
    Option("torch_compile", "bool", False,
           "Compile the UNet (and trained text encoders) with torch.compile, LoRA included; the first steps "
           "pay the compile time.", _P),
    Option("dynamo_backend", "str", "inductor", "torch.compile backend for --torch_compile (inductor, eager, "
           "aot_eager, cudagraphs, ...).", _P),
    # ---------------------------------------------------------------- saving and resuming
    Option("output_dir", "path", "output", "Folder for the LoRA files and saved states (created if missing).", _S,
           metavar="DIR"),
    Option("output_name", "str", None,
           "File name without extension; epochs add -000001, steps -step00000100. Unset: last (kohya's names).", _S),
    Option("save_model_as", "str", "safetensors", "File format; LoRA files are always .safetensors.", _S,
           choices=("safetensors", "ckpt", "pt")),
    Option("save_precision", "str", None, "dtype of the saved LoRA: float, fp16 or bf16 (unset: as trained).", _S,
           choices=SAVE_PRECISIONS),
    Option("save_every_n_epochs", "int", None, "Save a LoRA every N epochs (0 or unset: only at the end).", _S, min=1),
    Option("save_every_n_steps", "int", None, "Save a LoRA every N steps (0 or unset: off).", _S, min=1),
    Option("save_n_epoch_ratio", "int", None,
           "Save about this many epoch files in all: save_every_n_epochs becomes floor(epochs / N), at least 1 "
           "(wins over save_every_n_epochs, as in kohya).", _S, min=1),
    Option("save_last_n_epochs", "int", None, "Keep only the last N epoch files, deleting older ones.", _S, min=1),
    Option("save_last_n_steps", "int", None,
           "Delete step files older than N steps (a step count as in kohya, not a file count).", _S, min=1),
    Option("save_last_n_epochs_state", "int", None, "Like save_last_n_epochs for saved states.", _S, min=1),
    Option("save_last_n_steps_state", "int", None, "Like save_last_n_steps for saved states.", _S, min=1),
    Option("save_state", "bool", False,
           "With every LoRA file also save the full training state (optimizer, step) for --resume.", _S),
    Option("save_state_on_train_end", "bool", False, "Save the full training state once, at the end.", _S),
    Option("resume", "path", None, "Continue from a saved state folder at exactly its step; given the output folder, "
           "its newest complete state. A kohya sd-scripts state folder works too (see docs/training.md).", _S, metavar="DIR"),
    Option("resume_with_changes", "str", None,
           "Resume although these settings differ from the state's (e.g. resolution datasets learning_rate); "
           "without it such a resume is refused. (ours)", _S, nargs="*", choices=RESUME_SETTING_KEYS, ours=True,
           metavar="KEY"),
    Option("huggingface_repo_id", "str", None, _IGNORED_HF, _S, status="ignored"),
    Option("huggingface_repo_type", "str", None, _IGNORED_HF, _S, status="ignored"),
    Option("huggingface_path_in_repo", "str", None, _IGNORED_HF, _S, status="ignored"),
    Option("huggingface_token", "str", None, _IGNORED_HF, _S, status="ignored"),
    Option("huggingface_repo_visibility", "str", None, _IGNORED_HF, _S, status="ignored"),
    Option("save_state_to_huggingface", "bool", False, _IGNORED_HF, _S, status="ignored"),
    Option("resume_from_huggingface", "bool", False, _IGNORED_HF, _S, status="ignored"),
    Option("async_upload", "bool", False, _IGNORED_HF, _S, status="ignored"),
    # ---------------------------------------------------------------- sample images
    Option("sample_prompts", "path", None,
           "Prompt file for sample images, in kohya's formats: .txt (one prompt a line, options after --: --n "
           "negative, --w/--h size, --d seed, --s steps, --l CFG scale, --ss sampler), .toml ([prompt] defaults "
           "and [[prompt.subset]] prompts) or .json (a list of prompt objects).", _SA, metavar="FILE"),
    Option("sample_every_n_steps", "int", None, "Make sample images every N steps (0 or unset: off).", _SA, min=1),
    Option("sample_every_n_epochs", "int", None, "Make sample images every N epochs (wins over steps).", _SA, min=1),
    Option("sample_at_first", "bool", False, "Also make sample images before the first step.", _SA),
    Option("sample_sampler", "str", "ddim", "Default sampler for sample images.", _SA, choices=SAMPLERS),
    Option("sample_at_end", "bool", False,
           "Also make sample images for the final LoRA when the interval does not hit the last step/epoch "
           "(kohya does not) (ours).", _SA, ours=True),
    # ---------------------------------------------------------------- logging and metadata
    Option("logging_dir", "path", None, "Write TensorBoard logs here (turns logging on).", _L, metavar="DIR"),
    Option("log_with", "str", None, "Logger: tensorboard, wandb or all (tensorboard needs logging_dir).", _L,
           choices=("tensorboard", "wandb", "all")),
    Option("log_prefix", "str", None,
           "Prefix of the log folder: logs go to logging_dir/<prefix><YYYYmmddHHMMSS> (kohya's layout).", _L),
    Option("log_tracker_name", "str", None, "Project name for the tracker (default: the script name).", _L),
    Option("wandb_run_name", "str", None, "Name of the W&B run.", _L),
    Option("wandb_api_key", "str", None, "W&B API key to log in with (better kept in a config file).", _L),
    Option("log_tracker_config", "path", None,
           "TOML file of tracker init arguments ([wandb] name = ..., as accelerate's init_kwargs).", _L,
           metavar="FILE"),
    Option("log_config", "bool", False,
           "Log the options to the tracker (keys and tokens and absolute paths left out).", _L),
    Option("console_log_level", "str", None, "kohya's console log level; not used (lorasmith logs at INFO).", _L,
           status="ignored"),
    Option("console_log_file", "path", None, "kohya's console log file; not used.", _L, status="ignored"),
    Option("console_log_simple", "bool", False, "kohya's plain console log; not used.", _L, status="ignored"),
    Option("training_comment", "str", None, "Free text stored in the LoRA's metadata (ss_training_comment).", _L),
    Option("metadata_title", "str", None, "Title in the LoRA metadata (modelspec.title; default: output_name).", _L),
    Option("metadata_author", "str", None, "Author in the LoRA metadata.", _L),
    Option("metadata_description", "str", None, "Description in the LoRA metadata.", _L),
    Option("metadata_license", "str", None, "License in the LoRA metadata.", _L),
    Option("metadata_tags", "str", None, "Comma-separated tags in the LoRA metadata.", _L),
    Option("metadata_usage_hint", "str", None, "Usage hint in the LoRA metadata (modelspec.usage_hint).", _L),
    Option("metadata_thumbnail", "str", None,
           "Thumbnail in the LoRA metadata: an image file (stored as a data URL) or a data: URL.", _L),
    Option("metadata_merged_from", "str", None, "Source models in the LoRA metadata (modelspec.merged_from).", _L),
    Option("metadata_trigger_phrase", "str", None, "Trigger phrase in the LoRA metadata (modelspec.trigger_phrase).",
           _L),
    Option("metadata_preprocessor", "str", None, "Preprocessor in the LoRA metadata (modelspec.preprocessor).", _L),
    Option("metadata_is_negative_embedding", "str", None,
           "modelspec.is_negative_embedding in the LoRA metadata (kohya takes it as text).", _L),
    Option("no_metadata", "bool", False,
           "Write only kohya's minimum metadata (ss_network_*, ss_v2, ss_base_model_version) and modelspec.", _L),
    # ---------------------------------------------------------------- sdxl
    Option("cache_text_encoder_outputs", "bool", False,
           "Encode every caption (and the sample prompts) once before training and free the text encoders on any "
           "device (needs network_train_unet_only and fixed captions).", _X, scripts=SDXL_ONLY),
    Option("cache_text_encoder_outputs_to_disk", "bool", False,
           "Cache text-encoder outputs in files next to the images (implies cache_text_encoder_outputs).", _X,
           scripts=SDXL_ONLY),
    Option("disable_mmap_load_safetensors", "bool", False, "kohya's WSL loading switch; not needed.", _X,
           scripts=SDXL_ONLY, status="ignored"),
    # ---------------------------------------------------------------- noise and loss
    Option("noise_offset", "float", None, "Add offset noise of this strength (about 0.1) for darker/brighter images.",
           _NL, min=0),
    Option("noise_offset_random_strength", "bool", False, "Use a random offset strength between 0 and noise_offset.",
           _NL),
    Option("adaptive_noise_scale", "float", None,
           "Add this times |mean latent| to the noise offset (needs noise_offset; may be negative).", _NL,
           unbounded=True),
    Option("multires_noise_iterations", "int", None,
           "Pyramid (multi-resolution) noise levels, about 6-10 (0 or unset: off).", _NL, min=0),
    Option("multires_noise_discount", "float", 0.3, "Strength decay per pyramid-noise level.", _NL, min=0, max=1),
    Option("ip_noise_gamma", "float", None, "Input-perturbation noise strength, about 0.1.", _NL, min=0),
    Option("ip_noise_gamma_random_strength", "bool", False, "Use a random strength between 0 and ip_noise_gamma.",
           _NL),
    Option("min_timestep", "int", None, "Lowest timestep trained (0-999, default 0).", _NL, min=0, max=999),
    Option("max_timestep", "int", None, "Highest timestep trained, exclusive (1-1000, default 1000).", _NL, min=1,
           max=1000),
    Option("min_snr_gamma", "float", None,
           "Min-SNR loss weighting with this gamma (5 is the paper's value; 0 or unset: off).", _NL, min=0),
    Option("scale_v_pred_loss_like_noise_pred", "bool", False,
           "Scale the v-prediction loss to match noise-prediction loss (needs v_parameterization).", _NL),
    Option("v_pred_like_loss", "float", None, "Add a v-prediction-like loss with this weight (epsilon models).", _NL,
           min=0),
    Option("debiased_estimation_loss", "bool", False, "Weight the loss by 1/sqrt(SNR) (debiased estimation).", _NL),
    Option("zero_terminal_snr", "bool", False, "Rescale the noise schedule to zero SNR at the last timestep.", _NL),
    Option("loss_type", "str", "l2", "Loss: l2 (MSE), l1, huber or smooth_l1.", _NL,
           choices=LOSS_TYPES),
    Option("huber_schedule", "str", "snr", "How huber_c changes over timesteps: constant, exponential or snr.", _NL,
           choices=HUBER_SCHEDULES),
    Option("huber_c", "float", 0.1,
           "Huber loss threshold; used only with loss_type huber or smooth_l1 (then it must be above 0).", _NL,
           min=0),
    Option("huber_scale", "float", 1.0, "Huber loss scale (huber and smooth_l1).", _NL, gt=0),
    Option("masked_loss", "bool", False,
           "Weight the loss by a mask per image (white/opaque = learn, black/transparent = ignore), from "
           "conditioning_data_dir or alpha_mask; the mask is resized, cropped and flipped with its image.", _NL),
    Option("conditioning_data_dir", "path", None,
           "With masked_loss: a folder of mask images named like the training images (same stem, same size); "
           "the red channel is the weight. A dataset_config subset may set its own.", _NL, metavar="DIR",
           level="subset"),
    # ---------------------------------------------------------------- distributed and misc
    Option("ddp_timeout", "int", None, "Multi-GPU timeout in minutes (default: accelerate's).", _MI, min=1),
    Option("ddp_gradient_as_bucket_view", "bool", False,
           "DDP gradient_as_bucket_view, passed to accelerate; lorasmith averages the LoRA gradients with one "
           "all-reduce instead of a DDP wrapper, so it changes nothing (a notice says so).", _MI),
    Option("ddp_static_graph", "bool", False,
           "DDP static_graph, passed to accelerate; no effect on lorasmith's all-reduce (a notice says so).", _MI),
    Option("deepspeed", "bool", False,
           "kohya's DeepSpeed switch; lorasmith trains multi-GPU with accelerate launch (DDP), which suits the small "
           "LoRA weights (docs/multi-gpu.md).", _MI, status="unsupported"),
    Option("zero_stage", "int", 2, "DeepSpeed ZeRO stage; unused without deepspeed.", _MI, status="ignored"),
    Option("offload_optimizer_device", "str", None, "DeepSpeed optimizer offload; unused without deepspeed.", _MI,
           status="ignored"),
    Option("offload_optimizer_nvme_path", "str", None, "DeepSpeed NVMe path; unused without deepspeed.", _MI,
           status="ignored"),
    Option("offload_param_device", "str", None, "DeepSpeed parameter offload; unused without deepspeed.", _MI,
           status="ignored"),
    Option("offload_param_nvme_path", "str", None, "DeepSpeed NVMe path; unused without deepspeed.", _MI,
           status="ignored"),
    Option("zero3_init_flag", "bool", False, "DeepSpeed ZeRO-3 init; unused without deepspeed.", _MI,
           status="ignored"),
    Option("zero3_save_16bit_model", "bool", False, "DeepSpeed ZeRO-3 saving; unused without deepspeed.", _MI,
           status="ignored"),
    Option("fp16_master_weights_and_gradients", "bool", False, "DeepSpeed fp16 master weights; unused without "
           "deepspeed.", _MI, status="ignored"),
    Option("debug", "bool", False, "Show the Python traceback with error messages (ours).", _MI, ours=True),
    Option("config_file", "path", None,
           "Read options from this TOML file (kohya format: any sections); the command line wins over it.", _MI,
           cli_only=True, metavar="FILE"),
    Option("output_config", "bool", False,
           "Write the command-line options to the --config_file path (which must not exist yet) and exit.", _MI,
           cli_only=True),
)

BY_NAME = MappingProxyType({o.name: o for o in OPTIONS})
if len(BY_NAME) != len(OPTIONS):  # pragma: no cover - guards edits to the list above
    raise RuntimeError("duplicate option names in library/options/definitions.py")

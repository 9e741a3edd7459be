"""Names that several layers accept: data layouts, resize filters, samplers, schedulers, losses.

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

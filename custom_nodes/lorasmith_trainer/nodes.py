"""The ``LoRATrainer`` node: ComfyUI_SimpleLoRA's inputs, trained by lorasmith's library.

Why this shape: the node is a thin shell. It turns its inputs (plus an optional preset TOML) into the
same options ``train_network.py`` / ``sdxl_train_network.py`` take, via ``library.options.namespace_from``,
and calls ``library.train.entry.train`` — there is no second trainer. What the node adds is ComfyUI's
side: model folders, names that cannot leave them, the progress bar, the Cancel button, and putting
the final file where the stock Load LoRA node lists it.

Files: periodic LoRAs, states and the report go to ``models/lora_logs/<lora_checkpoint_folder>/``; the
final LoRA is copied to ``models/loras/<lora_name>.safetensors`` (temporary name, then rename).
See docs/comfyui.md.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import multiprocessing
import os
import shutil
from pathlib import Path

from library.errors import UserError
from library.output_paths import check_output_name

from .locate import REPO_ROOT

CATEGORY = "lorasmith"
NODE_SOURCE = "the LoRATrainer node"
NO_PRESET = "none"
FROM_PRESET = "from preset"
OPTIMIZERS = (FROM_PRESET, "AdamW", "AdamW8bit", "Lion", "Prodigy", "Adafactor", "DAdaptAdam", "SGDNesterov",
              "AdamWScheduleFree")
LOGS_FOLDER = "lora_logs"
PRESETS_DIR = REPO_ROOT / "presets"
DEMO_IMAGES = REPO_ROOT / "examples" / "demo" / "img"
DEMO_COPY = "demo_dataset"  # inside the run's lora_logs folder (caches may be written next to images)
PARQUET_CONFIG = "dataset_config.toml"
OPTIONS_SUFFIX = "_options.toml"  # <lora_name>_options.toml next to the periodic files
SUFFIX = ".safetensors"
# Preset keys the node replaces: it counts steps (not epochs), brings its own data and folders, and
# makes no sample images (it has no prompt input).
REPLACED_BY_NODE = frozenset((
    "max_train_epochs", "save_every_n_epochs", "train_data_dir", "dataset_config", "in_json", "output_dir",
    "output_name", "sample_prompts", "sample_every_n_steps", "sample_every_n_epochs", "sample_at_first",
))
# Used when the preset does not say: .txt captions (what captioning tools write), and images loaded in
# ComfyUI's own process (worker processes would re-import ComfyUI on Windows).
NODE_DEFAULTS = {"caption_extension": ".txt", "max_data_loader_n_workers": 0}


# ------------------------------------------------------------------------------------- ComfyUI
def comfy_folder_paths():
    """ComfyUI's ``folder_paths`` module (it exists only inside ComfyUI)."""
    try:
        import folder_paths
    except ImportError:
        raise UserError("the LoRATrainer node runs inside ComfyUI (no `folder_paths` module here); "
                        "outside ComfyUI use train_network.py / sdxl_train_network.py") from None
    return folder_paths


def _model_management():
    """``comfy.model_management`` when running in ComfyUI, else None."""
    try:
        import comfy.model_management as mm
    except ImportError:
        return None
    return mm


def _progress_callback(total: int):
    """``(step, total, loss)`` -> ComfyUI's progress bar, or None outside ComfyUI.

    The hook ComfyUI's ``main.py`` installs raises ``InterruptProcessingException`` from inside
    ``ProgressBar.update_absolute`` when the user presses Cancel; the training loop treats an exception
    from this callback as an interrupt (saves a state and a LoRA) and passes it on as the cause.
    """
    try:
        from comfy.utils import ProgressBar
    except ImportError:
        return None
    bar = ProgressBar(total)

    def update(step, total_steps, loss):
        try:
            bar.update_absolute(step, total_steps)
        except BaseException as e:
            update.cancel = e  # a Cancel during the last step ends no step loop: the node raises it after
            raise

    update.cancel = None
    return update


@contextlib.contextmanager
def training_mode():
    """Autograd on, whatever the caller set: ComfyUI runs every node inside ``torch.inference_mode()``.

    Everything the run creates (models, LoRA weights, optimizer state, caches) is made inside this
    block, so no inference tensor from outside reaches autograd.
    """
    import torch

    with torch.inference_mode(False), torch.enable_grad():
        yield


# ------------------------------------------------------------------------------------- inputs
def preset_names() -> list:
    """``none`` and the stems of the repository's ``presets/*.toml``."""
    return [NO_PRESET] + sorted(p.stem for p in PRESETS_DIR.glob("*.toml"))


def check_name(value: str, what: str, folder: str | None = None) -> str:
    """A plain file/folder name that stays inside ``folder`` (library.output_paths decides); UserError otherwise.
    Surrounding spaces, easy to type into a node's text box, are dropped first."""
    return check_output_name("" if value is None else str(value).strip(), folder=folder, what=what)


def lora_stem(lora_name: str, folder: str | None = None) -> str:
    """``lora_name`` checked, without a trailing ``.safetensors`` (SimpleLoRA accepts both)."""
    name = (lora_name or "").strip()
    if name.lower().endswith(SUFFIX):
        name = name[: -len(SUFFIX)]
    return check_name(name, "lora_name", folder)


def resolve_dataset(use_custom_dataset: bool, dataset_path: str, logs_dir: str) -> dict:
    """Options naming the training images (``train_data_dir`` or ``dataset_config``).

    - empty path, ``use_custom_dataset`` off: the repository's demo images (a smoke test of the setup);
    - empty path, ``use_custom_dataset`` on: an error;
    - a folder: any layout ``data_layout = "auto"`` detects (kohya NN_name subfolders, metadata.jsonl,
      image/ + text/, a ``datasets`` save or parquet folder);
    - a ``.parquet`` file: a one-subset dataset_config written into ``logs_dir``.
    SimpleLoRA downloads Hub datasets when ``use_custom_dataset`` is off; lorasmith works offline, so a
    path that does not exist is an error saying how to save the dataset locally.
    """
    path = (dataset_path or "").strip().strip('"').strip()  # Windows "Copy as path" adds quotes
    if not path:
        if use_custom_dataset:
            raise UserError("dataset_path is empty but use_custom_dataset is on; give your dataset folder, or turn "
                            "use_custom_dataset off to train on the bundled demo images")
        target = Path(logs_dir) / DEMO_COPY
        if not target.is_dir():  # copied whole under a temporary name, then renamed: never a half demo
            from library import atomic

            shutil.rmtree(atomic.temp_name(str(target)), ignore_errors=True)
            shutil.copytree(DEMO_IMAGES, atomic.temp_name(str(target)))
            atomic.replace(atomic.temp_name(str(target)), str(target))
        return {"train_data_dir": str(target)}
    p = Path(path).expanduser()
    if not p.exists():
        hub = "" if use_custom_dataset else (
            "; Hugging Face Hub names are not downloaded (lorasmith works offline): save the dataset once with "
            "datasets.load_dataset(NAME, split='train').save_to_disk(FOLDER) and give FOLDER")
        raise UserError(f"dataset_path {path} does not exist (relative paths start in {os.getcwd()}){hub}")
    if p.is_file():
        if p.suffix.lower() != ".parquet":
            raise UserError(f"dataset_path {path} is a file; give a dataset folder (docs/datasets.md) or a .parquet file")
        os.makedirs(logs_dir, exist_ok=True)
        config = Path(logs_dir) / PARQUET_CONFIG
        from library import atomic
        from library.options.toml_text import dumps

        atomic.write_text(str(config), dumps({"datasets": [{"subsets": [{"image_dir": str(p.resolve())}]}]}))
        return {"dataset_config": str(config)}
    return {"train_data_dir": str(p)}


def script_for(ckpt_path: str) -> str:
    """``sdxl_train_network`` for an SDXL checkpoint, else ``train_network`` (the loader explains odd files)."""
    from library.models.detect import families_by_prefix
    from library.models.diffusers_folder import detect_folder_family, is_diffusers_folder

    path = Path(ckpt_path)
    if path.is_dir():
        family = detect_folder_family(path) if is_diffusers_folder(path) else None
    else:
        from library.models.checkpoint_file import open_checkpoint

        found = families_by_prefix(open_checkpoint(path).keys())
        family = found[0] if len(found) == 1 else None
    return "sdxl_train_network" if family == "sdxl" else "train_network"


def preset_options(preset: str, script: str) -> dict:
    """The options of ``presets/<preset>.toml`` for ``script``, less those the node replaces."""
    if preset == NO_PRESET:
        return {}
    if preset not in preset_names():
        raise UserError(f"preset {preset!r} is not in {PRESETS_DIR}; pick one of {', '.join(preset_names())}")
    from library.options import read_config_file

    file_values, _ = read_config_file(str(PRESETS_DIR / f"{preset}.toml"), script)
    return {k: v for k, v in file_values.items() if k not in REPLACED_BY_NODE}


def merged_options(preset_values: dict, node_values: dict) -> dict:
    """Preset values < node defaults < the node's inputs."""
    values = dict(preset_values)
    chosen = node_values.get("optimizer_type")
    if chosen and chosen.lower() != str(values.get("optimizer_type", "")).lower():
        values.pop("optimizer_args", None)  # the preset's arguments belong to the preset's optimizer
    for key, value in NODE_DEFAULTS.items():
        values.setdefault(key, value)
    values.update(node_values)
    if values.get("max_data_loader_n_workers") and multiprocessing.get_start_method(allow_none=True) not in (None, "fork"):
        # spawn/forkserver workers re-import ComfyUI's main.py and cannot import lorasmith by name
        # (the node does not put the repository on sys.path): load images in ComfyUI's process.
        print(f"LoRATrainer: max_data_loader_n_workers {values['max_data_loader_n_workers']} -> 0 "
              f"({multiprocessing.get_start_method()} worker processes cannot run inside ComfyUI)", flush=True)
        values["max_data_loader_n_workers"] = 0
    return values


def check_final_target(dst: str) -> None:
    """UserError unless ``dst`` is free or an earlier LoRA the node may replace (never a folder or another file).

    Checked before training (a long run must not end in a refusal) and again before the copy.
    """
    if os.path.isdir(dst):
        raise UserError(f"{dst} is a folder, so the LoRA cannot be written there; rename or move that folder, "
                        f"or choose another lora_name")
    if os.path.lexists(dst) and not _is_lora_file(dst):
        raise UserError(f"{dst} exists and is not a LoRA file (kohya format, as this node writes), so it is not "
                        f"replaced; move it away or choose another lora_name")


def _is_lora_file(path: str) -> bool:
    """True for a regular .safetensors file whose tensors are LoRA weights (what the node writes)."""
    if os.path.islink(path) or not os.path.isfile(path):
        return False
    try:
        from safetensors import safe_open

        with safe_open(path, "np") as f:
            keys = list(f.keys())
    except Exception:  # not a safetensors file at all
        return False
    return bool(keys) and all(k.startswith(("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")) for k in keys)


def place_final(src: str, dst: str) -> str:
    """Copy ``src`` to ``dst`` through a temporary name in ``dst``'s folder, so ``dst`` is never a half file.

    A failure (disk full, permissions, a folder at ``dst``) leaves ``dst`` as it was, removes the temporary
    file, and becomes a UserError that says where the trained LoRA is (``src`` is never touched).
    """
    try:
        check_final_target(dst)  # again: something may have taken the name during a long run
    except UserError as e:
        raise UserError(f"{e} — the trained LoRA is intact at {src}") from None
    from library.atomic import atomic_write

    try:  # the one atomic writer: temporary name in the folder, fsync, the umask's mode, rename
        with atomic_write(dst, "wb", make_folder=False) as out, open(src, "rb") as inp:
            shutil.copyfileobj(inp, out, 1 << 20)
    except OSError as e:
        raise UserError(_copy_failed(e, src, dst)) from None
    return dst


def _copy_failed(e: OSError, src: str, dst: str) -> str:
    kept = f"the trained LoRA is intact at {src}; copy it to {dst} yourself or queue again"
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return f"disk full while copying the LoRA to {os.path.dirname(dst)} ({e.strerror}); free space there — {kept}"
    if e.errno in (errno.EISDIR, errno.ENOTEMPTY):
        return f"{dst} is a folder, so the LoRA cannot be written there; rename or move it — {kept}"
    return f"cannot write {dst}: {e.strerror or e}; check the folder and its permissions — {kept}"


def write_options_file(args, script: str, path: str) -> str:
    """The run's effective options as a kohya TOML, so the command line can repeat or resume it."""
    from library.options import config_text

    header = (f"options of a LoRATrainer (ComfyUI) run; repeat or continue it with:\n"
              f"  python {script}.py --config_file {path} [--resume <a *-state folder next to this file>]")
    from library.atomic import write_text

    write_text(path, config_text(vars(args), header))
    return path


def _writable_folder(path: str, what: str) -> str:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create ComfyUI's {what} folder {path}: {e.strerror}; check the path and permissions") from None
    if not os.access(path, os.W_OK):
        raise UserError(f"ComfyUI's {what} folder {path} is not writable; fix its permissions")
    return path


# ------------------------------------------------------------------------------------- the node
def _tip(text: str, **spec) -> dict:
    return {**spec, "tooltip": text}


class LoRATrainer:
    """Train a LoRA on an SD1.x/SD2.x/SDXL checkpoint from ComfyUI's checkpoints folder."""

    @classmethod
    def INPUT_TYPES(cls):
        checkpoints = comfy_folder_paths().get_filename_list("checkpoints")
        return {"required": {
            "ckpt_name": (checkpoints, _tip("Base model from models/checkpoints (SD1.x, SD2.x or SDXL; SDXL is detected).")),
            "use_custom_dataset": ("BOOLEAN", _tip("Off with an empty dataset_path: train on the bundled demo images. "
                                                   "On: dataset_path must name your dataset.", default=False)),
            "dataset_path": ("STRING", _tip("Dataset folder (kohya NN_name subfolders, metadata.jsonl, image/ + text/, a "
                                            "saved `datasets` dataset) or a .parquet file.", default="", multiline=False)),
            "lora_checkpoint_folder": ("STRING", _tip("Folder under models/lora_logs for periodic LoRAs, states and "
                                                      "the report.", default="lora_test", multiline=False)),
            "lora_name": ("STRING", _tip("Final file: models/loras/<lora_name>.safetensors (replaced if it exists).",
                                         default="my_lora", multiline=False)),
            "caption_column": ("STRING", _tip("Caption column of metadata.jsonl or a `datasets`/parquet dataset.",
                                              default="text", multiline=False)),
            "learning_rate": ("FLOAT", _tip("Use about 1.0 with Prodigy/DAdapt optimizers.",
                                            default=1e-4, min=0.0, max=10.0, step=1e-5, round=False)),
            "batch_size": ("INT", _tip("Images per step.", default=1, min=1, max=64)),
            "training_steps": ("INT", _tip("Optimizer steps in all.", default=500, min=1, max=1_000_000)),
            "checkpointing_steps": ("INT", _tip("Save a LoRA every N steps into models/lora_logs (0: off).",
                                                default=100, min=0, max=1_000_000)),
            "rank": ("INT", _tip("LoRA rank (network_dim).", default=4, min=1, max=1024)),
            "random_seed": ("INT", _tip("Same seed and inputs give the same LoRA.", default=0, min=0, max=2**31 - 1)),
            "preset": (preset_names(), _tip("Settings from presets/<name>.toml (buckets, precision, scheduler...); "
                                            "the node's inputs win.", default=NO_PRESET)),
            "optimizer": (list(OPTIMIZERS), _tip("'from preset': the preset's optimizer (AdamW without one).",
                                                 default=FROM_PRESET)),
            "alpha": ("FLOAT", _tip("LoRA alpha; updates scale by alpha/rank (0: alpha = rank).",
                                    default=4.0, min=0.0, max=1024.0, step=0.5)),
            "resolution": ("INT", _tip("Training size in pixels (512 for SD1.5, 1024 for SDXL).",
                                       default=512, min=64, max=4096, step=64)),
        }}

    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("lora_path",)
    OUTPUT_TOOLTIPS = ("Full path of the final LoRA in models/loras.",)
    FUNCTION = "train"
    OUTPUT_NODE = True
    CATEGORY = CATEGORY
    DESCRIPTION = "Train a LoRA with lorasmith (kohya-style LoRA files); the result appears in Load LoRA's list."

    def train(self, ckpt_name, use_custom_dataset, dataset_path, lora_checkpoint_folder, lora_name, caption_column,
              learning_rate, batch_size, training_steps, checkpointing_steps, rank, random_seed,
              preset=NO_PRESET, optimizer=FROM_PRESET, alpha=4.0, resolution=512):
        with training_mode():  # the whole run, imports included: nothing is created in inference mode
            return self._train(ckpt_name, use_custom_dataset, dataset_path, lora_checkpoint_folder, lora_name,
                               caption_column, learning_rate, batch_size, training_steps, checkpointing_steps, rank,
                               random_seed, preset, optimizer, alpha, resolution)

    def _train(self, ckpt_name, use_custom_dataset, dataset_path, lora_checkpoint_folder, lora_name, caption_column,
               learning_rate, batch_size, training_steps, checkpointing_steps, rank, random_seed,
               preset, optimizer, alpha, resolution):
        fp = comfy_folder_paths()
        loras_root = fp.get_folder_paths("loras")[0]
        stem = lora_stem(lora_name, loras_root)
        folder = check_name(lora_checkpoint_folder, "lora_checkpoint_folder", fp.models_dir)
        ckpt = fp.get_full_path("checkpoints", ckpt_name) if ckpt_name else None
        if ckpt is None:
            raise UserError(f"checkpoint {ckpt_name!r} is not in ComfyUI's checkpoints folders "
                            f"({', '.join(fp.get_folder_paths('checkpoints'))}); put the model there and refresh the page")
        loras_dir = _writable_folder(loras_root, "loras")
        final = os.path.join(loras_dir, stem + SUFFIX)
        check_final_target(final)
        logs_dir = os.path.join(_writable_folder(os.path.join(fp.models_dir, LOGS_FOLDER), LOGS_FOLDER), folder)

        script = script_for(ckpt)
        from_preset = preset_options(preset, script)
        node_values = {
            "pretrained_model_name_or_path": ckpt, "output_dir": logs_dir, "output_name": stem,
            "caption_column": (caption_column or "").strip() or "text", "learning_rate": learning_rate,
            "train_batch_size": batch_size, "max_train_steps": training_steps,
            "save_every_n_steps": checkpointing_steps or None, "network_dim": rank, "network_alpha": alpha,
            "seed": random_seed, "resolution": resolution,
        }
        if optimizer != FROM_PRESET:
            node_values["optimizer_type"] = optimizer
        node_values.update(resolve_dataset(use_custom_dataset, dataset_path, logs_dir))
        from library.options import check_paths, namespace_from

        source = NODE_SOURCE if preset == NO_PRESET else f"{NODE_SOURCE} with preset {preset}"
        args = namespace_from(merged_options(from_preset, node_values), script, source)
        check_paths(args)
        write_options_file(args, script, os.path.join(logs_dir, stem + OPTIONS_SUFFIX))
        return (self._run(args, script, final, training_steps),)

    @staticmethod
    def _run(args, script: str, final: str, total: int) -> str:
        from library.train.entry import train
        from library.train.loop import Interrupted

        mm = _model_management()
        if mm is not None:  # give ComfyUI's cached models' memory to the training
            mm.unload_all_models()
            mm.soft_empty_cache()
        print(f"LoRATrainer: training {args.pretrained_model_name_or_path} ({script}) for {args.max_train_steps} "
              f"steps; periodic files in {args.output_dir}", flush=True)
        progress = _progress_callback(total)
        try:
            result = train(args, script, stop_flag=mm.processing_interrupted if mm is not None else None,
                           progress_callback=progress)
            lora, steps = result.lora, result.steps
            del result  # it holds the trained network (and through it the model): free them below
        except Interrupted as e:
            print(f"LoRATrainer: cancelled; saved {e.lora} and the state {e.state_dir}", flush=True)
            _raise_cancelled(mm, e)
        finally:
            gc.collect()
            if mm is not None:
                mm.soft_empty_cache()
        if os.path.exists(final):
            print(f"LoRATrainer: replacing {final}", flush=True)
        place_final(lora, final)
        print(f"Training is finished: {final} ({steps} steps)", flush=True)
        if progress is not None and progress.cancel is not None:  # Cancel came with the last step: the LoRA
            raise progress.cancel  # is complete and in place, and the rest of the workflow stops as asked
        return final


def _raise_cancelled(mm, interrupted) -> None:
    """End a cancelled run the way ComfyUI shows as "interrupted": its own InterruptProcessingException.

    The progress hook's exception (the usual path) is re-raised as it was; a Cancel seen by the
    stop flag between steps raises ComfyUI's exception the way ComfyUI itself does.
    """
    cause = interrupted.__cause__
    if cause is not None:
        raise cause.with_traceback(cause.__traceback__)
    if mm is not None:
        mm.throw_exception_if_processing_interrupted()
        if hasattr(mm, "InterruptProcessingException"):  # the flag was already consumed elsewhere
            raise mm.InterruptProcessingException()
    raise UserError(f"training was cancelled; the LoRA so far is {interrupted.lora}") from None


NODE_CLASS_MAPPINGS = {"LoRATrainer": LoRATrainer}
NODE_DISPLAY_NAME_MAPPINGS = {"LoRATrainer": "LoRA Trainer (lorasmith)"}

"""Caption a folder: which images need a caption, load the model, caption them in batches, count.

Why here and not in tools/caption.py: the tool is an argument shell; this is the work, in named steps.
``options`` is the tool's parsed namespace (tools/caption.py's ``build_parser``), already checked.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from library.captioning.caption_files import caption_path, check_caption_extension, compose_caption, has_caption, write_caption
from library.captioning.captioner import BLIP_PROMPT, Captioner, GenerationSettings, pick_device, pick_dtype
from library.captioning.images import describe_failure, find_images, load_in_order
from library.captioning.model_folder import check_model_folder, resolve_model_folder
from library.errors import UserError


@dataclass
class CaptionPlan:
    """What a run will do, known before the model loads."""

    extension: str
    model_folder: str
    model_type: str
    prompt: str
    images: list = field(default_factory=list)
    todo: list = field(default_factory=list)

    def counts(self) -> dict:
        return {"written": 0, "skipped": len(self.images) - len(self.todo), "unreadable": 0, "empty": 0,
                "extension": self.extension}


def plan_captions(options) -> CaptionPlan:
    """Check the extension and the model folder, then find the images that still need a caption."""
    extension = check_caption_extension(options.caption_extension)
    model_folder = resolve_model_folder(options.caption_weights)
    model_type = check_model_folder(model_folder)
    prompt = options.prompt if options.prompt is not None else (BLIP_PROMPT if model_type == "blip" else "")
    images = find_images(options.train_data_dir, options.recursive)
    todo = images if options.overwrite else [p for p in images if not has_caption(caption_path(p, extension))]
    return CaptionPlan(extension, model_folder, model_type, prompt, images, todo)


def caption_folder(options, out=None, err=None) -> dict:
    """Caption the folder; returns counts {"written", "skipped", "unreadable", "empty"} and the "extension"."""
    out, err = out or sys.stdout, err or sys.stderr
    plan = plan_captions(options)
    counts = plan.counts()
    if not plan.todo:
        print(f"all {len(plan.images)} images in {options.train_data_dir} already have {plan.extension} captions; "
              "nothing to do (--overwrite replaces them)", file=out)
        return counts
    captioner = _load_captioner(options, plan, err)
    print(f"captioning {len(plan.todo)} of {len(plan.images)} images"
          + (f" ({counts['skipped']} already captioned are skipped)" if counts["skipped"] else ""), file=err)
    _caption_images(options, plan, captioner, counts, err)
    return counts


def _load_captioner(options, plan: CaptionPlan, err) -> Captioner:
    """The model on the chosen device and precision, with the sampling seed set."""
    import torch

    device = pick_device(options.device)
    dtype = pick_dtype(options.dtype, device)
    print(f"loading {plan.model_folder} on {device}", file=err)
    _quiet_transformers(options.debug)
    captioner = Captioner.load(plan.model_folder, device, dtype)
    torch.manual_seed(options.seed)
    return captioner


def _caption_images(options, plan: CaptionPlan, captioner: Captioner, counts: dict, err) -> None:
    """Read images ahead of the model, caption them ``batch_size`` at a time, skip unreadable ones."""
    from tqdm import tqdm

    settings = GenerationSettings(options.beam_search, options.num_beams, options.top_p, options.min_length,
                                  options.max_length)

    def say(text):  # above the progress bar, not through it
        tqdm.write(text, file=err)

    def flush(batch):
        _caption_batch(options, plan, captioner, settings, batch, counts, say)
        bar.update(len(batch))

    batch = []
    with tqdm(total=len(plan.todo), unit="img", disable=None, file=err) as bar:
        for path, loaded in load_in_order(plan.todo, captioner.preprocess, options.max_data_loader_n_workers):
            if isinstance(loaded, Exception):
                counts["unreadable"] += 1
                say(f"warning: skipped {path}: {describe_failure(path, loaded)}")
                bar.update(1)
                continue
            batch.append((path, loaded))
            if len(batch) == options.batch_size:
                flush(batch)
                batch = []
        if batch:
            flush(batch)


def _caption_batch(options, plan: CaptionPlan, captioner: Captioner, settings, batch, counts: dict, say) -> None:
    """Caption one batch of (path, pixels) and write a caption file for every non-empty caption."""
    import torch

    try:
        captions = captioner.caption([pixels for _, pixels in batch], settings, plan.prompt)
    except torch.cuda.OutOfMemoryError:
        raise UserError(f"out of GPU memory with --batch_size {options.batch_size}; use a smaller --batch_size, "
                        "--dtype float16, or --device cpu") from None
    for (path, _), caption in zip(batch, captions):
        text = compose_caption(caption, options.prefix, options.suffix)
        if not text.strip():
            counts["empty"] += 1
            say(f"warning: the model gave an empty caption for {path}; no caption file written")
            continue
        write_caption(caption_path(path, plan.extension), text)
        counts["written"] += 1
        if options.debug:
            say(f"{path}: {text}")


def _quiet_transformers(debug: bool) -> None:
    """transformers' own progress bars and warnings, only with --debug."""
    from transformers.utils import logging as tlog

    if debug:
        tlog.enable_progress_bar()
    else:
        tlog.disable_progress_bar()
        tlog.set_verbosity_error()


def summary(counts: dict, folder: str) -> str:
    """One line saying what a run wrote and what it left alone."""
    text = f"wrote {counts['written']} {counts['extension']} caption file(s) in {folder}"
    if counts["skipped"]:
        text += f"; {counts['skipped']} image(s) already had one (--overwrite replaces them)"
    if counts["unreadable"]:
        text += f"; {counts['unreadable']} unreadable image(s) skipped (see the warnings)"
    if counts["empty"]:
        text += f"; {counts['empty']} empty caption(s) not written"
    return text

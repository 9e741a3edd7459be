"""The Compare page's job: a grid of checkpoint x LoRA strength x prompt images for a finished run.

    python webui/compare_grid.py --grid RUN/compare/grid-N

Reads ``request.json`` in that folder (written by the GUI: base model, run folder, checkpoint files,
strengths, prompt lines in kohya's syntax, seed, steps, size, sampler) and makes the images with
library.inference (the base model loads once; each LoRA is hooked at each strength, so strength 0 is
the base model bit for bit and is made once). Every image is appended to ``grid.jsonl`` as it is
written, so the page fills the grid while the job runs. Same seed per prompt across the grid: the
images differ only by checkpoint and strength.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from library.errors import UserError, run_reporting_user_errors
from webui.compare import REQUEST, RESULTS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--grid", required=True, help="the grid folder holding request.json (RUN/compare/grid-N)")
    p.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda when available)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def _append(folder: Path, row: dict) -> None:
    with open(folder / RESULTS, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def _plan(request: dict):
    from library.inference.generate import plan_jobs
    from library.inference.prompts import parse_prompt_line

    defaults = {"width": request.get("width"), "height": request.get("height"), "steps": request.get("steps", 20),
                "scale": request.get("scale", 7.0), "negative_prompt": "", "sampler": None, "seed": None}
    prompts = [parse_prompt_line(line, f"prompt {i + 1}", defaults) for i, line in enumerate(request["prompts"])]
    for i, p in enumerate(prompts):  # one seed per prompt, the same in every cell of its row
        if p.seed is None:
            p.seed = int(request.get("seed", 0)) + i
    return plan_jobs(prompts, seed=int(request.get("seed", 0)), default_sampler=request.get("sampler") or "euler_a")


def run(args) -> int:
    import torch

    from library.devices import check_device
    from library.inference.generate import LoraStack, LoraUse, check_size, generate
    from library.models import load_base_model

    folder = Path(args.grid)
    try:
        request = json.loads((folder / REQUEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"--grid {folder}: cannot read request.json ({e}); queue the grid from the Compare page") from None
    run_dir = Path(request["run_dir"])
    jobs = _plan(request)
    device = check_device(args.device, default="auto")
    model = load_base_model(request["base_model"], v_parameterization=request.get("v_parameterization"),
                            dtype=torch.float32, device=device)
    size = {"sdxl": 1024}.get(model.family, 512)
    for job in jobs:
        job.sample.width, job.sample.height = job.sample.width or size, job.sample.height or size
        check_size(job, model.latent_downscale)
    stack = LoraStack(model)
    base_done: dict[int, str] = {}
    total = len(request["checkpoints"]) * len(request["strengths"]) * len(jobs)
    print(f"making a {total}-image grid with {Path(request['base_model']).name} on {device}", flush=True)
    for ckpt in request["checkpoints"]:
        path = run_dir / ckpt
        if not path.is_file():
            raise UserError(f"{path} is gone; pick the checkpoints again on the Compare page")
        stack.network(path)  # a LoRA that does not fit the model fails before any image
        for strength in request["strengths"]:
            if strength == 0 and base_done:  # strength 0 is the base model: the same image for every checkpoint
                for job in jobs:
                    _append(folder, {"checkpoint": ckpt, "strength": 0, "prompt": request["prompts"][job.index],
                                     "file": base_done[job.index]})
                continue
            paths = generate(model, jobs, folder, stack=stack, global_loras=[LoraUse(path, strength, strength)],
                             clip_skip=request.get("clip_skip"), model_name=Path(request["base_model"]).stem)
            for job, image in zip(jobs, paths):
                if strength == 0:
                    base_done[job.index] = image.name
                _append(folder, {"checkpoint": ckpt, "strength": strength, "prompt": request["prompts"][job.index],
                                 "file": image.name})
                print(f"wrote {image.name}: {ckpt} at {strength:g}, prompt {job.index + 1}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_reporting_user_errors(lambda: run(args), args.debug)


if __name__ == "__main__":
    sys.exit(main())

"""Generate images from a base checkpoint with any number of LoRAs (kohya gen_img.py's arguments).

    python tools/gen_img.py --ckpt sd15.safetensors --outdir out --prompt "a cat --n blurry --d 42" \\
        --network_weights style.safetensors --network_mul 0.8 --steps 30 --sampler euler_a
    python tools/gen_img.py --ckpt sdxl.safetensors --outdir out --lora_dir loras \\
        --prompt "a cat <lora:style:0.8> <lora:detail:0.5>" --images_per_prompt 4 --seed 1

Prompts use the training sample syntax (--n --w --h --d --s --l --ss after the text) and A1111
``<lora:name:weight>`` tags (looked up by file stem in --lora_dir). See docs/tools/gen_img.md.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from library.devices import check_device, dtype_of  # noqa: E402
from library.errors import UserError, run_reporting_user_errors  # noqa: E402
from library.output_paths import check_tool_output  # noqa: E402
from library.inference.prompts import parse_prompt_line, read_prompt_file  # noqa: E402
from library.vocabulary import SAMPLERS  # noqa: E402
from library.options.schema import finite_float  # noqa: E402

DEFAULT_SIZE = {"sd1": 512, "sd2": 512, "sdxl": 1024}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="base model: .safetensors/.ckpt single file or diffusers folder")
    p.add_argument("--outdir", required=True, help="folder for the PNGs (created if missing)")
    p.add_argument("--prompt", help="one prompt, with optional --n/--w/--h/--d/--s/--l/--ss options and <lora:name:w> tags")
    p.add_argument("--from_file", help="a prompt file in kohya's formats: .txt (one prompt per line, '#' comments, same "
                   "syntax as --prompt), .toml ([prompt] + [[prompt.subset]]) or .json (a list of prompt objects)")
    p.add_argument("--negative_prompt", default="", help="default negative prompt (a prompt's --n overrides it)")
    p.add_argument("--W", "--width", dest="width", type=int, default=None, help="image width (default 512, SDXL 1024)")
    p.add_argument("--H", "--height", dest="height", type=int, default=None, help="image height (default 512, SDXL 1024)")
    p.add_argument("--steps", type=int, default=50, help="sampling steps (kohya default 50)")
    p.add_argument("--scale", type=finite_float, default=7.5, help="CFG guidance scale; 1 or less turns CFG off")
    p.add_argument("--seed", type=int, default=None, help="seed of the first image; later images take seed+1, ... (random if unset)")
    p.add_argument("--sampler", default="ddim", type=str.lower, choices=list(SAMPLERS), help="scheduler (kohya names)")
    p.add_argument("--images_per_prompt", type=int, default=1)
    p.add_argument("--network_module", nargs="*", default=None, help="accepted for kohya commands; networks.lora, networks.dylora and networks.lora_fa (plain LoRA files)")
    p.add_argument("--network_weights", nargs="*", default=[], help="LoRA files applied to every prompt")
    p.add_argument("--network_mul", nargs="*", type=finite_float, default=[], help="one weight per --network_weights file (default 1.0)")
    p.add_argument("--network_merge", action="store_true", help="merge --network_weights into the model once instead of hooking")
    p.add_argument("--lora_dir", default=None, help="folder searched (with subfolders) for <lora:name:w> tags, by file stem")
    p.add_argument("--v2", action="store_true", help="accepted for kohya commands; the family is detected from the file")
    p.add_argument("--v_parameterization", action="store_true", default=None, help="the model predicts v (SD2 768-v)")
    p.add_argument("--clip_skip", type=int, default=None, help="kohya clip skip (2 = penultimate layer); SD1/SD2 only")
    p.add_argument("--fp16", action="store_true", help="run in float16 (GPU)")
    p.add_argument("--bf16", action="store_true", help="run in bfloat16 (GPU)")
    p.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda when available)")
    p.add_argument("--sequential_file_name", action="store_true", help="name images im_000001.png, ... instead of im_<time>_<n>_<seed>.png")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def read_prompts(args) -> list:
    """The prompts of --prompt and --from_file, with the command line's settings as defaults."""
    if not args.prompt and not args.from_file:
        raise UserError("no prompt: pass --prompt \"...\" or --from_file prompts.txt")
    defaults = dict(
        negative_prompt=args.negative_prompt, width=args.width, height=args.height,
        steps=args.steps, scale=args.scale, sampler=None, seed=None,
    )
    prompts = []
    if args.prompt:
        prompts.append(parse_prompt_line(args.prompt, "--prompt", defaults))
    if args.from_file:
        prompts += read_prompt_file(args.from_file, defaults, option="--from_file")
    return prompts


# network modules whose files are plain kohya LoRA (lora_down/lora_up/alpha)
PLAIN_LORA_MODULES = ("networks.lora", "networks.dylora", "networks.lora_fa")


def global_loras(args) -> list:
    """--network_weights with their --network_mul weights (missing weights are 1.0, as in kohya)."""
    from library.inference.generate import LoraUse

    modules = [m for m in (args.network_module or []) if m not in PLAIN_LORA_MODULES]
    if modules:
        raise UserError(f"--network_module {modules[0]}: only plain LoRA/LoCon files are supported "
                        f"({', '.join(PLAIN_LORA_MODULES)} write them)")
    if len(args.network_mul) > len(args.network_weights):
        raise UserError(
            f"--network_mul has {len(args.network_mul)} values for {len(args.network_weights)} --network_weights files; "
            "give one weight per file"
        )
    uses = []
    for i, path in enumerate(args.network_weights):
        if not Path(path).is_file():
            raise UserError(f"--network_weights {path}: no such file; check the path")
        w = args.network_mul[i] if i < len(args.network_mul) else 1.0
        uses.append(LoraUse(Path(path), w, w))
    return uses


def run(args) -> list[Path]:
    from library.inference.generate import LoraStack, check_size, generate, plan_jobs
    from library.models import load_base_model
    from networks.lora_file import lora_file_keys, require_plain_lora

    if args.fp16 and args.bf16:
        raise UserError("--fp16 and --bf16 both given; pick one")
    device = check_device(args.device, default="auto")
    check_tool_output(args.outdir, [args.ckpt, args.from_file, *args.network_weights], "folder", option="--outdir")
    prompts = read_prompts(args)
    loras = global_loras(args)
    seed = args.seed if args.seed is not None else random.randint(0, 2**31 - 1)
    jobs = plan_jobs(prompts, images_per_prompt=args.images_per_prompt, seed=seed,
                     default_sampler=args.sampler, lora_dir=args.lora_dir)
    for path in dict.fromkeys([u.path for u in loras] + [u.path for job in jobs for u in job.loras]):
        require_plain_lora(lora_file_keys(path), path, "gen_img.py")  # LoHa/OFT/...: refused before the model loads
    dtype = dtype_of("fp16" if args.fp16 else "bf16" if args.bf16 else "float")
    model = load_base_model(args.ckpt, v_parameterization=args.v_parameterization, dtype=dtype, device=device)
    model.check_clip_skip(args.clip_skip)
    size = DEFAULT_SIZE[model.family]
    for job in jobs:
        job.sample.width = size if job.sample.width is None else job.sample.width  # 0 is refused, not defaulted
        job.sample.height = size if job.sample.height is None else job.sample.height
        check_size(job, model.latent_downscale)
    stack = LoraStack(model)
    if args.network_merge:
        for use in loras:
            stack.merge(use)
        loras = []
    for path in dict.fromkeys([u.path for u in loras] + [u.path for job in jobs for u in job.loras]):
        stack.network(path)  # a LoRA that does not fit the model fails now, not after some images
    print(f"generating {len(jobs)} image(s) with {Path(args.ckpt).name} ({model.family}) on {device}")
    return generate(
        model, jobs, args.outdir, stack=stack, global_loras=loras, clip_skip=args.clip_skip,
        sequential_file_name=args.sequential_file_name, model_name=Path(args.ckpt).stem,
        on_image=lambda path, job: print(f"wrote {path} (seed {job.sample.seed})"),
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_reporting_user_errors(lambda: run(args), args.debug)


if __name__ == "__main__":
    sys.exit(main())

"""Check a LoRA dataset before training: folders, repeats, reg balance, captions, buckets and step counts.

Reads folders, caption files and image headers only (no model), so it finishes in seconds. Exit code 1
when training could not start with this dataset, 0 otherwise.

    python tools/check_dataset.py --train_data_dir img --reg_data_dir reg --resolution 512 --enable_bucket \\
        --caption_extension .txt --train_batch_size 2 --max_train_epochs 10
    python tools/check_dataset.py --dataset_config my_dataset.toml --json

Every dataset option of training (kohya names) is accepted, e.g. --bucket_no_upscale, --instance_prompt.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from library.data.params import DataOptions  # noqa: E402
from library.data.preflight import run_preflight  # noqa: E402
from library.options import BY_NAME  # noqa: E402
from library.options.cli import add_option_argument  # noqa: E402
from library.options.typed import from_args  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in fields(DataOptions):  # training's own options: same converters, help and defaults as the trainer's
        add_option_argument(parser, BY_NAME[f.name], default=f.default)
    parser.set_defaults(resolution="512")
    for name in ("max_train_epochs", "max_train_steps", "gradient_accumulation_steps"):  # the step arithmetic's
        add_option_argument(parser, BY_NAME[name], default=BY_NAME[name].default)
    parser.add_argument("--num_processes", type=int, default=1, help="GPUs / processes training together")
    parser.add_argument("--verify_images", action="store_true", help="also decode every image to find damaged files (slower)")
    parser.add_argument("--workers", type=int, default=0, help="read headers on N threads (helps on network/spinning disks only)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def main(argv=None) -> int:
    args = parser_args = build_parser().parse_args(argv)
    options = from_args(DataOptions, parser_args)
    report = run_preflight(
        options,
        max_train_epochs=args.max_train_epochs,
        max_train_steps=args.max_train_steps,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        num_processes=args.num_processes,
        verify_images=args.verify_images,
        workers=args.workers,
    )
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.to_text())
    return 1 if report.fatal else 0


if __name__ == "__main__":
    sys.exit(main())

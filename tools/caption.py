"""Write a caption file next to every image of a folder with a local BLIP or BLIP-2 model (kohya make_captions.py's options).

    python tools/caption.py img/10_Li4mG4ll4gher --caption_weights models/blip-image-captioning-large \\
        --caption_extension .txt --prefix "Li4mG4ll4gher, " --beam_search --num_beams 3 --batch_size 8
    python tools/caption.py img --recursive --caption_weights models/blip-image-captioning-large --overwrite

Images that already have a non-empty caption file are left alone unless --overwrite is given (kohya
overwrites them; hand-edited captions are worth more than a second run). Unreadable images are
skipped with a warning. See docs/tools/caption.md.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from library.captioning.captioner import BLIP_PROMPT  # noqa: E402  (the package imports neither torch nor transformers)
from library.captioning.folder import caption_folder, summary  # noqa: E402
from library.errors import UserError  # noqa: E402
from library.options.schema import finite_float  # noqa: E402
from library.vocabulary import DTYPE_NAMES  # noqa: E402

EXIT_OK, EXIT_USER, EXIT_INTERRUPTED = 0, 2, 130


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("train_data_dir", help="folder of images; caption files are written next to them")
    p.add_argument("--caption_weights", "--model_path", dest="caption_weights", default=None,
                   help="required: local transformers folder of a BLIP (BlipForConditionalGeneration) or BLIP-2 model")
    p.add_argument("--caption_extension", default=".caption", help="caption file extension (kohya default .caption; .txt is common)")
    p.add_argument("--caption_extention", dest="caption_extension", help=argparse.SUPPRESS)  # kohya's old spelling
    p.add_argument("--prefix", default="", help='text put before every caption as given, e.g. "Li4mG4ll4gher, "')
    p.add_argument("--suffix", default="", help='text put after every caption as given, e.g. ", photo"')
    p.add_argument("--recursive", action="store_true", help="also caption images in subfolders (e.g. every 10_name folder of img/)")
    existing = p.add_mutually_exclusive_group()
    existing.add_argument("--skip_existing", dest="overwrite", action="store_false",
                          help="leave images that already have a non-empty caption file alone (the default)")
    existing.add_argument("--overwrite", dest="overwrite", action="store_true",
                          help="replace existing caption files (kohya's behaviour)")
    p.set_defaults(overwrite=False)
    p.add_argument("--prompt", default=None,
                   help=f'text the model continues, cut off the caption (BLIP default "{BLIP_PROMPT}" as kohya; BLIP-2 none; "" for none)')
    p.add_argument("--batch_size", type=int, default=1, help="images per forward pass")
    p.add_argument("--beam_search", action="store_true", help="deterministic beam search (default: nucleus sampling, as kohya)")
    p.add_argument("--num_beams", type=int, default=1, help="beams with --beam_search (1 = greedy)")
    p.add_argument("--top_p", type=finite_float, default=0.9, help="nucleus sampling top_p (without --beam_search)")
    p.add_argument("--min_length", type=int, default=5, help="minimum caption length in tokens")
    p.add_argument("--max_length", type=int, default=75, help="maximum caption length in tokens")
    p.add_argument("--seed", type=int, default=42, help="seed of nucleus sampling (kohya default 42)")
    p.add_argument("--max_data_loader_n_workers", type=int, default=0, help="threads reading images ahead of the model (0: none)")
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu, ... (default: cuda when available)")
    p.add_argument("--dtype", default=None, choices=DTYPE_NAMES,
                   help="model precision (default: float16 on a GPU, float32 on the CPU)")
    p.add_argument("--debug", action="store_true", help="print every caption, and tracebacks on errors")
    return p


def check_args(args) -> None:
    """Option mistakes, before anything slow happens."""
    if args.batch_size < 1:
        raise UserError(f"--batch_size {args.batch_size}: must be 1 or more")
    if args.num_beams < 1:
        raise UserError(f"--num_beams {args.num_beams}: must be 1 or more")
    if not 0.0 < args.top_p <= 1.0:
        raise UserError(f"--top_p {args.top_p}: must be in (0, 1]")
    if args.min_length < 0 or args.max_length < 1:
        raise UserError(f"--min_length {args.min_length} / --max_length {args.max_length}: must be >= 0 and >= 1")
    if args.min_length > args.max_length:
        raise UserError(f"--min_length {args.min_length} is larger than --max_length {args.max_length}")
    if args.max_data_loader_n_workers < 0:
        raise UserError(f"--max_data_loader_n_workers {args.max_data_loader_n_workers}: must be 0 or more")


def run(args, out=None, err=None) -> dict:
    """Check the options, then caption the folder (library/captioning/folder.py); returns its counts."""
    check_args(args)
    return caption_folder(args, out, err)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    try:
        counts = run(args)
    except UserError as e:
        if args.debug:
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("interrupted: the caption files written so far are complete; run it again without "
              "--overwrite to caption only the rest", file=sys.stderr)
        return EXIT_INTERRUPTED
    if counts["written"] or counts["unreadable"] or counts["empty"]:
        print(summary(counts, args.train_data_dir) + f" ({time.perf_counter() - start:.0f} s)")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

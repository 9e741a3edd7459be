"""Train a LoRA for Stable Diffusion 1.x / 2.x with kohya-ss sd-scripts' options (docs/options.md)."""

import sys

from library.train.entry import main
from library.train import own_process
from library.train.lean_imports import skip_unused_diffusers_backends

if __name__ == "__main__":
    skip_unused_diffusers_backends()  # diffusers' bitsandbytes/peft backends: unused, ~1/5 of the imports
    own_process.claim()  # process-wide settings (the CPU allocator: library/train/own_process.py) are ours
    sys.exit(main(sys.argv[1:], "train_network"))

"""Train a LoRA for Stable Diffusion 1.x / 2.x with kohya-ss sd-scripts' options (docs/options.md)."""

import sys

from library.train.entry import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], "train_network"))

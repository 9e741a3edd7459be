"""Run under ``accelerate launch``: train, then write this rank's LoRA weights and step count.

Why a separate script: the two-process test must look at every rank's weights, not only the
file the main process saves.
"""

import json
import os
import sys

import torch
from safetensors.torch import save_file

from library.options import parse_args
from library.train.entry import train


def main(argv):
    out = argv[0]
    args = parse_args(argv[1:], "train_network")
    torch.set_num_threads(1)
    result = train(args)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))  # set by accelerate launch
    save_file({k: v.detach().float().contiguous() for k, v in result.network.state_dict().items()}, f"{out}/rank{rank}.safetensors")
    with open(f"{out}/rank{rank}.json", "w") as f:
        json.dump({"rank": rank, "world": world, "steps": result.steps}, f)


if __name__ == "__main__":
    main(sys.argv[1:])

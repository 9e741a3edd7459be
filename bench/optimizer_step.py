"""AdamW step alone on LoRA-shaped parameters: torch's per-tensor loop vs foreach vs the fused kernel.

Why: a LoRA has hundreds of small tensors (SD1.5 rank 4 on UNet + text encoder: 528 tensors, 3.9 M
values), so per-tensor overhead, not arithmetic, sets the cost of the optimizer step. torch's default
on CPU is the loop; library/train/speed.py picks fused (or foreach) for the trainer. Interleaved rounds,
medians, ratios to the loop in the same process, on both clocks (bench/clock.py; ``--clock cpu``, the
default on a CPU, is this process's CPU time with torch on one thread).

    .venv/bin/python bench/optimizer_step.py [--rounds 15] [--tensors 264] [--rank 4] [--device cpu|cuda]
        [--clock cpu|wall] [--threads N]
"""

from __future__ import annotations

import argparse
import functools
import os
import random
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from clock import Clocks, add_clock_options  # noqa: E402

WIDTHS = (320, 640, 1280, 768, 2560, 5120)  # SD1.5 UNet/CLIP-L layer widths


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--tensors", type=int, default=264, help="LoRA modules (each has a down and an up tensor)")
    ap.add_argument("--rank", type=int, default=4)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    add_clock_options(ap)
    args = ap.parse_args()
    clocks = Clocks.from_args(args, args.device)
    rng = random.Random(0)
    shapes = []
    for _ in range(args.tensors):
        d = rng.choice(WIDTHS)
        shapes += [(args.rank, d), (d, args.rank)]
    variants = {"loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}
    opts = {}
    for name, kw in variants.items():
        params = [torch.nn.Parameter(torch.randn(s, device=args.device)) for s in shapes]
        for p in params:
            p.grad = torch.randn_like(p)
        opts[name] = torch.optim.AdamW(params, lr=1e-4, **kw)
        opts[name].step()  # state allocated

    def step(opt):
        opt.step()
        if args.device == "cuda":
            torch.cuda.synchronize()
    times = clocks.interleaved({name: functools.partial(step, opt) for name, opt in opts.items()}, args.rounds)
    print(f"AdamW step, {len(shapes)} tensors, {sum(a * b for a, b in shapes) / 1e6:.1f} M values, {args.device}, "
          f"median of {args.rounds}; torch {torch.__version__}")
    print("\n".join(clocks.report(times, "loop", unit="ms", scale=1000)))


if __name__ == "__main__":
    main()

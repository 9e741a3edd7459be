"""LoRA overhead: full-size SD1.5 UNet forward+backward with a frozen base, LoRA vs none.

Every variant runs in this one process, interleaved round by round, and is reported as a
ratio to the no-LoRA baseline (input gradients on, so the baseline does the same backward
through the frozen base). Target: <= 1.10 at rank 32. Both clocks are printed; ``--clock cpu``
(the default on a CPU: this process's CPU time, torch on one thread) makes the ratios robust to
other jobs on the machine, see bench/clock.py.

    .venv/bin/python bench/lora_overhead.py [--resolution 256] [--rounds 5] [--ranks 4 32 128] [--device cpu]
        [--clock cpu|wall] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from clock import Clocks, add_clock_options  # noqa: E402
from diffusers import UNet2DConditionModel  # noqa: E402

from library.models.configs import full_size_configs  # noqa: E402
from networks.lora import create_network  # noqa: E402


def step(unet, x, t, ctx, device):
    x = x.detach().requires_grad_(True)
    out = unet(x, t, ctx).sample
    out.float().pow(2).mean().backward()
    if device == "cuda":
        torch.cuda.synchronize()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--ranks", type=int, nargs="+", default=[4, 32, 128])
    ap.add_argument("--device", default="cpu")
    add_clock_options(ap)
    args = ap.parse_args()
    clocks = Clocks.from_args(args, args.device)

    torch.manual_seed(0)
    cfg = full_size_configs("sd1")["unet"]
    unet = UNet2DConditionModel(**cfg).to(args.device).requires_grad_(False).train()
    lat = args.resolution // 8
    x = torch.randn(1, 4, lat, lat, device=args.device)
    t = torch.tensor([500], device=args.device)
    ctx = torch.randn(1, 77, cfg["cross_attention_dim"], device=args.device)

    networks = {}
    for r in args.ranks:
        net = create_network(1.0, r, r, None, None, unet)
        net.to(args.device)
        networks[r] = net

    def run(variant):
        net = networks.get(variant)
        if net is not None:
            net.apply_to(None, unet)
            net.requires_grad_(True)
        elapsed = clocks.measure(step, unet, x, t, ctx, args.device)
        if net is not None:
            net.restore()
            net.zero_grad(set_to_none=True)
        return elapsed

    variants = ["base"] + args.ranks
    for v in variants:  # warm-up
        run(v)
    times = {v: [] for v in variants}
    for _ in range(args.rounds):
        for v in variants:
            times[v].append(run(v))
    print(f"SD1.5 UNet fp32, {args.resolution}px, batch 1, {args.device}, rounds={args.rounds}; torch {torch.__version__}")
    print("LoRA modules / params: " + ", ".join(f"rank {r}: {len(n.unet_loras)} / {sum(p.numel() for p in n.parameters()) / 1e6:.1f} M"
                                                 for r, n in networks.items()))
    print("\n".join(clocks.report(times, "base", label=lambda v: "no LoRA" if v == "base" else f"rank {v}")))


if __name__ == "__main__":
    main()

"""LoRA overhead: full-size SD1.5 UNet forward+backward with a frozen base, LoRA vs none.

Every variant runs in this one process, interleaved round by round, and is reported as a
ratio to the no-LoRA baseline (input gradients on, so the baseline does the same backward
through the frozen base). Target: <= 1.10 at rank 32.

    .venv/bin/python bench/lora_overhead.py [--resolution 256] [--rounds 5] [--ranks 4 32 128] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

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
    args = ap.parse_args()

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
        start = time.perf_counter()
        step(unet, x, t, ctx, args.device)
        elapsed = time.perf_counter() - start
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
    base = statistics.median(times["base"])
    print(f"SD1.5 UNet fp32, {args.resolution}px, batch 1, {args.device}, threads={torch.get_num_threads()}, rounds={args.rounds}")
    print(f"{'variant':>10} {'median s':>9} {'ratio':>6} {'LoRA modules':>12} {'LoRA params':>11}")
    print(f"{'no LoRA':>10} {base:9.3f} {1.0:6.3f} {'-':>12} {'-':>11}")
    for r in args.ranks:
        med = statistics.median(times[r])
        n = networks[r]
        print(f"{'rank ' + str(r):>10} {med:9.3f} {med / base:6.3f} {len(n.unet_loras):12d} {sum(p.numel() for p in n.parameters()):11d}")
    print("rounds (s): " + "; ".join(f"{'no LoRA' if v == 'base' else f'rank {v}'}: " + ", ".join(f"{x:.2f}" for x in times[v])
                                     for v in variants))


if __name__ == "__main__":
    main()

"""Training step cost: full-size SD1.5 UNet + text encoder, LoRA step vs the bare frozen base.

Variants, interleaved round by round in this one process and reported as ratios to ``base``:

* ``base``      frozen UNet forward+backward (input gradients on) + text-encoder forward: the floor
                any LoRA trainer pays.
* ``lora_unet`` our training step with LoRA on the UNet only (text encoder frozen, as ``base``).
* ``lora``      our whole training step (library.train.step.batch_loss + backward + AdamW step),
                LoRA on UNet and text encoder (rank ``--rank``), cached latents.
* ``lora_gc``   the same with gradient checkpointing.

Peak memory: on CUDA per variant from torch.cuda.max_memory_allocated (weights included); on CPU
each variant runs once more in a fresh child process, and the peak resident memory during two
steps above the loaded model (activations, gradients, optimizer state) is reported.

    .venv/bin/python bench/train_step.py [--resolution 256] [--rounds 3] [--rank 4] [--device cpu|cuda]
        [--dtype fp32|bf16|fp16] [--family sd1|sdxl]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from library.models import assemble, build_models, full_size_configs  # noqa: E402
from library.train.losses import LossOptions  # noqa: E402
from library.train.noise import NoiseOptions  # noqa: E402
from library.train.setup_model import TrainModel, enable_te_checkpointing  # noqa: E402
from library.train.step import StepConfig, batch_loss  # noqa: E402
from library.train.text_encoding import encode, tokenize  # noqa: E402
from networks.lora import create_network  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
VARIANTS = ("base", "lora_unet", "lora", "lora_gc")


def build(family: str, device: str, dtype: torch.dtype, rank: int, with_lora: bool, checkpointing: bool, train_te: bool = True):
    configs = full_size_configs(family)
    base = assemble(configs, build_models(configs, device="cpu", seed=0))
    for m in (base.unet, base.vae, *base.text_encoders):
        m.requires_grad_(False)
        m.to(device) if dtype == torch.float32 else m.to(device, dtype=dtype)
    network = None
    if with_lora:
        tes = base.text_encoders if len(base.text_encoders) > 1 else base.text_encoders[0]
        network = create_network(1.0, rank, rank, base.vae, tes, base.unet)
        network.apply_to(tes, base.unet, train_te, True)
        network.to(device)
    if checkpointing:
        base.unet.enable_gradient_checkpointing()
        for te in base.text_encoders:
            enable_te_checkpointing(te)
    base.unet.train()
    return TrainModel(base, network, torch.device(device), dtype, dtype, True, train_te)


def make_batch(model, resolution: int, batch: int):
    h = resolution // 8
    return {
        "latents": torch.randn(batch, 4, h, h), "captions": ["a photo of sks dog, detailed"] * batch,
        "loss_weights": torch.ones(batch), "original_sizes_hw": torch.tensor([[resolution] * 2] * batch),
        "crop_top_lefts": torch.zeros(batch, 2, dtype=torch.long), "target_sizes_hw": torch.tensor([[resolution] * 2] * batch),
    }


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def runner(variant: str, args):
    dtype = DTYPES[args.dtype]
    model = build(args.family, args.device, dtype, args.rank, variant != "base", variant == "lora_gc", variant != "lora_unet")
    batch = make_batch(model, args.resolution, args.batch)
    autocast = (lambda: torch.autocast(args.device, dtype=dtype)) if dtype != torch.float32 else None
    cfg = StepConfig(NoiseOptions(), LossOptions(), autocast=autocast or StepConfig.autocast)
    if variant == "base":
        base = model.base
        ids = [tokenize(t, batch["captions"]).to(args.device) for t in base.tokenizers]

        def step():
            with torch.no_grad():
                cond = encode(base.text_encoders, ids, base.family)
            x = (batch["latents"].to(args.device, dtype)).requires_grad_(True)
            t = torch.randint(0, 1000, (args.batch,), device=args.device)
            added = None
            if base.is_sdxl:
                added = {"text_embeds": cond.pooled, "time_ids": torch.zeros(args.batch, 6, device=args.device, dtype=dtype)}
            with cfg.autocast():
                out = base.unet(x, t, cond.context, added_cond_kwargs=added).sample
            out.float().pow(2).mean().backward()
            sync(args.device)
        return step

    opt = torch.optim.AdamW(model.network.parameters(), lr=1e-4)

    def step():
        loss = batch_loss(model, batch, cfg, torch.Generator().manual_seed(0))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(args.device)
    return step


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class _PeakRSS:
    """Samples the resident set every 2 ms on a thread: the step's peak, not the model build's."""

    def __enter__(self):
        import threading

        self.max, self._stop = _rss_mib(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(0.002):
            self.max = max(self.max, _rss_mib())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.max = max(self.max, _rss_mib())


def child_peak(variant: str, args) -> float:
    """Extra resident memory (MiB) two steps of ``variant`` take over the loaded model, in a fresh process."""
    cmd = [sys.executable, __file__, "--child", variant, "--resolution", str(args.resolution), "--rank", str(args.rank),
           "--device", args.device, "--dtype", args.dtype, "--family", args.family, "--batch", str(args.batch)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    return json.loads(out)["peak_mib"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rank", type=int, default=4)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    ap.add_argument("--family", default="sd1", choices=("sd1", "sd2", "sdxl"))
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--no_memory", action="store_true", help="skip the per-variant peak-RSS child runs (CPU)")
    args = ap.parse_args()
    if args.child:
        step = runner(args.child, args)
        before = _rss_mib()
        with _PeakRSS() as peak:
            step()
            step()
        print(json.dumps({"peak_mib": peak.max - before}))
        return
    steps = {v: runner(v, args) for v in VARIANTS}
    times = {v: [] for v in VARIANTS}
    peaks = {}
    for v in VARIANTS:  # warm-up (and CUDA peak per variant)
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        steps[v]()
        if args.device == "cuda":
            peaks[v] = torch.cuda.max_memory_allocated() / 2**20
    for _ in range(args.rounds):
        for v in VARIANTS:
            t = time.perf_counter()
            steps[v]()
            times[v].append(time.perf_counter() - t)
    if args.device == "cpu" and not args.no_memory:
        del steps
        peaks = {v: child_peak(v, args) for v in VARIANTS}
    base = statistics.median(times["base"])
    print(f"{args.family} {args.resolution}px batch {args.batch} rank {args.rank} {args.device} {args.dtype}, "
          f"median of {args.rounds} rounds; torch {torch.__version__}, {os.cpu_count()} CPUs")
    for v in VARIANTS:
        med = statistics.median(times[v])
        mem = f"  peak {peaks[v]:8.0f} MiB" + (" above the weights" if args.device == "cpu" else "") if v in peaks else ""
        print(f"  {v:9s} {med:7.2f} s/step  {1 / med:6.3f} steps/s  x{med / base:5.2f} of base{mem}")


if __name__ == "__main__":
    main()

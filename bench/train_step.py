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

``--levers``: the step-speed levers of library/train/speed.py, each alone and together, on ONE model
(full-size weights once: variants switch hooks, optimizer, attention processor, memory format and dtype
between steps, untimed), interleaved round by round, as ratios to ``lora`` (our step before the levers):

* ``base``       the frozen floor, as above (LoRA hooks removed)
* ``lora``       our step with torch's default CPU optimizer step (a per-tensor loop)
* ``fused``      the same with the fused AdamW kernel (what build_optimizer now picks)
* ``chlast``     fused + UNet in channels_last
* ``attn_math``  fused + diffusers' classic attention (baddbmm + softmax) instead of PyTorch SDPA
* ``bf16``       fused + UNet/TE weights in bf16 under CPU autocast (``--mixed_precision bf16``)
* ``compiled``   fused + torch.compile(UNet) (``--compile BACKEND``; its first call is reported apart
                 as the compile time)

    .venv/bin/python bench/train_step.py --levers [--compile inductor] [--rounds 3] [--resolution 256] [--variants lora fused]

Clocks (bench/clock.py): both are measured and printed; ``--clock cpu`` (the default on a CPU) makes the
ratios from this process's CPU time with torch on one thread, so other jobs on a shared machine do not
move them; ``--clock wall`` (the default on CUDA) from elapsed time with torch's own threads.

``--te_memory``: resident memory of UNet-only training with the text encoder kept (``te_kept``) vs
freed after its outputs are cached (``te_freed``, library/train/memory.py), each in a fresh process:
the resident set during two steps (absolute, weights included).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from clock import Clocks, add_clock_options  # noqa: E402

from library.models import assemble, build_models, full_size_configs  # noqa: E402
from library.train.losses import LossOptions  # noqa: E402
from library.train.noise import NoiseOptions  # noqa: E402
from library.train.setup_model import TrainModel, enable_te_checkpointing  # noqa: E402
from library.train.step import StepConfig, batch_loss  # noqa: E402
from library.inference.text_encoding import encode, tokenize  # noqa: E402
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


LEVERS = ("base", "lora", "fused", "chlast", "attn_math", "bf16")


class _Levers:
    """One full-size model; ``set(variant)`` switches it to a variant's settings (untimed)."""

    def __init__(self, args):
        self.args = args
        self.model = build(args.family, args.device, torch.float32, args.rank, True, False, True)
        self.batch = make_batch(self.model, args.resolution, args.batch)
        params = list(self.model.network.parameters())
        self.opts = {"lora": torch.optim.AdamW(params, lr=1e-4, foreach=False),
                     "fused": torch.optim.AdamW(params, lr=1e-4, fused=True)}
        self.unet = self.model.base.unet
        self.compiled = None
        self.state = {"hooks": True, "chlast": False, "attn": "sdpa", "dtype": torch.float32}

    def set(self, variant: str):
        from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

        want = {"hooks": variant != "base", "chlast": variant == "chlast",
                "attn": "math" if variant == "attn_math" else "sdpa",
                "dtype": torch.bfloat16 if variant == "bf16" else torch.float32}
        base, net = self.model.base, self.model.network
        if want["hooks"] != self.state["hooks"]:
            net.apply_to(base.text_encoders[0], self.unet) if want["hooks"] else net.restore()
        if want["chlast"] != self.state["chlast"]:
            self.unet.to(memory_format=torch.channels_last if want["chlast"] else torch.contiguous_format)
        if want["attn"] != self.state["attn"]:
            self.unet.set_attn_processor(AttnProcessor() if want["attn"] == "math" else AttnProcessor2_0())
        if want["dtype"] != self.state["dtype"]:
            for m in (self.unet, *base.text_encoders):
                m.to(dtype=want["dtype"])
        self.model.weight_dtype = want["dtype"]
        base.unet = self.compiled if variant == "compiled" else self.unet
        self.state = want

    def step(self, variant: str):
        self.set(variant)
        if variant == "base":
            return self._base_step()
        dtype = self.model.weight_dtype
        autocast = (lambda: torch.autocast(self.args.device, dtype=dtype)) if dtype != torch.float32 else StepConfig.autocast
        cfg = StepConfig(NoiseOptions(), LossOptions(), autocast=autocast)
        opt = self.opts["lora" if variant == "lora" else "fused"]
        loss = batch_loss(self.model, self.batch, cfg, torch.Generator().manual_seed(0))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(self.args.device)

    def _base_step(self):
        base, args = self.model.base, self.args
        ids = [tokenize(t, self.batch["captions"]).to(args.device) for t in base.tokenizers]
        with torch.no_grad():
            cond = encode(base.text_encoders, ids, base.family)
        x = self.batch["latents"].to(args.device).requires_grad_(True)
        t = torch.randint(0, 1000, (args.batch,), device=args.device)
        added = {"text_embeds": cond.pooled, "time_ids": torch.zeros(args.batch, 6)} if base.is_sdxl else None
        base.unet(x, t, cond.context, added_cond_kwargs=added).sample.pow(2).mean().backward()
        sync(args.device)


def te_memory_child(variant: str, args) -> dict:
    """Two UNet-only LoRA steps with the text encoder kept, or freed after caching its outputs."""
    import argparse as _ap

    from library.train.memory import release_text_encoders

    model = build(args.family, args.device, torch.float32, args.rank, True, False, False)
    batch = make_batch(model, args.resolution, args.batch)
    if variant == "te_freed":
        base = model.base
        with torch.no_grad():
            ids = [tokenize(t, batch["captions"]) for t in base.tokenizers]
            cond = encode(base.text_encoders, ids, base.family)
        batch["text_encoder_outputs"] = {"context": cond.context}
        if cond.pooled is not None:
            batch["text_encoder_outputs"]["pooled"] = cond.pooled
        release_text_encoders(_ap.Namespace(sample_prompts=None), model, main_process=True)
    opt = torch.optim.AdamW(model.network.parameters(), lr=1e-4, fused=True)
    cfg = StepConfig(NoiseOptions(), LossOptions())
    with _PeakRSS() as peak:
        for _ in range(2):
            batch_loss(model, batch, cfg, torch.Generator().manual_seed(0)).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    return {"peak_mib": peak.max, "after_mib": _rss_mib()}


def te_memory_main(args):
    out = {}
    for v in ("te_kept", "te_freed"):
        cmd = [sys.executable, __file__, "--child", v, "--resolution", str(args.resolution), "--rank", str(args.rank),
               "--device", args.device, "--family", args.family, "--batch", str(args.batch)]
        out[v] = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
    print(f"text-encoder memory: {args.family} {args.resolution}px, UNet-only LoRA rank {args.rank}, fp32, fresh process each")
    for v, r in out.items():
        print(f"  {v:9s} peak during 2 steps {r['peak_mib']:8.0f} MiB  after {r['after_mib']:8.0f} MiB")
    print(f"  freed: {out['te_kept']['peak_mib'] - out['te_freed']['peak_mib']:.0f} MiB less at peak")


def levers_main(args, clocks: Clocks):
    """Each lever alone and together against ``lora`` (the step before them), interleaved."""
    bench = _Levers(args)
    variants = list(args.variants or LEVERS)
    if "lora" not in variants:
        variants.insert(0, "lora")  # the baseline of the ratios
    compile_cost = None
    if args.compile:
        bench.compiled = torch.compile(bench.unet, backend=args.compile)
        variants.append("compiled")
    for v in variants:  # warm-up; the compiled variant's first call is its compile time
        children = _children_cpu()
        first = clocks.measure(bench.step, v)
        if v == "compiled":
            compile_cost = (first, _children_cpu() - children)
        print(f"warm-up {v}: {first.cpu:.1f} s cpu, {first.wall:.1f} s wall", flush=True)
    times = {v: [] for v in variants}
    for _ in range(args.rounds):
        for v in variants:
            bench.set(v)
            times[v].append(clocks.measure(bench.step, v))
    print(f"levers: {args.family} {args.resolution}px batch {args.batch} rank {args.rank} {args.device}, median of "
          f"{args.rounds} rounds; torch {torch.__version__}, CPU bf16 unit: {_bf16_unit()}")
    print("\n".join(clocks.report(times, "lora")))
    if compile_cost is not None:
        first, children_cpu = compile_cost
        steady = statistics.median(s.wall for s in times["compiled"])
        print(f"compile ({args.compile}): first step {first.wall:.1f} s wall (about {first.wall - steady:.1f} s of compiling), "
              f"{first.cpu:.1f} s CPU in this process + {children_cpu:.1f} s in compiler subprocesses")


def _children_cpu() -> float:
    """CPU seconds of finished child processes (the compiler's), 0 where there is no getrusage (Windows)."""
    try:
        import resource
    except ImportError:
        return 0.0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _bf16_unit():
    from library.train.speed import cpu_bf16_unit

    return cpu_bf16_unit()


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
    ap.add_argument("--levers", action="store_true", help="the step-speed levers, alone and together, on one model")
    ap.add_argument("--te_memory", action="store_true", help="resident memory with the text encoder kept vs freed")
    ap.add_argument("--compile", default=None, metavar="BACKEND", help="with --levers: add torch.compile(UNet)")
    ap.add_argument("--variants", nargs="+", choices=LEVERS, default=None,
                    help="with --levers: only these (lora, the baseline, always runs)")
    add_clock_options(ap)
    args = ap.parse_args()
    clocks = Clocks.from_args(args, args.device)
    if args.levers:
        levers_main(args, clocks)
        return
    if args.te_memory:
        te_memory_main(args)
        return
    if args.child in ("te_kept", "te_freed"):
        print(json.dumps(te_memory_child(args.child, args)))
        return
    if args.child:
        step = runner(args.child, args)
        before = _rss_mib()
        with _PeakRSS() as peak:
            step()
            step()
        print(json.dumps({"peak_mib": peak.max - before}))
        return
    steps = {v: runner(v, args) for v in VARIANTS}
    peaks = {}
    for v in VARIANTS:  # warm-up (and CUDA peak per variant)
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        steps[v]()
        if args.device == "cuda":
            peaks[v] = torch.cuda.max_memory_allocated() / 2**20
    times = clocks.interleaved({v: steps[v] for v in VARIANTS}, args.rounds)
    if args.device == "cpu" and not args.no_memory:
        del steps
        peaks = {v: child_peak(v, args) for v in VARIANTS}
    print(f"{args.family} {args.resolution}px batch {args.batch} rank {args.rank} {args.device} {args.dtype}, "
          f"median of {args.rounds} rounds; torch {torch.__version__}")
    print("\n".join(clocks.report(times, "base")))
    for v in VARIANTS:
        if v in peaks:
            where = " above the weights" if args.device == "cpu" else ""
            print(f"  {v:9s} peak {peaks[v]:8.0f} MiB{where}")


if __name__ == "__main__":
    main()

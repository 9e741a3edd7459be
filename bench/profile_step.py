"""Where one training step's time goes: our LoRA step vs the frozen base, in CPU time.

Full-size SD1.5 UNet + CLIP-L (random weights), 256 px, batch 1, rank 4, cached latents, fp32, torch
on one thread, CPU time of this process (bench/clock.py: robust to other jobs on the machine).

1. Steps, interleaved rounds, medians: the frozen UNet forward alone (no grad; text encoder included),
   ``base`` (frozen UNet forward + backward with input gradients + text-encoder forward: what any trainer
   pays; as in bench/train_step.py), and our step with LoRA on the UNet (``lora_unet``; text encoder
   frozen, fused AdamW), split into forward (library.train.step.batch_loss), backward and optimizer step.
2. One ``lora_unet`` step with every aten operator timed in CPU time (a TorchDispatchMode; torch.profiler
   measures wall-clock intervals, which other jobs inflate) and charged to where it ran: the text encoder,
   the frozen UNet's forward, the LoRA modules' forward, noise and loss, the backward through the frozen
   UNet, the LoRA modules' backward (autograd nodes created inside a LoRA forward), the optimizer; and by
   kind of operator (convolution, matrix products, attention, normalisation, elementwise, copies...).

    .venv/bin/python bench/profile_step.py [--rounds 3] [--resolution 256] [--rank 4] [--top 12]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from collections import defaultdict

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from clock import Clocks  # noqa: E402
from train_step import build, make_batch  # noqa: E402

from library.inference.text_encoding import encode, tokenize  # noqa: E402
from library.train.losses import LossOptions  # noqa: E402
from library.train.noise import NoiseOptions  # noqa: E402
from library.train.step import StepConfig, batch_loss  # noqa: E402
from networks.lora import LoRAModule  # noqa: E402

KINDS = (  # (kind, substrings of aten operator names), first match wins
    ("attention", ("scaled_dot_product", "flash_attention", "efficient_attention", "softmax")),
    ("convolution", ("convolution", "conv2d", "conv_depthwise")),
    ("matrix products", ("addmm", "aten.mm", "bmm", "matmul", "linear")),
    ("normalisation", ("group_norm", "layer_norm")),
    ("optimizer", ("adam", "_foreach")),
    ("copies / layout", ("copy", "contiguous", "clone", "aten.cat", "_to_copy", "empty", "as_strided", "new_")),
    ("elementwise", ("silu", "gelu", "add", "mul", "sub", "div", "pow", "sigmoid", "neg", "sum", "mean", "fill",
                     "zero", "where", "exp", "sqrt", "rsqrt", "threshold", "mse", "cos", "sin", "randn", "normal")),
)
OTHER = "other (views, indexing)"
PLACES = ("text encoder forward", "UNet forward (frozen base)", "LoRA forward", "noise, loss", "backward (frozen base)",
          "LoRA backward", "optimizer", "other")


def kind_of(name: str) -> str:
    low = name.lower()
    return next((kind for kind, keys in KINDS if any(k in low for k in keys)), OTHER)


class CpuTimeByPlace(TorchDispatchMode):
    """Every aten call's CPU time (thread_time: the step runs on this one thread), by (place, operator)."""

    def __init__(self):
        super().__init__()
        self.times, self.counts = defaultdict(float), defaultdict(int)
        self.place = "other"
        self.lora_depth = 0
        self.lora_nodes: set = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        start = time.thread_time()
        out = func(*args, **(kwargs or {}))
        spent = time.thread_time() - start
        key = (self.where(), str(func.overloadpacket))
        self.times[key] += spent
        self.counts[key] += 1
        return out

    def where(self) -> str:
        if self.lora_depth > 0:
            return "LoRA forward"
        node = torch._C._current_autograd_node()
        if node is not None:
            return "LoRA backward" if node in self.lora_nodes else "backward (frozen base)"
        return self.place

    @contextlib.contextmanager
    def at(self, place: str):
        before, self.place = self.place, place
        try:
            yield
        finally:
            self.place = before


def lora_subgraph(out: torch.Tensor, stop: set) -> set:
    """The autograd nodes between a LoRA module's output and its inputs (the base output and ``x``)."""
    found, todo = set(), [out.grad_fn]
    while todo:
        node = todo.pop()
        if node is None or node in stop or node in found:
            continue
        found.add(node)
        todo.extend(n for n, _ in node.next_functions)
    return found


def instrument(mode: CpuTimeByPlace, model) -> None:
    """Charge the LoRA modules' own work (not their base layer's) and its autograd nodes to LoRA; the text
    encoder's and the UNet's forwards to their places."""
    network, base = model.network, model.base
    network.restore()
    plain = LoRAModule.forward

    def forward(self, x):
        mode.lora_depth += 1
        try:
            out = plain(self, x)
        finally:
            mode.lora_depth -= 1
        if out.grad_fn is not None:
            mode.lora_nodes |= lora_subgraph(out, {getattr(x, "grad_fn", None), self._last_base_node})
        return out

    LoRAModule.forward = forward
    network.apply_to(None, base.unet, False, True)
    for m in network.unet_loras:
        org = m._org_forward

        def base_forward(*a, _org=org, _m=m, **kw):
            mode.lora_depth -= 1
            try:
                r = _org(*a, **kw)
            finally:
                mode.lora_depth += 1
            _m._last_base_node = r.grad_fn
            return r
        m._org_forward = base_forward
    for name, module in (("UNet forward (frozen base)", base.unet), *(("text encoder forward", te) for te in base.text_encoders)):
        inner = module.forward

        def placed(*a, _inner=inner, _name=name, **kw):
            with mode.at(_name):
                return _inner(*a, **kw)
        module.forward = placed


class PhasedStep:
    """Our step (LoRA on the UNet) with its forward, backward and optimizer step timed apart (CPU time)."""

    def __init__(self, args):
        self.model = build("sd1", "cpu", torch.float32, args.rank, True, False, train_te=False)
        self.batch = make_batch(self.model, args.resolution, 1)
        self.opt = torch.optim.AdamW(self.model.network.parameters(), lr=1e-4, fused=True)
        self.cfg = StepConfig(NoiseOptions(), LossOptions())
        self.phases = defaultdict(list)
        self.mode: CpuTimeByPlace | None = None

    def _at(self, place):
        return self.mode.at(place) if self.mode else contextlib.nullcontext()

    def __call__(self, record: bool = True):
        marks = [time.process_time()]
        with self._at("noise, loss"):
            loss = batch_loss(self.model, self.batch, self.cfg, torch.Generator().manual_seed(0))
        marks.append(time.process_time())
        loss.backward()
        marks.append(time.process_time())
        with self._at("optimizer"):
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
        marks.append(time.process_time())
        if record:
            for name, a, b in zip(("forward", "backward", "optimizer"), marks, marks[1:]):
                self.phases[name].append(b - a)


def bare_steps(ours: PhasedStep) -> dict:
    """The frozen UNet forward alone, and ``base`` (as bench/train_step.py's), on ``ours``' model with the LoRA unhooked."""
    base, network = ours.model.base, ours.model.network
    ids = [tokenize(tok, ours.batch["captions"]) for tok in base.tokenizers]

    def unhooked(fn):
        def run():
            network.restore()
            try:
                fn()
            finally:
                network.apply_to(None, base.unet, False, True)
        return run

    @unhooked
    def unet_forward():
        with torch.no_grad():
            cond = encode(base.text_encoders, ids, base.family)
            base.unet(ours.batch["latents"], torch.tensor([500]), cond.context)

    @unhooked
    def base_step():
        with torch.no_grad():
            cond = encode(base.text_encoders, ids, base.family)
        x = ours.batch["latents"].clone().requires_grad_(True)
        base.unet(x, torch.randint(0, 1000, (1,)), cond.context).sample.pow(2).mean().backward()

    return {"unet_forward": unet_forward, "base": base_step}


def breakdown(ours: PhasedStep, top: int) -> None:
    mode = CpuTimeByPlace()
    ours.mode = mode
    instrument(mode, ours.model)
    with mode:
        ours(record=False)  # warm-up under the mode
    mode.times.clear()
    mode.counts.clear()
    mode.lora_nodes.clear()
    start = time.process_time()
    with mode:
        ours(record=False)
    total = time.process_time() - start
    timed = sum(mode.times.values())
    print(f"\none lora_unet step, aten operators timed in CPU time: {timed:.3f} s of the instrumented step's {total:.3f} s "
          f"(the rest: Python, autograd bookkeeping, the timing itself)")
    by_place = defaultdict(float)
    for (place, _), sec in mode.times.items():
        by_place[place] += sec
    kinds = [k for k, _ in KINDS] + [OTHER]
    table = {(p, k): 0.0 for p in PLACES for k in kinds}
    for (place, op), sec in mode.times.items():
        table[(place, kind_of(op))] += sec
    print("| where | CPU s | share | " + " | ".join(kinds) + " |")
    print("|---|---|---|" + "---|" * len(kinds))
    for p in PLACES:
        if by_place.get(p, 0) > 0:
            print(f"| {p} | {by_place[p]:.3f} | {100 * by_place[p] / timed:.1f} % | "
                  + " | ".join(f"{table[(p, k)]:.3f}" for k in kinds) + " |")
    print(f"| all | {timed:.3f} | 100 % | " + " | ".join(f"{sum(table[(p, k)] for p in PLACES):.3f}" for k in kinds) + " |")
    for place in ("LoRA forward", "LoRA backward", "backward (frozen base)", "UNet forward (frozen base)"):
        ops = sorted(((op, sec, mode.counts[(pl, op)]) for (pl, op), sec in mode.times.items() if pl == place), key=lambda x: -x[1])
        print(f"\n{place}: top operators by CPU time")
        for op, sec, n in ops[:top]:
            print(f"  {op:45s} {sec:7.3f} s  x{n}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--rank", type=int, default=4)
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args()
    clocks = Clocks("cpu", 1)
    ours = PhasedStep(args)  # one model: the base variants run it with the LoRA hooks removed
    variants = {**bare_steps(ours), "lora_unet": ours}
    times = clocks.interleaved(variants, args.rounds, warmup=1)
    print(f"SD1.5 UNet + CLIP-L fp32, {args.resolution}px, batch 1, rank {args.rank}, median of {args.rounds}; "
          f"torch {torch.__version__}")
    print("\n".join(clocks.report(times, "base")))
    print("lora_unet phases (CPU s, median): " + ", ".join(
        f"{k} {statistics.median(v):.3f}" for k, v in ours.phases.items()))
    breakdown(ours, args.top)
    print(clocks.load.text())


if __name__ == "__main__":
    main()

"""The training step's page faults on a CPU: glibc malloc settings and transparent huge pages.

Why: profiling our step on one thread (bench/profile_step.py) showed 17 % of its CPU time as system
time: every step allocates its activations (hundreds of MiB) and frees them, glibc returns the large
blocks to the kernel (mmap/munmap), and the next step faults every page back in, zeroed. Variants, each
in fresh processes (the settings act at start-up), interleaved round by round, torch on one thread,
CPU time (bench/clock.py); full SD1.5 at 256 px, the bare frozen UNet step ``base`` and our step with LoRA
rank 4 on the UNet ``lora_unet`` (bench/profile_step.py's), interleaved, 2 warm-up steps each, then
``--steps`` timed:

* ``default``  glibc's defaults (blocks above its dynamic mmap threshold go back to the kernel on free)
* ``heap``     library.train.own_process.keep_freed_memory(): every block comes from the heap and freed memory
               is kept for the next step (mallopt M_MMAP_MAX 0, M_TRIM_THRESHOLD 1 GiB)
* ``thp``      torch's THP_MEM_ALLOC_ENABLE=1: allocations >= 2 MiB on transparent huge pages

    .venv/bin/python bench/cpu_allocator.py [--rounds 2] [--steps 3] [--resolution 256] [--variants default heap thp]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
VARIANTS = ("default", "heap", "thp")
STEPS = ("base", "lora_unet")  # the bare frozen UNet step (as bench/train_step.py's) and ours (LoRA on the UNet)


def child(variant: str, args) -> dict:
    sys.path.insert(0, HERE)
    import torch

    from clock import Clocks
    from profile_step import PhasedStep, bare_steps

    clocks = Clocks("cpu", 1, keep_freed=variant == "heap")
    step = PhasedStep(args)
    steps = {"lora_unet": lambda: step(record=False), "base": bare_steps(step)["base"]}
    samples = clocks.interleaved(steps, args.steps, warmup=2)
    del torch
    return {name: {"cpu": [s.cpu for s in got], "sys": [s.sys for s in got], "wall": [s.wall for s in got]}
            for name, got in samples.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--rank", type=int, default=4)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args.child, args)), flush=True)
        return
    sys.path.insert(0, HERE)
    from clock import LoadWatch

    load = LoadWatch()
    runs = {(v, step): {"cpu": [], "sys": [], "wall": []} for v in args.variants for step in STEPS}
    for r in range(args.rounds):
        for v in args.variants:
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            env.pop("THP_MEM_ALLOC_ENABLE", None)
            if v == "thp":
                env["THP_MEM_ALLOC_ENABLE"] = "1"
            cmd = [sys.executable, __file__, "--child", v, "--steps", str(args.steps), "--resolution", str(args.resolution),
                   "--rank", str(args.rank)]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True)
            line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if line is None:
                raise SystemExit(f"{v}: no result (exit {out.returncode})\n{out.stderr[-3000:]}")
            got = json.loads(line[len("RESULT "):])
            for step in STEPS:
                for k in runs[(v, step)]:
                    runs[(v, step)][k] += got[step][k]
                print(f"round {r + 1} {v:8s} {step:9s} cpu {', '.join(f'{x:.2f}' for x in got[step]['cpu'])}  sys "
                      f"{', '.join(f'{x:.2f}' for x in got[step]['sys'])}", flush=True)
    ref = statistics.median(runs[(args.variants[0], "base")]["cpu"])
    print(f"\nSD1.5 UNet, {args.resolution}px, fp32, torch on 1 thread, CPU time; {args.rounds} process(es) x {args.steps} "
          f"steps per variant; ratios to base in {args.variants[0]}; {load.text()}")
    for v in args.variants:
        for step in STEPS:
            cpu, sys_t, wall = (statistics.median(runs[(v, step)][k]) for k in ("cpu", "sys", "wall"))
            print(f"  {v:8s} {step:9s} cpu {cpu:6.3f} s  x{cpu / ref:5.3f}  of which system {sys_t:5.3f} s "
                  f"({100 * sys_t / cpu:4.1f} %)  wall {wall:6.2f} s  (cpu per step: "
                  f"{', '.join(f'{x:.2f}' for x in runs[(v, step)]['cpu'])})")


if __name__ == "__main__":
    main()

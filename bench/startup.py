"""Time to the first training step, phase by phase, with and without the start-up overlaps.

Each run is a fresh ``train_network.py`` process (through ``library.train.entry.main``, the CLI's own
path) on a random full-size SD1.5 checkpoint (written once to output/bench/, as bench/load_memory.py
does), ``--train_data_dir`` of 8 images at 256 px, ``--cache_latents``, rank 4, fp32. The child wraps
the trainer's phase functions to stamp a timeline and leaves at the first step, before it runs.
Variants run interleaved (A, B, A, B, ...) so a busy machine affects them alike:

* ``serial``   the start-up before this work: diffusers imports bitsandbytes and peft, the model loads,
               then latents are cached, then the base file's sha256 (a normal-priority thread since the
               start) is awaited before step 0 (``library.train.startup.OVERLAP = False``, the metadata's
               hash resolved at once; hash cache empty).
* ``overlap``  what a first run on a new base file does now: diffusers' unused bitsandbytes/peft
               backends are not imported (library/train/lean_imports.py), the VAE loads first and latent
               caching runs while the UNet and text encoders load; the sha256 runs at low priority and is
               only awaited when the first LoRA file is written (hash cache empty).
* ``cached``   ``overlap`` on a file hashed before (the hash cache knows it): every later run.

    .venv/bin/python bench/startup.py [--rounds 3] [--variants serial overlap cached] [--file ckpt.safetensors]
        [--clock wall|cpu]

Time to step 0 is wall time by nature (the overlap's whole point is to run work side by side), so
``--clock wall`` is the default here and the figure a user feels; the load average during the run is
printed with it. ``--clock cpu`` makes the ratios from the CPU time the child used up to step 0 (all its
threads): robust to other jobs, it shows the work removed (imports, the hash) but not the overlap.

Phases (start-end, seconds since the process was launched): ``imports`` (interpreter, torch,
diffusers, the trainer's modules), ``accelerator``, ``dataset`` (folder scan and report), ``load``
(checkpoint read into the models, LoRA built and applied), ``vae_loaded`` (overlap: the VAE is complete
and caching starts; the rest still loading), ``caching_thread`` (overlap: latent caching on its thread),
``attach_caches`` (serial: latent caching; overlap: attaching what the thread cached), ``trainer``
(optimizer, scheduler, metadata: the serial hash wait is here), ``hash`` (the sha256 thread, start to
end); ``step0``: the first step starts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = ("serial", "overlap", "cached")


def _stamp(timeline: dict, name: str, fn):
    """``fn`` wrapped to record its first call's start and end in ``timeline[name]``."""

    def wrapped(*a, **kw):
        start = time.time()
        try:
            return fn(*a, **kw)
        finally:
            timeline.setdefault(name, (start, time.time()))
    return wrapped


def child(variant: str, argv: list[str], launched: float) -> None:
    """Run the CLI in this process with stamps; print the timeline as JSON at step 0 and leave."""
    sys.path.insert(0, ROOT)
    timeline: dict[str, tuple[float, float]] = {}
    if variant != "serial":  # what train_network.py's __main__ does first
        from library.train.lean_imports import skip_unused_diffusers_backends

        skip_unused_diffusers_backends()
    from concurrent.futures import Future

    from library.models import hashes
    from library.train import entry, loop, metadata, setup_data, startup

    timeline["imports"] = (launched, time.time())
    if variant == "serial":  # the start-up before this work: load, then cache, then hash (not niced) before step 0
        startup.OVERLAP = False
        hashes._at_low_priority = lambda fn, *a: fn(*a)
        eager = metadata.model_file_hashes

        def hash_now(source, sha256=None):
            return eager(source, sha256.result() if isinstance(sha256, Future) else sha256)
        metadata.model_file_hashes = hash_now
    entry.make_accelerator = _stamp(timeline, "accelerator", entry.make_accelerator)
    setup_data.prepare_data = _stamp(timeline, "dataset", setup_data.prepare_data)
    startup.load_for_training = _stamp(timeline, "load", startup.load_for_training)
    startup.attach_caches = _stamp(timeline, "attach_caches", startup.attach_caches)
    startup._EarlyLatents.start = _stamp(timeline, "vae_loaded", startup._EarlyLatents.start)
    startup._EarlyLatents._run = _stamp(timeline, "caching_thread", startup._EarlyLatents._run)
    hashes.sha256_file = _stamp(timeline, "hash", hashes.sha256_file)
    entry._make_trainer = _stamp(timeline, "trainer", entry._make_trainer)

    def first_step(*a, **kw):
        now = time.time()
        out = {k: [s - launched, e - launched] for k, (s, e) in timeline.items()}
        out["step0"] = now - launched
        out["cpu"] = time.process_time()  # every thread of the child, since its start
        print("STARTUP " + json.dumps(out), flush=True)
        os._exit(0)

    loop.batch_loss = first_step
    entry.main(argv, "train_network")
    print("STARTUP no step", flush=True)
    os._exit(1)


def ensure_data(folder: str, n: int) -> str:
    """``n`` images of the shipped demo set (looped) in a kohya folder under ``folder``."""
    src = os.path.join(ROOT, "examples", "demo", "img", "10_sks shape")
    dst = os.path.join(folder, "img", "1_sks shape")
    os.makedirs(dst, exist_ok=True)
    pngs = sorted(f for f in os.listdir(src) if f.endswith(".png"))
    for i in range(n):
        name = pngs[i % len(pngs)]
        shutil.copy(os.path.join(src, name), os.path.join(dst, f"{i:03d}.png"))
        shutil.copy(os.path.join(src, name[:-4] + ".txt"), os.path.join(dst, f"{i:03d}.txt"))
    return os.path.dirname(dst)


def run_variant(variant: str, ckpt: str, data: str, work: str, args) -> dict:
    out_dir = os.path.join(work, f"out_{variant}")
    cache = os.path.join(work, "hash_cache" if variant == "cached" else f"empty_cache_{time.time_ns()}")
    argv = ["--pretrained_model_name_or_path", ckpt, "--train_data_dir", data, "--output_dir", out_dir,
            "--output_name", "bench", "--resolution", str(args.resolution), "--cache_latents",
            "--network_module", "networks.lora", "--network_dim", "4", "--max_train_steps", "1",
            "--train_batch_size", "1", "--seed", "0", "--mixed_precision", "no"]
    env = {**os.environ, "PYTHONPATH": ROOT, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "LORASMITH_CACHE_DIR": cache}
    launched = time.time()
    code = ("import sys, json; sys.path.insert(0, %r); import startup; "
            "startup.child(%r, json.loads(%r), %r)" % (os.path.dirname(os.path.abspath(__file__)), variant,
                                                      json.dumps(argv), launched))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("STARTUP {")), None)
    if line is None:
        raise SystemExit(f"{variant}: no timeline (exit {proc.returncode})\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads(line[len("STARTUP "):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--file", help="a full-size SD1.5 .safetensors (default: a random one in output/bench/)")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="which figure makes the ratios: wall = seconds to step 0 (default), cpu = the child's CPU "
                         "seconds to step 0 (work removed, robust to other jobs; blind to the overlap). Both are printed.")
    args = ap.parse_args()
    sys.path.insert(0, ROOT)
    from clock import LoadWatch
    from load_memory import ensure_file

    load = LoadWatch()

    ckpt = args.file or ensure_file("sd1")
    with open(ckpt, "rb") as f:  # page cache warm for every variant alike (a first-ever read is disk-bound)
        while f.read(1 << 26):
            pass
    work = tempfile.mkdtemp(prefix="startup_bench_")
    try:
        data = ensure_data(work, args.images)
        if "cached" in args.variants:
            from library.models.hashes import sha256_file_cached

            sha256_file_cached(ckpt, os.path.join(work, "hash_cache"))
        runs = {v: [] for v in args.variants}
        for r in range(args.rounds):
            for v in args.variants:
                runs[v].append(run_variant(v, ckpt, data, work, args))
                print(f"round {r + 1} {v:8s} step0 {runs[v][-1]['step0']:6.2f} s, {runs[v][-1]['cpu']:6.2f} s CPU", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\ntime to step 0: {os.path.basename(ckpt)} ({os.path.getsize(ckpt) / 2**30:.2f} GiB), {args.images} images "
          f"at {args.resolution} px, --cache_latents, fp32; {os.cpu_count()} CPUs, clock {args.clock}; {load.text()}")
    key = "step0" if args.clock == "wall" else "cpu"
    ref = {k: statistics.median(x[k] for x in runs[args.variants[0]]) for k in ("step0", "cpu")}
    for v in args.variants:
        med = {k: statistics.median(x[k] for x in runs[v]) for k in ("step0", "cpu")}
        rounds = ", ".join("%.2f/%.2f" % (x["step0"], x["cpu"]) for x in runs[v])
        print(f"  {v:8s} median {med[key]:6.2f} s  x{med[key] / ref[key]:4.2f} of {args.variants[0]}  "
              f"(wall {med['step0']:.2f} s x{med['step0'] / ref['step0']:.2f}, CPU {med['cpu']:.2f} s x{med['cpu'] / ref['cpu']:.2f}; "
              f"rounds wall/CPU: {rounds})")
    print("\nphases of the median run of each variant (start-end, s since launch):")
    for v in args.variants:
        run = sorted(runs[v], key=lambda x: x["step0"])[len(runs[v]) // 2]
        parts = [f"{k} {s:.1f}-{e:.1f}" for k, (s, e) in sorted(((k, x) for k, x in run.items() if k not in ("step0", "cpu")),
                                                                 key=lambda kv: kv[1][0])]
        print(f"  {v:8s} " + ", ".join(parts) + f", step0 {run['step0']:.1f}")


if __name__ == "__main__":
    main()

"""Peak resident memory of loading a base checkpoint, over the bytes of the model it builds.

Each variant loads the same file in a fresh child process and reports
``(peak RSS - RSS after imports) / bytes of parameters and buffers built``; 1.0 is the floor (the
model itself). Variants, same loader (library.models.load_from_reader), different readers:

* ``mmap``  tensors copied out of ``safetensors.safe_open``'s memory map (what we did before, and what
            loaders built on safe_open do): the mapped file pages stay resident next to the model.
* ``ours``  library.models' reader: each tensor ``readinto`` a new tensor, no map (target <= 1.1).

    .venv/bin/python bench/load_memory.py [--family sd1|sdxl] [--file ckpt.safetensors] [--dtype fp32|fp16|bf16]

Without ``--file`` a random full-size checkpoint of the family is written once to output/bench/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def child(variant: str, path: str, dtype: str) -> dict:
    import torch
    from safetensors import safe_open

    from library.models.checkpoint_file import SafetensorsReader
    from library.models.load_request import LoadRequest
    from library.models.single_file import load_from_reader

    class MmapReader(SafetensorsReader):
        def get(self, key):
            if not hasattr(self, "_mm"):
                self._mm = safe_open(str(self.path), framework="pt", device="cpu")
            return self._mm.get_tensor(key).clone()

    reader = (MmapReader if variant == "mmap" else SafetensorsReader)(path)
    before = _rss_bytes()
    model = load_from_reader(reader, path, LoadRequest(dtype=getattr(torch, DTYPES[dtype])))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    nets = [model.unet, model.vae, *model.text_encoders]
    built = sum(t.numel() * t.element_size() for m in nets for t in [*m.parameters(), *m.buffers()])
    return {"variant": variant, "before": before, "peak": peak, "built": built}


def ensure_file(family: str) -> str:
    path = os.path.join(ROOT, "output", "bench", f"full_{family}_fp32.safetensors")
    if not os.path.exists(path):
        from library.models import assemble, build_models, full_size_configs, save_base_model

        os.makedirs(os.path.dirname(path), exist_ok=True)
        configs = full_size_configs(family)
        print(f"writing a random full-size {family} checkpoint to {path} (once)...", flush=True)
        save_base_model(assemble(configs, build_models(configs, device="cpu", seed=0)), path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", default="sd1", choices=("sd1", "sd2", "sdxl"))
    ap.add_argument("--file")
    ap.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    ap.add_argument("--child", nargs=2, metavar=("VARIANT", "FILE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.dtype)))
        return
    path = args.file or ensure_file(args.family)
    size = os.path.getsize(path)
    print(f"file {path} ({size / 2**30:.2f} GiB), load dtype {args.dtype}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    print(f"{'variant':8} {'peak GiB':>9} {'model GiB':>10} {'peak/model':>11}")
    for variant in ("mmap", "ours"):
        out = subprocess.run([sys.executable, __file__, "--dtype", args.dtype, "--child", variant, path],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        grew = r["peak"] - r["before"]
        print(f"{variant:8} {grew / 2**30:9.2f} {r['built'] / 2**30:10.2f} {grew / r['built']:11.2f}")


if __name__ == "__main__":
    main()

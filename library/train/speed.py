"""Step-speed levers: torch.compile, channels_last, bf16 on CPUs, fused optimizer steps, attention kernel.

Why a module of its own: each lever depends on the device and on what torch supports there, and each
was measured (docs/benchmarks.md, ``bench/train_step.py --levers``); the decisions and their reasons
live here, so setup_model/the optimizer builder call one function each and stay about their own job.

Decisions (2-core Xeon with AMX, full-size SD1.5, 256 px; see docs/benchmarks.md for the figures):

* fused optimizer step (AdamW, Adam, SGD, Adagrad...): always when torch has a fused kernel for the
  device, else foreach. torch's default on CPU is a per-tensor loop: with ~500 LoRA tensors it cost
  as much as a third of the whole step.
* ``--torch_compile``: compiles the UNet (and the text encoders when they are trained) in place, LoRA
  hooks included, with ``--dynamo_backend``. Opt-in: the first steps pay the compile time.
* channels_last: on CUDA only (the GPU's convolution kernels prefer it); on the CPU it did not win (1.12x).
* attention: PyTorch SDPA (diffusers' default) on every device; the classic kernel was slower on CPU (1.30x).
* bf16 on a CPU: fine where the CPU has bf16 units (AMX / AVX512-BF16); elsewhere a warning, since
  bf16 is then emulated and many times slower than fp32.
* freed memory kept in the process on a CPU (glibc): the step's page faults were 17-21 % of its CPU time;
  without them the step took 0.90x the CPU time (bench/cpu_allocator.py). Only in the training scripts'
  own processes (library/train/own_process.py).
"""

from __future__ import annotations

import functools
import inspect
import logging

import torch

from library.errors import UserError
from library.train import own_process

logger = logging.getLogger("lorasmith.train")

BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo names of the units that run bf16 natively


@functools.lru_cache(maxsize=1)
def cpu_bf16_unit() -> str | None:
    """The CPU's native bf16 unit ("amx_bf16" or "avx512_bf16"), or None (bf16 is then emulated)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return next((name for name in BF16_CPU_FLAGS if name in flags), None)
    except OSError:
        pass
    # Not Linux: ask torch (private helpers, present in torch >= 2.1 on x86)
    for name, probe in (("amx_bf16", "_is_amx_tile_supported"), ("avx512_bf16", "_is_avx512_bf16_supported")):
        fn = getattr(torch.cpu, probe, None)
        try:
            if fn is not None and fn():
                return name
        except RuntimeError:
            pass
    return None


def cpu_precision_warning(mixed_precision: str, device_type: str) -> str | None:
    """A warning for bf16/fp16 compute on a CPU that runs it slowly, else None."""
    if device_type != "cpu" or mixed_precision == "no":
        return None
    if mixed_precision == "bf16":
        if cpu_bf16_unit():
            return None
        return ("--mixed_precision bf16 on a CPU without bf16 units (no amx_bf16/avx512_bf16 in /proc/cpuinfo): "
                "bf16 is emulated and typically many times slower than fp32 here; use --mixed_precision no "
                "for speed (bf16 still saves memory)")
    return ("--mixed_precision fp16 on a CPU: most CPUs have no fp16 matrix units, so this is usually slower "
            "than fp32; use --mixed_precision no (or bf16 on a CPU with AMX/AVX512-BF16)")


def check_levers(args, device: torch.device) -> None:
    """Before any model loads: the compile backend exists; warn about slow CPU precisions."""
    warning = cpu_precision_warning(args.mixed_precision, torch.device(device).type)
    if warning:
        logger.warning("%s", warning)
    if args.torch_compile:
        compile_backend(args.dynamo_backend)


def compile_backend(name: str | None) -> str:
    """``--dynamo_backend`` as torch.compile names it; a clear error for one torch does not know."""
    import torch._dynamo

    backend = (name or "inductor").strip().lower()
    known = sorted(set(torch._dynamo.list_backends(exclude_tags=())) | {"inductor", "eager", "aot_eager"})
    if backend in ("no", "none", ""):
        raise UserError("--torch_compile with --dynamo_backend no compiles nothing: pick a backend "
                        "(inductor, the default) or leave --torch_compile out")
    if backend not in known:
        raise UserError(f"--dynamo_backend {name}: torch {torch.__version__} has no such backend; "
                        f"known: {', '.join(known)}")
    return backend


def apply_levers(args, model) -> None:
    """After the LoRA is hooked in: memory reuse on a CPU, memory format and compilation of the modules that
    run every step."""
    base = model.base
    if model.device.type == "cpu" and own_process.claimed():
        own_process.keep_freed_memory()  # after the load (its peak is as before): steps stop faulting memory back in
    if model.device.type == "cuda" and not getattr(args, "fp8_base", False):
        base.unet.to(memory_format=torch.channels_last)
    if args.torch_compile:
        backend = compile_backend(args.dynamo_backend)
        base.unet.compile(backend=backend)
        if model.train_text_encoder:
            for te in base.text_encoders:
                te.compile(backend=backend)
        logger.info("torch.compile (%s): the UNet%s; the first steps include the compile time",
                    backend, " and text encoders" if model.train_text_encoder else "")


def fast_step_kwargs(cls, groups: list, user_kwargs: dict) -> dict:
    """``fused=True`` (or ``foreach=True``) for a torch optimizer that supports it on these parameters,
    unless the user chose either in --optimizer_args. Not reported in ss_optimizer: it changes speed only."""
    if "fused" in user_kwargs or "foreach" in user_kwargs or not cls.__module__.startswith("torch.optim"):
        return {}
    try:
        accepted = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        return {}
    params = [p for g in groups for p in (g["params"] if isinstance(g, dict) else [g])]
    if not params or not all(isinstance(p, torch.Tensor) and p.is_floating_point() for p in params):
        return {}
    devices = {p.device.type for p in params}
    if len(devices) != 1:
        return {}
    if "fused" in accepted and _has_fused_kernel(cls, devices.pop()):
        return {"fused": True}
    if "foreach" in accepted:
        return {"foreach": True}
    return {}


def _has_fused_kernel(cls, device_type: str) -> bool:
    """torch optimizers that take ``fused`` but have no kernel for the device raise at construction."""
    try:
        from torch.optim.optimizer import _get_fused_kernels_supported_devices

        supported = set(_get_fused_kernels_supported_devices())
    except ImportError:
        supported = {"cuda"}
    if device_type not in supported:
        return False
    if cls.__name__ == "Adagrad":  # its fused kernel is CPU-only
        return device_type == "cpu"
    return cls.__name__ in ("Adam", "AdamW", "SGD")

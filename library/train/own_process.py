"""Process-wide settings a training script's own process makes, and a host's process does not.

Why a module of its own: train_network.py / sdxl_train_network.py own their process from the start, so
they may change what belongs to the whole process (here: how glibc's allocator gives memory back). A host
that trains in its own process (the ComfyUI node, the tests) keeps its process as it was. No torch import
here: the scripts call :func:`claim` before anything heavy is imported (``--help`` stays fast).
"""

from __future__ import annotations

_CLAIMED = False
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc mallopt parameters (malloc.h)
KEEP_FREED = 1 << 30  # free heap memory kept before it is given back to the kernel


def claim() -> None:
    """The training script's ``__main__``: this process is the trainer's own."""
    global _CLAIMED
    _CLAIMED = True


def claimed() -> bool:
    return _CLAIMED


def keep_freed_memory() -> bool:
    """Keep the memory a CPU step frees for the next step, instead of giving it back to the kernel.

    Why: glibc serves blocks above 32 MiB (and smaller ones until its threshold has adapted) with mmap
    and unmaps them on free, and trims the freed top of its heap; every step then faults those pages
    back in, zeroed. A full-size SD1.5 step at 256 px spent 17-21 % of its CPU time in the kernel
    (bench/profile_step.py, bench/cpu_allocator.py): among others, the weight copies oneDNN makes per
    convolution call are 30-60 MiB each. Here every block comes from the heap and up to 1 GiB of freed heap
    stays in the process, so a step reuses the previous step's pages (0.90x the step's CPU time).
    Peak memory is unchanged (the same blocks are live at the peak); ``malloc_trim``
    (library/train/memory.py) still gives freed memory back on purpose. glibc (Linux) only; elsewhere
    nothing changes. Returns whether the settings took."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_FREED))

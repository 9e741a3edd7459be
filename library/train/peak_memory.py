"""How much memory a training process used at most: what the run folder's status.json reports at the end.

Why: the Configure page's memory estimate (library/train/memory_estimate.py) is a rough sum; a short dry run
(webui/memory_check.py) measures what the trainer really needed. On CUDA that is the allocator's peak
(``torch.cuda.max_memory_allocated``: the tensors; ``max_memory_reserved``: what the allocator held, the
figure an out-of-memory error is about); without a GPU it is the process's peak resident set
(``ru_maxrss``), and the resident set at the start, so the growth caused by training can be told apart
from the Python + torch libraries every process carries.
"""

from __future__ import annotations

import os
import sys


def resident_bytes() -> int | None:
    """The process's resident set now (Linux /proc), or None where that cannot be read."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def peak_resident_bytes() -> int | None:
    """The process's peak resident set so far (ru_maxrss: KiB on Linux, bytes on macOS); None on Windows,
    which has no ``resource`` module (imported here, not at the top, so the trainer still starts there)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def peak_memory(start_resident: int | None = None) -> dict:
    """The peak of this process: CUDA allocator figures when it used a GPU, else the resident set.

    torch is only asked if the process imported it already (reading a status must not import torch)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():  # pragma: no cover - GPU only
        device = torch.cuda.current_device()
        return {"device": "cuda", "device_name": torch.cuda.get_device_name(device),
                "max_allocated_bytes": int(torch.cuda.max_memory_allocated(device)),
                "max_reserved_bytes": int(torch.cuda.max_memory_reserved(device)),
                "total_bytes": int(torch.cuda.get_device_properties(device).total_memory)}
    out = {"device": "cpu", "peak_rss_bytes": peak_resident_bytes()}
    if start_resident is not None:
        out["start_rss_bytes"] = int(start_resident)
    return out

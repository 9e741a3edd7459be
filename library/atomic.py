"""The one atomic writer: every file lorasmith writes goes through here.

Why: what is on disk is the user's work. A file is written under a temporary name in its own folder
(``<name>.tmp``), flushed and fsynced, given the mode a plain ``open()`` would give it (the umask's:
safetensors and ``mkstemp`` would otherwise leave 0600 files that a ComfyUI running as another user
cannot read), renamed over the final name, and the folder is fsynced so the rename survives a power
loss. On any error (disk full, Ctrl-C, a bug in the producer) the temporary file is removed and the
final name keeps its previous content.

Two shapes: ``atomic_write(path)`` yields an open file; ``atomic_path(path)`` yields the temporary
path for writers that want a file name (safetensors, PIL, numpy). ``replace`` is the one rename the
product uses for folders too (state swaps, prunes).

Fault drills (tests/faults) install a hook with ``set_fault_hook``; it is called at ``written`` (the
temporary file is complete, before fsync and rename), ``replace`` (before a rename) and ``replaced``
(just after). It is test instrumentation: nothing in the product installs one.
"""

from __future__ import annotations

import contextlib
import os
from typing import Callable, Iterator, Optional

FaultHook = Callable[[str, str, str], None]  # (event, source path, final path)
_hook: list = [None]  # the drills' hook; a one-slot box rather than a rebindable global


def set_fault_hook(hook: Optional[FaultHook]) -> None:
    """Install (or remove, with None) the fault drills' hook; see the module docstring."""
    _hook[0] = hook


def _fire(event: str, src: str, dst: str) -> None:
    if _hook[0] is not None:
        _hook[0](event, src, dst)


def temp_name(path: str, unique: bool = False, suffix: str = "") -> str:
    """The temporary name of ``path`` while it is written: same folder, so the rename is atomic.

    ``unique`` adds the process id, for files several processes may write at once (caches); the
    plain ``<name>.tmp`` is reused by the next attempt, so a killed run leaves no pile of leftovers.
    ``suffix`` goes last, for writers that pick the format by extension (``.safetensors``).
    """
    return os.fspath(path) + (f".{os.getpid()}.tmp" if unique else ".tmp") + suffix


def umask_mode() -> int:
    """The mode ``open(path, 'w')`` would give a new file: 0o666 less the process umask."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no /proc: read it by setting it, then put it straight back
    os.umask(mask)
    return 0o666 & ~mask


def fsync_dir(folder: str) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def replace(src: str, dst: str) -> None:
    """Rename ``src`` over ``dst`` (files or folders) and fsync the folder."""
    _fire("replace", os.fspath(src), os.fspath(dst))
    os.replace(src, dst)
    _fire("replaced", os.fspath(src), os.fspath(dst))
    fsync_dir(os.path.dirname(os.path.abspath(dst)))


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def commit(tmp: str, path: str) -> None:
    """Finish a temporary file: fsync it, give it the umask's mode, rename it over ``path``."""
    _fire("written", tmp, path)
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.chmod(tmp, umask_mode())
    except OSError:  # file systems without modes (some network/FUSE mounts): keep what they give
        pass
    replace(tmp, path)


@contextlib.contextmanager
def atomic_path(path: str, make_folder: bool = True, unique: bool = False, suffix: str = "") -> Iterator[str]:
    """Yield a temporary path next to ``path``; when the block ends without error it replaces ``path``."""
    path = os.fspath(path)
    if make_folder:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = temp_name(path, unique, suffix)
    _remove_quietly(tmp)  # a leftover of a killed write, or a link planted there: never written through
    try:
        yield tmp
        commit(tmp, path)
    except BaseException:
        _remove_quietly(tmp)
        raise


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "wb", encoding: Optional[str] = None, newline: Optional[str] = None,
                 make_folder: bool = True, unique: bool = False):
    """Yield an open file whose content replaces ``path`` only when the block ends without error."""
    if "b" not in mode and encoding is None:
        encoding = "utf-8"
    with atomic_path(path, make_folder, unique) as tmp:
        with open(tmp, mode, encoding=encoding, newline=newline) as f:
            yield f
            f.flush()


def write_bytes(path: str, data: bytes) -> None:
    with atomic_write(path, "wb") as f:
        f.write(data)


def write_text(path: str, text: str, newline: Optional[str] = None) -> None:
    with atomic_write(path, "w", encoding="utf-8", newline=newline) as f:
        f.write(text)


def disk_of(path: str) -> str:
    """'the disk mounted at /data (12.3 MB free)': which file system a failed write hit, for messages."""
    probe = os.path.abspath(os.fspath(path))
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    mount = probe
    while not os.path.ismount(mount) and os.path.dirname(mount) != mount:
        mount = os.path.dirname(mount)
    try:
        import shutil

        free = f" ({shutil.disk_usage(probe).free / 1e6:.1f} MB free)"
    except OSError:
        free = ""
    return f"the disk mounted at {mount}{free}"

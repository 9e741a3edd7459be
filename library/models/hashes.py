"""Model file hashes: which one is for what.

* :func:`sha256_file` - sha256 of the whole file, streamed. A1111's "AutoV2" hash is its
  first 10 hex digits; kohya writes it as ``ss_new_sd_model_hash``. Slow on big files
  (reads everything): compute it once, for metadata.
* :func:`a1111_legacy_hash` - A1111's old "model hash": sha256 of the 64 KiB at offset
  1 MiB, first 8 hex digits. kohya writes it as ``ss_sd_model_hash``. Instant, weak.
* :func:`safetensors_data_sha256` - sha256 of a safetensors file *after* its header, so
  editing metadata does not change it. sd-webui-additional-networks and kohya's
  ``sshs_model_hash`` use it for LoRA files.
* :func:`content_key` - our cache key: cheap (reads only headers / small files), changes
  when the weights do. Latent and text-encoder caches are keyed by it plus the dtype.
  Not a published hash; never write it where other tools expect one of the above.
* :func:`sha256_file_cached` / :func:`start_sha256` - the full sha256 remembered per (path, size,
  mtime) in a small cache file, and computed in a background thread, so a 4-7 GB base file is
  hashed once per machine and never on the path to the first training step.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from library.cache_dir import cache_dir as lorasmith_cache_dir

from library.atomic import atomic_write

_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of the whole file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def a1111_legacy_hash(path: str | os.PathLike) -> str:
    """A1111's legacy 8-hex-digit model hash (sha256 of 0x10000 bytes at offset 0x100000)."""
    with open(path, "rb") as f:
        f.seek(0x100000)
        return hashlib.sha256(f.read(0x10000)).hexdigest()[:8]


def safetensors_data_sha256(source: str | os.PathLike | bytes) -> str:
    """sha256 of a safetensors file's tensor data (everything after the header); path or bytes."""
    f = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else open(source, "rb")
    with f:
        n = int.from_bytes(f.read(8), "little")
        f.seek(8 + n)
        h = hashlib.sha256()
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _file_key(h, path: Path) -> None:
    size = path.stat().st_size
    h.update(f"{size}\0".encode())  # not the name: renaming a file keeps its caches
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if path.suffix in (".safetensors", ".sft") and 0 < n <= size - 8:
            # The header lists every tensor's name, dtype, shape and byte range; with the
            # size it changes whenever the weights are re-saved. Plus 1 MiB of data at the
            # end, so an in-place edit of same-shaped weights is caught too.
            h.update(head + f.read(n))
            f.seek(max(8 + n, size - _CHUNK))
            h.update(f.read(_CHUNK))
        else:
            # Pickles and configs: small files whole, big ones by head and tail.
            f.seek(0)
            if size <= 4 * _CHUNK:
                h.update(f.read())
            else:
                h.update(f.read(_CHUNK))
                f.seek(size - _CHUNK)
                h.update(f.read(_CHUNK))


def content_key(path: str | os.PathLike) -> str:
    """Cheap content key (hex sha256) of a checkpoint file or a diffusers folder."""
    path = Path(path)
    h = hashlib.sha256()
    if path.is_dir():
        wanted = (".json", ".safetensors", ".bin", ".txt")
        for f in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in wanted):
            h.update(str(f.relative_to(path)).encode() + b"\0")
            _file_key(h, f)
    else:
        _file_key(h, path)
    return h.hexdigest()


SHA256_CACHE_FILE = "sha256.json"


def _stat_key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def _read_cache(file: Path) -> dict:
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def sha256_file_cached(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> str:
    """:func:`sha256_file`, remembered by resolved path, size and modification time.

    A cache that cannot be read or written only costs the time of hashing again.
    """
    path = Path(path)
    file = Path(cache_dir) if cache_dir is not None else lorasmith_cache_dir()
    file = file / SHA256_CACHE_FILE
    key = _stat_key(path)
    known = _read_cache(file).get(key)
    if isinstance(known, str) and len(known) == 64:
        return known
    digest = sha256_file(path)
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        entries = _read_cache(file)  # again: another process may have added some meanwhile
        entries = {k: v for k, v in entries.items() if not k.startswith(f"{path.resolve()}|")}
        entries[key] = digest
        with atomic_write(str(file), "w", unique=True) as f:  # several processes may write it at once
            json.dump(entries, f, indent=0)
    except OSError:
        pass
    return digest


def _at_low_priority(fn, *args):
    """``fn(*args)`` with this thread at the lowest CPU priority (Linux: nice applies per thread), so a
    background hash only uses time that loading, latent caching and training leave idle."""
    if sys.platform.startswith("linux"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except OSError:
            pass
    return fn(*args)


def start_sha256(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Future:
    """:func:`sha256_file_cached` in a background thread at low priority (hashlib releases the GIL while
    hashing); ``.result()`` when the hash is needed."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sha256")
    try:
        return pool.submit(_at_low_priority, sha256_file_cached, path, cache_dir)
    finally:
        pool.shutdown(wait=False)

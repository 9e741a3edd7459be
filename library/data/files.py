"""Opening dataset files safely: regular files only, with a size limit.

Why: a dataset folder can hold things that are not files. Opening a FIFO (named pipe) for reading
blocks until some other process writes to it, so a stray ``mkfifo`` in a dataset would hang the scan
forever; a character device (a link to /dev/zero) never ends. Every read of a user's caption or image
header goes through ``read_regular``, which opens without blocking, checks that the thing is a regular
file and refuses files over the caller's limit before reading them.
"""

from __future__ import annotations

import os
import stat

_FLAGS = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0)


class NotARegularFile(OSError):
    """The path is a FIFO, device, socket or folder: reading it could block or never end."""


class FileTooLarge(OSError):
    """The file is larger than the caller accepts."""


def is_regular_file(path: str) -> bool:
    """True for a regular file (or a link to one); False for folders, FIFOs, devices, sockets, missing paths."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def kind_of(mode: int) -> str:
    """'a FIFO (named pipe)', 'a device'... for messages."""
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "not a regular file"


def read_regular(path, limit: int, head: bool = False) -> bytes:
    """The file's bytes (only the first ``limit`` when ``head``); NotARegularFile / FileTooLarge otherwise.

    Opened without blocking, read in at most ``limit`` (+1) bytes, so neither a FIFO nor an endless device
    can hang it; the file type is looked up (fstat, which costs more than the read) only when the read
    looks odd: nothing, more than ``limit``, or a FIFO that would block.
    """
    fd = os.open(path, _FLAGS)
    try:
        try:
            data = _read_up_to(fd, limit if head else limit + 1)
        except BlockingIOError:
            data = None
        if not data or (not head and len(data) > limit):
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                raise NotARegularFile(f"{os.fspath(path)} is {kind_of(mode)}, not a file")
            if data and len(data) > limit:
                raise FileTooLarge(f"{os.fspath(path)} has {os.fstat(fd).st_size:,} bytes, more than the "
                                   f"{limit:,} allowed")
        return data
    finally:
        os.close(fd)


def _read_up_to(fd: int, most: int) -> bytes:
    """Up to ``most`` bytes; a short read of a regular file is its end, so small files take one call."""
    chunks = []
    while most > 0:
        want = min(most, 1 << 16)
        chunk = os.read(fd, want)
        chunks.append(chunk)
        most -= len(chunk)
        if len(chunk) < want:
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)

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
    """The file's bytes (only the first ``limit`` when ``head``); NotARegularFile / FileTooLarge otherwise."""
    fd = os.open(path, _FLAGS)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotARegularFile(f"{os.fspath(path)} is {kind_of(info.st_mode)}, not a file")
        if not head and info.st_size > limit:
            raise FileTooLarge(f"{os.fspath(path)} has {info.st_size:,} bytes, more than the {limit:,} allowed")
        chunks, left = [], limit if head else info.st_size + 1
        while left > 0:
            want = min(left, 1 << 20)
            chunk = os.read(fd, want)
            chunks.append(chunk)
            left -= len(chunk)
            if len(chunk) < want:  # a short read of a regular file is its end: no second system call
                break
        data = b"".join(chunks)
        if not head and len(data) > limit:  # grew while we read it
            raise FileTooLarge(f"{os.fspath(path)} has more than the {limit:,} bytes allowed")
        return data
    finally:
        os.close(fd)

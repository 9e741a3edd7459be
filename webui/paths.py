"""Every path a request names is resolved inside the GUI's root, or refused with a clear message.

Why one owner: the GUI may listen on a network; reading or writing outside ``--root`` (``..``,
absolute paths elsewhere, symlinks pointing out) would turn it into a file server for the machine.
"""

from __future__ import annotations

import os
from pathlib import Path


class PathRefused(ValueError):
    """A path outside the allowed root (the message says which and why)."""


class Roots:
    """The folder a GUI may read and write; paths are given relative to it (or absolute inside it)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()

    def resolve(self, path: str | os.PathLike, must_exist: bool = False) -> Path:
        """``path`` (relative to the root, or absolute) as a real path inside the root; PathRefused otherwise."""
        text = str(path).strip()
        if not text:
            raise PathRefused("empty path")
        if "\x00" in text:
            raise PathRefused(f"{text!r}: not a valid path")
        given = Path(text).expanduser()
        candidate = given if given.is_absolute() else self.root / given
        real = Path(os.path.realpath(candidate))  # follows symlinks: a link pointing out is refused
        if real != self.root and self.root not in real.parents:
            lexical = Path(os.path.abspath(candidate))  # '..' removed, links not followed
            why = "a symlink pointing out of" if self.root in lexical.parents else "outside"
            raise PathRefused(f"{text}: {why} the GUI's root folder {self.root} (start gui.py with --root to allow another folder)")
        if must_exist and not real.exists():
            raise PathRefused(f"{text}: not found under {self.root}")
        return real

    def relative(self, path: str | os.PathLike) -> str:
        """A resolved path as the page shows it: relative to the root, with forward slashes."""
        rel = os.path.relpath(Path(path).resolve(), self.root)
        return "." if rel == "." else rel.replace(os.sep, "/")

    def complete(self, prefix: str, limit: int = 50) -> list[dict]:
        """Entries whose path starts with ``prefix`` (server-side completion of a typed path), folders first."""
        prefix = prefix or ""
        folder_text, _, start = prefix.rpartition("/")
        folder = self.resolve(folder_text or ".", must_exist=True)
        if not folder.is_dir():
            return []
        out = []
        for entry in sorted(os.scandir(folder), key=lambda e: (not e.is_dir(), e.name.lower())):
            if not entry.name.startswith(start) or (entry.name.startswith(".") and not start.startswith(".")):
                continue
            try:
                self.resolve(entry.path)
            except PathRefused:
                continue  # a symlink out of the root is not offered
            rel = self.relative(entry.path)
            out.append({"path": rel + ("/" if entry.is_dir() else ""), "dir": entry.is_dir()})
            if len(out) >= limit:
                break
        return out
